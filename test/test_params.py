"""Parameter table and config validation; the launch, YAML and RViz files that use them."""

import ast
import importlib.util
from pathlib import Path
import py_compile

from densepred_ros.camera import extrinsic_from_xyz_quat
from densepred_ros.node_params import declare_parameters
from densepred_ros.params import (
    ConfigError, MAX_PROCESSING_RESOLUTION, NodeConfig, PARAMETERS)
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GOOD = {'model.path': '/models/lotus'}


def test_defaults_with_a_model_path() -> None:
    config = NodeConfig.from_parameters(GOOD)
    assert config.model.path == '/models/lotus'
    assert config.model.backend == 'torch'
    assert config.model.processing_resolution is None  # -1 means the model's default
    # Default extrinsic: a lidar at the camera, lidar x (forward) = camera z, lidar y
    # (left) = camera -x, lidar z (up) = camera -y. Checked by rotating the axes.
    R = extrinsic_from_xyz_quat(*config.alignment.extrinsic)[:3, :3]
    assert R @ [1.0, 0.0, 0.0] == pytest.approx([0.0, 0.0, 1.0])
    assert R @ [0.0, 1.0, 0.0] == pytest.approx([-1.0, 0.0, 0.0])
    assert R @ [0.0, 0.0, 1.0] == pytest.approx([0.0, -1.0, 0.0])
    assert config.qos.input_reliability == 'best_effort'
    assert config.qos.output_reliability == 'reliable'
    assert config.output.points_stride >= 1
    assert config.autostart is False


def test_every_parameter_is_described_and_defaults_are_valid() -> None:
    names = [spec.name for spec in PARAMETERS]
    assert len(names) == len(set(names))
    for spec in PARAMETERS:
        assert spec.description.endswith('.'), spec.name
        if spec.bounds is not None:
            assert spec.bounds[0] <= spec.default <= spec.bounds[1], spec.name
        if spec.choices is not None:
            assert spec.default in spec.choices, spec.name


@pytest.mark.parametrize('name, value, match', [
    ('model.path', '', 'model.path'),
    ('model.backend', 'tensorrt', 'export_dir'),
    ('model.backend', 'onnxruntime', 'export_dir'),
    ('model.backend', 'unet=tensorrt', 'export_dir'),
    ('model.backend', 'jax', 'model.backend'),
    ('model.backend', 'unet=jax', 'model.backend'),
    ('model.backend', 'text_encoder=onnxruntime', 'model.backend'),
    ('model.engine_precision', 'int8', 'model.engine_precision'),
    ('model.threads', -1, 'model.threads'),
    ('model.family', 'dpt', 'model.family'),
    ('model.dtype', 'int8', 'model.dtype'),
    ('model.device', 'gpu', 'model.device'),
    ('model.device', 'cuda:x', 'model.device'),
    ('model.processing_resolution', MAX_PROCESSING_RESOLUTION + 1, 'processing_resolution'),
    ('model.processing_resolution', -2, 'processing_resolution'),
    ('model.processing_resolution', 512.0, 'integer'),
    ('output.points_stride', 0, 'points_stride'),
    ('output.max_depth', 0.0, 'max_depth'),
    ('output.max_depth', float('nan'), 'finite'),
    ('max_age', -1.0, 'max_age'),
    ('qos.input_reliability', 'sometimes', 'qos.input_reliability'),
    ('qos.depth', 0, 'qos.depth'),
    ('alignment.extrinsic', [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 'alignment.extrinsic'),
    ('alignment.extrinsic', [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], 'unit quaternion'),
    ('alignment.extrinsic', [0.0, 0.0, float('inf'), 0.0, 0.0, 0.0, 1.0], 'finite'),
    ('alignment.enabled', 'yes', 'true or false'),
    ('alignment.smoothing', 0.0, 'alignment.smoothing'),
])
def test_bad_values_name_the_parameter(name: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NodeConfig.from_parameters({**GOOD, name: value})


def test_backends_with_an_export_folder() -> None:
    config = NodeConfig.from_parameters({
        **GOOD, 'model.backend': 'unet=tensorrt, vae_decoder=onnxruntime',
        'model.export_dir': '/exports/lotus_480x640', 'model.engine_precision': 'fp32',
        'model.threads': 4, 'model.ort_providers': 'CPUExecutionProvider'})
    assert config.model.backend == 'unet=tensorrt, vae_decoder=onnxruntime'
    assert config.model.export_dir == '/exports/lotus_480x640'
    assert (config.model.engine_precision, config.model.threads) == ('fp32', 4)
    assert config.model.normals_export_dir == '' and config.model.rebuild_engines is False
    options = config.model.predictor_options()
    assert (options.backend, options.export_dir) == (config.model.backend,
                                                     '/exports/lotus_480x640')
    assert (options.threads, options.engine_precision, options.dtype) == (4, 'fp32', 'auto')
    normals = config.model.predictor_options(normals=True)   # no normals export: torch
    assert (normals.backend, normals.export_dir) == ('torch', '')
    assert NodeConfig.from_parameters(GOOD).model.dtype == 'auto'


def test_unknown_parameter_rejected() -> None:
    with pytest.raises(ConfigError, match='model.pth'):
        NodeConfig.from_parameters({**GOOD, 'model.pth': 'x'})


def test_conversions() -> None:
    config = NodeConfig.from_parameters({
        **GOOD, 'max_age': 2, 'model.processing_resolution': 0, 'model.device': ' cuda:1 ',
        'alignment.extrinsic': [1, 2, 3, 0, 0, 0, 1.0005]})
    assert config.max_age == 2.0 and isinstance(config.max_age, float)
    assert config.model.processing_resolution == 0  # 0 = the input image size
    assert config.model.device == 'cuda:1'
    assert config.alignment.extrinsic[:3] == (1.0, 2.0, 3.0)
    assert config.alignment.extrinsic[6] == pytest.approx(1.0)  # normalised


class RecordingNode:
    """Collects declare_parameter calls the way rclpy's Node receives them."""

    def __init__(self) -> None:
        self.declared = {}

    def declare_parameter(self, name, value, descriptor):
        self.declared[name] = (value, descriptor)


def test_declare_parameters_sets_ranges_and_descriptions() -> None:
    pytest.importorskip('rcl_interfaces.msg', reason='ROS message wheels not installed')
    node = RecordingNode()
    declare_parameters(node)
    assert set(node.declared) == {spec.name for spec in PARAMETERS}
    value, descriptor = node.declared['model.processing_resolution']
    assert descriptor.integer_range[0].to_value == MAX_PROCESSING_RESOLUTION
    value, descriptor = node.declared['output.points_stride']
    assert descriptor.integer_range[0].from_value == 1
    value, descriptor = node.declared['max_age']
    assert descriptor.floating_point_range[0].from_value == 0.0
    assert descriptor.dynamic_typing  # a YAML `max_age: 1` must not be a type error
    value, descriptor = node.declared['model.dtype']
    assert 'fp16' in descriptor.description


def _yaml_parameters() -> dict:
    document = yaml.safe_load((ROOT / 'config' / 'depth.yaml').read_text())
    assert list(document) == ['/**'], 'the params file must use the /** key'
    flat = {}

    def walk(prefix: str, tree: dict) -> None:
        for key, value in tree.items():
            name = f'{prefix}.{key}' if prefix else key
            if isinstance(value, dict):
                walk(name, value)
            else:
                flat[name] = value

    walk('', document['/**']['ros__parameters'])
    return flat


def test_params_yaml_names_known_parameters_and_validates() -> None:
    flat = _yaml_parameters()
    known = {spec.name for spec in PARAMETERS}
    assert set(flat) <= known, set(flat) - known
    flat.setdefault('model.path', '/models/lotus')
    if not flat['model.path']:
        flat['model.path'] = '/models/lotus'
    NodeConfig.from_parameters(flat)


def test_rviz_config_parses_and_shows_the_outputs() -> None:
    config = yaml.safe_load((ROOT / 'config' / 'depth.rviz').read_text())
    displays = config['Visualization Manager']['Displays']
    topics = set()
    for display in displays:
        topic = display.get('Topic', {})
        if isinstance(topic, dict) and 'Value' in topic:
            topics.add(topic['Value'])
    for expected in ('/depth/color', '/normals/color', '/points', '/lidar'):
        assert expected in topics, (expected, topics)
    assert config['Visualization Manager']['Global Options']['Fixed Frame'] == \
        'camera_optical_frame'


def test_fastdds_profile_is_xml_with_shared_memory() -> None:
    import xml.etree.ElementTree as ET
    root = ET.parse(ROOT / 'config' / 'fastdds_shm.xml').getroot()
    text = ET.tostring(root, encoding='unicode')
    assert 'SHM' in text and 'UDPv4' in text
    assert '33554432' in text  # 32 MiB segment


def test_launch_file_compiles_and_declares_its_arguments() -> None:
    path = ROOT / 'launch' / 'depth.launch.py'
    py_compile.compile(str(path), doraise=True)
    tree = ast.parse(path.read_text())
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', '')
                == 'DeclareLaunchArgument' and node.args
                and isinstance(node.args[0], ast.Constant)}
    assert {'namespace', 'params_file', 'model_path', 'backend', 'export_dir', 'image',
            'camera_info', 'lidar', 'use_rviz', 'autostart', 'log_level'} <= declared


def test_launch_description_builds_when_launch_ros_is_installed() -> None:
    if importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch_ros is not installed (it comes with a ROS 2 distro)')
    spec = importlib.util.spec_from_file_location(
        'depth_launch', ROOT / 'launch' / 'depth.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert len(description.entities) > 9
