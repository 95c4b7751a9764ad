"""torch twins of the per-pixel work after inference, for predictions that stay on a GPU.

The functions mirror ``alignment.to_metric`` and geometry.py's ``depth_to_points``,
``normals_from_depth``, ``colorize_depth`` and ``colorize_normals`` with the same
conventions, the same float32 operations and the same results (within float rounding), on
tensors of any device. On CUDA the prediction then never leaves the device until each
output message takes its one host copy (:func:`to_numpy`). Imported only where torch is
already loaded (the model's device is CUDA); geometry.py stays numpy-only.
"""

import math
from typing import Optional, Sequence, Tuple

from densepred_ros.camera import CameraModel
from densepred_ros.geometry import (
    check_points_options, Color, colormap_lut, linear_percentiles)
import numpy as np
import torch

_NAN = float('nan')


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Copy a tensor to the host once and return it as a numpy array (no copy on the CPU)."""
    return tensor.detach().cpu().numpy()


def _camera_for(depth: torch.Tensor, camera: CameraModel) -> CameraModel:
    """Check a depth tensor against the camera and return the model of the delivered image."""
    if depth.ndim != 2:
        raise ValueError(f'depth must be a H×W tensor, got shape {tuple(depth.shape)}')
    if not depth.dtype.is_floating_point:
        raise ValueError(f'depth must hold float metres, got dtype {depth.dtype}')
    cam = camera.effective()
    if tuple(depth.shape) != (cam.height, cam.width):
        raise ValueError(f'depth shape {tuple(depth.shape)} does not match the camera '
                         f'resolution (height, width) = ({cam.height}, {cam.width})')
    if not cam.p_valid:
        raise ValueError('the camera has a ROI on a distorted image, so P does not describe '
                         'the delivered (rectified) image')
    return cam


def _f32(value: float) -> float:
    """Round a Python float to float32, as numpy's np.float32(value) does."""
    return float(np.float32(value))


def to_metric(relative: torch.Tensor, space: str, scale: float, shift: float,
              near_limit: float, far_limit: float) -> torch.Tensor:
    """Apply (s, t) in the model's space: the twin of ``alignment.to_metric``.

    Args:
        relative: prediction tensor of any shape, float32 (other dtypes are converted).
        space: 'depth', 'disparity' or 'log_depth'.
        scale, shift: (s, t).
        near_limit, far_limit: metres.

    Returns:
        float32 metric depth (REP 117/118 values) on relative's device.
    """
    if space not in ('depth', 'disparity', 'log_depth'):
        raise ValueError(f'unknown prediction space {space!r}')
    y = relative.to(torch.float32) * _f32(scale)
    y += _f32(shift)
    if space == 'depth':
        z = y.masked_fill(y <= 0.0, _NAN)
    elif space == 'log_depth':
        z = torch.exp(y)
    else:
        z = torch.reciprocal(y).masked_fill(y <= _f32(1.0 / far_limit), math.inf)
    z = z.masked_fill(z > far_limit, math.inf)
    return torch.maximum(z, torch.tensor(_f32(near_limit), device=z.device))


def depth_to_points(depth: torch.Tensor, camera: CameraModel, stride: int = 1,
                    max_depth: float = math.inf) -> torch.Tensor:
    """Back-project depth into an organized point image: ``geometry.depth_to_points``.

    Returns:
        ceil(H/stride)×ceil(W/stride)×3 float32 points (x, y, z) in metres in the optical
        frame, on depth's device; NaN where depth is NaN, ±inf, ≤ 0 or above max_depth.
    """
    cam = _camera_for(depth, camera)
    stride = check_points_options(stride, max_depth)
    fx, fy, cx, cy = cam.intrinsics(rectified=True)
    z = depth[::stride, ::stride].to(torch.float32)
    valid = (z > 0) & ((z <= max_depth) if max_depth < math.inf else (z < math.inf))
    z = z.masked_fill(~valid, _NAN)
    # The per-column and per-row factors are computed in float64 and rounded, as in numpy.
    x_per_z = ((np.arange(0, depth.shape[1], stride) - cx) / fx).astype(np.float32)
    y_per_z = ((np.arange(0, depth.shape[0], stride) - cy) / fy).astype(np.float32)
    x_per_z = torch.from_numpy(x_per_z).to(z.device)
    y_per_z = torch.from_numpy(y_per_z).to(z.device)
    return torch.stack([z * x_per_z[None, :], z * y_per_z[:, None], z], dim=-1)


def _neighbour(dz: torch.Tensor, z_before: torch.Tensor, z_after: torch.Tensor,
               kz: torch.Tensor, axis: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pick the neighbour closer in depth along axis (see ``geometry._neighbour``)."""
    jump = dz.abs()
    if axis == 0:
        jump_b, jump_f, d_b, d_f = jump[:-1], jump[1:], dz[:-1], dz[1:]
    else:
        jump_b, jump_f, d_b, d_f = jump[:, :-1], jump[:, 1:], dz[:, :-1], dz[:, 1:]
    use_forward = torch.isnan(jump_b) | (jump_f < jump_b)
    d = torch.where(use_forward, d_f, d_b)
    z_n = torch.where(use_forward, z_after, z_before)
    return d.masked_fill(torch.fmin(jump_b, jump_f) > kz, _NAN), z_n


def normals_from_depth(depth: torch.Tensor, camera: CameraModel,
                       max_rel_jump: float = 0.05) -> torch.Tensor:
    """Estimate surface normals from metric depth: ``geometry.normals_from_depth``.

    Returns:
        H×W×3 float32 unit normals in the optical frame, facing the camera, NaN where
        unknown, on depth's device.
    """
    if not max_rel_jump > 0:
        raise ValueError(f'max_rel_jump must be > 0, got {max_rel_jump!r}')
    cam = _camera_for(depth, camera)
    fx, fy, cx, cy = cam.intrinsics(rectified=True)
    height, width = depth.shape
    z = depth.to(torch.float32)
    z = z.masked_fill(~((z > 0) & (z < math.inf)), _NAN)
    padded = torch.nn.functional.pad(z, (1, 1, 1, 1), value=_NAN)
    rows, cols = padded[1:-1], padded[:, 1:-1]
    kz = z * _f32(max_rel_jump)
    du, zu = _neighbour(torch.diff(rows, dim=1), rows[:, :-2], rows[:, 2:], kz, 1)
    dv, zv = _neighbour(torch.diff(cols, dim=0), cols[:-2], cols[2:], kz, 0)
    u_c = torch.arange(width, dtype=torch.float32, device=z.device) - _f32(cx)
    v_c = torch.arange(height, dtype=torch.float32, device=z.device) - _f32(cy)
    a = du * zv
    b = dv * zu
    nz = zu * zv
    nz += u_c * a
    nz += v_c[:, None] * b
    a *= _f32(fx)
    b *= _f32(fy)
    length = a * a
    length += b * b
    length += nz * nz
    inv_length = torch.reciprocal(torch.sqrt(length))
    return torch.stack([a * inv_length, b * inv_length, nz * -inv_length], dim=-1)


def _percentiles(values: torch.Tensor, percentiles: Sequence[float]) -> Tuple[float, ...]:
    """Return numpy's linear-interpolation percentiles of a 1-D float32 tensor.

    The order statistics are exact (``kthvalue``), the interpolation is numpy's
    (``geometry.linear_percentiles``), so the display range is the numpy path's.
    """
    return linear_percentiles(
        values.numel(), percentiles,
        lambda k: torch.kthvalue(values, k + 1).values.item())


def colorize_depth(depth: torch.Tensor, vmin: Optional[float] = None,
                   vmax: Optional[float] = None, invalid_color: Color = (0, 0, 0),
                   cmap: str = 'spectral',
                   percentiles: Sequence[float] = (2.0, 98.0)) -> torch.Tensor:
    """Map depth to colours for display: ``geometry.colorize_depth`` on depth's device.

    Returns:
        H×W×3 uint8 RGB tensor.
    """
    if depth.ndim != 2:
        raise ValueError(f'depth must be a H×W tensor, got shape {tuple(depth.shape)}')
    invalid = np.asarray(invalid_color)
    if invalid.shape != (3,) or (invalid < 0).any() or (invalid > 255).any():
        raise ValueError(f'invalid_color must be three values in 0..255, got {invalid_color!r}')
    table = np.empty((257, 3), dtype=np.uint8)
    table[:256] = colormap_lut(cmap)
    table[256] = invalid
    depth = depth.to(torch.float32)
    finite = torch.isfinite(depth)
    if (vmin is None or vmax is None) and bool(finite.any()):
        low, high = _percentiles(depth[finite], percentiles)
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    vmin = 0.0 if vmin is None else float(vmin)
    vmax = 1.0 if vmax is None else float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f'need finite vmin ≤ vmax, got vmin={vmin!r}, vmax={vmax!r}')
    scale = 255.0 / max(vmax - vmin, 1e-12)
    index = (depth - _f32(vmin)) * _f32(scale)
    index = torch.round(torch.clamp(torch.nan_to_num(index, nan=0.0), 0.0, 255.0))
    entry = index.to(torch.int64).masked_fill(~finite, 256)
    return torch.from_numpy(table).to(depth.device)[entry]


def colorize_normals(normals: torch.Tensor) -> torch.Tensor:
    """Map unit normals to colours for display: ``geometry.colorize_normals``.

    Returns:
        H×W×3 uint8 RGB tensor, black where any component is not finite.
    """
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise ValueError(f'normals must be a H×W×3 tensor, got shape {tuple(normals.shape)}')
    normals = normals.to(torch.float32)
    signs = torch.tensor([127.5, -127.5, -127.5], dtype=torch.float32, device=normals.device)
    values = normals * signs + 127.5
    values = torch.round(torch.clamp(torch.nan_to_num(values, nan=0.0), 0.0, 255.0))
    invalid = ~torch.isfinite(normals[..., 0] + normals[..., 1] + normals[..., 2])
    return values.to(torch.uint8).masked_fill(invalid[..., None], 0)
