"""The bundled demo models: they load, are small, and meet the accuracy targets.

Targets (issue 6), on held-out generated scenes after alignment to a simulated 32-beam
lidar scan: depth AbsRel <= 0.10 and δ1 >= 0.90; normals mean angular error <= 20°.
All 50 scenes of the model card (seeds 2,000,000..2,000,049, disjoint from the training
seeds 0..4799 and the validation seeds 1,000,000 on): the δ1 margin is thin (0.904), and
the first 8 scenes alone give δ1 0.893, so a subset would test the draw, not the model.
"""

from pathlib import Path

from densepred_ros.models import load_predictor
from densepred_ros.models.base import PredictorOptions
from densepred_ros.training.evaluate import evaluate, held_out_frames
import pytest
import torch

MODELS = Path(__file__).resolve().parents[1] / 'densepred_ros' / 'demo_models'
DEPTH_MODEL = MODELS / 'lotus-depth-demo'
NORMALS_MODEL = MODELS / 'lotus-normals-demo'
MAX_BYTES = 25 * 1024 * 1024
SCENES = 50


@pytest.fixture(scope='module')
def frames():
    """Render the held-out scenes once (320×240, 32-beam lidar)."""
    return held_out_frames(SCENES)


def _load(path: Path):
    torch.set_num_threads(2)
    return load_predictor(str(path), PredictorOptions(device='cpu'))


@pytest.mark.parametrize('path', [DEPTH_MODEL, NORMALS_MODEL], ids=['depth', 'normals'])
def test_model_is_small_safetensors(path):
    files = [p for p in path.rglob('*') if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    weights = [p for p in files if p.suffix in ('.safetensors', '.bin', '.ckpt', '.pt')]
    assert weights and all(p.suffix == '.safetensors' for p in weights)


def test_depth_model_meets_targets(frames):
    predictor = _load(DEPTH_MODEL)
    assert predictor.spec.is_relative_depth and predictor.spec.family == 'lotus'
    metrics = evaluate(predictor, frames)
    assert metrics['failed'] == 0
    assert metrics['abs_rel'] <= 0.10, metrics
    assert metrics['delta1'] >= 0.90, metrics


def test_normals_model_meets_target(frames):
    predictor = _load(NORMALS_MODEL)
    assert predictor.spec.space == 'normals'
    metrics = evaluate(predictor, frames)
    assert metrics['normal_deg'] <= 20.0, metrics
