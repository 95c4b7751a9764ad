"""The package is a well-formed ament_python package that colcon builds and indexes."""

import ast
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


def _setup_call() -> dict:
    """Return the literal keyword arguments of setup() in setup.py."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    call = next(n for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'setup')
    literals = {}
    for keyword in call.keywords:
        try:
            literals[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:  # computed (find_packages, data_files)
            pass
    return literals


def _requirements(name: str) -> list:
    lines = (ROOT / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


def test_runtime_requirements_are_setup_py_ranges_without_ros_wheels():
    runtime = _requirements('requirements-runtime.txt')
    assert not [r for r in runtime if r.startswith('ros-') or '==' in r]
    setup = _setup_call()
    extras = setup['extras_require']
    declared = [r for r in setup['install_requires'] if r != 'setuptools']
    assert sorted(runtime) == sorted(declared + extras['onnx'] + extras['marigold-ensemble']
                                     + extras['fast'])


def test_versions_agree_and_changelog_has_this_version():
    changelog = pytest.importorskip('catkin_pkg.changelog')
    version = ElementTree.parse(ROOT / 'package.xml').getroot().findtext('version')
    assert _setup_call()['version'] == version
    log = changelog.get_changelog_from_path(str(ROOT / 'CHANGELOG.rst'), 'densepred_ros')
    versions = [v for v, _, _ in log.foreach_version()]
    assert versions and versions[0] == version


def test_license_file_is_the_apache_2_text():
    root = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert root.findtext('license') == 'Apache-2.0'
    text = (ROOT / 'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text


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
        '.venv*', '.git', 'build', 'install', 'log', 'demo_output', '*.egg-info',
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
    # What `source install/setup.bash` puts on PYTHONPATH imports the installed copy.
    site = next(prefix.glob('lib/python3*/site-packages'))
    result = subprocess.run(
        [sys.executable, '-c', 'import densepred_ros.cli, densepred_ros; '
         'print(densepred_ros.__file__)'],
        cwd=tmp_path, env=dict(env, PYTHONPATH=str(site)), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(prefix)), result.stdout
