"""ditta-bench end to end on a tiny input, and a benchmark child that dies."""
import json
import os
import signal

import pytest

from ditta_ros.tools import bench
from ditta_ros.tools.bench.harness import in_fresh_process


def test_bench_measures_each_method_and_writes_the_table_and_json(tmp_path):
    out = tmp_path / 'bench.json'
    table = tmp_path / 'bench.md'
    assert bench.main(['--size', '64x32', '--methods', 'none,tent', '--frames', '2',
                       '--warmup', '2', '--addon-cost', '--json', str(out),
                       '--markdown', str(table)]) == 0
    report = json.loads(out.read_text())
    rows = report['methods']
    assert set(rows) == {'none', 'tent'}
    for row in rows.values():
        assert row['fps'] > 0 and row['latency_p95_ms'] >= row['latency_p50_ms'] > 0
        assert row['peak_rss_mb'] > 0
    assert rows['tent']['phase'] == 'adapting'
    assert '| none |' in table.read_text() and '| tent |' in table.read_text()
    # the add-on's cost: fused frames run the add-on on top of the ISS pass
    cost = report['addon_cost']
    assert cost['fused']['gmacs'] > cost['ISS']['gmacs'] > 0
    assert cost['fused']['latency_p50_ms'] > 0 and cost['ISS']['latency_p50_ms'] > 0
    assert report['ratios']['fused / ISS multiply-adds'] > 1
    assert '| fused |' in table.read_text() and '| held |' in table.read_text()
    # the temporal hold adds no matrix product or convolution to the ISS pass
    assert cost['held']['gmacs'] == cost['ISS']['gmacs']
    assert report['ratios']['held (the defaults) / ISS frame time, alternating'] > 0


def _killed_for_memory():
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_benchmark_process_that_dies_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match='process died'):
        in_fresh_process(_killed_for_memory)
