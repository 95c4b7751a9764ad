"""Run the Lotus components on torch, ONNX Runtime or TensorRT, with a fallback chain.

A component is one of 'vae_encoder', 'unet', 'vae_decoder' with the contract of the
modules in `export.py` (float32 torch tensors in and out):

- vae_encoder(image 1×3×H×W in [-1, 1]) → moments 1×8×H/8×W/8;
- unet(sample, timestep [1], encoder_hidden_states 1×T×D, class_labels 1×4) → x0 1×4×h×w;
- vae_decoder(x0 1×4×h×w) → decoded 1×3×H×W in about [-1, 1].

Each component asks for a backend ('torch', 'onnxruntime' or 'tensorrt'); when it cannot
be had, the next one of the chain tensorrt → onnxruntime → torch (CUDA, then CPU) is tried
and the choice and its reason are logged. TensorRT engines are built on the machine that
runs them, from the ONNX files of `densepred export`, and cached under a key made of the
GPU, TensorRT version, shapes, precision and the ONNX file's hash.

Nothing here imports onnxruntime, tensorrt or CUDA until a backend that needs it is asked for.
"""

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from densepred_ros.models.base import BACKENDS, COMPONENTS, parse_backend_spec  # noqa: F401
import torch
from torch import nn

LOG = logging.getLogger('densepred_ros.backends')

ORT_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')
ENGINE_PRECISIONS = ('fp32', 'fp16')
DEFAULT_CACHE = os.path.join('~', '.cache', 'densepred_ros', 'tensorrt')
DEFAULT_WORKSPACE_GIB = 4.0

Runner = Callable[..., torch.Tensor]


class BackendUnavailable(RuntimeError):
    """A backend cannot run a component here (library, device or file missing, build failed)."""


# --------------------------------------------------------------------------------------
# The torch modules of the components (also what `export.py` traces)
# --------------------------------------------------------------------------------------

class VaeEncoderModule(nn.Module):
    """Image 1×3×H×W in [-1, 1] → posterior moments 1×2C×H/8×W/8 (mean, log-variance).

    I/O is float32; the wrapped VAE may be float16/bfloat16 (inputs are cast to it).
    """

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.dtype = next(vae.parameters()).dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the moments (float32)."""
        moments = self.vae.encode(image.to(self.dtype)).latent_dist.parameters
        return moments.float()


class UNetModule(nn.Module):
    """One Lotus UNet call: (sample, timestep, prompt embedding, task label) → x0.

    Args of forward: sample 1×C×h×w, timestep [1] (999 for Lotus), encoder_hidden_states
    1×T×D, class_labels 1×4; all float32. Returns 1×4×h×w float32.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.dtype = next(unet.parameters()).dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor,
                class_labels: torch.Tensor) -> torch.Tensor:
        """Return the predicted annotation latent (float32)."""
        out = self.unet(sample.to(self.dtype), timestep,
                        encoder_hidden_states=encoder_hidden_states.to(self.dtype),
                        class_labels=class_labels.to(self.dtype), return_dict=False)[0]
        return out.float()


class VaeDecoderModule(nn.Module):
    """Scaled latent 1×C×h×w (the UNet's x0) → decoded image 1×3×8h×8w in about [-1, 1]."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.dtype = next(vae.parameters()).dtype

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Return the decoded image (float32)."""
        latent = latent.to(self.dtype) / self.scaling_factor
        return self.vae.decode(latent, return_dict=False)[0].float()


# --------------------------------------------------------------------------------------
# Backend requests and the fallback chain
# --------------------------------------------------------------------------------------

def fallback_chain(requested: str, device: torch.device) -> List[Tuple[str, str]]:
    """Return the (backend, device type) pairs to try in order for a requested backend.

    tensorrt → onnxruntime (CUDA) → torch (CUDA) → torch (CPU); onnxruntime → torch;
    torch → torch on its device then the CPU. CUDA entries appear only when `device`
    is a CUDA device.
    """
    if requested not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {requested!r}')
    cuda = device.type == 'cuda'
    if requested == 'tensorrt':
        chain = [('tensorrt', 'cuda'), ('onnxruntime', 'cuda'), ('torch', 'cuda')] if cuda \
            else [('tensorrt', 'cuda')]
    elif requested == 'onnxruntime':
        chain = [('onnxruntime', device.type)] + ([('torch', 'cuda')] if cuda else [])
    else:
        chain = [('torch', device.type)]
    if ('torch', 'cpu') not in chain:
        chain.append(('torch', 'cpu'))
    return chain


@dataclass(frozen=True)
class Choice:
    """What runs a component, and why the earlier candidates of its chain were passed over.

    Attributes:
        component: 'vae_encoder', 'unet' or 'vae_decoder'.
        requested: the backend asked for.
        backend, device: what runs it ('torch'/'onnxruntime'/'tensorrt', 'cpu'/'cuda').
        detail: e.g. the ONNX Runtime providers or the engine file.
        skipped: one 'backend/device: reason' line per candidate that failed.
    """

    component: str
    requested: str
    backend: str
    device: str
    detail: str = ''
    skipped: Tuple[str, ...] = ()

    def describe(self) -> str:
        """Return a one-line human summary for the log."""
        text = f'{self.component}: {self.backend} on {self.device}'
        if self.detail:
            text += f' ({self.detail})'
        if self.skipped:
            text += f'; requested {self.requested}, fell back because ' + '; '.join(self.skipped)
        return text


Factory = Callable[[str, str], Tuple[Runner, str]]


def choose(component: str, requested: str, device: torch.device,
           factories: Dict[str, Factory], log: logging.Logger = LOG) -> Tuple[Runner, Choice]:
    """Open `component` on the first backend of its fallback chain that works.

    Args:
        component: the component name.
        requested: the backend asked for.
        device: the predictor's torch device (decides whether CUDA entries are tried).
        factories: backend → f(component, device_type) returning (runner, detail) or
            raising BackendUnavailable (any other exception is also caught and logged).
        log: where the choice is logged (warning when it fell back, info otherwise).

    Raises:
        BackendUnavailable: no entry of the chain worked (the reasons are in the message).
    """
    skipped = []
    for backend, dev in fallback_chain(requested, device):
        factory = factories.get(backend)
        if factory is None:
            skipped.append(f'{backend}/{dev}: not offered')
            continue
        try:
            runner, detail = factory(component, dev)
        except Exception as exc:  # any failure of an optional backend means "try the next"
            skipped.append(f'{backend}/{dev}: {type(exc).__name__}: {exc}')
            continue
        choice = Choice(component, requested, backend, dev, detail, tuple(skipped))
        (log.warning if skipped else log.info)(choice.describe())
        return runner, choice
    raise BackendUnavailable(f'no backend can run {component}: ' + '; '.join(skipped))


# --------------------------------------------------------------------------------------
# Static-shape checks shared by the ONNX Runtime and TensorRT runners
# --------------------------------------------------------------------------------------

def check_shapes(component: str, names: Sequence[str], expected: Dict[str, Sequence[int]],
                 tensors: Sequence[torch.Tensor]) -> None:
    """Raise ValueError when the inputs do not have the shapes the file was exported for."""
    if len(tensors) != len(names):
        raise ValueError(f'{component} takes {len(names)} inputs ({", ".join(names)}), '
                         f'got {len(tensors)}')
    for name, tensor in zip(names, tensors):
        want = [int(d) for d in expected[name]]
        if list(tensor.shape) != want:
            raise ValueError(
                f'{component} input {name!r} was exported for shape {want}, got '
                f'{list(tensor.shape)}: the processing size differs from the export; '
                'export again for this size (densepred export --height --width) or set '
                'the processing resolution that gives the exported size')


# --------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------

def ort_providers(requested: Sequence[str], device_type: str,
                  available: Sequence[str]) -> List[str]:
    """Return the ONNX Runtime providers to use, in order of preference.

    Args:
        requested: providers asked for (e.g. from a parameter); empty = the preference
            order TensorRT, CUDA, CPU.
        device_type: 'cuda' keeps the GPU providers, 'cpu' drops them.
        available: `onnxruntime.get_available_providers()`.

    Raises:
        BackendUnavailable: none of the requested providers is available here.
    """
    wanted = list(requested) or list(ORT_PROVIDERS)
    unknown = [p for p in wanted if not p.endswith('ExecutionProvider')]
    if unknown:
        raise ValueError(f'ONNX Runtime provider names end in ExecutionProvider, got {unknown}')
    if device_type != 'cuda':
        wanted = [p for p in wanted if p == 'CPUExecutionProvider']
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise BackendUnavailable(f'none of the ONNX Runtime providers {wanted} is available '
                                 f'(available: {list(available)})')
    return chosen


class OrtRunner:
    """One exported component on an ONNX Runtime session (static shapes, float32 I/O).

    On the CPU provider tensors go through numpy (zero-copy where possible); with a CUDA or
    TensorRT provider, inputs and outputs are bound to torch CUDA tensors (I/O binding).
    """

    def __init__(self, component: str, path: Path, providers: Sequence[str],
                 expected: Dict[str, Sequence[int]], outputs: Dict[str, Sequence[int]],
                 threads: int = 0, provider_options: Optional[List[dict]] = None) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.component = component
        self.session = ort.InferenceSession(str(path), sess_options=options,
                                            providers=list(providers),
                                            provider_options=provider_options)
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.expected = expected
        self.output_shape = list(outputs[self.output_name])
        self.on_gpu = self.providers[0] != 'CPUExecutionProvider'

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the session on float32 tensors; return a float32 tensor."""
        check_shapes(self.component, self.input_names, self.expected, tensors)
        if self.on_gpu:
            return self._run_bound(tensors)
        feed = {n: t.detach().float().cpu().contiguous().numpy()
                for n, t in zip(self.input_names, tensors)}
        return torch.from_numpy(self.session.run([self.output_name], feed)[0])

    def _run_bound(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        import numpy as np
        device = torch.device('cuda', torch.cuda.current_device())
        inputs = [t.detach().to(device, torch.float32).contiguous() for t in tensors]
        output = torch.empty(self.output_shape, device=device, dtype=torch.float32)
        binding = self.session.io_binding()
        for name, tensor in zip(self.input_names, inputs):
            binding.bind_input(name, 'cuda', device.index, np.float32, list(tensor.shape),
                               tensor.data_ptr())
        binding.bind_output(self.output_name, 'cuda', device.index, np.float32,
                            self.output_shape, output.data_ptr())
        torch.cuda.current_stream().synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return output


def open_onnxruntime(component: str, device_type: str, folder: Path, meta: Dict,
                     providers: Sequence[str] = (), threads: int = 0,
                     trt_cache: Optional[Path] = None) -> Tuple[OrtRunner, str]:
    """Open an exported component on ONNX Runtime; return (runner, detail for the log)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f'onnxruntime is not installed ({exc})') from exc
    entry = _entry(meta, component, folder)
    chosen = ort_providers(providers, device_type, ort.get_available_providers())
    options = []
    for name in chosen:
        if name == 'TensorrtExecutionProvider':
            cache = Path(os.path.expanduser(str(trt_cache or DEFAULT_CACHE))) / 'ort'
            cache.mkdir(parents=True, exist_ok=True)
            options.append({'trt_engine_cache_enable': True,
                            'trt_engine_cache_path': str(cache),
                            'trt_fp16_enable': meta.get('precision') == 'fp16'})
        else:
            options.append({})
    runner = OrtRunner(component, folder / entry['file'], chosen, entry['inputs'],
                       entry['outputs'], threads=threads, provider_options=options)
    return runner, f'ONNX Runtime {ort.__version__}, {", ".join(runner.providers)}'


def _entry(meta: Dict, component: str, folder: Path) -> Dict:
    entry = meta.get('components', {}).get(component)
    if entry is None:
        raise BackendUnavailable(f'{folder} has no exported {component} '
                                 f'(exported: {sorted(meta.get("components", {}))})')
    if not (folder / entry['file']).is_file():
        raise BackendUnavailable(f'{folder / entry["file"]} is missing')
    return entry


# --------------------------------------------------------------------------------------
# TensorRT engine cache
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on; any change means a rebuild.

    Attributes:
        component: 'vae_encoder', 'unet' or 'vae_decoder'.
        gpu_name: e.g. 'NVIDIA H100 80GB HBM3' or 'Orin'.
        compute_capability: e.g. '9.0' or '8.7'.
        trt_version: `tensorrt.__version__`.
        input_shapes: ((name, (dims...)), ...) of the static profile.
        precision: 'fp32' or 'fp16'.
        onnx_sha256: hash of the ONNX file (and its external data).
        builder: builder settings that change the engine (opt level, workspace), as text.
    """

    component: str
    gpu_name: str
    compute_capability: str
    trt_version: str
    input_shapes: Tuple[Tuple[str, Tuple[int, ...]], ...]
    precision: str
    onnx_sha256: str
    builder: str = ''

    def to_json(self) -> Dict:
        """Return the key as a JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data['input_shapes'] = [[n, list(s)] for n, s in self.input_shapes]
        return data

    @classmethod
    def from_json(cls, data: Dict) -> 'EngineKey':
        """Rebuild a key from `to_json` output."""
        data = dict(data)
        data['input_shapes'] = tuple((str(n), tuple(int(d) for d in s))
                                     for n, s in data['input_shapes'])
        return cls(**data)

    def digest(self) -> str:
        """Return a hex SHA-256 of the key (stable across runs)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def file_stem(self) -> str:
        """Return the engine's file stem: component, size, precision and GPU.

        Two keys that differ only in TensorRT version or ONNX hash share a stem, so a
        stale engine is replaced rather than kept beside the new one.
        """
        sizes = [s for _, s in self.input_shapes if len(s) == 4]
        size = f'{sizes[0][2]}x{sizes[0][3]}' if sizes else 'any'
        gpu = ''.join(c if c.isalnum() else '-' for c in self.gpu_name).strip('-').lower()
        cc = self.compute_capability.replace('.', '')
        return f'{self.component}_{size}_{self.precision}_{gpu}_sm{cc}'


class EngineCache:
    """Engines on disk: `<root>/<stem>.plan` with the full key in `<stem>.json` beside it.

    An engine is used only when its sidecar holds exactly the requested key; otherwise
    it is rebuilt. Builds happen under an exclusive `fcntl.flock` on `<stem>.lock`, so two
    processes never build the same engine at once, and files are written to a temporary
    name and moved into place (`os.replace`), so a reader never sees half a file.
    """

    def __init__(self, root: os.PathLike) -> None:
        self.root = Path(os.path.expanduser(str(root)))

    def paths(self, key: EngineKey) -> Tuple[Path, Path, Path]:
        """Return (engine, sidecar, lock) paths for a key."""
        stem = self.root / key.file_stem()
        return (stem.with_suffix('.plan'), stem.with_suffix('.json'),
                stem.with_suffix('.lock'))

    def lookup(self, key: EngineKey) -> Optional[Path]:
        """Return the engine path when a complete engine with exactly this key is cached."""
        plan, sidecar, _ = self.paths(key)
        if not plan.is_file() or plan.stat().st_size == 0 or not sidecar.is_file():
            return None
        try:
            stored = json.loads(sidecar.read_text())
            if EngineKey.from_json(stored['key']) != key:
                return None
            if stored.get('bytes') != plan.stat().st_size:
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return plan

    def mismatch(self, key: EngineKey) -> List[str]:
        """Return the fields in which the cached sidecar differs from `key` (for the log)."""
        _, sidecar, _ = self.paths(key)
        try:
            stored = json.loads(sidecar.read_text())['key']
        except (OSError, ValueError, KeyError, TypeError):
            return ['no readable sidecar']
        return [k for k, v in key.to_json().items() if stored.get(k) != v]

    @contextmanager
    def locked(self, key: EngineKey):
        """Hold the exclusive build lock of a key's engine (blocks until it is free)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _, _, lock = self.paths(key)
        with open(lock, 'a+') as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def store(self, key: EngineKey, engine: bytes, extra: Optional[Dict] = None) -> Path:
        """Write an engine and its sidecar atomically; return the engine path."""
        if not engine:
            raise ValueError('refusing to cache an empty engine')
        plan, sidecar, _ = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(plan, bytes(engine))
        record = {'key': key.to_json(), 'bytes': len(engine), 'digest': key.digest()}
        record.update(extra or {})
        _atomic_write(sidecar, (json.dumps(record, indent=2) + '\n').encode())
        return plan

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes],
                     force: bool = False, log: logging.Logger = LOG) -> Tuple[Path, bool]:
        """Return (engine path, built now?), building under the lock when needed.

        Args:
            key: the engine's key.
            build: returns the serialized engine (called at most once, under the lock).
            force: rebuild even when a matching engine is cached.
        """
        if not force:
            hit = self.lookup(key)
            if hit is not None:
                return hit, False
        with self.locked(key):
            if not force:
                hit = self.lookup(key)   # another process may have built it meanwhile
                if hit is not None:
                    return hit, False
                plan, _, _ = self.paths(key)
                if plan.exists():
                    log.warning('rebuilding TensorRT engine %s: cached key differs in %s',
                                plan.name, ', '.join(self.mismatch(key)))
            else:
                log.warning('rebuilding TensorRT engine %s on request', key.file_stem())
            return self.store(key, build()), True

    def invalidate(self, key: EngineKey) -> None:
        """Remove a cached engine and its sidecar (e.g. after it failed to deserialize)."""
        plan, sidecar, _ = self.paths(key)
        with self.locked(key):
            for path in (plan, sidecar):
                path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def onnx_hash(folder: Path, entry: Dict) -> str:
    """Return the ONNX file's SHA-256: the recorded one if the file is unchanged, else fresh.

    The hash recorded at export is trusted only while the file keeps the size recorded
    with it; hashing a 3.5 GB UNet takes seconds, so it is not redone on every start.
    """
    from densepred_ros.models.export import file_sha256
    path = folder / entry['file']
    size = sum(p.stat().st_size for p in (path, Path(str(path) + '.data')) if p.is_file())
    if entry.get('sha256') and entry.get('bytes') == size:
        return entry['sha256']
    return file_sha256(path)


# --------------------------------------------------------------------------------------
# TensorRT build and runtime (written to the TensorRT 8.6 / 10 Python API; needs CUDA)
# --------------------------------------------------------------------------------------

def import_tensorrt():
    """Import tensorrt, or raise BackendUnavailable saying why it cannot be used here."""
    if not torch.cuda.is_available():
        raise BackendUnavailable('CUDA is not available to torch')
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f'the tensorrt Python package is not importable ({exc}); on Jetson install '
            'python3-libnvinfer and use a venv with --system-site-packages') from exc
    return trt


def trt_major(trt) -> int:
    """Return TensorRT's major version number."""
    return int(str(trt.__version__).split('.')[0])


def engine_key(component: str, meta: Dict, folder: Path, precision: str,
               gpu_name: str, compute_capability: str, trt_version: str,
               workspace_gib: float = DEFAULT_WORKSPACE_GIB, opt_level: int = 3) -> EngineKey:
    """Return the cache key of one component's engine (plain data: no TensorRT needed)."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f'engine precision must be one of {ENGINE_PRECISIONS}, '
                         f'got {precision!r}')
    entry = _entry(meta, component, folder)
    shapes = tuple((n, tuple(int(d) for d in s)) for n, s in entry['inputs'].items())
    return EngineKey(component=component, gpu_name=gpu_name,
                     compute_capability=compute_capability, trt_version=str(trt_version),
                     input_shapes=shapes, precision=precision,
                     onnx_sha256=onnx_hash(folder, entry),
                     builder=f'opt{opt_level}_ws{workspace_gib:g}_onnx{meta.get("precision")}')


def build_engine(onnx_path: Path, precision: str, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                 opt_level: int = 3, log: logging.Logger = LOG) -> bytes:
    """Build a serialized TensorRT engine from an ONNX file with static shapes.

    TensorRT 8.x needs an explicit-batch network; 10.x ignores that flag. fp16 is the
    builder flag on 8.x/10.x (weakly typed, fp32 ONNX); TensorRT 11 drops weak typing,
    so there an fp16 ONNX export (`--precision fp16`) is built strongly typed.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = trt_major(trt)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    strongly_typed = major >= 11
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED'):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(trt, 'OnnxParserFlag') and hasattr(trt.OnnxParserFlag, 'NATIVE_INSTANCENORM'):
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if hasattr(config, 'builder_optimization_level'):
        config.builder_optimization_level = int(opt_level)
    if precision == 'fp16' and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == 'fp16':
        log.warning('TensorRT %s builds strongly typed networks: the engine has the '
                    'precision of the ONNX file; export with --precision fp16 for fp16',
                    trt.__version__)
    log.warning('building TensorRT %s engine from %s (%s); this takes minutes',
                trt.__version__, onnx_path, precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(
            f'TensorRT could not build {onnx_path} ("Could not find any implementation" '
            'usually means out of memory: lower the resolution or the workspace)')
    return bytes(serialized)


_TORCH_DTYPES = {'FLOAT': torch.float32, 'HALF': torch.float16, 'INT32': torch.int32,
                 'INT64': torch.int64, 'BOOL': torch.bool, 'INT8': torch.int8,
                 'UINT8': torch.uint8, 'BF16': torch.bfloat16}


class TensorRTRunner:
    """One engine on torch CUDA tensors and a torch CUDA stream (no pycuda).

    TensorRT 8.6+ runs by tensor name (`set_input_shape`, `set_tensor_address`,
    `execute_async_v3`); older 8.x engines fall back to the binding API
    (`execute_async_v2` with a pointer list).
    """

    def __init__(self, component: str, engine_bytes: bytes, device: torch.device,
                 input_order: Sequence[str] = ()) -> None:
        trt = import_tensorrt()
        self.component = component
        self.device = device
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailable(f'TensorRT could not deserialize the {component} engine '
                                     '(built by another TensorRT version or GPU?)')
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=device)
        self.named = hasattr(self.context, 'execute_async_v3')
        self.inputs: List[str] = []
        self.outputs: Dict[str, torch.Tensor] = {}
        self.shapes: Dict[str, List[int]] = {}
        if self.named:
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                shape = list(self.engine.get_tensor_shape(name))
                dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    self.inputs.append(name)
                    self.shapes[name] = shape
                    self.context.set_input_shape(name, shape)
                else:
                    self.outputs[name] = torch.empty(shape, dtype=dtype, device=device)
        else:  # TensorRT 8.x binding API
            for i in range(self.engine.num_bindings):
                name = self.engine.get_binding_name(i)
                shape = list(self.engine.get_binding_shape(i))
                dtype = _TORCH_DTYPES[self.engine.get_binding_dtype(i).name]
                if self.engine.binding_is_input(i):
                    self.inputs.append(name)
                    self.shapes[name] = shape
                else:
                    self.outputs[name] = torch.empty(shape, dtype=dtype, device=device)
        if sorted(input_order) == sorted(self.inputs):
            self.inputs = list(input_order)   # the caller's order, not the engine's

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the engine; return its (first) output as a new float32 CUDA tensor."""
        check_shapes(self.component, self.inputs, self.shapes, tensors)
        feeds = [t.detach().to(self.device, torch.float32).contiguous() for t in tensors]
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            if self.named:
                for name, tensor in zip(self.inputs, feeds):
                    self.context.set_tensor_address(name, tensor.data_ptr())
                for name, tensor in self.outputs.items():
                    self.context.set_tensor_address(name, tensor.data_ptr())
                ok = self.context.execute_async_v3(self.stream.cuda_stream)
            else:
                pointers = {n: t.data_ptr() for n, t in zip(self.inputs, feeds)}
                pointers.update({n: t.data_ptr() for n, t in self.outputs.items()})
                order = [self.engine.get_binding_name(i)
                         for i in range(self.engine.num_bindings)]
                ok = self.context.execute_async_v2([pointers[n] for n in order],
                                                   self.stream.cuda_stream)
        if not ok:
            raise RuntimeError(f'TensorRT failed to run the {self.component} engine')
        for tensor in feeds:
            tensor.record_stream(self.stream)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return next(iter(self.outputs.values())).float().clone()


def open_tensorrt(component: str, device_type: str, folder: Path, meta: Dict,
                  precision: str, cache: EngineCache, device: torch.device,
                  rebuild: bool = False, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                  log: logging.Logger = LOG) -> Tuple[TensorRTRunner, str]:
    """Build (or load from the cache) and open one component's engine."""
    if device_type != 'cuda' or device.type != 'cuda':
        raise BackendUnavailable('TensorRT needs a CUDA device')
    trt = import_tensorrt()
    props = torch.cuda.get_device_properties(device)
    key = engine_key(component, meta, folder, precision, props.name,
                     f'{props.major}.{props.minor}', trt.__version__,
                     workspace_gib=workspace_gib)
    entry = _entry(meta, component, folder)
    onnx_path = folder / entry['file']
    order = list(entry.get('inputs', {}))
    path, built = cache.get_or_build(
        key, lambda: build_engine(onnx_path, precision, workspace_gib, log=log),
        force=rebuild, log=log)
    try:
        runner = TensorRTRunner(component, path.read_bytes(), device, order)
    except BackendUnavailable:
        if built:
            raise
        log.warning('cached engine %s did not load; rebuilding it', path)
        cache.invalidate(key)
        path, _ = cache.get_or_build(
            key, lambda: build_engine(onnx_path, precision, workspace_gib, log=log), log=log)
        runner = TensorRTRunner(component, path.read_bytes(), device, order)
    return runner, f'TensorRT {trt.__version__} {precision}, engine {path}'


# --------------------------------------------------------------------------------------
# Guard against fp16 overflow in the decoder
# --------------------------------------------------------------------------------------

@dataclass
class FiniteGuard:
    """Run `primary`; on any non-finite output switch for good to `fallback()` and log it.

    fp16 VAE decoders can overflow to inf/NaN; the fallback (e.g. an fp32 decoder) is
    created only when first needed.

    Attributes:
        primary: the fast runner.
        fallback: a factory returning the safe runner.
        name: for the log.
    """

    primary: Runner
    fallback: Callable[[], Runner]
    name: str = 'vae_decoder'
    log: logging.Logger = LOG
    tripped: bool = False
    _safe: Optional[Runner] = field(default=None, repr=False)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the primary runner, or the fallback once the primary has overflowed."""
        if not self.tripped:
            out = self.primary(*tensors)
            if torch.isfinite(out).all():
                return out
            self.tripped = True
            bad = int((~torch.isfinite(out)).sum())
            self.log.warning('%s produced %d non-finite values (fp16 overflow?); switching '
                             'to the fp32 fallback for good', self.name, bad)
        if self._safe is None:
            self._safe = self.fallback()
        return self._safe(*tensors)
