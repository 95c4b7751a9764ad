"""One exported component on an ONNX Runtime session (CPU, CUDA or TensorRT provider)."""

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from densepred_ros.models.backends.trt_cache import DEFAULT_CACHE
from densepred_ros.models.base import BackendUnavailable
from densepred_ros.models.export_format import check_shapes, component_entry
import numpy as np
import torch

ORT_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')


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
    entry = component_entry(meta, component, folder)
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
