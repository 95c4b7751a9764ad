"""Launch the densepred depth node (and optionally RViz).

Example (one command line):
    ros2 launch densepred_ros depth.launch.py model_path:=/models/lotus-depth-g
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info
        lidar:=/lidar/points use_rviz:=true
    With a compressed camera stream add image_transport:=compressed: the node then reads
    <image>/compressed.
    Several cameras on one model (docs/cameras.md):
    ros2 launch densepred_ros depth.launch.py model_path:=/models/lotus-depth-g
        cameras:="[front, left, right]" camera_image:=/{camera}/image_raw
        camera_info:=/{camera}/camera_info lidar:=/lidar/points
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'densepred_ros'


def _launch_setup(context: LaunchContext) -> list:
    """Build the nodes once the launch arguments are known."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    # 1. Parameters: the params file, then the values given as launch arguments.
    overrides = {'autostart': arg('autostart').strip().lower() in ('true', '1', 'yes')}
    for name in ('model_path', 'backend', 'export_dir'):
        if arg(name):
            overrides['model.' + name.replace('model_', '')] = arg(name)
    if arg('image_transport'):
        overrides['image_transport'] = arg('image_transport').strip()
    cameras = _camera_names(arg('cameras'))
    if cameras:
        overrides['cameras'] = cameras
    parameters = [arg('params_file'), overrides]

    # 2. The depth node, with its relative input topics remapped.
    if cameras:   # N/image, N/image/compressed, N/camera_info per camera
        remappings = [('lidar', arg('lidar'))]
        for name in cameras:
            image = arg('camera_image').replace('{camera}', name)
            remappings += [(f'{name}/image', image),
                           (f'{name}/image/compressed', image.rstrip('/') + '/compressed'),
                           (f'{name}/camera_info',
                            arg('camera_info').replace('{camera}', name))]
    else:
        remappings = [('image', arg('image')),
                      ('image/compressed', arg('image').rstrip('/') + '/compressed'),
                      ('camera_info', arg('camera_info')),
                      ('lidar', arg('lidar'))]
    depth_node = LifecycleNode(
        package=PACKAGE,
        executable='depth_node',
        name='densepred',
        namespace=arg('namespace'),
        parameters=parameters,
        remappings=remappings,
        arguments=['--ros-args', '--log-level', arg('log_level')],
        output='screen',
        emulate_tty=True,  # unbuffered, coloured log lines
    )
    actions = [depth_node]

    # 3. RViz with the package's view of the outputs.
    if arg('use_rviz').strip().lower() in ('true', '1', 'yes'):
        actions.append(Node(
            package='rviz2',
            executable='rviz2',
            name='densepred_rviz',
            namespace=arg('namespace'),
            arguments=['-d', arg('rviz_config')],
            output='screen',
        ))
    return actions


def _camera_names(text: str) -> list:
    """Parse the cameras argument: '[front, left, right]' or 'front,left,right' ('' = none)."""
    return [name.strip().strip('\'"') for name in text.strip().strip('[]').split(',')
            if name.strip().strip('\'"')]


def generate_launch_description() -> LaunchDescription:
    """Declare one argument per setting and start the node from them."""
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node; its output topics live under it.'),
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'depth.yaml']),
            description='YAML file of node parameters (uses the /** key).'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Depth checkpoint folder or hub id; overrides model.path of '
                        'params_file when not empty.'),
        DeclareLaunchArgument(
            'backend', default_value='',
            description='torch, onnxruntime or tensorrt (or per component); overrides '
                        'model.backend of params_file when not empty.'),
        DeclareLaunchArgument(
            'export_dir', default_value='',
            description='Folder of `densepred export` for model_path; overrides '
                        'model.export_dir of params_file when not empty.'),
        DeclareLaunchArgument(
            'image', default_value='/camera/image_raw',
            description='Input sensor_msgs/Image topic (rgb8, bgr8, rgba8, bgra8, mono8, '
                        'mono16).'),
        DeclareLaunchArgument(
            'image_transport', default_value='',
            description='raw (sensor_msgs/Image on `image`) or compressed '
                        '(sensor_msgs/CompressedImage, JPEG or PNG, on `image`/compressed); '
                        'overrides image_transport of params_file when not empty.'),
        DeclareLaunchArgument(
            'camera_info', default_value='/camera/camera_info',
            description='Input sensor_msgs/CameraInfo topic of the image; with cameras, a '
                        'pattern where {camera} stands for the camera name.'),
        DeclareLaunchArgument(
            'cameras', default_value='',
            description='Camera names served by one model, e.g. "[front, left, right]"; '
                        'empty = the single camera on `image` and `camera_info`.'),
        DeclareLaunchArgument(
            'camera_image', default_value='/{camera}/image_raw',
            description='With cameras: the input image topic of each camera, {camera} '
                        'standing for its name (compressed: this topic + /compressed).'),
        DeclareLaunchArgument(
            'lidar', default_value='/lidar/points',
            description='Input sensor_msgs/PointCloud2 lidar topic used for metric scale.'),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='Configure and activate the lifecycle node at start-up.'),
        DeclareLaunchArgument(
            'use_rviz', default_value='false',
            description='Start RViz with the depth, normals and point cloud displays.'),
        DeclareLaunchArgument(
            'rviz_config', default_value=PathJoinSubstitution([share, 'config', 'depth.rviz']),
            description='RViz configuration file.'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='Log level of the node: debug, info, warn, error or fatal.'),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_launch_setup)])
