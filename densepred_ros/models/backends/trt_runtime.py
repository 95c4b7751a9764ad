"""TensorRT build and runtime (written to the TensorRT 8.6 / 10 / 11 Python API; needs CUDA).

Engines are built on the machine that runs them from the ONNX files of `densepred export`
and cached by `trt_cache`. The torch copy of a component should be off the device before
a build (the caller's job; see `LotusPredictor`); the build empties torch's cache and
sizes the workspace from the device's memory.
"""

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from densepred_ros.models.backends.chain import LOG
from densepred_ros.models.backends.trt_cache import (
    DEFAULT_WORKSPACE_GIB, engine_key, EngineCache, workspace_bytes)
from densepred_ros.models.base import BackendUnavailable
from densepred_ros.models.export_format import check_shapes, component_entry
import torch

#: setTensorAddress needs addresses aligned to this many bytes.
TENSOR_ALIGNMENT = 256
_STATE: Dict[str, object] = {}


def import_tensorrt():
    """Import tensorrt (plugins registered once), or raise BackendUnavailable saying why."""
    if not torch.cuda.is_available():
        raise BackendUnavailable('CUDA is not available to torch')
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f'the tensorrt Python package is not importable ({exc}); on Jetson install '
            'python3-libnvinfer and use a venv with --system-site-packages') from exc
    if 'plugins' not in _STATE and hasattr(trt, 'init_libnvinfer_plugins'):
        # TensorRT < 8.6 (JetPack 5) does not register its plugins (GroupNorm, ...) itself.
        _STATE['plugins'] = trt.init_libnvinfer_plugins(trt_logger(trt), '')
    return trt


def trt_logger(trt):
    """Return the process's one `trt.Logger` (TensorRT warns when several are made)."""
    if 'logger' not in _STATE:
        _STATE['logger'] = trt.Logger(trt.Logger.WARNING)
    return _STATE['logger']


def trt_major(trt) -> int:
    """Return TensorRT's major version number."""
    return int(str(trt.__version__).split('.')[0])


def built_precision(major: int, requested: str, onnx_precision: str) -> str:
    """Return the precision an engine really has.

    TensorRT 8.x/10.x build fp32 ONNX files weakly typed, so 'fp16' (the builder flag)
    gives fp16 kernels; TensorRT >= 11 builds strongly typed: the ONNX file's precision,
    whatever was requested.
    """
    return onnx_precision if major >= 11 else requested


def check_alignment(component: str, name: str, pointer: int) -> None:
    """Raise RuntimeError unless a device address is 256-byte aligned (setTensorAddress)."""
    if pointer % TENSOR_ALIGNMENT:
        raise RuntimeError(f'{component} tensor {name!r} at address {pointer:#x} is not '
                           f'{TENSOR_ALIGNMENT}-byte aligned, as TensorRT requires')


def build_engine(onnx_path: Path, precision: str, workspace: int = 0,
                 opt_level: int = 3, log: logging.Logger = LOG):
    """Build a serialized TensorRT engine (an IHostMemory buffer) from a static-shape ONNX file.

    TensorRT 8.x needs an explicit-batch network; 10.x ignores that flag. fp16 is the
    builder flag on 8.x/10.x (weakly typed, fp32 ONNX); TensorRT 11 drops weak typing,
    so there an fp16 ONNX export (`--precision fp16`) is built strongly typed.

    Args:
        workspace: builder workspace in bytes (0 = DEFAULT_WORKSPACE_GIB).
    """
    trt = import_tensorrt()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()   # hand torch's cached blocks to the builder
    logger = trt_logger(trt)
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
    workspace = int(workspace or DEFAULT_WORKSPACE_GIB * (1 << 30))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if hasattr(config, 'builder_optimization_level'):
        config.builder_optimization_level = int(opt_level)
    if precision == 'fp16' and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == 'fp16':
        log.warning('TensorRT %s builds strongly typed networks: the engine has the '
                    'precision of the ONNX file; export with --precision fp16 for fp16',
                    trt.__version__)
    log.warning('building TensorRT %s engine from %s (%s, workspace %d MiB); this takes '
                'minutes', trt.__version__, onnx_path, precision, workspace >> 20)
    serialized = builder.build_serialized_network(network, config)
    del parser, network   # the parsed weights go before the caller deserializes
    if serialized is None:
        raise BackendUnavailable(
            f'TensorRT could not build {onnx_path} ("Could not find any implementation" '
            'usually means out of memory: lower the resolution or the workspace)')
    return serialized


_TORCH_DTYPES = {'FLOAT': torch.float32, 'HALF': torch.float16, 'INT32': torch.int32,
                 'INT64': torch.int64, 'BOOL': torch.bool, 'INT8': torch.int8,
                 'UINT8': torch.uint8, 'BF16': torch.bfloat16}


class TensorRTRunner:
    """One engine on torch CUDA tensors and a torch CUDA stream (no pycuda).

    TensorRT 8.6+ runs by tensor name (`set_input_shape`, `set_tensor_address`,
    `execute_async_v3`); older 8.x engines fall back to the binding API
    (`execute_async_v2` with a pointer list). Every call that reports failure by its
    return value is checked.
    """

    def __init__(self, component: str, engine_bytes, device: torch.device,
                 input_order: Sequence[str] = ()) -> None:
        trt = import_tensorrt()
        self.component = component
        self.device = device
        with torch.cuda.device(device):
            self.runtime = trt.Runtime(trt_logger(trt))
            self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise BackendUnavailable(
                    f'TensorRT could not deserialize the {component} engine (built by '
                    'another TensorRT version or GPU?)')
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise BackendUnavailable(
                    f'TensorRT could not create an execution context for {component} '
                    '(out of device memory?)')
            self.stream = torch.cuda.Stream(device=device)
            self.named = hasattr(self.context, 'execute_async_v3')
            self.inputs: List[str] = []
            self.outputs: Dict[str, torch.Tensor] = {}
            self.shapes: Dict[str, List[int]] = {}
            if self.named:
                self._bind_named(trt)
            else:
                self._bind_indexed()
        if sorted(input_order) == sorted(self.inputs):
            self.inputs = list(input_order)   # the caller's order, not the engine's

    def _bind_named(self, trt) -> None:
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = list(self.engine.get_tensor_shape(name))
            dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
                self.shapes[name] = shape
                if not self.context.set_input_shape(name, shape):
                    raise BackendUnavailable(f'TensorRT rejected input shape {shape} of '
                                             f'{self.component} tensor {name!r}')
            else:
                self.outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)

    def _bind_indexed(self) -> None:   # TensorRT 8.x binding API
        for i in range(self.engine.num_bindings):
            name = self.engine.get_binding_name(i)
            shape = list(self.engine.get_binding_shape(i))
            dtype = _TORCH_DTYPES[self.engine.get_binding_dtype(i).name]
            if self.engine.binding_is_input(i):
                self.inputs.append(name)
                self.shapes[name] = shape
            else:
                self.outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the engine; return its (first) output as a new float32 CUDA tensor."""
        check_shapes(self.component, self.inputs, self.shapes, tensors)
        with torch.cuda.device(self.device):
            feeds = [t.detach().to(self.device, torch.float32).contiguous() for t in tensors]
            bound = list(zip(self.inputs, feeds)) + list(self.outputs.items())
            for name, tensor in bound:
                check_alignment(self.component, name, tensor.data_ptr())
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                if self.named:
                    for name, tensor in bound:
                        if not self.context.set_tensor_address(name, tensor.data_ptr()):
                            raise RuntimeError(f'TensorRT rejected the address of '
                                               f'{self.component} tensor {name!r}')
                    ok = self.context.execute_async_v3(self.stream.cuda_stream)
                else:
                    pointers = {n: t.data_ptr() for n, t in bound}
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


def device_facts(device: torch.device) -> Dict[str, object]:
    """Return the GPU facts of the engine key: name, compute capability, memory, SMs."""
    props = torch.cuda.get_device_properties(device)
    return {'gpu_name': props.name, 'compute_capability': f'{props.major}.{props.minor}',
            'gpu_memory_mib': int(props.total_memory) >> 20,
            'sm_count': int(props.multi_processor_count),
            'total_memory': int(props.total_memory)}


def open_tensorrt(component: str, device_type: str, folder: Path, meta: Dict,
                  precision: str, cache: EngineCache, device: torch.device,
                  rebuild: bool = False, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                  log: logging.Logger = LOG,
                  facts: Optional[Dict[str, object]] = None) -> Tuple[TensorRTRunner, str]:
    """Build (or load from the cache) and open one component's engine.

    Args:
        precision: the requested engine precision of this component.
        workspace_gib: upper limit of the builder workspace (see `workspace_bytes`).
    """
    if device_type != 'cuda' or device.type != 'cuda':
        raise BackendUnavailable('TensorRT needs a CUDA device')
    trt = import_tensorrt()
    facts = facts or device_facts(device)
    workspace = workspace_bytes(int(facts['total_memory']), workspace_gib)
    key = engine_key(component, meta, folder, precision, str(facts['gpu_name']),
                     str(facts['compute_capability']), trt.__version__,
                     workspace_gib=workspace / (1 << 30),
                     gpu_memory_mib=int(facts['gpu_memory_mib']),
                     sm_count=int(facts['sm_count']))
    entry = component_entry(meta, component, folder)
    onnx_path = folder / entry['file']
    order = list(entry.get('inputs', {}))

    def build():
        with torch.cuda.device(device):
            return build_engine(onnx_path, precision, workspace, log=log)

    path, data, built = cache.fetch(key, build, force=rebuild, log=log)
    try:
        runner = TensorRTRunner(component, data, device, order)
    except BackendUnavailable:
        if built:
            raise
        log.warning('cached engine %s did not load; rebuilding it', path)
        del data
        path, data, _ = cache.fetch(key, build, force=True, log=log)
        runner = TensorRTRunner(component, data, device, order)
    del data
    actual = built_precision(trt_major(trt), precision, str(meta.get('precision', 'fp32')))
    label = actual if actual == precision else f'{actual}, {precision} requested'
    runner.precision = actual
    return runner, f'TensorRT {trt.__version__} {label}, engine {path}'
