"""Build script: ament_python for colcon, plain setuptools for pip."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'densepred_ros'


def _files(pattern: str) -> list:
    return sorted(p for p in glob(pattern) if os.path.isfile(p))


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: [
        'configs/*.json', 'demo_models/*.md', 'demo_models/*/*.json', 'demo_models/*/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', _files('launch/*.py')),
        ('share/' + PACKAGE + '/config', _files('config/*')),
    ],
    python_requires='>=3.10',
    # The same ranges as requirements-runtime.txt (test/test_package_layout.py checks); the
    # floors are the lowest versions the suite passed with (docs/install.md).
    install_requires=[
        'setuptools',
        'torch>=2.3,<2.15',
        'numpy>=1.21',
        'pillow>=9',
        'diffusers>=0.35.2',
        'transformers>=5.6',
        'safetensors>=0.4.3',
        'huggingface-hub>=1.5',
        'simplejpeg>=1.7',
        'rosbags>=0.10',
    ],
    extras_require={
        'test': ['pytest>=7', 'hypothesis>=6.36', 'pytest-timeout>=2.1'],
        'onnx': ['onnx>=1.16', 'onnxruntime>=1.18'],
        'marigold-ensemble': ['scipy>=1.8'],
        # Optional numba kernels of geometry.py (numpy is used without it).
        'fast': ['numba>=0.60'],
    },
    zip_safe=True,
    maintainer='densepred_ros maintainers',
    maintainer_email='maintainer@example.com',
    description='Single-step diffusion depth and normals with lidar scale for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'densepred = densepred_ros.cli:main',
            'depth_node = densepred_ros.node:main',
        ],
    },
)
