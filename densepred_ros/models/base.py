"""The predictor interface shared by every model family, and what a prediction means."""

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

DEPTH = 'depth'
DISPARITY = 'disparity'
NORMALS = 'normals'
SPACES = (DEPTH, DISPARITY, NORMALS)


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint predicts and how it is run.

    Attributes:
        family: 'lotus' or 'marigold'.
        variant: Lotus 'g' (noise concatenated, 8 UNet input channels) or 'd' (4 channels);
            None for Marigold.
        space: 'depth' (affine-invariant depth, larger = farther), 'disparity'
            (affine-invariant inverse depth, larger = nearer) or 'normals'.
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
        """True for depth and disparity models, whose output needs a metric alignment."""
        return self.space in (DEPTH, DISPARITY)


@dataclass(frozen=True)
class PredictorOptions:
    """Run-time options common to every family.

    Attributes:
        processing_resolution: longest edge in pixels the model runs at; 0 = the input's
            own size; None = the model's default.
        dtype: 'fp32', 'fp16' or 'bf16'.
        device: 'auto' (CUDA when present), 'cpu' or 'cuda[:N]'.
        seed: seed for every random draw (Lotus-G noise, sampled latents, Marigold).
        latent: 'mean' encodes the image with the VAE posterior mean (deterministic);
            'sample' draws from the posterior as the Lotus authors' code does.
        steps: denoising steps (Marigold only; None = the model's default).
        ensemble_size: predictions averaged per frame (Marigold only).
    """

    processing_resolution: Optional[int] = None
    dtype: str = 'fp32'
    device: str = 'auto'
    seed: int = 0
    latent: str = 'mean'
    steps: Optional[int] = None
    ensemble_size: int = 1


@dataclass(frozen=True)
class Prediction:
    """One dense prediction at the input image's resolution.

    Attributes:
        space: 'depth', 'disparity' or 'normals' (see ModelSpec.space).
        values: float32; H×W in [0, 1] for depth/disparity (affine-invariant: only
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
