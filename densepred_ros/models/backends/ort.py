"""One exported component on an ONNX Runtime session (CPU, CUDA or TensorRT provider)."""

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from densepred_ros.models.backends.trt_cache import DEFAULT_CACHE
from densepred_ros.models.base import BackendUnavailable
from densepred_ros.models.export_format import check_shapes, component_entry, onnx_hash
import numpy as np
import torch

ORT_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')


GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def ort_providers(requested: Sequence[str], device_type: str,
                  available: Sequence[str]) -> List[str]:
    """Return the ONNX Runtime providers to use, in order of preference.

    Args:
        requested: providers asked for (e.g. from a parameter); empty = the preference
            order TensorRT, CUDA, CPU.
        device_type: 'cuda' needs at least one GPU provider (the CPU one stays behind
            them for operators they lack); 'cpu' keeps only the CPU provider.
        available: `onnxruntime.get_available_providers()`.

    Raises:
        BackendUnavailable: none of the requested providers for this device is available
            here, e.g. a CUDA request with the CPU-only onnxruntime build (the aarch64
            wheel): the chain then goes on to torch on CUDA, not to ONNX Runtime on the CPU.
    """
    wanted = list(requested) or list(ORT_PROVIDERS)
    unknown = [p for p in wanted if not p.endswith('ExecutionProvider')]
    if unknown:
        raise ValueError(f'ONNX Runtime provider names end in ExecutionProvider, got {unknown}')
    if device_type != 'cuda':
        wanted = [p for p in wanted if p == 'CPUExecutionProvider']
    chosen = [p for p in wanted if p in available]
    if device_type == 'cuda' and not any(p in GPU_PROVIDERS for p in chosen):
        raise BackendUnavailable(
            f'no GPU provider of {wanted} is available to ONNX Runtime (available: '
            f'{list(available)}; the CPU-only onnxruntime package?)')
    if not chosen:
        raise BackendUnavailable(f'none of the ONNX Runtime providers {wanted} is available '
                                 f'(available: {list(available)})')
    return chosen


def ort_trt_cache(cache_root: Path, component: str, onnx_sha256: str,
                  precision: str) -> Tuple[Path, str]:
    """Return (engine cache folder, file prefix) of ONNX Runtime's TensorRT provider.

    ONNX Runtime names a cached engine from the model's file name, tensor names and
    library versions, not its weights (microsoft/onnxruntime#6455): every export would
    share `unet.onnx`'s engine. The folder and the prefix therefore carry the ONNX
    content hash, the component and the precision.
    """
    tag = hashlib.sha256(f'{onnx_sha256}:{component}:{precision}'.encode()).hexdigest()[:16]
    name = f'{component}_{precision}_{tag}'
    return Path(cache_root) / 'ort' / name, name


def provider_options(chosen: Sequence[str], device_index: int, cache_root: Path,
                     component: str, onnx_sha256: str, precision: str,
                     ort_version: str) -> List[dict]:
    """Return ONNX Runtime provider options, one dict per chosen provider.

    The GPU providers get `device_id`; the TensorRT provider its own engine cache per
    export (`ort_trt_cache`), a shared timing cache, and fp16 when `precision` is 'fp16'.
    The prefix and timing-cache path options exist from ONNX Runtime 1.17 on.
    """
    recent = tuple(int(p) for p in str(ort_version).split('.')[:2]) >= (1, 17)
    options = []
    for name in chosen:
        if name == 'TensorrtExecutionProvider':
            folder, prefix = ort_trt_cache(cache_root, component, onnx_sha256, precision)
            entry = {'device_id': int(device_index), 'trt_engine_cache_enable': True,
                     'trt_engine_cache_path': str(folder),
                     'trt_timing_cache_enable': True,
                     'trt_fp16_enable': precision == 'fp16'}
            if recent:
                entry['trt_engine_cache_prefix'] = prefix
                entry['trt_timing_cache_path'] = str(Path(cache_root) / 'ort' / 'timing')
            options.append(entry)
        elif name == 'CUDAExecutionProvider':
            options.append({'device_id': int(device_index)})
        else:
            options.append({})
    return options


class OrtRunner:
    """One exported component on an ONNX Runtime session (static shapes, float32 I/O).

    On the CPU provider tensors go through numpy (zero-copy where possible); with a CUDA or
    TensorRT provider, inputs and outputs are bound to torch CUDA tensors (I/O binding).
    """

    def __init__(self, component: str, path: Path, providers: Sequence[str],
                 expected: Dict[str, Sequence[int]], outputs: Dict[str, Sequence[int]],
                 threads: int = 0, provider_options: Optional[List[dict]] = None,
                 device_index: int = 0) -> None:
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
        self.device_index = int(device_index)

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the session on float32 tensors; return a float32 tensor."""
        check_shapes(self.component, self.input_names, self.expected, tensors)
        if self.on_gpu:
            return self._run_bound(tensors)
        feed = {n: t.detach().float().cpu().contiguous().numpy()
                for n, t in zip(self.input_names, tensors)}
        return torch.from_numpy(self.session.run([self.output_name], feed)[0])

    def _run_bound(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        device = torch.device('cuda', self.device_index)
        inputs = [t.detach().to(device, torch.float32).contiguous() for t in tensors]
        output = torch.empty(self.output_shape, device=device, dtype=torch.float32)
        binding = self.session.io_binding()
        for name, tensor in zip(self.input_names, inputs):
            binding.bind_input(name, 'cuda', device.index, np.float32, list(tensor.shape),
                               tensor.data_ptr())
        binding.bind_output(self.output_name, 'cuda', device.index, np.float32,
                            self.output_shape, output.data_ptr())
        torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return output


def open_onnxruntime(component: str, device_type: str, folder: Path, meta: Dict,
                     providers: Sequence[str] = (), threads: int = 0,
                     trt_cache: Optional[Path] = None, device: Optional[torch.device] = None,
                     precision: Optional[str] = None,
                     available: Optional[Sequence[str]] = None) -> Tuple[OrtRunner, str]:
    """Open an exported component on ONNX Runtime; return (runner, detail for the log).

    Args:
        device: the CUDA device for the GPU providers ('cuda' = the current one).
        precision: the TensorRT provider's precision (None = the export's).
        available: the providers present (None = `onnxruntime.get_available_providers()`;
            given in tests).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f'onnxruntime is not installed ({exc})') from exc
    entry = component_entry(meta, component, folder)
    if available is None:
        available = ort.get_available_providers()
    chosen = ort_providers(providers, device_type, available)
    index = 0
    if device_type == 'cuda':
        device = device if device is not None and device.type == 'cuda' else None
        index = device.index if device is not None and device.index is not None \
            else torch.cuda.current_device()
    precision = precision or str(meta.get('precision', 'fp32'))
    cache_root = Path(os.path.expanduser(str(trt_cache or DEFAULT_CACHE)))
    options = provider_options(chosen, index, cache_root, component,
                               onnx_hash(folder, entry), precision, ort.__version__)
    for entry_options in options:
        if 'trt_engine_cache_path' in entry_options:
            Path(entry_options['trt_engine_cache_path']).mkdir(parents=True, exist_ok=True)
        if 'trt_timing_cache_path' in entry_options:
            Path(entry_options['trt_timing_cache_path']).mkdir(parents=True, exist_ok=True)
    runner = OrtRunner(component, folder / entry['file'], chosen, entry['inputs'],
                       entry['outputs'], threads=threads, provider_options=options,
                       device_index=index)
    if device_type == 'cuda' and not runner.on_gpu:
        raise BackendUnavailable(f'ONNX Runtime could not start {chosen} for {component} '
                                 f'and runs it on {runner.providers} (CUDA libraries?)')
    return runner, f'ONNX Runtime {ort.__version__}, {", ".join(runner.providers)}'
