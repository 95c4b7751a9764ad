"""A simulated spinning multi-beam lidar (numpy only).

Lidar frame (REP 103): x forward, y left, z up, metres. Beams are spread evenly over the
vertical field of view; each beam fires at every ``horizontal_resolution_deg`` over 360°.
The sweep is instantaneous (no motion distortion). A return is the first surface along
the ray, within [min_range, max_range], with Gaussian range noise along the ray and
random dropouts; rays hitting nothing (sky) or out of range give no point.
"""

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from densepred_ros.synthetic.poses import check_transform
from densepred_ros.synthetic.primitives import rotate
from densepred_ros.synthetic.raycast import cast
from densepred_ros.synthetic.scenes import Scene
import numpy as np

# Default vertical field of view (lowest, highest elevation in degrees) per beam count,
# after the Velodyne VLP-16, HDL-32E and HDL-64E.
VERTICAL_FOV_PRESETS = {16: (-15.0, 15.0), 32: (-30.0, 10.0), 64: (-25.0, 3.0)}


@dataclass(frozen=True)
class LidarConfig:
    """Lidar intrinsics and noise.

    Attributes:
        beams: number of laser beams (rings), >= 1.
        vertical_fov_deg: (lowest, highest) beam elevation in degrees; None takes the preset
            for 16, 32 or 64 beams (VERTICAL_FOV_PRESETS).
        horizontal_resolution_deg: azimuth step in degrees, (0, 360].
        max_range: farthest return, metres.
        min_range: nearest return, metres (>= 0, < max_range).
        range_noise_sigma: standard deviation of the Gaussian range noise, metres (>= 0).
        dropout: fraction of returns dropped at random, in [0, 1).
    """

    beams: int = 32
    vertical_fov_deg: Optional[Tuple[float, float]] = None
    horizontal_resolution_deg: float = 0.2
    max_range: float = 100.0
    min_range: float = 0.3
    range_noise_sigma: float = 0.02
    dropout: float = 0.0

    def __post_init__(self) -> None:
        """Validate the fields."""
        if isinstance(self.beams, bool) or int(self.beams) != self.beams or self.beams < 1:
            raise ValueError(f'beams must be a positive integer, got {self.beams!r}')
        if self.vertical_fov_deg is None and self.beams not in VERTICAL_FOV_PRESETS:
            raise ValueError(f'no preset vertical field of view for {self.beams} beams '
                             f'(presets: {sorted(VERTICAL_FOV_PRESETS)}); set vertical_fov_deg')
        low, high = self.fov
        if not -90.0 <= low <= high <= 90.0 or (self.beams > 1 and low == high):
            raise ValueError(f'vertical_fov_deg must satisfy -90 <= low < high <= 90, '
                             f'got {self.vertical_fov_deg!r}')
        if not 0.0 < self.horizontal_resolution_deg <= 360.0:
            raise ValueError(f'horizontal_resolution_deg must be in (0, 360], '
                             f'got {self.horizontal_resolution_deg!r}')
        if not 0.0 <= self.min_range < self.max_range or not np.isfinite(self.max_range):
            raise ValueError(f'need 0 <= min_range < max_range < inf, got '
                             f'min_range={self.min_range!r}, max_range={self.max_range!r}')
        if not self.range_noise_sigma >= 0.0:
            raise ValueError(f'range_noise_sigma must be >= 0, got {self.range_noise_sigma!r}')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout!r}')

    @property
    def fov(self) -> Tuple[float, float]:
        """(lowest, highest) beam elevation in degrees, preset applied."""
        if self.vertical_fov_deg is None:
            return VERTICAL_FOV_PRESETS[int(self.beams)]
        low, high = self.vertical_fov_deg
        return float(low), float(high)

    def elevations_deg(self) -> np.ndarray:
        """Return the beam elevations in degrees (float64, ascending, length ``beams``)."""
        low, high = self.fov
        return np.linspace(low, high, int(self.beams)) if self.beams > 1 else np.array([low])

    def azimuths_deg(self) -> np.ndarray:
        """Return the firing azimuths in degrees from lidar +x towards +y (float64)."""
        count = max(1, int(round(360.0 / self.horizontal_resolution_deg)))
        return np.arange(count) * (360.0 / count)

    def directions(self) -> np.ndarray:
        """Return beams × azimuths × 3 float64 unit ray directions in the lidar frame."""
        elevation = np.radians(self.elevations_deg())[:, None]
        azimuth = np.radians(self.azimuths_deg())[None, :]
        return np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth),
                                            np.cos(elevation) * np.sin(azimuth),
                                            np.sin(elevation)), axis=-1)


def simulate_lidar(scene: Scene, T_world_lidar: np.ndarray, config: LidarConfig,
                   rng: Optional[np.random.Generator] = None, return_rings: bool = False
                   ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Simulate one full sweep.

    Args:
        scene: the scene.
        T_world_lidar: 4×4 pose of the lidar frame in the world.
        config: beams, resolution, range limits and noise.
        rng: generator for noise and dropouts; None uses ``default_rng(0)``.
        return_rings: also return each point's beam index.

    Returns:
        N×3 float32 points in the lidar frame, metres, ordered by azimuth then beam (as a
        spinning sensor's driver emits them); with ``return_rings``, also N uint16 beam
        indices (0 = lowest beam).
    """
    T_world_lidar = check_transform(T_world_lidar, 'T_world_lidar')
    if not isinstance(config, LidarConfig):
        raise ValueError(f'config must be a LidarConfig, got {type(config).__name__}')
    rng = np.random.default_rng(0) if rng is None else rng
    local = config.directions()
    rotation, origin = T_world_lidar[:3, :3], T_world_lidar[:3, 3]
    distance, _ = cast(scene.primitives, origin, rotate(local, rotation), tile=(8, 32),
                       max_distance=config.max_range)
    # Azimuth-major order.
    distance = distance.T.ravel()
    local = local.transpose(1, 0, 2).reshape(-1, 3)
    rings = np.tile(np.arange(config.beams, dtype=np.uint16), len(distance) // config.beams)
    keep = (distance >= config.min_range) & (distance <= config.max_range)
    if config.dropout > 0:
        keep &= rng.random(len(distance)) >= config.dropout
    measured = distance[keep]
    if config.range_noise_sigma > 0:
        measured = measured + rng.normal(0.0, config.range_noise_sigma, len(measured))
        measured = np.maximum(measured, 0.0)
    points = (local[keep] * measured[:, None]).astype(np.float32)
    if return_rings:
        return points, rings[keep]
    return points
