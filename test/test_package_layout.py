"""The package is a well-formed ament_python package that colcon builds and indexes."""

import configparser
import os
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format3_ament_python():
    root = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'densepred_ros'
    assert root.find('export/build_type').text == 'ament_python'
    email = root.find('maintainer').get('email')
    assert '@' in email and '.' in email.split('@')[1]
    depends = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'diagnostic_msgs', 'launch_ros'} <= depends


def test_setup_cfg_installs_scripts_where_ros2_run_looks():
    config = configparser.ConfigParser()
    config.read(ROOT / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/densepred_ros'
    assert config['install']['install_scripts'] == '$base/lib/densepred_ros'
    assert (ROOT / 'resource' / 'densepred_ros').is_file()


@pytest.mark.skipif(shutil.which('colcon', path=os.path.dirname(sys.executable) + os.pathsep
                                 + os.environ.get('PATH', '')) is None,
                    reason='colcon not installed')
def test_colcon_build_indexes_the_package(tmp_path):
    colcon = shutil.which('colcon', path=os.path.dirname(sys.executable) + os.pathsep
                          + os.environ.get('PATH', ''))
    source = tmp_path / 'src' / 'densepred_ros'
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'build', 'install', 'log', 'demo_output', '*.egg-info',
        '__pycache__', '.pytest_cache'))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get('PATH', ''))
    result = subprocess.run([colcon, 'build', '--event-handlers', 'console_direct-'],
                            cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / 'install' / 'densepred_ros'
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / 'densepred_ros').is_file()
    assert (prefix / 'share' / 'densepred_ros' / 'package.xml').is_file()
    scripts = {p.name for p in (prefix / 'lib' / 'densepred_ros').iterdir()}
    assert 'densepred' in scripts
    for folder in ('launch', 'config'):
        installed = {p.name for p in (prefix / 'share' / 'densepred_ros' / folder).iterdir()}
        assert installed == {p.name for p in (ROOT / folder).iterdir() if p.is_file()}
