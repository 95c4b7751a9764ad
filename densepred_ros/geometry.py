"""Points and normals from metric depth, colour maps and colour packing (numpy only).

Conventions: depth images follow REP 118 (float32 metres along the optical axis, NaN =
unknown, +inf = beyond range); points and normals are in the camera optical frame (REP 103:
x right, y down, z forward), metres; pixel (u, v) has its centre at integer coordinates.
Back-projection uses the rectified intrinsics in ``camera.P[:3, :3]``, like depth_image_proc.
"""

import math
from typing import Optional, Sequence, Tuple

from densepred_ros.camera import CameraModel
import numpy as np

Color = Tuple[int, int, int]

# Hand-picked control points (sRGB, 0-255), interpolated linearly into 256-entry tables.
# 'spectral': a diverging rainbow, warm for small values (near) to cool for large (far).
# 'heat': black → purple → red → orange → yellow → near-white, luminance strictly rising.
_CONTROL_POINTS = {
    'spectral': (
        (150, 0, 60), (212, 52, 74), (240, 110, 62), (250, 175, 90), (252, 230, 145),
        (246, 250, 180), (195, 232, 160), (120, 204, 165), (60, 150, 185), (80, 90, 170),
        (95, 50, 150),
    ),
    'heat': (
        (0, 0, 4), (40, 10, 90), (110, 20, 120), (180, 40, 100), (230, 80, 60),
        (250, 140, 30), (250, 200, 50), (252, 250, 180),
    ),
    'gray': ((0, 0, 0), (255, 255, 255)),
}


def _delivered_camera(depth: np.ndarray, camera: CameraModel) -> CameraModel:
    """Check a depth image against the camera and return the model of the delivered image."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be a H×W array, got shape {depth.shape}')
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'depth must hold float metres, got dtype {depth.dtype}')
    cam = camera.effective()
    if depth.shape != (cam.height, cam.width):
        raise ValueError(f'depth shape {depth.shape} does not match the camera resolution '
                         f'(height, width) = ({cam.height}, {cam.width})')
    if not cam.p_valid:
        raise ValueError('the camera has a ROI on a distorted image, so P does not describe '
                         'the delivered (rectified) image')
    return cam


def depth_to_points(depth: np.ndarray, camera: CameraModel, stride: int = 1,
                    max_depth: float = math.inf) -> np.ndarray:
    """Back-project a metric depth image into an organized point image.

    Args:
        depth: H×W float depth in metres along the optical axis (REP 118), at the resolution
            of the image the camera delivers (``camera.effective()``: ROI and binning
            applied; camera.height × camera.width when there are none).
        camera: camera model; the intrinsics are P[:3, :3] of the rectified image.
        stride: decimation step ≥ 1; pixels 0, stride, 2·stride… are sampled on both axes.
        max_depth: points with depth above this (metres) become NaN.

    Returns:
        ceil(H/stride)×ceil(W/stride)×3 float32 points (x, y, z) in metres in the optical
        frame: x = (u − cx)·z/fx, y = (v − cy)·z/fy. NaN where depth is NaN, ±inf, ≤ 0 or
        above max_depth.

    Raises:
        ValueError: bad shape, dtype, stride or max_depth, or a camera whose P does not
            describe the delivered image.
    """
    depth = np.asarray(depth)
    cam = _delivered_camera(depth, camera)
    if int(stride) != stride or stride < 1:
        raise ValueError(f'stride must be an integer ≥ 1, got {stride!r}')
    if not max_depth > 0:
        raise ValueError(f'max_depth must be > 0, got {max_depth!r}')
    stride = int(stride)
    fx, fy, cx, cy = cam.intrinsics(rectified=True)
    z = np.array(depth[::stride, ::stride], dtype=np.float32)
    u = np.arange(0, depth.shape[1], stride, dtype=np.float64)
    v = np.arange(0, depth.shape[0], stride, dtype=np.float64)
    x_per_z = ((u - cx) / fx).astype(np.float32)
    y_per_z = ((v - cy) / fy).astype(np.float32)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(z) & (z > 0) & (z <= max_depth)
    np.copyto(z, np.nan, where=~valid)  # NaN depth then gives NaN x and y too
    points = np.empty(z.shape + (3,), dtype=np.float32)
    np.multiply(z, x_per_z[None, :], out=points[..., 0])
    np.multiply(z, y_per_z[:, None], out=points[..., 1])
    points[..., 2] = z
    return points


def _along(axis: int, start: Optional[int], stop: Optional[int]) -> tuple:
    """Index selecting start:stop along axis 0 or 1 of a 2-D array."""
    part = slice(start, stop)
    return (part,) if axis == 0 else (slice(None), part)


def _tangent(x: np.ndarray, y: np.ndarray, z: np.ndarray, axis: int,
             max_rel_jump: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-pixel tangents (tx, ty, tz planes) of H×W point planes along axis (1: u).

    Of the backward and forward differences P[i] − P[i−1] and P[i+1] − P[i], the one with the
    smaller depth change is used, so a pixel next to a depth edge takes its tangent from its
    own surface. NaN where both neighbours are missing or jump by more than
    ``max_rel_jump``·z.
    """
    if z.shape[axis] < 2:
        return tuple(np.full(z.shape, np.nan, dtype=z.dtype) for _ in range(3))
    first, last, inner = _along(axis, 0, 1), _along(axis, -1, None), _along(axis, 1, -1)
    head, tail = _along(axis, None, -1), _along(axis, 1, None)
    dz = np.diff(z, axis=axis)
    with np.errstate(invalid='ignore'):
        jump = np.abs(dz)
        jump_b, jump_f = jump[head], jump[tail]
        use_forward = (jump_f < jump_b) | np.isnan(jump_b)  # interior pixels 1 … n−2
        best = np.empty(z.shape, dtype=z.dtype)
        best[first], best[last] = jump[first], jump[last]
        np.fmin(jump_b, jump_f, out=best[inner])
        unusable = ~(best <= max_rel_jump * z)  # True for NaN too
    tangents = []
    for diff in (np.diff(x, axis=axis), np.diff(y, axis=axis), dz):
        t = np.empty(z.shape, dtype=z.dtype)
        t[first], t[last] = diff[first], diff[last]
        np.copyto(t[inner], np.where(use_forward, diff[tail], diff[head]))
        np.copyto(t, np.nan, where=unusable)
        tangents.append(t)
    return tuple(tangents)


def normals_from_depth(depth: np.ndarray, camera: CameraModel,
                       max_rel_jump: float = 0.05) -> np.ndarray:
    """Estimate surface normals from a metric depth image.

    The normal at a pixel is the cross product of its horizontal and vertical tangents, each
    taken from the neighbour (left/right, up/down) whose depth is closer to the pixel's own.
    A neighbour whose depth differs by more than ``max_rel_jump``·z counts as lying across a
    depth discontinuity; with no usable neighbour on an axis the normal is NaN.

    Args:
        depth: H×W float depth in metres (REP 118), at the camera's resolution.
        camera: camera model; intrinsics from P[:3, :3].
        max_rel_jump: largest relative depth change to a neighbour pixel that still counts as
            the same surface. A plane tilted by θ from fronto-parallel changes depth by about
            tan(θ)/f per pixel (f in pixels), so 0.05 keeps planes up to ≈ 87° at f = 500.

    Returns:
        H×W×3 float32 unit normals in the optical frame, oriented towards the camera
        (dot(n, p) < 0 for the surface point p), NaN where unknown.

    Raises:
        ValueError: bad shape, dtype or threshold (see :func:`depth_to_points`).
    """
    if not max_rel_jump > 0:
        raise ValueError(f'max_rel_jump must be > 0, got {max_rel_jump!r}')
    points = depth_to_points(depth, camera)
    planes = [np.ascontiguousarray(points[..., c]) for c in range(3)]
    ux, uy, uz = _tangent(*planes, axis=1, max_rel_jump=max_rel_jump)
    vx, vy, vz = _tangent(*planes, axis=0, max_rel_jump=max_rel_jump)
    normals = np.empty(points.shape, dtype=np.float32)
    nx, ny, nz = (normals[..., c] for c in range(3))
    np.subtract(uy * vz, uz * vy, out=nx)
    np.subtract(uz * vx, ux * vz, out=ny)
    np.subtract(ux * vy, uy * vx, out=nz)
    with np.errstate(invalid='ignore', divide='ignore'):
        length = np.sqrt(nx * nx + ny * ny + nz * nz)
        # Flip normals that face away from the camera: sign(n·p) decides, length scales.
        facing = nx * planes[0] + ny * planes[1] + nz * planes[2]
        scale = np.where(facing > 0, -1.0, 1.0).astype(np.float32) / length
        np.copyto(scale, np.nan, where=~(length > 0))  # NaN scale makes the normal NaN
        normals *= scale[..., None]
    return normals


def colormap_lut(name: str = 'spectral') -> np.ndarray:
    """Return a 256×3 uint8 colour table.

    Args:
        name: 'spectral' (diverging rainbow, warm → cool), 'heat' (luminance rises
            monotonically from black to near-white) or 'gray'.

    Raises:
        ValueError: unknown name.
    """
    if name not in _CONTROL_POINTS:
        raise ValueError(f'unknown colour map {name!r}; choose one of {sorted(_CONTROL_POINTS)}')
    control = np.asarray(_CONTROL_POINTS[name], dtype=np.float64)
    knots = np.linspace(0.0, 1.0, len(control))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, knots, control[:, c]) for c in range(3)], axis=-1)
    return np.round(lut).astype(np.uint8)


def colorize_depth(depth: np.ndarray, vmin: Optional[float] = None,
                   vmax: Optional[float] = None, invalid_color: Color = (0, 0, 0),
                   cmap: str = 'spectral',
                   percentiles: Sequence[float] = (2.0, 98.0)) -> np.ndarray:
    """Map depth to colours for display.

    Values are scaled linearly from vmin (first colour of the map: red for 'spectral') to
    vmax (last colour: violet-blue) and clipped outside.

    Args:
        depth: H×W float depth (any unit; metres for metric depth).
        vmin, vmax: display range; each one left as None is taken from the given
            percentiles of the finite values (robust to outliers).
        invalid_color: RGB colour for NaN and ±inf pixels.
        cmap: a name accepted by :func:`colormap_lut`.
        percentiles: lower and upper percentile (0-100) for the automatic range.

    Returns:
        H×W×3 uint8 RGB image.

    Raises:
        ValueError: bad shape, colour, range or map name.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f'depth must be a H×W array, got shape {depth.shape}')
    invalid = np.asarray(invalid_color)
    if invalid.shape != (3,) or (invalid < 0).any() or (invalid > 255).any():
        raise ValueError(f'invalid_color must be three values in 0..255, got {invalid_color!r}')
    lut = colormap_lut(cmap)
    finite = np.isfinite(depth)
    if finite.any() and (vmin is None or vmax is None):
        low, high = np.percentile(depth[finite], percentiles)
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    vmin = 0.0 if vmin is None else float(vmin)
    vmax = 1.0 if vmax is None else float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f'need finite vmin ≤ vmax, got vmin={vmin!r}, vmax={vmax!r}')
    scale = 255.0 / max(vmax - vmin, 1e-12)
    with np.errstate(invalid='ignore'):
        index = np.clip((depth - vmin) * scale, 0.0, 255.0)
    index[~finite] = 0
    rgb = lut[np.round(index).astype(np.intp)]
    rgb[~finite] = invalid.astype(np.uint8)
    return rgb


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Map optical-frame unit normals to colours for display.

    rgb = (n_x, −n_y, −n_z)·0.5 + 0.5, scaled to 0..255: a wall facing the camera
    (n = (0, 0, −1)) is lavender blue (128, 128, 255), a floor (n = (0, −1, 0), i.e. up) is
    light green (128, 255, 128) and a surface facing right (n = (1, 0, 0)) is pink-red
    (255, 128, 128).

    Args:
        normals: H×W×3 float unit normals in the optical frame, NaN where unknown.

    Returns:
        H×W×3 uint8 RGB image, black where any component is not finite.

    Raises:
        ValueError: bad shape.
    """
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise ValueError(f'normals must be a H×W×3 array, got shape {normals.shape}')
    with np.errstate(invalid='ignore'):
        values = normals * np.array([127.5, -127.5, -127.5], dtype=np.float32) + 127.5
        np.clip(values, 0.0, 255.0, out=values)
        np.rint(values, out=values)
    finite = np.isfinite(normals)
    invalid = ~(finite[..., 0] & finite[..., 1] & finite[..., 2])
    np.copyto(values, 0.0, where=invalid[..., None])
    return values.astype(np.uint8)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack 8-bit colours into float32 as PCL and depth_image_proc do.

    Each colour becomes the 32-bit word 0x00RRGGBB reinterpreted as float32 (in little-endian
    memory: bytes b, g, r, 0), the ``rgb`` field of a PointXYZRGB cloud.

    Args:
        rgb: …×3 uint8 RGB (for example H×W×3 or N×3).

    Returns:
        float32 array of shape rgb.shape[:-1].

    Raises:
        ValueError: bad shape or dtype.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be a …×3 uint8 array, got shape {rgb.shape}, '
                         f'dtype {rgb.dtype}')
    word = ((rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
            | rgb[..., 2].astype(np.uint32))
    return word.view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Undo :func:`pack_rgb`: float32 words 0x00RRGGBB → …×3 uint8 RGB."""
    packed = np.asarray(packed)
    if packed.dtype != np.float32:
        raise ValueError(f'packed colours must be float32, got dtype {packed.dtype}')
    word = packed.view(np.uint32)
    shifts = np.array([16, 8, 0], dtype=np.uint32)
    return ((word[..., None] >> shifts) & 0xFF).astype(np.uint8)


def depth_edge_mask(depth: np.ndarray, threshold: float = 0.05, step: int = 3) -> np.ndarray:
    """Flag flying pixels: depths in mid-air between a foreground and a background surface.

    An interpolated depth image puts pixels between the two sides of a depth edge. Inverse
    depth is affine in the pixel coordinates on any plane (a wall, or a floor seen at a
    grazing angle), so each pixel is compared, along rows and along columns, with the
    straight-line extrapolation of 1/z from each side, from the pixels `step` and
    2·`step` away. A pixel that neither side explains within `threshold` relative depth,
    |z/ẑ − 1| measured as |1/ẑ − 1/z|·z, on either axis is flagged. Pixels on a smooth
    surface, and the last pixels of a surface right at a sharp edge, are explained by
    their own side and kept.

    Args:
        depth: H×W float depth in metres (REP 118: NaN unknown, +inf beyond range; +inf
            counts as inverse depth 0).
        threshold: relative depth misfit above which a pixel is flagged (> 0).
        step: pixel spacing of the extrapolation (≥ 1); ramps wider than about 2·step
            pixels are not recognised.

    Returns:
        H×W bool, True for flying pixels (set them to NaN before building points).
        Where a side's extrapolation is unknown (NaN pixels, the image border), that
        side's next pixel stands in for it; a pixel with no known neighbour on an axis is
        judged by the other axis only.

    Raises:
        ValueError: bad shape, dtype, threshold or step.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be a H×W array, got shape {depth.shape}')
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'depth must hold float metres, got dtype {depth.dtype}')
    if not threshold > 0.0:
        raise ValueError(f'threshold must be > 0, got {threshold!r}')
    if int(step) != step or step < 1:
        raise ValueError(f'step must be an integer ≥ 1, got {step!r}')
    k = int(step)
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = np.where(depth > 0.0, 1.0 / depth.astype(np.float32), np.nan)
        flagged = np.zeros(depth.shape, bool)
        for axis in (0, 1):
            q = np.moveaxis(inv, axis, 0)
            pad = np.full((2 * k,) + q.shape[1:], np.nan, np.float32)
            p = np.concatenate([pad, q, pad])
            n = q.shape[0]
            centre = p[2 * k:2 * k + n]
            left = 2.0 * p[k:k + n] - p[:n]
            right = 2.0 * p[3 * k:3 * k + n] - p[4 * k:4 * k + n]
            # Where a side's extrapolation is unknown (border, NaN), its next pixel stands in.
            left = np.where(np.isnan(left), p[2 * k - 1:2 * k - 1 + n], left)
            right = np.where(np.isnan(right), p[2 * k + 1:2 * k + 1 + n], right)
            scale = np.where(centre > 0.0, 1.0 / centre, np.nan)
            miss = np.fmin(np.abs(centre - left), np.abs(centre - right)) * scale
            flagged |= np.moveaxis(miss > threshold, 0, axis)
    return flagged
