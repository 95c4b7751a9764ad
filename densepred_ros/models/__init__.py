"""Model families behind one predictor interface (no ROS imports).

`load_predictor(path, ...)` picks the family from the checkpoint and returns a
`Predictor`; see `base.py` for the interface and the value spaces. The modules form
one chain, each importing only those before it (checked by import-linter, see
`.importlinter`): base → checkpoint → checkpoint_writer, export_format → runtime,
components → backends → lotus, marigold → loading → export.

`load_predictor` is looked up on first use (PEP 562), so that importing the torch-free
`densepred_ros.models.base` (the node's parameters, the command line's `--help`) does
not load torch.
"""

from densepred_ros.models.base import (
    CheckpointError, ModelSpec, options_from, Prediction, Predictor, PredictorOptions)

__all__ = [
    'CheckpointError', 'ModelSpec', 'options_from', 'Prediction', 'Predictor',
    'PredictorOptions', 'load_predictor',
]


def __getattr__(name: str):
    """Return `load_predictor` from the top of the chain (imported on first access)."""
    if name == 'load_predictor':
        from densepred_ros.models.loading import load_predictor
        return load_predictor
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
