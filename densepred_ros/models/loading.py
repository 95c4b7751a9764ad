"""`load_predictor`: a checkpoint in, a ready `Predictor` of its family out.

The checks and detection live in `checkpoint.py`; their names are also importable here.
"""

from typing import Optional

from densepred_ros.models.base import CheckpointError, DENSEPRED_CONFIG, PredictorOptions
from densepred_ros.models.checkpoint import (
    check_layout, default_resolution, detect_family, detect_space, KNOWN_HUB_IDS,
    LOTUS_DEFAULT_RESOLUTION, quiet_libraries, read_json, resolve_checkpoint)
from densepred_ros.models.lotus import LotusPredictor
from densepred_ros.models.marigold import MarigoldPredictor

__all__ = [
    'check_layout', 'CheckpointError', 'default_resolution', 'DENSEPRED_CONFIG',
    'detect_family', 'detect_space', 'KNOWN_HUB_IDS', 'load_predictor',
    'LOTUS_DEFAULT_RESOLUTION', 'quiet_libraries', 'read_json', 'resolve_checkpoint',
]

FAMILIES = {'lotus': LotusPredictor, 'marigold': MarigoldPredictor}


def load_predictor(source: str, options: Optional[PredictorOptions] = None,
                   family: str = 'auto', space: Optional[str] = None,
                   allow_pickle: bool = False):
    """Load a checkpoint and return a ready `Predictor`.

    Args:
        source: a local checkpoint folder or a model-hub id.
        options: run-time options (resolution, dtype, device, seed, ...).
        family: 'auto', 'lotus' or 'marigold'.
        space: override of what the model predicts ('depth', 'disparity', 'log_depth',
            'normals').
        allow_pickle: allow pickle-based weight files (unsafe with untrusted files).

    Raises:
        CheckpointError: see `resolve_checkpoint`, `check_layout` and `detect_family`.
        ValueError: an invalid family or space.
    """
    options = options or PredictorOptions()
    if family != 'auto' and family not in FAMILIES:
        raise ValueError(f"family must be 'auto', 'lotus' or 'marigold', got {family!r}")
    quiet_libraries()
    path = resolve_checkpoint(source)
    check_layout(path, allow_pickle=allow_pickle)
    if family == 'auto':
        family = detect_family(path)
    predicted = detect_space(path, str(source), space)
    return FAMILIES[family](path, predicted, options, source=str(source),
                            allow_pickle=allow_pickle)
