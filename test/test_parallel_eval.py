"""ditta-eval --offline in worker processes and on a local Ray instance: the merged scores equal a
serial run's exactly, and Ray keeps every byte on loopback."""
import json

import numpy as np
import psutil
import pytest

from conftest import node_params
from ditta_ros.evaluation import MethodScores
from ditta_ros.labels import load_label_set
from ditta_ros.tools import evaluate, synth


@pytest.fixture(scope='module')
def setup(tmp_path_factory, b0_checkpoint):
    import yaml
    from ditta_ros.tools.replay import nest
    root = tmp_path_factory.mktemp('parallel')
    synth.main(['--out', str(root / 'data'), '--sequences', '3', '--frames', '10',
                '--size', '96x48', '--domain', 'fog+noise', '--seed', '21'])
    params = node_params(b0_checkpoint, **{'adapt.seed': 0})
    params.pop('camera_topics')
    (root / 'p.yaml').write_text(yaml.safe_dump({'/**': {'ros__parameters': nest(params)}}))
    return root


def run(root, out, *extra):
    assert evaluate.main([str(root / 'data'), '--offline', '--methods', 'none,ditta,tent',
                          '--params', str(root / 'p.yaml'), '--warmup-ratio', '30',
                          '--json', str(out), *extra]) == 0
    report = json.loads(out.read_text())
    return report['methods'], report['mode']


def headline(methods):
    keys = ('mIoU', 'wIoU', 'mVC8', 'mVC16', 'TC', 'per_class_IoU', 'frames_evaluated',
            'phases')
    return {m: {k: v[k] for k in keys} for m, v in methods.items()}


def test_worker_processes_give_the_serial_figures_exactly(setup, tmp_path):
    # one thread per video in both: sums over threads round differently from one thread
    serial, mode = run(setup, tmp_path / 'serial.json', '--threads', '1')
    parallel, parallel_mode = run(setup, tmp_path / 'parallel.json', '--jobs', '2')
    assert mode == 'offline' and parallel_mode == 'offline, 2 worker processes'
    assert headline(parallel) == headline(serial)
    assert serial['ditta']['frames_evaluated'] == 3 * 7


def test_a_local_ray_instance_gives_the_serial_figures_on_loopback_only(setup, tmp_path):
    pytest.importorskip('ray', reason='the ray extra is not installed')
    from ditta_ros.executors import connect_ray
    serial, _ = run(setup, tmp_path / 'serial.json', '--threads', '1')
    ray = connect_ray('local', 2)      # kept running through the evaluation (it joins it)
    try:
        me = psutil.Process()
        processes = {p.pid for p in me.children(recursive=True)} | {me.pid}
        outside = {(c.laddr.ip, c.raddr.ip if c.raddr else '', c.status)
                   for c in psutil.net_connections(kind='inet') if c.pid in processes
                   and not all(ip in ('127.0.0.1', '::ffff:127.0.0.1')
                               for ip in [c.laddr.ip] + ([c.raddr.ip] if c.raddr else []))}
        assert not outside, f'Ray listens or connects outside loopback: {sorted(outside)}'
        on_ray, mode = run(setup, tmp_path / 'ray.json', '--ray', 'auto')
    finally:
        ray.shutdown()
    assert mode == 'offline, Ray (auto)'
    assert headline(on_ray) == headline(serial)


def test_merging_per_video_scores_equals_adding_the_videos_in_order():
    labels = load_label_set('cityscapes')
    rng = np.random.default_rng(0)
    whole, merged = MethodScores(labels), MethodScores(labels)
    for video in range(3):
        block = rng.integers(0, 50, (19, 19))
        windows, pairs = rng.random(3).tolist(), rng.random(2).tolist()
        part = MethodScores(labels)
        for scores in (whole, part):
            scores.confusion.matrix += block
            scores.vc[8].append(windows)
            scores.vc[16].append(windows[:1])
            scores.tc.append(pairs)
            scores.frames_evaluated += 4
        merged.merge(part)
    assert np.array_equal(merged.confusion.matrix, whole.confusion.matrix)
    assert merged.vc == whole.vc and merged.tc == whole.tc
    a, b = merged.summary(), whole.summary()
    assert np.isnan(a.pop('fps')) and np.isnan(b.pop('fps'))   # no runs: no frame rate
    assert a == b
    assert merged.summary()['frames_evaluated'] == 12
