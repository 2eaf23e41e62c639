"""ditta-eval end to end: offline (deterministic) and over DDS (nothing lost), and its reports."""
import json

import pytest

from conftest import node_params
from ditta_ros.tools.replay import node_executable
from ditta_ros.tools import evaluate, make_bag, synth


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval')
    synth.main(['--out', str(root / 'data'), '--sequences', '2', '--frames', '14',
                '--size', '96x48', '--domain', 'fog', '--seed', '5'])
    make_bag.main([str(root / 'data'), '--out', str(root / 'bags')])
    return root


def _params_file(path, checkpoint, **overrides):
    import yaml
    from ditta_ros.tools.replay import nest
    params = node_params(checkpoint, **overrides)
    params.pop('camera_topics')
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': nest(params)}}))
    return path


def _run(args):
    assert evaluate.main(args) == 0


def test_offline_evaluation_reports_both_methods_and_is_deterministic(bags, b0_checkpoint,
                                                                      tmp_path):
    params = _params_file(tmp_path / 'p.yaml', b0_checkpoint, **{'adapt.seed': 0})
    common = [str(bags / 'bags'), '--offline', '--params', str(params), '--warmup-ratio', '30']
    _run(common + ['--json', str(tmp_path / 'a.json'), '--out', str(tmp_path / 'report')])
    _run(common + ['--json', str(tmp_path / 'b.json'), '--no-tc'])
    a = json.loads((tmp_path / 'a.json').read_text())
    b = json.loads((tmp_path / 'b.json').read_text())
    for method in ('none', 'ditta'):
        m = a['methods'][method]
        assert m['frames_sent'] == m['frames_received'] == 28 and m['frames_evaluated'] == 20
        for key in ('mIoU', 'wIoU', 'mVC8', 'TC'):
            assert m[key] is not None and 0 <= m[key] <= 1
        assert m['mIoU'] == b['methods'][method]['mIoU']
    assert a['methods']['ditta']['phases'] == ['adapted', 'adapted']
    for name in ('report.md', 'report.json', 'per_class_iou.png', 'miou_over_time.png',
                 'overlays.png'):
        assert (tmp_path / 'report' / name).stat().st_size > 0
    assert '| ditta |' in (tmp_path / 'report' / 'report.md').read_text()


def test_oracle_teacher_evaluation(bags, b0_checkpoint, tmp_path):
    params = _params_file(tmp_path / 'p.yaml', b0_checkpoint)
    _run([str(bags / 'data'), '--offline', '--oracle', '--methods', 'ditta', '--params',
          str(params), '--json', str(tmp_path / 'o.json'), '--no-tc', '--max-videos', '1'])
    report = json.loads((tmp_path / 'o.json').read_text())
    assert report['teacher'] == 'oracle'
    assert report['methods']['ditta']['phases'] == ['adapted']


@pytest.mark.dds
@pytest.mark.skipif(node_executable() is None, reason='ditta_node not built')
@pytest.mark.parametrize('pace', ['lockstep', 'realtime'])
def test_dds_replay_loses_nothing(bags, b0_checkpoint, tmp_path, pace):
    params = _params_file(tmp_path / 'p.yaml', b0_checkpoint)
    _run([str(bags / 'bags'), '--params', str(params), '--pace', pace, '--max-videos', '1',
          '--warmup-ratio', '30', '--json', str(tmp_path / 'd.json'), '--no-tc',
          '--out', str(tmp_path / 'out')])
    report = json.loads((tmp_path / 'd.json').read_text())
    for method in ('none', 'ditta'):
        m = report['methods'][method]
        assert m['frames_sent'] == 14
        if pace == 'lockstep':
            assert m['frames_received'] == 14 and m['frames_dropped'] == 0
        else:  # every sent frame came back as a mask or was counted as dropped by the node
            assert m['frames_received'] + m['frames_dropped'] == 14
    assert report['methods']['ditta']['phases'] == ['adapted']
