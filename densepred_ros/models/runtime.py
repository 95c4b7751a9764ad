"""Device, dtype and image-tensor helpers shared by the model families."""

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

TORCH_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """Map 'auto', 'cpu', 'cuda' or 'cuda:N' to a torch device that exists here."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from exc
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} requested but CUDA is not available')
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """Map 'fp32', 'fp16' or 'bf16' to a torch dtype."""
    if name not in TORCH_DTYPES:
        raise ValueError(f'dtype must be one of {sorted(TORCH_DTYPES)}, got {name!r}')
    return TORCH_DTYPES[name]


def resolve_auto_dtype(name: str, device: torch.device) -> str:
    """Resolve dtype 'auto': fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.

    Other names are returned unchanged (and checked by `runtime.resolve_dtype`).
    """
    if name != 'auto':
        return name
    if device.type == 'cuda':
        return 'fp16'
    return 'bf16' if cpu_has_bf16() else 'fp32'


def cpu_has_bf16() -> bool:
    """Return True when oneDNN runs bf16 natively here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_rgb(rgb: np.ndarray) -> None:
    """Raise ValueError unless `rgb` is an H×W×3 uint8 image of at least 8×8 pixels."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, 'shape', None)
        raise ValueError(f'expected an H×W×3 RGB array, got shape {shape}')
    if rgb.dtype != np.uint8:
        raise ValueError(f'expected a uint8 RGB image, got dtype {rgb.dtype}')
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ValueError(f'image too small for the model: {rgb.shape[1]}×{rgb.shape[0]}')


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """Return a 1×3×H×W float32 tensor in [-1, 1] from an H×W×3 uint8 image."""
    tensor = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None]  # a copy
    return tensor.float() / 127.5 - 1.0


def processing_size(height: int, width: int, resolution: int) -> Tuple[int, int]:
    """Return the (height, width) the model runs at: longest edge `resolution`, 0 = as is.

    Keeps the aspect ratio and truncates as the Lotus and Marigold references do.
    """
    if resolution < 0:
        raise ValueError(f'processing resolution must be >= 0, got {resolution}')
    if resolution == 0:
        return height, width
    factor = min(resolution / width, resolution / height)
    return max(int(height * factor), 8), max(int(width * factor), 8)


def resize(tensor: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize N×C×H×W bilinearly, antialiased when shrinking (a no-op at the same size)."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    shrinking = size[0] < tensor.shape[-2] or size[1] < tensor.shape[-1]
    return F.interpolate(tensor, size=size, mode='bilinear', align_corners=False,
                         antialias=shrinking)


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad N×C×H×W on the bottom and right by edge replication to a multiple of `multiple`."""
    height, width = tensor.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return tensor
    return F.pad(tensor, (0, pad_w, 0, pad_h), mode='replicate')


def model_normals_to_optical(normals: np.ndarray) -> np.ndarray:
    """Convert normals from the models' frame to the ROS camera optical frame.

    Lotus and Marigold predict normals with x right, y up and z towards the viewer
    (the OpenGL camera convention; diffusers documents it for Marigold, and the Lotus
    training code builds its targets that way from OpenCV-frame normals by flipping the
    axis signs). The ROS optical frame is x right, y down, z forward, so y and z flip.

    Args:
        normals: ...×3 float array in the model frame.

    Returns:
        ...×3 float32 array in the optical frame (a surface facing the camera has z < 0).
    """
    out = np.asarray(normals, dtype=np.float32).copy()
    out[..., 1:] *= -1.0
    return out


def unit_normals(normals: np.ndarray) -> np.ndarray:
    """Normalise ...×3 vectors to unit length; zero vectors become NaN."""
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        out = normals / norm
    out[~np.isfinite(out).all(axis=-1)] = np.nan
    return out.astype(np.float32)
