"""Frames and sequences: a camera and a lidar on one rig moving through a generated scene."""

from dataclasses import dataclass, replace
from typing import Iterator, List, Optional, Sequence

from densepred_ros.camera import CameraModel
from densepred_ros.synthetic.lidar import LidarConfig, simulate_lidar
from densepred_ros.synthetic.poses import (
    cam_lidar_transform, DEFAULT_LIDAR_OFFSET, optical_from_body, rig_lidar_transform)
from densepred_ros.synthetic.render import make_camera, render_frame
from densepred_ros.synthetic.scenes import DEFAULT_STREET_LENGTH, make_scene, max_speed, Scene
from densepred_ros.synthetic.styles import DEFAULT, get_style, Style
import numpy as np


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One generated frame with exact ground truth.

    Attributes:
        rgb: H×W×3 uint8 image.
        depth: H×W float32 metres along the optical axis; +inf where nothing is hit (sky).
        normals: H×W×3 float32 unit normals in the optical frame, facing the camera; NaN sky.
        camera: the pinhole CameraModel the image was rendered with (H×W).
        lidar_points: N×3 float32 lidar returns in the lidar frame (x fwd, y left, z up), m.
        T_cam_lidar: 4×4 float64, p_cam = T_cam_lidar @ p_lidar.
        stamp: seconds.
        T_world_cam: 4×4 float64 pose of the camera optical frame in the world (z up).
    """

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    camera: CameraModel
    lidar_points: np.ndarray
    T_cam_lidar: np.ndarray
    stamp: float
    T_world_cam: np.ndarray

    @property
    def T_world_lidar(self) -> np.ndarray:
        """4×4 float64 pose of the lidar frame in the world."""
        return self.T_world_cam @ self.T_cam_lidar


def _lidar_config(beams: int, lidar: Optional[LidarConfig]) -> Optional[LidarConfig]:
    """Return the lidar configuration, or None for no lidar (beams = 0)."""
    if lidar is None:
        return None if beams == 0 else LidarConfig(beams=beams)
    if not isinstance(lidar, LidarConfig):
        raise ValueError(f'lidar must be a LidarConfig, got {type(lidar).__name__}')
    return lidar


def _street_length(kind: str, duration: float) -> Optional[float]:
    """Street length that keeps 100 m of street ahead of the rig after ``duration`` s."""
    if kind != 'outdoor':
        return None
    return max(DEFAULT_STREET_LENGTH, max_speed(kind) * duration + 100.0)


def render_rig(scene: Scene, T_world_rig: np.ndarray, camera: CameraModel,
               lidar: Optional[LidarConfig], T_rig_lidar: np.ndarray, stamp: float,
               rng: np.random.Generator, shadows: Optional[bool] = None) -> SyntheticFrame:
    """Render the camera and the lidar of a rig at one pose.

    Args:
        scene: the scene.
        T_world_rig: 4×4 rig (body) pose; the camera's optical frame sits at its origin.
        camera: pinhole camera to render.
        lidar: lidar configuration; None simulates no lidar (``lidar_points`` is 0×3).
        T_rig_lidar: 4×4 lidar mount in the rig frame (``rig_lidar_transform``).
        stamp: frame time, seconds.
        rng: generator for lidar noise and dropouts.
        shadows: override ``scene.shadows``.
    """
    T_world_cam = optical_from_body(T_world_rig)
    rgb, depth, normals = render_frame(scene, camera, T_world_cam, shadows)
    if lidar is None:
        points = np.zeros((0, 3), dtype=np.float32)
    else:
        points = simulate_lidar(scene, T_world_rig @ T_rig_lidar, lidar, rng)
    return SyntheticFrame(rgb=rgb, depth=depth, normals=normals, camera=camera,
                          lidar_points=points, T_cam_lidar=cam_lidar_transform(T_rig_lidar),
                          stamp=float(stamp), T_world_cam=T_world_cam)


def make_frame(seed: int, kind: str = 'indoor', width: int = 640, height: int = 480,
               beams: int = 32, hfov_deg: float = 70.0, time: float = 0.0,
               lidar: Optional[LidarConfig] = None,
               lidar_offset: Sequence[float] = DEFAULT_LIDAR_OFFSET,
               lidar_rpy: Sequence[float] = (0.0, 0.0, 0.0),
               shadows: Optional[bool] = None, style: str = DEFAULT) -> SyntheticFrame:
    """Generate one frame of a random scene.

    Args:
        seed: non-negative integer; the scene, the pose and the lidar noise follow from it.
        kind: 'indoor' or 'outdoor'.
        width, height: image size in pixels.
        beams: lidar beam count (16, 32 or 64 use presets; 0 = no lidar, which saves time
            when only images are needed); ignored when ``lidar`` is given.
        hfov_deg: camera horizontal field of view, degrees.
        time: where on the scene's rig trajectory to take the frame, seconds (also the stamp).
        lidar: full lidar configuration (default ``LidarConfig(beams=beams)``: 0.2°, 100 m,
            2 cm range noise, no dropouts).
        lidar_offset: lidar position in the rig frame (x fwd, y left, z up) relative to the
            camera, metres.
        lidar_rpy: lidar roll, pitch, yaw relative to the rig, radians.
        shadows: override the scene's shadow setting.
        style: a look and camera from ``styles.STYLES`` ('default': the generator's own).
    """
    if not 0.0 <= time < np.inf:
        raise ValueError(f'time must be >= 0 seconds, got {time!r}')
    look = get_style(style)
    scene = look.scene(make_scene(seed, kind, _street_length(kind, time)))
    return _styled(look, render_rig(
        scene, look.pose(scene.trajectory.pose(float(time))),
        make_camera(width, height, look.hfov(hfov_deg)), _lidar_config(beams, lidar),
        rig_lidar_transform(lidar_offset, lidar_rpy), time, np.random.default_rng([seed, 0]),
        shadows))


def _styled(look: Style, frame: SyntheticFrame) -> SyntheticFrame:
    """Return the frame with the style's colour grade (the same frame for 'default')."""
    return frame if look.name == DEFAULT else replace(frame, rgb=look.image(frame.rgb))


def iter_sequence(seed: int, n_frames: int, kind: str = 'outdoor', width: int = 640,
                  height: int = 480, beams: int = 32, rate_hz: float = 10.0,
                  hfov_deg: float = 70.0, lidar: Optional[LidarConfig] = None,
                  lidar_offset: Sequence[float] = DEFAULT_LIDAR_OFFSET,
                  lidar_rpy: Sequence[float] = (0.0, 0.0, 0.0), start_stamp: float = 0.0,
                  shadows: Optional[bool] = None,
                  style: str = DEFAULT) -> Iterator[SyntheticFrame]:
    """Yield the frames of ``make_sequence`` one at a time (same arguments)."""
    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f'n_frames must be a positive integer, got {n_frames!r}')
    if not 0.0 < rate_hz < np.inf:
        raise ValueError(f'rate_hz must be positive, got {rate_hz!r}')
    look = get_style(style)
    scene = look.scene(make_scene(seed, kind, _street_length(kind, (n_frames - 1) / rate_hz)))
    camera = make_camera(width, height, look.hfov(hfov_deg))
    config = _lidar_config(beams, lidar)
    T_rig_lidar = rig_lidar_transform(lidar_offset, lidar_rpy)
    for i in range(int(n_frames)):
        t = i / rate_hz
        yield _styled(look, render_rig(scene, look.pose(scene.trajectory.pose(t)), camera,
                                       config, T_rig_lidar, start_stamp + t,
                                       np.random.default_rng([seed, i]), shadows))


def make_sequence(seed: int, n_frames: int, kind: str = 'outdoor', width: int = 640,
                  height: int = 480, beams: int = 32, rate_hz: float = 10.0,
                  hfov_deg: float = 70.0, lidar: Optional[LidarConfig] = None,
                  lidar_offset: Sequence[float] = DEFAULT_LIDAR_OFFSET,
                  lidar_rpy: Sequence[float] = (0.0, 0.0, 0.0), start_stamp: float = 0.0,
                  shadows: Optional[bool] = None,
                  style: str = DEFAULT) -> List[SyntheticFrame]:
    """Generate a short sequence: the rig moves smoothly, frames at ``rate_hz``.

    Outdoors the rig drives forward along the street; indoors it walks slowly back and
    forth while panning. The lidar is rigidly mounted, so T_cam_lidar is the same in every
    frame. Frame i has stamp ``start_stamp + i / rate_hz`` and is taken at that time on the
    scene's trajectory.

    Args:
        seed: non-negative integer seed.
        n_frames: number of frames (>= 1).
        kind: 'outdoor' or 'indoor'.
        width, height, beams, hfov_deg, lidar, lidar_offset, lidar_rpy, shadows, style: as
            in ``make_frame``.
        rate_hz: frame rate, Hz.
        start_stamp: stamp of the first frame, seconds.
    """
    return list(iter_sequence(seed, n_frames, kind, width, height, beams, rate_hz, hfov_deg,
                              lidar, lidar_offset, lidar_rpy, start_stamp, shadows, style))
