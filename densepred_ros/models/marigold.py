"""Marigold (Ke et al.) depth and normals through diffusers' own pipelines, no ROS.

Marigold is a conditional generator: a few denoising steps from noise, optionally an
ensemble of several runs averaged (which also yields an uncertainty map). diffusers
ships `MarigoldDepthPipeline` and `MarigoldNormalsPipeline`; this module puts them
behind the same `Predictor` interface as Lotus.
"""

import importlib.util
from pathlib import Path

from densepred_ros.models import runtime
from densepred_ros.models.base import (
    ModelSpec, NORMALS, parse_backend_spec, Prediction, PredictorOptions)
from densepred_ros.models.loading import CheckpointError
import numpy as np
import torch


class MarigoldPredictor:
    """Marigold depth/disparity or normals predictor.

    Attributes:
        spec: what the checkpoint predicts and its defaults.
        options: run-time options; `steps` and `ensemble_size` apply here.
    """

    def __init__(self, path: Path, space: str, options: PredictorOptions, source: str = '',
                 allow_pickle: bool = False) -> None:
        from diffusers import MarigoldDepthPipeline, MarigoldNormalsPipeline

        if options.ensemble_size < 1:
            raise ValueError(f'ensemble_size must be >= 1, got {options.ensemble_size}')
        if options.ensemble_size > 1 and importlib.util.find_spec('scipy') is None:
            raise ValueError('Marigold ensembling (ensemble_size > 1) needs scipy: '
                             'pip install scipy')
        if options.steps is not None and options.steps < 1:
            raise ValueError(f'steps must be >= 1, got {options.steps}')
        if set(parse_backend_spec(options.backend).values()) != {'torch'}:
            raise ValueError(f'backend {options.backend!r}: Marigold runs on torch only '
                             '(ONNX Runtime and TensorRT are offered for Lotus checkpoints)')
        self.options = options
        self.device = runtime.resolve_device(options.device)
        dtype_name = runtime.resolve_auto_dtype(options.dtype, self.device)
        if self.device.type == 'cpu' and dtype_name == 'bf16':
            # diffusers' Marigold image processor resizes with antialiasing, which torch
            # has no bf16 CPU kernel for.
            if options.dtype != 'auto':
                raise ValueError('Marigold cannot run in bf16 on the CPU (torch has no bf16 '
                                 "antialiased resize); use dtype 'fp32' or 'auto'")
            dtype_name = 'fp32'
        self.dtype = runtime.resolve_dtype(dtype_name)
        pipeline_class = MarigoldNormalsPipeline if space == NORMALS else MarigoldDepthPipeline
        try:
            self.pipe = pipeline_class.from_pretrained(
                path, torch_dtype=self.dtype, use_safetensors=not allow_pickle)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f'cannot load Marigold from {path}: {exc}') from exc
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.spec = ModelSpec(
            family='marigold', variant=None, space=space,
            default_processing_resolution=int(
                self.pipe.default_processing_resolution or 0),
            source=source or str(path))

    @torch.no_grad()
    def predict(self, rgb: np.ndarray) -> Prediction:
        """Predict for one H×W×3 uint8 RGB image; see `Prediction` for the value spaces."""
        runtime.check_rgb(rgb)
        image = (runtime.rgb_to_tensor(rgb) * 0.5 + 0.5).to(self.device, self.dtype)  # [0, 1]
        generator = torch.Generator('cpu').manual_seed(self.options.seed)
        ensemble = self.options.ensemble_size
        output = self.pipe(
            image,
            num_inference_steps=self.options.steps,
            ensemble_size=ensemble,
            processing_resolution=self.options.processing_resolution,
            match_input_resolution=True,
            resample_method_input='bilinear',
            resample_method_output='bilinear',
            generator=generator,
            output_type='np',
            output_uncertainty=ensemble > 1,
        )
        values = np.asarray(output.prediction[0], dtype=np.float32)     # H×W×C
        uncertainty = None
        if output.uncertainty is not None:
            uncertainty = np.asarray(output.uncertainty[0], dtype=np.float32)[..., 0]
        if self.spec.space == NORMALS:
            normals = runtime.unit_normals(values)
            return Prediction(NORMALS, runtime.model_normals_to_optical(normals), uncertainty)
        return Prediction(self.spec.space, values[..., 0], uncertainty)

    def close(self) -> None:
        """Drop the pipeline and its weights."""
        if hasattr(self, 'pipe'):
            del self.pipe
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
