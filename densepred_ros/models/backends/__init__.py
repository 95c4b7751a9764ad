"""Run the Lotus components on torch, ONNX Runtime or TensorRT, with a fallback chain.

A component is one of 'vae_encoder', 'unet', 'vae_decoder' with the contract of the
modules in `components.py` (float32 torch tensors in and out). One module per concern:

- `chain`: the fallback chain tensorrt → onnxruntime → torch (CUDA, then CPU), logged;
- `guard`: the switch to a safe runner when outputs stop being finite;
- `trt_cache`: TensorRT engine keys and the on-disk cache (locks, atomic writes);
- `ort`: ONNX Runtime sessions;
- `trt_runtime`: TensorRT engine build and execution.

Nothing here imports onnxruntime, tensorrt or CUDA until a backend that needs it is asked for.
"""

from densepred_ros.models.backends.chain import (
    Choice, choose, Factory, fallback_chain, LOG, Runner)
from densepred_ros.models.backends.guard import count_non_finite, FiniteGuard, NonFiniteError
from densepred_ros.models.backends.ort import (
    GPU_PROVIDERS, open_onnxruntime, ORT_PROVIDERS, ort_providers, ort_trt_cache, OrtRunner,
    provider_options)
from densepred_ros.models.backends.trt_cache import (
    BUILD_RECIPE_VERSION, DEFAULT_CACHE, DEFAULT_WORKSPACE_GIB, engine_key, EngineCache,
    EngineKey, workspace_bytes)
from densepred_ros.models.backends.trt_runtime import (
    build_engine, built_precision, check_alignment, device_facts, import_tensorrt,
    open_tensorrt, TensorRTRunner, trt_logger, trt_major)
from densepred_ros.models.base import (
    BACKENDS, BackendUnavailable, COMPONENTS, ENGINE_PRECISIONS, parse_backend_spec,
    parse_precision_spec)
from densepred_ros.models.components import UNetModule, VaeDecoderModule, VaeEncoderModule
from densepred_ros.models.export_format import check_shapes, onnx_hash

__all__ = [
    'BACKENDS', 'BackendUnavailable', 'build_engine', 'BUILD_RECIPE_VERSION',
    'built_precision', 'check_alignment', 'check_shapes', 'Choice', 'choose', 'COMPONENTS',
    'count_non_finite', 'DEFAULT_CACHE', 'DEFAULT_WORKSPACE_GIB', 'device_facts',
    'ENGINE_PRECISIONS', 'engine_key', 'EngineCache', 'EngineKey', 'Factory',
    'fallback_chain', 'FiniteGuard', 'GPU_PROVIDERS', 'import_tensorrt', 'LOG',
    'NonFiniteError', 'onnx_hash', 'open_onnxruntime', 'open_tensorrt', 'ORT_PROVIDERS',
    'ort_providers', 'ort_trt_cache', 'OrtRunner', 'parse_backend_spec',
    'parse_precision_spec', 'provider_options', 'Runner', 'TensorRTRunner', 'trt_logger',
    'trt_major', 'UNetModule', 'VaeDecoderModule', 'VaeEncoderModule', 'workspace_bytes',
]
