"""The README documents every parameter, topic and service the node has."""
from pathlib import Path

from ditta_ros.ros.params import PARAMS, load_defaults

README = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
PARAMETER_TABLE = README[README.index('| parameter | default |'):]


def test_every_parameter_is_documented_with_its_default():
    defaults = load_defaults()
    for spec in PARAMS:
        row = next((line for line in PARAMETER_TABLE.splitlines()
                    if line.startswith(f'| `{spec.name}` |')), None)
        assert row is not None, f'{spec.name} is missing from the README parameter table'
        assert spec.when in row, spec.name
        default = defaults[spec.name]
        text = repr(default) if not isinstance(default, str) else (default or "''")
        assert f'`{text}`' in row, (spec.name, text)


def test_topics_services_and_launch_arguments_are_documented():
    for name in ('~/<camera>/mask', '~/<camera>/color_mask', '~/<camera>/confidence',
                 '~/<camera>/status', '~/labels', '/diagnostics', '~/start_adaptation',
                 '~/reset', '~/save_decoder', 'camera_topic', 'warmup_seconds',
                 'target_decoder', 'use_sim_time', 'namespace', 'params_file'):
        assert name in README, name
    assert 'bash scripts/test.sh' in README and 'bash scripts/demo.sh' in README
