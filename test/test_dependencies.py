"""Every third-party module the package imports is declared where installers look for it: pip
(setup.cfg) and rosdep/colcon (package.xml). A module imported but declared in neither installs
fine on the developer's machine and breaks on a robot."""
import ast
import configparser
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (pip requirement, rosdep key): needed at run time
REQUIRED = {
    'numpy': ('numpy', 'python3-numpy'), 'torch': ('torch', 'python3-torch'),
    'torchvision': ('torchvision', 'python3-torchvision'),
    'cv2': ('opencv-python-headless', 'python3-opencv'), 'scipy': ('scipy', 'python3-scipy'),
    'PIL': ('pillow', 'python3-pil'), 'yaml': ('pyyaml', 'python3-yaml'),
    'tqdm': ('tqdm', 'python3-tqdm'), 'matplotlib': ('matplotlib', 'python3-matplotlib'),
    'psutil': ('psutil', 'python3-psutil'),
}
# ROS packages (from the ROS distribution; on pip-only machines from the ROS wheels)
ROS = {'rclpy', 'sensor_msgs', 'std_srvs', 'diagnostic_msgs', 'rcl_interfaces', 'launch',
       'launch_ros', 'ament_index_python', 'vision_msgs', 'lifecycle_msgs'}
# module -> pip extra: imported only by the feature that needs it, with an error naming it
OPTIONAL = {'sam2': 'sam2', 'rosbags': 'bags', 'safetensors': 'hf', 'transformers': 'hf',
            'ray': 'ray'}


def imported_modules():
    """{top-level module: files importing it} of ditta_ros/ and launch/, stdlib left out."""
    found = {}
    files = list((ROOT / 'ditta_ros').rglob('*.py')) + list((ROOT / 'launch').glob('*.py'))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top not in sys.stdlib_module_names and top != 'ditta_ros':
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def pip_names(lines):
    return {re.split(r'[<>=!~;\[ ]', line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip()}


def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    required = pip_names(cfg['options']['install_requires'].splitlines())
    extras = {name: pip_names(re.split(r'[;\n]', value))
              for name, value in cfg['options.extras_require'].items()}
    return required, extras


def package_xml_keys():
    tree = ET.parse(ROOT / 'package.xml')
    return {e.text.strip() for tag in ('depend', 'exec_depend') for e in tree.iter(tag)}


def test_every_imported_module_is_known_here():
    unknown = {m: sorted(f) for m, f in imported_modules().items()
               if m not in REQUIRED and m not in ROS and m not in OPTIONAL}
    assert not unknown, f'declare these in setup.cfg and package.xml, then list them here: ' \
                        f'{unknown}'


def test_run_time_modules_are_declared_for_pip_and_rosdep():
    required, _ = setup_cfg()
    keys = package_xml_keys()
    for module in imported_modules():
        if module in REQUIRED:
            pip, rosdep = REQUIRED[module]
            assert pip in required, f'{module}: add {pip} to install_requires in setup.cfg'
            assert rosdep in keys, f'{module}: add <exec_depend>{rosdep}</exec_depend>'
        elif module in ROS:
            assert module in keys, f'{module}: add <exec_depend>{module}</exec_depend>'


def test_optional_modules_are_pip_extras():
    _, extras = setup_cfg()
    for module in imported_modules():
        if module in OPTIONAL:
            extra = OPTIONAL[module]
            assert extra in extras and module.lower() in extras[extra] | {
                n.replace('-', '_') for n in extras[extra]}, \
                f'{module}: add it to the [{extra}] extra in setup.cfg'
