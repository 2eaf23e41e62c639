"""Process-wide settings of the node and the tools, applied before any computation: PyTorch's
floating-point mode and the C allocator's handling of freed tensor memory."""
import ctypes
import ctypes.util
import os
from contextlib import contextmanager

import numpy as np
import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# glibc's largest mmap threshold (half its 64 MiB heap size on 64-bit)
_MMAP_THRESHOLD_MAX = 32 * 2 ** 20
# glibc's default for how many blocks it may map at once
_MMAP_MAX_DEFAULT = 65536


def configure_process() -> None:
    """Flush denormals (`flush_denormals`) and keep freed tensor memory for reuse
    (`reuse_freed_memory`): at the start of each entry point, before PyTorch starts its
    threads."""
    flush_denormals()
    reuse_freed_memory()


def flush_denormals() -> None:
    """Flush denormal floats to zero (FTZ/DAZ) in this process.

    Softmax weights far from the maximum, and the gradients through them, underflow into the
    denormal range (exp(-100) ~ 4e-44), and x86 CPUs compute on denormals up to 100x slower: a
    256-channel matrix product of 26k tokens with denormal entries takes 4.2 s instead of 29 ms
    on 2 cores, and a DiTTA adaptation step at 480x864 varied from 3.7 to 8.9 s with them,
    2.3 to 3.9 s without. Values below 1.2e-38 become 0, far below anything a prediction or a
    loss can resolve. The flag belongs to each thread and a thread copies it from the thread
    that creates it, so this must run before the first parallel operation creates PyTorch's
    worker threads: at the start of each entry point. CUDA kernels are not affected.
    """
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype)     # numpy caches these; computed with FTZ on, it warns about denormals
    torch.set_flush_denormal(True)


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        return libc if hasattr(libc, 'malloc_trim') and hasattr(libc, 'mallopt') else None
    except OSError:                        # not glibc: none of its allocator's settings apply
        return None


_GLIBC = _glibc()
# whether reuse_freed_memory set glibc up (then job_memory changes its settings too)
_MANAGED = False


def _allocator_set_by_environment() -> bool:
    """Whether the environment tunes glibc malloc itself (MALLOC_* or GLIBC_TUNABLES)."""
    return any(name.startswith('MALLOC_') for name in os.environ) or \
        'malloc' in os.environ.get('GLIBC_TUNABLES', '')


def reuse_freed_memory() -> bool:
    """Keep freed heap memory for the next frame, in one heap for all threads.

    By default glibc trims the heap's free top and lets each thread allocate from an arena of
    its own whose mappings hold at most 64 MiB, so frames keep paying a page fault per 4 KiB of
    their tensors again. Here blocks up to glibc's largest mmap threshold (32 MiB) come from
    the one main heap, which keeps its freed memory; larger blocks are still mapped and unmapped
    at once, so their memory never lingers or fragments the heap. 1024x512 SegFormer-B0 frames
    on 2 CPU cores, 14-frame loop: 179 ms instead of 239 ms (ISS), 416 instead of 528 ms (DiTTA
    fused). Serving every block from the heap (`MALLOC_MMAP_MAX_=0`) was faster still (154 and
    326 ms), but freed multi-GB blocks then fragment the heap: the 2048x1024 adaptation peaked
    at 5.5 instead of 3.4 GB RSS and the reference's dense adaptation step outgrew 24 GB. A
    camera thread's own arena had cost it 12 % (fused frames 370 instead of 330 ms).
    `release_freed_memory` hands freed pages back after adaptation steps, `job_memory` after
    jobs (and keeps the frames' large blocks in the heap from then on). Settings the
    environment makes itself (any MALLOC_* variable or a malloc GLIBC_TUNABLES entry, e.g. the
    benchmark's live-memory runs) are left as they are. Returns whether it applied."""
    global _MANAGED
    if _GLIBC is None or _allocator_set_by_environment():
        return False
    applied = [_GLIBC.mallopt(parameter, value) == 1 for parameter, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, 2 ** 31 - 1),
        (_M_ARENA_MAX, 1))]
    _MANAGED = all(applied)
    return _MANAGED


@contextmanager
def job_memory():
    """Around a job whose memory is all freed when it ends (an adaptation job: teacher
    features, targets, training tensors), while frames keep running on other threads.

    During the job, blocks of 32 MiB and more are mapped and unmapped at once, as
    `reuse_freed_memory` sets up: the job's multi-GB blocks must not fragment the heap. At its
    end the heap's free pages go back to the OS (`release_freed_memory`). That trim also shrinks
    the heap's free top, which had served the frames' large blocks; glibc then mapped fresh pages
    for every large block of every later frame (a fused 1024x512 SegFormer-B0 frame: 20,000 to
    45,000 page faults and 450-470 instead of 410-420 ms on 2 cores, for as long as the process
    ran). So after the job every block comes from the heap (M_MMAP_MAX = 0): the frames grow it
    once to their working set and reuse it. The next job maps its large blocks again. Settings
    the environment makes itself are left alone (see reuse_freed_memory)."""
    _map_large_blocks(True)
    try:
        yield
    finally:
        release_freed_memory()
        _map_large_blocks(False)


def _map_large_blocks(allowed: bool) -> None:
    if _MANAGED:
        _GLIBC.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT if allowed else 0)


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc `malloc_trim`).

    The heap keeps freed blocks for reuse (all of them with `reuse_freed_memory`; glibc's default
    keeps those below its mmap threshold, which rises to 32 MiB after the first large free), so
    after an adaptation step the process would keep several hundred MB of freed tensors
    resident: a 480x864 step left the bench process at 1.28 GB instead of 0.76 GB. Trimming
    after each step returns that to the vehicle's other processes; its cost does not show in the
    step time (2.0 s with and without, same step)."""
    if _GLIBC is not None:
        _GLIBC.malloc_trim(0)
