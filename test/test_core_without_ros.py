"""The core (models, camera, alignment, geometry, the pipeline, ...) needs no ROS."""

import subprocess
import sys

CORE = ('densepred_ros.pipeline', 'densepred_ros.camera', 'densepred_ros.alignment',
        'densepred_ros.geometry', 'densepred_ros.models', 'densepred_ros.models.lotus',
        'densepred_ros.models.marigold', 'densepred_ros.models.export',
        'densepred_ros.models.backends', 'densepred_ros.synthetic', 'densepred_ros.testing',
        'densepred_ros.training', 'densepred_ros.holder', 'densepred_ros.diagnostics',
        'densepred_ros.decode', 'densepred_ros.pairing', 'densepred_ros.evaluation',
        'densepred_ros.scheduler', 'densepred_ros.metrics', 'densepred_ros.params')
ROS = ('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'diagnostic_msgs', 'lifecycle_msgs',
       'builtin_interfaces')


def run_with_ros_blocked(modules) -> subprocess.CompletedProcess:
    """Import modules in a fresh interpreter where every ROS import raises ImportError."""
    # A None entry in sys.modules makes any import of that name raise ImportError.
    code = ('import importlib, sys\n'
            f'for name in {ROS!r}:\n'
            '    sys.modules[name] = None\n'
            f'for module in {tuple(modules)!r}:\n'
            '    importlib.import_module(module)\n'
            'print("ok")\n')
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)


def test_core_modules_import_with_ros_blocked():
    result = run_with_ros_blocked(CORE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ok'


def test_the_blocking_catches_a_ros_import():
    # The same check fails for the modules that do use ROS, so a passing check means
    # something.
    for module in ('densepred_ros.node', 'densepred_ros.messages', 'densepred_ros.encode'):
        result = run_with_ros_blocked([module])
        assert result.returncode != 0, module
        assert 'ImportError' in result.stderr or 'ModuleNotFoundError' in result.stderr, module
