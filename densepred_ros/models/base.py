"""Types, constants and errors shared by every layer of `densepred_ros.models` (no torch).

The predictor interface, what a prediction means, the run-time options (checked when
they are made) and the one table that maps the node's parameters and the command line
onto those options.
"""

from dataclasses import dataclass
import re
from typing import Any, Dict, Optional, Protocol, Tuple

from densepred_ros.spaces import DEPTH, DEPTH_SPACES, DISPARITY, LOG_DEPTH, NORMALS, SPACES
import numpy as np

__all__ = [
    'BACKENDS', 'BackendUnavailable', 'CheckpointError', 'COMPONENTS', 'DENSEPRED_CONFIG',
    'DEPTH', 'DEPTH_SPACES', 'DISPARITY', 'DTYPES', 'ENGINE_PRECISIONS', 'ExportError',
    'LATENTS', 'LOG_DEPTH', 'ModelSpec', 'NORMALS', 'OPTION_FIELDS', 'OptionField',
    'options_from', 'parse_backend_spec', 'parse_precision_spec', 'Prediction', 'Predictor',
    'PredictorOptions', 'SPACES',
]

#: The exported parts of a Lotus model, in the order they run.
COMPONENTS = ('vae_encoder', 'unet', 'vae_decoder')
BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
#: Float precisions of an ONNX export and of a TensorRT engine.
ENGINE_PRECISIONS = ('fp32', 'fp16')
#: Compute precisions of the torch models ('auto' = the fastest measured, see options).
DTYPES = ('auto', 'fp32', 'fp16', 'bf16')
LATENTS = ('mean', 'sample')
#: The file in a checkpoint folder that says what it predicts (ignored by diffusers).
DENSEPRED_CONFIG = 'densepred.json'
_DEVICE = re.compile(r'auto|cpu|cuda(:\d+)?')


class CheckpointError(RuntimeError):
    """A checkpoint is missing, malformed, unsafe to load or of an unknown kind."""


class ExportError(RuntimeError):
    """An export folder is missing, inconsistent or does not fit the request."""


class BackendUnavailable(RuntimeError):
    """A backend cannot run a component here (library, device or file missing, build failed)."""


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


def _parse_per_component(spec: str, allowed: Tuple[str, ...], default: str,
                         what: str) -> Dict[str, str]:
    """Parse 'value' or 'component=value,...' into {component: value} (unnamed: default)."""
    spec = (spec or default).strip()
    if '=' not in spec:
        if spec not in allowed:
            raise ValueError(f'{what} must be one of {allowed} or component={what} pairs, '
                             f'got {spec!r}')
        return dict.fromkeys(COMPONENTS, spec)
    chosen = dict.fromkeys(COMPONENTS, default)
    seen = set()
    for item in spec.split(','):
        name, _, value = item.partition('=')
        name, value = name.strip(), value.strip()
        if name not in COMPONENTS:
            raise ValueError(f'unknown component {name!r} in {what} {spec!r}; '
                             f'components are {COMPONENTS}')
        if value not in allowed:
            raise ValueError(f'unknown {what} {value!r} for {name} in {spec!r}; '
                             f'{what} values are {allowed}')
        if name in seen:
            raise ValueError(f'component {name!r} named twice in {what} {spec!r}')
        seen.add(name)
        chosen[name] = value
    return chosen


def parse_backend_spec(spec: str) -> Dict[str, str]:
    """Parse a backend request into {component: backend}.

    Args:
        spec: one backend for every component ('torch', 'onnxruntime', 'tensorrt'), or a
            comma list of component=backend pairs, e.g. 'unet=tensorrt,vae_decoder=torch';
            components not named use 'torch'. '' means 'torch'.

    Raises:
        ValueError: an unknown backend or component, or a component named twice.
    """
    return _parse_per_component(spec, BACKENDS, 'torch', 'backend')


def parse_precision_spec(spec: str) -> Dict[str, str]:
    """Parse a TensorRT engine precision request into {component: 'fp16' or 'fp32'}.

    Args:
        spec: one precision for every component, or component=precision pairs such as
            'unet=fp16,vae_decoder=fp32' (e.g. when the fp16 decoder overflows); components
            not named use 'fp16'. '' means 'fp16'.

    Raises:
        ValueError: an unknown precision or component, or a component named twice.
    """
    return _parse_per_component(spec, ENGINE_PRECISIONS, 'fp16', 'engine_precision')


@dataclass(frozen=True)
class PredictorOptions:
    """Run-time options common to every family, checked when they are made.

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
        engine_precision: TensorRT engine precision, 'fp16' or 'fp32', or
            component=precision pairs such as 'unet=fp16,vae_decoder=fp32' (unnamed: fp16).
            Also the precision of ONNX Runtime's TensorRT provider.
        ort_providers: comma list of ONNX Runtime providers in order of preference
            ('' = TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider,
            those present).
        rebuild_engines: rebuild TensorRT engines even when a matching one is cached.
        threads: CPU threads for torch and ONNX Runtime (0 = leave the libraries' default).
        channels_last: run the torch convolutions in channels-last memory layout
            (None = on the CPU with dtype 'auto' or 'bf16', where it was measured to help;
            off for an explicit 'fp32', which stays bit-identical to the reference).

    Raises:
        ValueError: on construction, naming the first invalid option and its value.
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

    def __post_init__(self) -> None:
        """Check every option; raise ValueError naming the bad one."""
        if self.processing_resolution is not None and self.processing_resolution < 0:
            raise ValueError('processing_resolution must be >= 0 or None, got '
                             f'{self.processing_resolution}')
        if self.dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {DTYPES}, got {self.dtype!r}')
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.latent not in LATENTS:
            raise ValueError(f'latent must be one of {LATENTS}, got {self.latent!r}')
        if self.steps is not None and self.steps < 1:
            raise ValueError(f'steps must be >= 1 or None, got {self.steps}')
        if self.ensemble_size < 1:
            raise ValueError(f'ensemble_size must be >= 1, got {self.ensemble_size}')
        parse_backend_spec(self.backend)
        parse_precision_spec(self.engine_precision)
        providers = [p.strip() for p in self.ort_providers.split(',') if p.strip()]
        unknown = [p for p in providers if not p.endswith('ExecutionProvider')]
        if unknown:
            raise ValueError('ort_providers are names ending in ExecutionProvider, '
                             f'got {unknown}')
        if self.threads < 0:
            raise ValueError(f'threads must be >= 0, got {self.threads}')


@dataclass(frozen=True)
class OptionField:
    """Where one `PredictorOptions` field is set from.

    Attributes:
        name: the field; also the `params.ModelConfig` attribute (node parameter
            `model.<name>`) and the argparse destination of `densepred predict`
            (`--<name with dashes>`).
        node: the node sets it from its parameters.
        cli: the command line sets it.
    """

    name: str
    node: bool
    cli: bool


#: The one mapping from the node's parameters and the command line onto PredictorOptions.
OPTION_FIELDS: Tuple[OptionField, ...] = (
    OptionField('processing_resolution', node=True, cli=True),
    OptionField('dtype', node=True, cli=True),
    OptionField('device', node=True, cli=True),
    OptionField('seed', node=True, cli=True),
    OptionField('latent', node=False, cli=True),
    OptionField('steps', node=False, cli=True),
    OptionField('ensemble_size', node=False, cli=True),
    OptionField('backend', node=True, cli=True),
    OptionField('export_dir', node=True, cli=True),
    OptionField('engine_cache_dir', node=True, cli=True),
    OptionField('engine_precision', node=True, cli=True),
    OptionField('ort_providers', node=True, cli=True),
    OptionField('rebuild_engines', node=True, cli=False),
    OptionField('threads', node=True, cli=True),
    OptionField('channels_last', node=False, cli=False),
)


def options_from(source: Any, consumer: str, **overrides: Any) -> PredictorOptions:
    """Build PredictorOptions from the attributes of `source` that `consumer` sets.

    Args:
        source: a `params.ModelConfig` ('node') or an argparse namespace ('cli').
        consumer: 'node' or 'cli' (selects the OPTION_FIELDS column).
        overrides: fields set explicitly (e.g. the normals model's export_dir).

    Raises:
        ValueError: an unknown consumer, or an invalid option (see PredictorOptions).
    """
    if consumer not in ('node', 'cli'):
        raise ValueError(f"consumer must be 'node' or 'cli', got {consumer!r}")
    values = {f.name: getattr(source, f.name) for f in OPTION_FIELDS
              if getattr(f, consumer)}
    values.update(overrides)
    return PredictorOptions(**values)


@dataclass(frozen=True)
class Prediction:
    """One dense prediction at the input image's resolution.

    Attributes:
        space: 'depth', 'disparity', 'log_depth' or 'normals' (see ModelSpec.space).
        values: float32; H×W in [0, 1] for the depth spaces (affine-invariant: only
            scale and shift are unknown), or H×W×3 unit normals in the camera optical
            frame (x right, y down, z forward; normals face the camera, so z <= 0).
        uncertainty: optional H×W float32 (Marigold with ensembling), same units as values.
        tensor: optional torch tensor holding `values` on the predictor's device (Lotus
            with ``predict(..., keep_tensor=True)``), for work that stays on that device;
            None otherwise.
    """

    space: str
    values: np.ndarray
    uncertainty: Optional[np.ndarray] = None
    tensor: Any = None


class Predictor(Protocol):
    """Image in, dense prediction out."""

    spec: ModelSpec

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Predict for one H×W×3 uint8 RGB image; the result has the same H×W."""
        ...

    def close(self) -> None:
        """Free the model's memory (the predictor is unusable afterwards)."""
        ...
