"""Process settings of the entry points: denormals flushed in every worker thread, freed tensor
memory reused without page faults, the C heap's freed memory handed back. Each check runs in a
fresh interpreter (the settings are per process and must come before PyTorch starts its
threads)."""
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_flush_denormals_in_every_worker_thread():
    out = _run('''
        import warnings
        warnings.simplefilter('error')          # numpy's denormal warning would fail this
        import numpy as np
        import torch
        from ditta_ros.runtime import configure_process
        configure_process()
        torch.set_num_threads(2)
        x = torch.full((1 << 22,), 1e-30)
        small = (x * 1e-10).tolist()[::4096]     # each product is a denormal (1e-40)
        assert not any(small), 'denormals survived'
        a = torch.full((512, 256), 1e-20)
        assert (a @ a.t()).abs().max().item() == 0.0
        np.finfo(np.float32)
        print('flushed')
    ''')
    assert 'flushed' in out


def test_without_the_flag_denormals_survive():
    """The control: the flag is what flushes them (the test above can fail)."""
    out = _run('''
        import torch
        x = torch.full((1 << 22,), 1e-30)
        print(sum(1 for v in (x * 1e-10).tolist()[::4096] if v))
    ''')
    assert int(out) > 0


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc_trim')
def test_release_freed_memory_returns_the_heap_reserve():
    out = _run('''
        import psutil, torch
        from ditta_ros.runtime import release_freed_memory
        rss = lambda: psutil.Process().memory_info().rss / 2 ** 20
        big = torch.empty(20 << 20, dtype=torch.uint8).fill_(1)
        del big                                   # glibc's mmap threshold -> 20 MiB
        blocks = [torch.empty(4 << 20, dtype=torch.uint8).fill_(1) for _ in range(100)]
        del blocks[::2]                           # 200 MB freed between blocks still in use
        before = rss()
        release_freed_memory()
        print(before - rss())
    ''')
    assert float(out) > 150


_REALLOCATION_FAULTS = '''
    import resource, sys, torch
    from ditta_ros import runtime
    print(runtime.reuse_freed_memory() if sys.argv[1:] == ['configure'] else False)
    for frame in range(12):              # a frame loop: four 20 MB tensors at once, then freed
        if frame == 8:                   # after a few frames to settle the heap
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        tensors = [torch.empty(5 << 20).fill_(1.0) for _ in range(4)]
        del tensors
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _faults_of_a_reallocation(*argv, env=None):
    done = subprocess.run([sys.executable, '-c', textwrap.dedent(_REALLOCATION_FAULTS), *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    applied, faults = done.stdout.split()
    return applied == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_reuse_freed_memory_serves_a_repeated_large_tensor_without_page_faults():
    applied, faults = _faults_of_a_reallocation('configure')
    assert applied and faults < 2000             # 4 frames x 80 MB would be 81,920 pages of 4 KiB


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_reuse_freed_memory_leaves_the_environments_malloc_settings_alone():
    """Also the control of the test above: with every 20 MB block mapped and unmapped (the
    user's setting here) the loop pays fresh pages at every frame. glibc's own default is no
    control: whether it trims the freed top of the heap depends on where the address space
    layout put the heap (measured: 0 faults in 2 of 6 runs, 81,792 in the others)."""
    applied, faults = _faults_of_a_reallocation('configure',
                                                env={'MALLOC_MMAP_THRESHOLD_': '131072'})
    assert not applied and faults > 40_000


_FRAMES_AFTER_A_JOB = '''
    import contextlib, resource, sys, torch
    from ditta_ros import runtime
    assert runtime.reuse_freed_memory()
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def frame():                       # a frame's large blocks: two 40 MB tensors, then freed
        tensors = [torch.empty(10 << 20).fill_(1.0) for _ in range(2)]
        del tensors

    with_job_memory = sys.argv[1:] == ['job_memory']
    with runtime.job_memory() if with_job_memory else contextlib.nullcontext():
        # the job: 400 MB in 4 MB blocks, and 1 MB it keeps after every seventh block, as the
        # tensors a job hands over do; its freed memory leaves holes of 28 MB, too small for a
        # frame's blocks, below the heap's top
        held, kept = [], []
        for i in range(100):
            held.append(torch.empty(1 << 20).fill_(1.0))
            if i % 7 == 6:
                kept.append(torch.empty(1 << 18).fill_(1.0))
        del held
        if not with_job_memory:
            runtime.release_freed_memory()
    for _ in range(3):                 # the first frames after the job grow the heap
        frame()
    before = faults()
    for _ in range(4):
        frame()
    print(faults() - before)
'''


def _faults_of_frames_after_a_job(*argv):
    done = subprocess.run([sys.executable, '-c', textwrap.dedent(_FRAMES_AFTER_A_JOB), *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_frames_after_an_adaptation_job_reuse_the_heap_without_page_faults():
    """The job's freed memory goes back to the OS at its end, and the frames that follow keep
    their large blocks in the heap. The control is the trim alone (what jobs ended with
    before): the trimmed heap has no free block a frame's 40 MB fit in, so every frame maps
    fresh pages (4 frames x 80 MB are 81,920 pages of 4 KiB)."""
    assert _faults_of_frames_after_a_job('job_memory') < 2000
    assert _faults_of_frames_after_a_job('trim_only') > 40_000
