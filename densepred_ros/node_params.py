"""The node's parameters on an rclpy node: declarations with descriptors, and reading them.

The table itself, its checks and `NodeConfig` are in `params` (no ROS); this module puts the
table on a node (``ros2 param describe`` shows each description and range) and reads a
node's values back through `NodeConfig.from_parameters`.
"""

from typing import Any

from densepred_ros.params import (
    camera_extrinsic_parameter, NodeConfig, PARAMETERS, valid_camera_name)
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter


def declare_parameters(node: Any) -> None:
    """Declare every parameter of PARAMETERS on an rclpy node, with descriptors."""
    for spec in PARAMETERS:
        description = spec.description
        if spec.choices is not None:
            description += f' One of: {", ".join(spec.choices)}.'
        # Float and list parameters also accept integers (YAML `max_age: 1`, `[0, 0, 1]`);
        # NodeConfig.from_parameters checks their type and range at configure time.
        descriptor = ParameterDescriptor(
            description=description, dynamic_typing=isinstance(spec.default, (float, list)))
        if isinstance(spec.default, tuple):   # a string array, empty by default
            node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor)
            continue
        if spec.bounds is not None and isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.bounds[0]), to_value=int(spec.bounds[1]), step=1)]
        elif spec.bounds is not None:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.bounds[0]), to_value=float(spec.bounds[1]), step=0.0)]
        node.declare_parameter(spec.name, spec.default, descriptor)


def declare_camera_extrinsic(node: Any, name: str) -> None:
    """Declare one ``camera.N.extrinsic`` (numbers, no default) on a node."""
    node.declare_parameter(name, None, ParameterDescriptor(
        description="Lidar pose in this camera's optical frame, [x, y, z, qx, qy, qz, qw]; "
                    'unset: tf2, else alignment.extrinsic.', dynamic_typing=True))


def config_from_node(node: Any) -> NodeConfig:
    """Read the declared parameters of an rclpy node (see `declare_parameters`) into a NodeConfig.

    The per-camera ``camera.N.extrinsic`` parameters are declared here, for the names
    in ``cameras``, when not declared yet.
    """
    values = {spec.name: _value(node, spec.name) for spec in PARAMETERS}
    if values['cameras'] is None:
        values['cameras'] = ()   # a string array declared without a value
    names = values['cameras']
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        for camera in names:
            if not valid_camera_name(camera):
                continue   # from_parameters says why
            name = camera_extrinsic_parameter(camera)
            if not node.has_parameter(name):
                declare_camera_extrinsic(node, name)
            value = _value(node, name)
            if value is not None:
                values[name] = value
    return NodeConfig.from_parameters(values)


def _value(node: Any, name: str) -> Any:
    """Return a parameter's value, None for one declared by type without a value."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None
