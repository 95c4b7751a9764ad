"""The core (models, camera, alignment, geometry, synthetic scenes, training) needs no ROS."""

import subprocess
import sys

CORE = ('densepred_ros.models', 'densepred_ros.models.lotus', 'densepred_ros.models.marigold',
        'densepred_ros.models.export', 'densepred_ros.models.backends', 'densepred_ros.camera',
        'densepred_ros.alignment', 'densepred_ros.geometry', 'densepred_ros.synthetic',
        'densepred_ros.testing', 'densepred_ros.training', 'densepred_ros.holder',
        'densepred_ros.evaluation')
ROS = ('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'diagnostic_msgs', 'lifecycle_msgs')


def test_core_modules_import_with_ros_blocked():
    # A None entry in sys.modules makes any import of that name raise ImportError.
    code = ('import importlib, sys\n'
            f'for name in {ROS!r}:\n'
            '    sys.modules[name] = None\n'
            f'for module in {CORE!r}:\n'
            '    importlib.import_module(module)\n'
            'print("ok")\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ok'


def test_the_node_does_need_ros():
    code = ('import sys\n'
            "sys.modules['rclpy'] = None\n"
            'import densepred_ros.node\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and 'rclpy' in result.stderr
