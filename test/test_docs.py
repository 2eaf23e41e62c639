"""The README documents every parameter, topic and service the node has."""
from pathlib import Path

from ditta_ros.ros.params import markdown_table

README = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
PARAMETER_TABLE = README[README.index('| parameter | default |'):]


def test_the_parameter_table_is_the_one_the_parameter_definitions_give():
    """Descriptions, defaults, ranges and choices are stated once, in ros/params.py and
    config/ditta.yaml; the README's copy must match (`python -m ditta_ros.ros.params`)."""
    table = PARAMETER_TABLE[:PARAMETER_TABLE.index('\n\n')]
    assert table == markdown_table()


def test_topics_services_and_launch_arguments_are_documented():
    for name in ('~/<camera>/mask', '~/<camera>/color_mask', '~/<camera>/confidence',
                 '~/<camera>/status', '~/labels', '/diagnostics', '~/start_adaptation',
                 '~/reset', '~/save_decoder', 'camera_topic', 'warmup_seconds',
                 'target_decoder', 'use_sim_time', 'namespace', 'params_file'):
        assert name in README, name
    assert 'bash scripts/test.sh' in README and 'bash scripts/demo.sh' in README
