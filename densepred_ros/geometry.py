"""Points and normals from metric depth, colour maps and colour packing.

numpy, with numba kernels (geometry_numba) for the per-pixel loops when numba is
installed; both give the same results. No ROS, no torch (geometry_torch has the twins).

Conventions: depth images follow REP 118 (float32 metres along the optical axis, NaN =
unknown, +inf = beyond range); points and normals are in the camera optical frame (REP 103:
x right, y down, z forward), metres; pixel (u, v) has its centre at integer coordinates.
Back-projection uses the rectified intrinsics in ``camera.P[:3, :3]``, like depth_image_proc.
"""

import functools
import math
import os
from types import ModuleType
from typing import Callable, Optional, Sequence, Tuple

from densepred_ros.camera import CameraModel, project_points
import numpy as np

Color = Tuple[int, int, int]


def _load_kernels() -> Optional[ModuleType]:
    """Return the numba kernels module, or None without numba or with DENSEPRED_NUMBA=0."""
    if os.environ.get('DENSEPRED_NUMBA', '1') == '0':
        return None
    try:
        from densepred_ros import geometry_numba
    except ImportError:
        return None
    return geometry_numba


_UNSET = object()
#: geometry_numba when numba is available (one pass per image), else None (numpy path);
#: resolved on first use, so importing this module does not import numba.
_kernels = _UNSET


def numba_kernels() -> Optional[ModuleType]:
    """Return the geometry_numba module, or None for the numpy path (loaded on first use)."""
    global _kernels
    if _kernels is _UNSET:
        _kernels = _load_kernels()
    return _kernels


def warm_up() -> str:
    """Compile (or load from numba's cache) the kernels on tiny inputs; return the path.

    Without it the first frame pays for it: a few seconds of compilation on a machine's
    first run, then 1-2 s to import numba and load its cache.

    Returns:
        'numba' or 'numpy': the implementation the functions here use.
    """
    if numba_kernels() is None:
        return 'numpy'
    depth = np.full((4, 4), 2.0, dtype=np.float32)
    camera = CameraModel.pinhole(4.0, 4.0, 1.5, 1.5, 4, 4)
    colorize_normals(normals_from_depth(depth, camera))
    colorize_depth(depth)
    project_points(np.array([[0.0, 0.0, 2.0]], dtype=np.float32), camera)
    depth_edge_mask(depth)
    numba_kernels().cloud_records_kernel(np.zeros((1, 3), dtype=np.uint32),
                                         np.zeros((1, 3), dtype=np.uint8),
                                         np.zeros((1, 8), dtype=np.uint32))
    return 'numba'


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


def check_points_options(stride: float, max_depth: float) -> int:
    """Return the point-cloud stride as an int; ValueError for a bad stride or max_depth."""
    if int(stride) != stride or stride < 1:
        raise ValueError(f'stride must be an integer ≥ 1, got {stride!r}')
    if not max_depth > 0:
        raise ValueError(f'max_depth must be > 0, got {max_depth!r}')
    return int(stride)


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
    stride = check_points_options(stride, max_depth)
    fx, fy, cx, cy = cam.intrinsics(rectified=True)
    z = np.array(depth[::stride, ::stride], dtype=np.float32)
    u = np.arange(0, depth.shape[1], stride, dtype=np.float64)
    v = np.arange(0, depth.shape[0], stride, dtype=np.float64)
    x_per_z = ((u - cx) / fx).astype(np.float32)
    y_per_z = ((v - cy) / fy).astype(np.float32)
    with np.errstate(invalid='ignore'):
        # NaN fails both comparisons; +inf fails the second one.
        valid = z > 0
        valid &= (z <= max_depth) if max_depth < math.inf else (z < math.inf)
    np.copyto(z, np.nan, where=~valid)  # NaN depth then gives NaN x and y too
    points = np.empty(z.shape + (3,), dtype=np.float32)
    np.multiply(z, x_per_z[None, :], out=points[..., 0])
    np.multiply(z, y_per_z[:, None], out=points[..., 1])
    points[..., 2] = z
    return points


# Rows per block in normals_from_depth: the temporaries of a block stay in the L2 cache.
_NORMALS_BLOCK_ROWS = 32


def _neighbour(dz: np.ndarray, z_before: np.ndarray, z_after: np.ndarray, kz: np.ndarray,
               axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pick, per pixel, the neighbour along axis whose depth is closer to the pixel's own.

    Args:
        dz: differences z[i+1] − z[i] along axis of a NaN-padded block, one longer than the
            block along axis.
        z_before, z_after: depths of the previous and next neighbour of every pixel.
        kz: max_rel_jump·z of every pixel.
        axis: 0 (v) or 1 (u).

    Returns:
        d: signed depth difference along axis to the chosen neighbour (z[i+1] − z[i] for the
            next one, z[i] − z[i−1] for the previous one), NaN when its jump exceeds kz or
            both neighbours are missing.
        z_n: depth of the chosen neighbour.
    """
    jump = np.abs(dz)
    if axis == 0:
        jump_b, jump_f, d_b, d_f = jump[:-1], jump[1:], dz[:-1], dz[1:]
    else:
        jump_b, jump_f, d_b, d_f = jump[:, :-1], jump[:, 1:], dz[:, :-1], dz[:, 1:]
    use_forward = np.isnan(jump_b)  # the next neighbour wins ties only against a missing one
    use_forward |= jump_f < jump_b
    d = np.where(use_forward, d_f, d_b)
    z_n = np.where(use_forward, z_after, z_before)
    np.fmin(jump_b, jump_f, out=jump_b)  # the chosen neighbour's jump
    np.copyto(d, np.nan, where=jump_b > kz)
    return d, z_n


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
    depth = np.asarray(depth)
    cam = _delivered_camera(depth, camera)
    fx, fy, cx, cy = cam.intrinsics(rectified=True)
    height, width = depth.shape
    k, fx, fy = np.float32(max_rel_jump), np.float32(fx), np.float32(fy)
    kernels = numba_kernels()
    if kernels is not None:
        z = np.array(depth, dtype=np.float32)
        with np.errstate(invalid='ignore'):
            np.copyto(z, np.nan, where=~((z > 0) & (z < math.inf)))
        normals = np.empty((height, width, 3), dtype=np.float32)
        kernels.normals_kernel(z, fx, fy, np.float32(cx), np.float32(cy), k, normals)
        return normals
    # The cross product of the tangents P(u±1) − P(u) and P(v±1) − P(v), with
    # P = z·((u − cx)/fx, (v − cy)/fy, 1), written out: with du, dv the signed depth
    # differences to the chosen neighbours and zu, zv those neighbours' depths,
    # a = du·zv, b = dv·zu, the camera-facing normal is
    # (fx·a, fy·b, −((u − cx)·a + (v − cy)·b + zu·zv)) up to a positive factor.
    # A NaN border stands for the missing neighbours at the image edges.
    padded = np.full((height + 2, width + 2), np.nan, dtype=np.float32)
    z_all = padded[1:-1, 1:-1]
    z_all[...] = depth
    with np.errstate(invalid='ignore'):
        np.copyto(z_all, np.nan, where=~((z_all > 0) & (z_all < math.inf)))
    normals = np.empty((height, width, 3), dtype=np.float32)
    u_c = np.arange(width, dtype=np.float32) - np.float32(cx)
    v_c = (np.arange(height, dtype=np.float32) - np.float32(cy))[:, None]
    with np.errstate(invalid='ignore', divide='ignore'):
        for top in range(0, height, _NORMALS_BLOCK_ROWS):
            bottom = min(top + _NORMALS_BLOCK_ROWS, height)
            rows = padded[top + 1:bottom + 1]
            cols = padded[top:bottom + 2, 1:-1]
            kz = rows[:, 1:-1] * k
            du, zu = _neighbour(np.diff(rows, axis=1), rows[:, :-2], rows[:, 2:], kz, 1)
            dv, zv = _neighbour(np.diff(cols, axis=0), cols[:-2], cols[2:], kz, 0)
            a = np.multiply(du, zv, out=du)
            b = np.multiply(dv, zu, out=dv)
            nz = np.multiply(zu, zv, out=zu)
            nz += u_c * a
            nz += v_c[top:bottom] * b
            a *= fx
            b *= fy
            inv_length = a * a
            inv_length += b * b
            inv_length += nz * nz
            np.sqrt(inv_length, out=inv_length)
            np.divide(np.float32(1.0), inv_length, out=inv_length)
            block = normals[top:bottom]
            np.multiply(a, inv_length, out=block[..., 0])
            np.multiply(b, inv_length, out=block[..., 1])
            inv_length *= np.float32(-1.0)
            np.multiply(nz, inv_length, out=block[..., 2])
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
    table = _colour_table(cmap, tuple(int(c) for c in invalid))
    if vmin is None or vmax is None:
        low_high = _finite_percentiles(depth, percentiles)
        if low_high is not None:
            vmin = low_high[0] if vmin is None else vmin
            vmax = low_high[1] if vmax is None else vmax
    vmin = 0.0 if vmin is None else float(vmin)
    vmax = 1.0 if vmax is None else float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f'need finite vmin ≤ vmax, got vmin={vmin!r}, vmax={vmax!r}')
    scale = 255.0 / max(vmax - vmin, 1e-12)
    kernels = numba_kernels()
    if kernels is not None:
        rgb = np.empty(depth.shape + (3,), dtype=np.uint8)
        kernels.colour_index_kernel(depth, np.float32(vmin), np.float32(scale), table, rgb)
        return rgb
    finite = np.isfinite(depth)
    index = np.subtract(depth, np.float32(vmin), dtype=np.float32)
    index *= np.float32(scale)
    np.fmax(index, 0.0, out=index)  # fmax/fmin: NaN → 0, and no NaN reaches the cast
    np.fmin(index, 255.0, out=index)
    np.rint(index, out=index)
    entry = index.astype(np.uint16)
    np.copyto(entry, 256, where=~finite)
    # One 3-byte item per pixel: a single gather writes the contiguous H×W×3 image.
    items = table.view('V3').reshape(257)
    return np.take(items, entry).view(np.uint8).reshape(depth.shape + (3,))


def linear_percentiles(n: int, percentiles: Sequence[float],
                       kth: Callable[[int], float]) -> Tuple[float, ...]:
    """Return ``np.percentile``'s default ('linear') percentiles from order statistics.

    Follows numpy's steps (virtual index (n − 1)·q/100 in float64, float32 difference of
    the neighbouring order statistics, numpy's two-sided interpolation), so the result is
    numpy's to the bit for float32 data.

    Args:
        n: number of values (> 0).
        percentiles: percentiles in [0, 100].
        kth: returns the k-th smallest value (0-based) as float32.
    """
    out = []
    for q in percentiles:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f'percentiles must be in [0, 100], got {q!r}')
        virtual = (n - 1) * (np.float64(q) / 100.0)
        if virtual >= n - 1:
            out.append(float(kth(n - 1)))
            continue
        previous = math.floor(virtual)
        gamma = virtual - previous
        a, b = np.float32(kth(previous)), np.float32(kth(previous + 1))
        diff = np.float64(b - a)
        out.append(float(b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma))
    return tuple(out)


def _finite_percentiles(depth: np.ndarray,
                        percentiles: Sequence[float]) -> Optional[Tuple[float, ...]]:
    """Return the percentiles of the finite values of a float32 image (None: there are none).

    With numba, the order statistics come from a histogram of the values' top 16 bits and
    a partition of the few values in the wanted bins (two passes instead of a full
    partition); the result equals ``np.percentile(depth[np.isfinite(depth)], percentiles)``.
    """
    kernels = numba_kernels()
    if kernels is None:
        values = depth[np.isfinite(depth)]
        if not values.size:
            return None
        return tuple(float(p) for p in np.percentile(values, percentiles,
                                                     overwrite_input=True))
    bits = depth.view(np.uint32)
    hist = np.zeros(1 << 16, dtype=np.int64)
    n = kernels.order_histogram_kernel(bits, hist)
    if n == 0:
        return None
    ranks = set()
    linear_percentiles(n, percentiles, lambda k: ranks.add(k) or 0.0)
    ends = np.cumsum(hist)
    bin_of = {k: int(np.searchsorted(ends, k, side='right')) for k in ranks}
    wanted = np.zeros(1 << 16, dtype=np.bool_)
    wanted[list(bin_of.values())] = True
    count = int(hist[wanted].sum())
    values, bins = np.empty(count, dtype=np.uint32), np.empty(count, dtype=np.int64)
    kernels.values_in_bins_kernel(bits, wanted, values, bins)
    values = values.view(np.float32)
    found = {}
    for k, b in bin_of.items():
        in_bin = values[bins == b]
        rank = k - int(ends[b] - hist[b])
        found[k] = np.partition(in_bin, rank)[rank]
    return linear_percentiles(n, percentiles, found.__getitem__)


@functools.lru_cache(maxsize=16)
def _colour_table(cmap: str, invalid_color: Color) -> np.ndarray:
    """Return the 257×3 uint8 table: the 256 colours of cmap, then invalid_color."""
    table = np.empty((257, 3), dtype=np.uint8)
    table[:256] = colormap_lut(cmap)
    table[256] = invalid_color
    table.flags.writeable = False
    return table


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
    kernels = numba_kernels()
    if kernels is not None:
        rgb = np.empty(normals.shape, dtype=np.uint8)
        kernels.normal_colours_kernel(normals, rgb)
        return rgb
    values = normals * np.array([127.5, -127.5, -127.5], dtype=np.float32)
    values += np.float32(127.5)
    np.fmax(values, 0.0, out=values)  # fmax/fmin: NaN → 0, and no NaN reaches the cast
    np.fmin(values, 255.0, out=values)
    np.rint(values, out=values)
    rgb = values.astype(np.uint8)
    with np.errstate(invalid='ignore'):
        # The sum is finite exactly when all three components are (for |n_i| < 1e38).
        invalid = ~np.isfinite(normals[..., 0] + normals[..., 1] + normals[..., 2])
    np.copyto(rgb, 0, where=invalid[..., None])
    return rgb


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
    kernels = numba_kernels()
    if kernels is not None and depth.dtype in (np.float32, np.float64):
        # numpy compares the float32 misfit in the dtype it promotes threshold's type to.
        limit = np.result_type(np.float32, threshold).type(threshold)
        flagged = np.empty(depth.shape, bool)
        kernels.depth_edge_kernel(depth, k, limit, flagged)
        return flagged
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
