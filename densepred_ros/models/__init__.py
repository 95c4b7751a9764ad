"""Model families behind one predictor interface (no ROS imports).

`load_predictor(path, ...)` picks the family from the checkpoint and returns a
`Predictor`; see `base.py` for the interface and the value spaces.
"""

from densepred_ros.models.base import ModelSpec, Prediction, Predictor, PredictorOptions
from densepred_ros.models.loading import CheckpointError, load_predictor

__all__ = [
    'CheckpointError', 'ModelSpec', 'Prediction', 'Predictor', 'PredictorOptions',
    'load_predictor',
]
