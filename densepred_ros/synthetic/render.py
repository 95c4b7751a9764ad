"""Render RGB, metric depth and normals of a Scene for a pinhole camera (numpy only).

Shading: albedo from procedural textures × (hemispheric ambient + Lambert from one
directional light, optionally shadowed), then distance fog; rays that hit nothing get a
sky gradient. Depth and normals are exact (no texture or lighting enters them).
"""

import functools
from typing import Optional, Tuple

from densepred_ros.camera import CameraModel
from densepred_ros.synthetic.poses import check_transform
from densepred_ros.synthetic.primitives import rotate
from densepred_ros.synthetic.raycast import cast, cast_shadows
from densepred_ros.synthetic.scenes import Scene
from densepred_ros.synthetic.textures import albedo_many, material_table
import numpy as np

_SUN = np.array([1.0, 0.97, 0.90])


def make_camera(width: int = 640, height: int = 480, hfov_deg: float = 70.0) -> CameraModel:
    """Build a square-pixel pinhole CameraModel with a horizontal field of view.

    Args:
        width, height: image size in pixels.
        hfov_deg: horizontal field of view in degrees, in (0, 180).

    Returns:
        CameraModel with fx = fy = (width / 2) / tan(hfov / 2) and the principal point at
        the image centre ((width - 1) / 2, (height - 1) / 2).
    """
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f'width and height must be positive integers, got {width}×{height}')
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f'hfov_deg must be in (0, 180), got {hfov_deg!r}')
    focal = 0.5 * width / np.tan(np.radians(0.5 * hfov_deg))
    return CameraModel.pinhole(focal, focal, 0.5 * (width - 1), 0.5 * (height - 1),
                               int(width), int(height))


def camera_rays(camera: CameraModel) -> np.ndarray:
    """Return H×W×3 float64 unit ray directions through pixel centres, optical frame.

    The array is cached per intrinsics and read-only.
    """
    K = np.asarray(camera.K, dtype=np.float64)
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f'camera.K must be a 3×3 intrinsic matrix with fx, fy > 0, got {K!r}')
    D = np.asarray(camera.D, dtype=np.float64)
    if D.size and np.any(D != 0):
        raise ValueError(f'only undistorted cameras can be rendered, got D = {D.tolist()}')
    if camera.width < 1 or camera.height < 1:
        raise ValueError(f'camera size must be positive, got {camera.width}×{camera.height}')
    binning = (getattr(camera, 'binning_x', 0), getattr(camera, 'binning_y', 0))
    if max(binning) > 1 or any(getattr(camera, 'roi', (0, 0, 0, 0))):
        raise ValueError(f'binning and ROI are not supported, got binning {binning}, '
                         f'roi {camera.roi}')
    return _unit_rays(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                      float(K[0, 1]), int(camera.width), int(camera.height))


@functools.lru_cache(maxsize=8)
def _unit_rays(fx: float, fy: float, cx: float, cy: float, skew: float, width: int,
               height: int) -> np.ndarray:
    v = (np.arange(height) - cy) / fy
    rays = np.empty((height, width, 3))
    rays[..., 0] = (np.arange(width)[None, :] - cx - skew * v[:, None]) / fx
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    rays /= np.sqrt(rays[..., 0] ** 2 + rays[..., 1] ** 2 + 1.0)[..., None]
    rays.flags.writeable = False  # shared between calls
    return rays


def sky_colour(scene: Scene, directions: np.ndarray) -> np.ndarray:
    """Return N×3 RGB in [0, 1] of the sky seen along N×3 unit world directions."""
    up = np.clip(directions[:, 2], 0.0, 1.0) ** 0.6
    rgb = scene.sky_horizon * (1.0 - up[:, None]) + scene.sky_zenith * up[:, None]
    glow = np.clip(directions @ scene.light_direction, 0.0, 1.0) ** 200
    return np.clip(rgb + 0.6 * glow[:, None], 0.0, 1.0)


def _group_by_material(index: np.ndarray, patterns: np.ndarray):
    """Sort pixels into runs: sky first, then primitives grouped by texture pattern.

    Args:
        index: N int primitive index per pixel (-1 = sky).
        patterns: P pattern numbers of the primitives' materials.

    Returns:
        (order, bounds, rank): pixel order; bounds (P + 2) where each run starts in that
        order (run 0 = sky, run j + 1 = primitive rank[j]); rank, the primitives in run order.
    """
    count = len(patterns)
    rank = np.argsort(patterns, kind='stable')
    key_of = np.empty(count + 1, dtype=np.int32)
    key_of[rank] = np.arange(count)
    key_of[count] = -1  # index -1 (sky) reads the last entry
    keys = key_of[index]
    if count < 2 ** 15 - 1:
        keys = keys.astype(np.int16)  # radix sort
    order = np.argsort(keys, kind='stable')
    bounds = np.searchsorted(keys[order], np.arange(-1, count + 1))
    return order, bounds, rank


def render_frame(scene: Scene, camera: CameraModel, T_world_cam: np.ndarray,
                 shadows: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a scene from a camera pose.

    Args:
        scene: the scene.
        camera: an undistorted pinhole CameraModel (``K`` is used; ``D`` must be zero).
        T_world_cam: 4×4 pose of the camera optical frame (x right, y down, z forward)
            in the world.
        shadows: override ``scene.shadows``.

    Returns:
        (rgb, depth, normals): rgb H×W×3 uint8; depth H×W float32 metres along the optical
        axis, +inf where the ray hits nothing (sky); normals H×W×3 float32 unit vectors in
        the optical frame facing the camera (dot(n, ray) < 0), NaN where nothing is hit.
    """
    T_world_cam = check_transform(T_world_cam, 'T_world_cam')
    rays_cam = camera_rays(camera)
    shape = rays_cam.shape[:2]
    rotation, origin = T_world_cam[:3, :3], T_world_cam[:3, 3]
    rays = rotate(rays_cam, rotation).reshape(-1, 3)
    distance, index = cast(scene.primitives, origin, rays.reshape(shape + (3,)))

    # Shade in runs: sky first, then one contiguous run per primitive, grouped by pattern.
    primitives = scene.primitives
    table = material_table([p.material for p in primitives])
    index = index.ravel()
    order, bounds, rank = _group_by_material(index, table['pattern'])
    d = rays[order]
    t = distance.ravel()[order]
    surface = slice(bounds[1], None)
    points = origin + t[surface, None] * d[surface]
    normals = np.empty_like(points)
    coordinates = np.empty_like(points)
    for j in np.flatnonzero(np.diff(bounds[1:])):
        rows = slice(bounds[j + 1] - bounds[1], bounds[j + 2] - bounds[1])
        primitive = primitives[rank[j]]
        normals[rows] = primitive.normals(points[rows])
        coordinates[rows] = primitive.local(points[rows])
    colours = albedo_many(None, index[order[surface]], coordinates, table)
    facing = np.where(np.einsum('ij,ij->i', normals, d[surface]) > 0, -1.0, 1.0)
    normals *= facing[:, None]

    light = scene.light_direction
    lambert = np.maximum(normals @ light, 0.0)
    if scene.shadows if shadows is None else shadows:
        hits = order[surface]
        grid_points = np.zeros_like(rays)
        grid_points[hits] = points + normals * (1e-3 + 1e-4 * t[surface])[:, None]
        valid = np.zeros(len(rays), dtype=bool)
        valid[hits] = lambert > 0
        blocked = cast_shadows(scene.primitives, grid_points.reshape(shape + (3,)),
                               valid.reshape(shape), light)
        lambert[blocked.ravel()[hits]] = 0.0
    shade = (scene.ambient * (0.85 + 0.15 * normals[:, 2]))[:, None] \
        + ((1.0 - scene.ambient) * lambert)[:, None] * _SUN

    rgb = np.empty_like(rays)
    rgb[surface] = colours * shade
    if np.isfinite(scene.fog_distance):
        fog = np.exp(-t[surface] / scene.fog_distance)[:, None]
        rgb[surface] = rgb[surface] * fog + scene.sky_horizon * (1.0 - fog)
    rgb[:bounds[1]] = sky_colour(scene, d[:bounds[1]])
    depth = np.full(len(rays), np.inf, dtype=np.float32)
    depth[surface] = t[surface] * rays_cam.reshape(-1, 3)[order[surface], 2]
    normals_cam = np.full(rays.shape, np.nan, dtype=np.float32)
    normals_cam[surface] = rotate(normals, rotation.T)

    # Back to pixel order.
    image = np.empty(rays.shape, dtype=np.uint8)
    image[order] = (rgb * 255.0 + 0.5).clip(0.0, 255.0)
    depth[order] = depth.copy()
    normals_cam[order] = normals_cam.copy()
    return image.reshape(shape + (3,)), depth.reshape(shape), normals_cam.reshape(shape + (3,))
