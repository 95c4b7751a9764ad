"""numba kernels for the per-pixel and per-point loops of geometry, camera and encode.

Optional: used when numba imports (see ``geometry.numba_kernels``). Each kernel computes
exactly what the numpy path of the function named in its docstring computes, with the same
operations in the same dtype and order, in one or two passes instead of a few dozen.
Compiled on first use and cached next to this file (or in numba's user cache directory
when that is not writable); ``geometry.warm_up`` does it ahead of the first frame.
"""

import numba
import numpy as np

_JIT = {'nogil': True, 'cache': True, 'error_model': 'numpy'}


@numba.njit(**_JIT)
def _pick(z: np.float32, before: np.float32, after: np.float32):
    """Return (signed difference, depth, |difference|) of the neighbour closer in depth."""
    d_b = z - before
    d_f = after - z
    jump_b, jump_f = abs(d_b), abs(d_f)
    if jump_f < jump_b or jump_b != jump_b:  # the next one wins ties only against a NaN
        return d_f, after, jump_f
    return d_b, before, jump_b


@numba.njit(**_JIT)
def normals_kernel(z: np.ndarray, fx: np.float32, fy: np.float32, cx: np.float32,
                   cy: np.float32, k: np.float32, out: np.ndarray) -> None:
    """Fill out (H×W×3) with the normals of `geometry.normals_from_depth`.

    z: H×W float32 depth with NaN for every unknown pixel (≤ 0 and ±inf replaced).
    """
    height, width = z.shape
    nan = np.float32(np.nan)
    for v in range(height):
        v_c = np.float32(v) - cy
        for u in range(width):
            zc = z[v, u]
            du, zu, jump_u = _pick(zc, z[v, u - 1] if u > 0 else nan,
                                   z[v, u + 1] if u + 1 < width else nan)
            dv, zv, jump_v = _pick(zc, z[v - 1, u] if v > 0 else nan,
                                   z[v + 1, u] if v + 1 < height else nan)
            kz = zc * k
            if jump_u > kz or jump_v > kz:
                du = nan
            a = du * zv
            b = dv * zu
            nz = zu * zv
            nz += (np.float32(u) - cx) * a
            nz += v_c * b
            a *= fx
            b *= fy
            inv_length = np.float32(1.0) / np.sqrt(a * a + b * b + nz * nz)
            out[v, u, 0] = a * inv_length
            out[v, u, 1] = b * inv_length
            out[v, u, 2] = nz * -inv_length


@numba.njit(**_JIT)
def colour_index_kernel(depth: np.ndarray, vmin: np.float32, scale: np.float32,
                        table: np.ndarray, out: np.ndarray) -> None:
    """Fill out (H×W×3 uint8) with the colours of `geometry.colorize_depth`.

    table: 257×3 uint8, the colour map then the colour of non-finite pixels.
    """
    height, width = depth.shape
    for v in range(height):
        for u in range(width):
            d = depth[v, u]
            if np.isfinite(d):
                x = (d - vmin) * scale
                x = min(max(x, np.float32(0.0)), np.float32(255.0))
                i = np.int64(np.rint(x))
            else:
                i = 256
            out[v, u, 0] = table[i, 0]
            out[v, u, 1] = table[i, 1]
            out[v, u, 2] = table[i, 2]


@numba.njit(**_JIT)
def normal_colours_kernel(normals: np.ndarray, out: np.ndarray) -> None:
    """Fill out (H×W×3 uint8) with the colours of `geometry.colorize_normals`."""
    height, width = normals.shape[:2]
    signs = (np.float32(127.5), np.float32(-127.5), np.float32(-127.5))
    for v in range(height):
        for u in range(width):
            n0, n1, n2 = normals[v, u, 0], normals[v, u, 1], normals[v, u, 2]
            if not np.isfinite(n0 + n1 + n2):
                out[v, u, 0] = 0
                out[v, u, 1] = 0
                out[v, u, 2] = 0
                continue
            for c, n in enumerate((n0, n1, n2)):
                x = n * signs[c] + np.float32(127.5)
                x = min(max(x, np.float32(0.0)), np.float32(255.0))
                out[v, u, c] = np.uint8(np.rint(x))


@numba.njit(**_JIT)
def cloud_records_kernel(xyz_bits: np.ndarray, rgb: np.ndarray, records: np.ndarray) -> bool:
    """Fill PointCloud2 records for `encode.points_to_pointcloud2`; return is_dense.

    xyz_bits: N×3 uint32, the float32 coordinates' bit patterns (copied unchanged).
    rgb: N×3 uint8 colours, or 0×3 for none.
    records: N×(4 or 8) uint32 zeroed payload: x y z pad [rgb pad pad pad].
    """
    dense = True
    with_rgb = rgb.shape[0] > 0
    for i in range(xyz_bits.shape[0]):
        for c in range(3):
            bits = xyz_bits[i, c]
            records[i, c] = bits
            if bits & np.uint32(0x7F800000) == np.uint32(0x7F800000):  # NaN or ±inf
                dense = False
        if with_rgb:
            records[i, 4] = ((np.uint32(rgb[i, 0]) << np.uint32(16))
                             | (np.uint32(rgb[i, 1]) << np.uint32(8)) | np.uint32(rgb[i, 2]))
    return dense


@numba.njit(**_JIT)
def _order_key(bits: np.uint32) -> np.uint32:
    """Map float32 bits to a uint32 that sorts like the float (negative values flipped)."""
    if bits & np.uint32(0x80000000):
        return ~bits
    return bits | np.uint32(0x80000000)


@numba.njit(**_JIT)
def order_histogram_kernel(bits: np.ndarray, hist: np.ndarray) -> int:
    """Count the finite values of a 2-D float32 image (given as bits) by their top 16 key bits.

    hist: 65536 int64 counters, zeroed. Returns the number of finite values.
    """
    n = 0
    for v in range(bits.shape[0]):
        for u in range(bits.shape[1]):
            b = bits[v, u]
            if b & np.uint32(0x7F800000) != np.uint32(0x7F800000):
                hist[_order_key(b) >> np.uint32(16)] += 1
                n += 1
    return n


@numba.njit(**_JIT)
def values_in_bins_kernel(bits: np.ndarray, wanted: np.ndarray, values: np.ndarray,
                          bins: np.ndarray) -> None:
    """Collect the finite values whose histogram bin is flagged in wanted (65536 bools).

    values, bins: output arrays as long as the flagged bins' total count.
    """
    i = 0
    for v in range(bits.shape[0]):
        for u in range(bits.shape[1]):
            b = bits[v, u]
            if b & np.uint32(0x7F800000) != np.uint32(0x7F800000):
                key_bin = _order_key(b) >> np.uint32(16)
                if wanted[key_bin]:
                    values[i] = b
                    bins[i] = key_bin
                    i += 1


@numba.njit(**_JIT)
def pixel_candidates_kernel(pts: np.ndarray, m: np.ndarray, z_min, z_max, half,
                            width: int, height: int, lin: np.ndarray,
                            depth: np.ndarray) -> int:
    """Rectified candidates of `camera.project_points` in one pass over the points.

    pts: N×3 points (float32 or float64); m: 3×4 P, and z_min, z_max, half (0.5) in the
    points' dtype. For every point with depth in (z_min, z_max) whose rounded projection
    is inside the image, in point order, writes its row-major pixel index into lin and its
    depth (as float32) into depth; returns their count.
    """
    count = 0
    for i in range(pts.shape[0]):
        x, y, z = pts[i, 0], pts[i, 1], pts[i, 2]
        if not (z > z_min and z < z_max):
            continue
        w = x * m[2, 0]
        w += y * m[2, 1]
        w += z * m[2, 2]
        w += m[2, 3]
        if not (w > z_min and w < z_max):
            continue
        hu = x * m[0, 0]
        hu += y * m[0, 1]
        hu += z * m[0, 2]
        hu += m[0, 3]
        hv = x * m[1, 0]
        hv += y * m[1, 1]
        hv += z * m[1, 2]
        hv += m[1, 3]
        u = hu / w + half
        v = hv / w + half
        if not (u >= 0 and u < width and v >= 0 and v < height):
            continue
        lin[count] = np.int64(v) * width + np.int64(u)
        depth[count] = np.float32(w)
        count += 1
    return count


@numba.njit(**_JIT)
def _misfit(c: np.float32, scale: np.float32, left: np.float32, right: np.float32):
    """Relative misfit of inverse depth c to the better of two predictions (np.fmin)."""
    a = abs(c - left)
    b = abs(c - right)
    if a != a:
        a = b
    elif b == b and b < a:
        a = b
    return a * scale


@numba.njit(**_JIT)
def depth_edge_kernel(depth: np.ndarray, step: int, threshold, out: np.ndarray) -> None:
    """Fill out (H×W bool) with the flying-pixel mask of `geometry.depth_edge_mask`.

    depth: H×W float32 or float64 metres; threshold: a float32 or float64 scalar, the
    dtype numpy compares the float32 misfit in.
    """
    height, width = depth.shape
    nan = np.float32(np.nan)
    two = np.float32(2.0)
    inv = np.empty((height, width), np.float32)
    for v in range(height):
        for u in range(width):
            d = depth[v, u]
            inv[v, u] = np.float32(1.0) / np.float32(d) if d > 0.0 else nan
    k = step
    scale = np.empty(width, np.float32)
    column_misfit = np.empty(width, np.float32)
    for v in range(height):
        for u in range(width):
            c = inv[v, u]
            scale[u] = np.float32(1.0) / c if c > np.float32(0.0) else nan
            left = two * inv[v - k, u] - inv[v - 2 * k, u] if v >= 2 * k else nan
            if left != left:
                left = inv[v - 1, u] if v >= 1 else nan
            right = two * inv[v + k, u] - inv[v + 2 * k, u] if v + 2 * k < height else nan
            if right != right:
                right = inv[v + 1, u] if v + 1 < height else nan
            column_misfit[u] = _misfit(c, scale[u], left, right)
        for u in range(width):
            left = two * inv[v, u - k] - inv[v, u - 2 * k] if u >= 2 * k else nan
            if left != left:
                left = inv[v, u - 1] if u >= 1 else nan
            right = two * inv[v, u + k] - inv[v, u + 2 * k] if u + 2 * k < width else nan
            if right != right:
                right = inv[v, u + 1] if u + 1 < width else nan
            out[v, u] = (column_misfit[u] > threshold
                         or _misfit(inv[v, u], scale[u], left, right) > threshold)
