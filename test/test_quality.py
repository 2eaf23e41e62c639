"""ditta-quality: the benchmark runs end to end on tiny settings, and its interval is right."""
import numpy as np
import pytest

from ditta_ros.tools import quality


def score(domain, matrix):
    return quality.VideoScore(domain, 'v', np.asarray(matrix, np.float64), {}, [], 'adapted')


def test_bootstrap_difference_is_zero_for_equal_rows_and_brackets_the_point():
    source = {'a': [score('a', [[9, 1], [1, 9]]), score('a', [[5, 5], [5, 5]])],
              'b': [score('b', [[8, 2], [0, 10]])]}
    assert quality.bootstrap_difference(source, source, 200) == (0.0, 0.0, 0.0)
    better = {'a': [score('a', [[10, 0], [0, 10]]), score('a', [[6, 4], [4, 6]])],
              'b': [score('b', [[9, 1], [0, 10]])]}
    point, low, high = quality.bootstrap_difference(better, source, 500)
    assert 0 < low <= point <= high


def test_ablation_rows_change_one_knob_each():
    rows = quality.ablation_rows(10)
    assert rows and all(row.warmups == (10,) for row in rows)
    for row in rows:
        knobs = [k for k, _ in row.overrides if k != 'adapt.preset']
        assert len(knobs) == 1 and knobs[0].startswith(('adapt.', 'fusion.'))


def test_the_benchmark_runs_every_row_and_share_and_reports_the_clear_domain(tmp_path,
                                                                             b0_checkpoint):
    args = quality.build_parser().parse_args([
        '--out', str(tmp_path), '--checkpoint', str(b0_checkpoint), '--domains', 'fog+noise',
        '--sequences', '2', '--frames', '10', '--size', '128x64', '--warmups', '20,40',
        '--jobs', '1', '--bootstrap', '20', '--no-tc', '--peers', 'stats',
        '--row', 'tent=method:=tent,adapt.lr:=1e-3', '--test-domains', 'night', '--test-sequences', '1',
        '-p', 'model.embed_dim:=32', '-p', 'model.window:=2', '-p', 'model.input_scale:=[128, 64]',
        '-p', 'adapt.passes:=1', '-p', 'teacher.prompt_threshold:=0.3'])
    report = quality.benchmark(args)
    assert list(report['sets']) == ['tuning', 'test']
    for name, domain in (('tuning', 'fog+noise'), ('test', 'night')):
        part = report['sets'][name]
        rows = [(r['row'], r['warmup']) for r in part['rows']]
        assert rows == [(quality.SOURCE_ROW, 20.0), (quality.SOURCE_ROW, 40.0),
                        ('ditta (defaults)', 20.0), ('ditta (defaults)', 40.0),
                        ('ditta, reference preset', 20.0),
                        ('statistics only (no training)', 20.0), ('tent', 20.0)]
        for row in part['rows']:
            assert 0 <= row['mIoU'] <= 1 and set(row['per_domain_mIoU']) == {domain}
            if row['row'] != quality.SOURCE_ROW:
                point, low, high = row['delta_mIoU']
                assert low <= point <= high
            if row['row'] == 'statistics only (no training)':
                assert row['served'] == f'statistics {1 if name == "test" else 2}'
            if row['row'] == 'tent':
                assert row['served'].startswith('continuous')
    assert 0 <= report['clear']['mIoU'] <= 1
    text = quality.markdown({k: v for k, v in report.items() if k not in ('params', 'folders')})
    assert 'Δ mIoU' in text and 'ditta, reference preset' in text
    assert '### Tuning mixes: fog+noise' in text and '### Test mixes: night' in text


def test_a_bad_row_is_refused_before_anything_runs(tmp_path):
    args = quality.build_parser().parse_args(['--out', str(tmp_path), '--row',
                                              'fast=adapt.lr:=1e-3,adapt.passes:=-1'])
    with pytest.raises(ValueError, match="row 'fast'.*adapt.passes"):
        quality.benchmark(args)
    assert not (tmp_path / 'data').exists()
