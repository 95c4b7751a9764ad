"""Yardsticks for precision tests, measured on the same model and input in the same run.

A fixed tolerance tuned on one CPU fails on another (oneDNN and ONNX Runtime pick other
kernels on AVX2, AVX-512-BF16 and AMX machines), so each bound here rests on a reference:

- An fp32 implementation other than torch's (ONNX Runtime, another memory layout) may
  differ from torch fp32 by a few times torch's own fp32 rounding error, measured as its
  distance from a float64 run of the same model (`FP32_FACTOR`).
- A bf16/fp16 path must be about as precise as what the Lotus authors' `infer.py` does
  to the same model (torch.autocast), measured against fp32 (`REDUCED_MEAN_FACTOR`,
  `REDUCED_MAX_FACTOR`).
"""

import contextlib
from typing import Iterator

from densepred_ros.models import load_predictor, PredictorOptions
from densepred_ros.models import runtime
import numpy as np
import torch

FP32_FACTOR = 10.0
REDUCED_MEAN_FACTOR = 2.0
REDUCED_MAX_FACTOR = 4.0


@contextlib.contextmanager
def _float64_available() -> Iterator[None]:
    runtime.DTYPES['fp64'] = torch.float64
    try:
        yield
    finally:
        del runtime.DTYPES['fp64']


def float64_values(checkpoint: str, rgb: np.ndarray, **options) -> np.ndarray:
    """Return the torch prediction of the model run in float64 (H×W, float64)."""
    with _float64_available():
        predictor = load_predictor(checkpoint, PredictorOptions(
            **{**options, 'dtype': 'fp64', 'device': 'cpu'}))
        return predictor.predict(rgb).values.astype(np.float64)


def fp32_bound(checkpoint: str, rgb: np.ndarray, **options) -> float:
    """Return the max difference allowed between two fp32 implementations of the model.

    `FP32_FACTOR` times the max distance of torch fp32 from float64 on this input.
    """
    exact = float64_values(checkpoint, rgb, **options)
    fp32 = load_predictor(checkpoint, PredictorOptions(
        **{**options, 'dtype': 'fp32', 'device': 'cpu'})).predict(rgb).values
    error = float(np.abs(fp32 - exact).max())
    assert error > 0.0, 'float64 and float32 agree exactly: the yardstick measures nothing'
    return FP32_FACTOR * error


def autocast_errors(checkpoint: str, rgb: np.ndarray, dtype: torch.dtype,
                    **options) -> np.ndarray:
    """Return |autocast − fp32| per pixel: the authors' reduced-precision setting."""
    predictor = load_predictor(checkpoint, PredictorOptions(
        **{**options, 'dtype': 'fp32', 'device': 'cpu'}))
    exact = predictor.predict(rgb).values
    with torch.autocast('cpu', dtype=dtype):
        reduced = predictor.predict(rgb).values
    return np.abs(reduced - exact)


def assert_as_precise_as_autocast(values: np.ndarray, exact: np.ndarray,
                                  yardstick: np.ndarray) -> None:
    """Assert |values − exact| is within the factors of the autocast yardstick."""
    error = np.abs(values - exact)
    assert yardstick.max() > 0.0, 'autocast changed nothing: the yardstick measures nothing'
    assert error.mean() <= REDUCED_MEAN_FACTOR * yardstick.mean(), (
        f'mean error {error.mean():.3g} against autocast {yardstick.mean():.3g}')
    assert error.max() <= REDUCED_MAX_FACTOR * yardstick.max(), (
        f'max error {error.max():.3g} against autocast {yardstick.max():.3g}')
