"""Rigid transforms, camera optical poses and the sensor rig (numpy only).

World frame: right-handed, metres, z up (x and y horizontal). Body/rig frame (REP 103):
x forward, y left, z up. Camera optical frame (REP 103): x right, y down, z forward, so
optical x = -body y, optical y = -body z, optical z = body x. Poses are 4×4 float64
homogeneous matrices ``T_a_b`` taking points from frame b into frame a.
"""

from typing import Sequence

import numpy as np

# Columns are the optical axes expressed in the body frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])

# Default lidar position in the rig frame: 0.3 m behind, 0.1 m left, 0.25 m above the camera.
DEFAULT_LIDAR_OFFSET = (-0.3, 0.1, 0.25)


def rotation_from_ypr(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Return the 3×3 rotation Rz(yaw) @ Ry(pitch) @ Rx(roll) (radians, REP 103).

    With a body frame (x forward, y left, z up): yaw > 0 turns left, pitch > 0 tilts the
    nose down, roll > 0 lowers the right side.
    """
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def make_transform(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """Build a 4×4 float64 transform from a 3×3 rotation and a (3,) translation in metres."""
    rotation = np.asarray(rotation, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64)
    if rotation.shape != (3, 3) or translation.shape != (3,):
        raise ValueError(f'need a 3×3 rotation and a (3,) translation, got shapes '
                         f'{rotation.shape} and {translation.shape}')
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = translation
    return transform


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Invert a 4×4 rigid transform."""
    transform = check_transform(transform)
    rotation = transform[:3, :3].T
    return make_transform(rotation, -rotation @ transform[:3, 3])


def check_transform(transform: np.ndarray, name: str = 'transform') -> np.ndarray:
    """Return ``transform`` as float64 4×4 or raise ValueError if it is not rigid."""
    array = np.asarray(transform, dtype=np.float64)
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise ValueError(f'{name} must be a finite 4×4 matrix, got shape {array.shape}')
    rotation = array[:3, :3]
    if (not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
            or np.linalg.det(rotation) < 0 or not np.allclose(array[3], [0, 0, 0, 1])):
        raise ValueError(f'{name} must be a rigid transform (rotation + translation), '
                         f'got {array.tolist()}')
    return array


def body_pose(position: Sequence[float], yaw: float, pitch: float = 0.0,
              roll: float = 0.0) -> np.ndarray:
    """Return T_world_body for a body at ``position`` (metres) with yaw/pitch/roll (radians)."""
    return make_transform(rotation_from_ypr(yaw, pitch, roll), position)


def optical_from_body(T_world_body: np.ndarray) -> np.ndarray:
    """Return T_world_optical for a camera whose body frame has pose ``T_world_body``."""
    T_body_optical = make_transform(R_BODY_OPTICAL, (0.0, 0.0, 0.0))
    return check_transform(T_world_body, 'T_world_body') @ T_body_optical


def camera_pose(position: Sequence[float], yaw: float, pitch: float = 0.0,
                roll: float = 0.0) -> np.ndarray:
    """Return T_world_cam (optical frame) for a camera at ``position`` looking along yaw.

    yaw = 0 looks along world +x; pitch > 0 looks down (radians).
    """
    return optical_from_body(body_pose(position, yaw, pitch, roll))


def rig_lidar_transform(offset: Sequence[float] = DEFAULT_LIDAR_OFFSET,
                        rpy: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Return T_rig_lidar: the lidar frame in the rig (body) frame.

    Args:
        offset: lidar origin in the rig frame (x forward, y left, z up), metres; the camera
            sits at the rig origin.
        rpy: lidar roll, pitch, yaw relative to the rig, radians.
    """
    roll, pitch, yaw = (float(v) for v in rpy)
    return make_transform(rotation_from_ypr(yaw, pitch, roll), offset)


def cam_lidar_transform(T_rig_lidar: np.ndarray) -> np.ndarray:
    """Return T_cam_lidar (lidar points into the camera optical frame) for a rig mount."""
    T_rig_cam = make_transform(R_BODY_OPTICAL, (0.0, 0.0, 0.0))
    return invert_transform(T_rig_cam) @ check_transform(T_rig_lidar, 'T_rig_lidar')
