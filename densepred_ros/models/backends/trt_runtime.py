"""TensorRT build and runtime (written to the TensorRT 8.6 / 10 Python API; needs CUDA)."""

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from densepred_ros.models.backends.chain import LOG
from densepred_ros.models.backends.trt_cache import (
    DEFAULT_WORKSPACE_GIB, engine_key, EngineCache)
from densepred_ros.models.base import BackendUnavailable
from densepred_ros.models.export_format import check_shapes, component_entry
import torch


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
    entry = component_entry(meta, component, folder)
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
