"""numba kernels for the per-pixel loops of geometry.py and encode.py (optional).

Used when numba imports (see ``geometry.numba_kernels``). Each kernel computes exactly what
the numpy path of the function named in its docstring computes, with the same float32
operations in the same order, in one or two passes over the image instead of a few dozen. Compiled on first use and cached next to this file (or in numba's
user cache directory when that is not writable).
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
