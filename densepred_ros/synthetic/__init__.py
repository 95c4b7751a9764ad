"""Generated scenes with exact ground truth: RGB, metric depth, normals and lidar sweeps.

Numpy-only ray casting of planes, boxes, spheres and vertical cylinders with procedural
textures, Lambert lighting, shadows and a sky; a camera and a spinning lidar on one rig.
Used by tests, the demo, benchmarks and for training tiny models.

Frames (see ``poses``): world z up; rig/body and lidar x forward, y left, z up; camera
optical frame x right, y down, z forward. ``T_a_b`` maps points from frame b to frame a.

Example:
    frame = make_frame(seed=0, kind='outdoor', beams=64)
    frames = make_sequence(seed=1, n_frames=10, kind='indoor', rate_hz=10.0)
"""

from densepred_ros.synthetic.frames import (
    iter_sequence, make_frame, make_sequence, render_rig, SyntheticFrame)
from densepred_ros.synthetic.lidar import LidarConfig, simulate_lidar, VERTICAL_FOV_PRESETS
from densepred_ros.synthetic.poses import (
    body_pose, cam_lidar_transform, camera_pose, DEFAULT_LIDAR_OFFSET, invert_transform,
    make_transform, optical_from_body, R_BODY_OPTICAL, rig_lidar_transform, rotation_from_ypr)
from densepred_ros.synthetic.primitives import Box, Cylinder, Plane, Sphere, yaw_rotation
from densepred_ros.synthetic.render import camera_rays, make_camera, render_frame
from densepred_ros.synthetic.scenes import KINDS, make_scene, RigTrajectory, Scene
from densepred_ros.synthetic.styles import get_style, Style, STYLES
from densepred_ros.synthetic.textures import Material, PATTERNS

__all__ = [
    'Box', 'body_pose', 'cam_lidar_transform', 'camera_pose', 'camera_rays', 'Cylinder',
    'DEFAULT_LIDAR_OFFSET', 'invert_transform', 'iter_sequence', 'KINDS', 'LidarConfig',
    'make_camera', 'make_frame', 'make_scene', 'make_sequence', 'make_transform', 'Material',
    'optical_from_body', 'PATTERNS', 'Plane', 'R_BODY_OPTICAL', 'render_frame', 'render_rig',
    'RigTrajectory', 'rig_lidar_transform', 'rotation_from_ypr', 'Scene', 'simulate_lidar',
    'Sphere', 'Style', 'STYLES', 'get_style', 'SyntheticFrame', 'VERTICAL_FOV_PRESETS',
    'yaw_rotation',
]
