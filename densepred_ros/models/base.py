"""The predictor interface shared by every model family, and what a prediction means."""

from dataclasses import dataclass
from typing import Dict, Optional, Protocol

import numpy as np

DEPTH = 'depth'
DISPARITY = 'disparity'
LOG_DEPTH = 'log_depth'
NORMALS = 'normals'
DEPTH_SPACES = (DEPTH, DISPARITY, LOG_DEPTH)
SPACES = DEPTH_SPACES + (NORMALS,)
COMPONENTS = ('vae_encoder', 'unet', 'vae_decoder')
BACKENDS = ('torch', 'onnxruntime', 'tensorrt')


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint predicts and how it is run.

    Attributes:
        family: 'lotus' or 'marigold'.
        variant: Lotus 'g' (noise concatenated, 8 UNet input channels) or 'd' (4 channels);
            None for Marigold.
        space: 'depth' (affine-invariant depth, larger = farther), 'disparity'
            (affine-invariant inverse depth, larger = nearer), 'log_depth' (affine-invariant
            log-depth, larger = farther) or 'normals'.
        default_processing_resolution: longest edge the authors process at; 0 = native.
        source: the local folder or hub id it was loaded from.
    """

    family: str
    variant: Optional[str]
    space: str
    default_processing_resolution: int
    source: str

    @property
    def is_relative_depth(self) -> bool:
        """True for depth, disparity and log-depth models (output needs a metric alignment)."""
        return self.space in DEPTH_SPACES


@dataclass(frozen=True)
class PredictorOptions:
    """Run-time options common to every family.

    Attributes:
        processing_resolution: longest edge in pixels the model runs at; 0 = the input's
            own size; None = the model's default.
        dtype: 'fp32' (exact), 'fp16', 'bf16' or 'auto' (fastest measured: fp16 on CUDA;
            on the CPU bf16 where it is native (AVX512-BF16/AMX), else fp32; channels-last).
        device: 'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.
        seed: seed for every random draw (Lotus-G noise, sampled latents, Marigold).
        latent: 'mean' encodes the image with the VAE posterior mean (deterministic);
            'sample' draws from the posterior as the Lotus authors' code does.
        steps: denoising steps (Marigold only; None = the model's default).
        ensemble_size: predictions averaged per frame (Marigold only).
        backend: 'torch', 'onnxruntime' or 'tensorrt' for every Lotus component, or
            component=backend pairs such as 'unet=tensorrt,vae_decoder=torch' (components:
            vae_encoder, unet, vae_decoder; unnamed ones use torch). A backend that cannot
            run falls back along tensorrt → onnxruntime → torch CUDA → torch CPU (logged).
        export_dir: folder written by `densepred export` (ONNX files and
            densepred_export.json); needed by the onnxruntime and tensorrt backends.
        engine_cache_dir: TensorRT engine cache ('' = ~/.cache/densepred_ros/tensorrt).
        engine_precision: TensorRT engine precision, 'fp16' or 'fp32'.
        ort_providers: comma list of ONNX Runtime providers in order of preference
            ('' = TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider,
            those present).
        rebuild_engines: rebuild TensorRT engines even when a matching one is cached.
        threads: CPU threads for torch and ONNX Runtime (0 = leave the libraries' default).
        channels_last: run the torch convolutions in channels-last memory layout
            (None = on the CPU with dtype 'auto' or 'bf16', where it was measured to help;
            off for an explicit 'fp32', which stays bit-identical to the reference).
    """

    processing_resolution: Optional[int] = None
    dtype: str = 'auto'
    device: str = 'auto'
    seed: int = 0
    latent: str = 'mean'
    steps: Optional[int] = None
    ensemble_size: int = 1
    backend: str = 'torch'
    export_dir: str = ''
    engine_cache_dir: str = ''
    engine_precision: str = 'fp16'
    ort_providers: str = ''
    rebuild_engines: bool = False
    threads: int = 0
    channels_last: Optional[bool] = None


@dataclass(frozen=True)
class Prediction:
    """One dense prediction at the input image's resolution.

    Attributes:
        space: 'depth', 'disparity', 'log_depth' or 'normals' (see ModelSpec.space).
        values: float32; H×W in [0, 1] for the depth spaces (affine-invariant: only
            scale and shift are unknown), or H×W×3 unit normals in the camera optical
            frame (x right, y down, z forward; normals face the camera, so z <= 0).
        uncertainty: optional H×W float32 (Marigold with ensembling), same units as values.
    """

    space: str
    values: np.ndarray
    uncertainty: Optional[np.ndarray] = None


class Predictor(Protocol):
    """Image in, dense prediction out."""

    spec: ModelSpec

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Predict for one H×W×3 uint8 RGB image; the result has the same H×W."""
        ...

    def close(self) -> None:
        """Free the model's memory (the predictor is unusable afterwards)."""
        ...


def parse_backend_spec(spec: str) -> Dict[str, str]:
    """Parse a backend request into {component: backend}.

    Args:
        spec: one backend for every component ('torch', 'onnxruntime', 'tensorrt'), or a
            comma list of component=backend pairs, e.g. 'unet=tensorrt,vae_decoder=torch';
            components not named use 'torch'. '' means 'torch'.

    Raises:
        ValueError: an unknown backend or component, or a component named twice.
    """
    spec = (spec or 'torch').strip()
    if '=' not in spec:
        if spec not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS} or component=backend pairs, '
                             f'got {spec!r}')
        return dict.fromkeys(COMPONENTS, spec)
    chosen = dict.fromkeys(COMPONENTS, 'torch')
    seen = set()
    for item in spec.split(','):
        name, _, backend = item.partition('=')
        name, backend = name.strip(), backend.strip()
        if name not in COMPONENTS:
            raise ValueError(f'unknown component {name!r} in backend {spec!r}; '
                             f'components are {COMPONENTS}')
        if backend not in BACKENDS:
            raise ValueError(f'unknown backend {backend!r} for {name} in {spec!r}; '
                             f'backends are {BACKENDS}')
        if name in seen:
            raise ValueError(f'component {name!r} named twice in backend {spec!r}')
        seen.add(name)
        chosen[name] = backend
    return chosen
