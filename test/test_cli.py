"""The `densepred` command line."""

import json
import subprocess
import sys

from densepred_ros.cli import main
import numpy as np
from PIL import Image


def _write_image(path, height=97, width=131):
    rgb = (np.random.default_rng(1).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_predict_writes_npy_and_png(checkpoints, tmp_path):
    images = [_write_image(tmp_path / 'a.png'), _write_image(tmp_path / 'b.jpg', 64, 80)]
    code = main(['predict', '--model', str(checkpoints['lotus_d']), '--input',
                 *map(str, images), '--output', str(tmp_path / 'out'),
                 '--processing-resolution', '64', '--device', 'cpu'])
    assert code == 0
    depth = np.load(tmp_path / 'out' / 'a.npy')
    assert depth.shape == (97, 131) and depth.dtype == np.float32
    assert 0.0 <= depth.min() and depth.max() <= 1.0
    assert np.load(tmp_path / 'out' / 'b.npy').shape == (64, 80)
    with Image.open(tmp_path / 'out' / 'a.png') as picture:
        assert picture.size == (131, 97) and picture.mode == 'RGB'


def test_predict_normals_writes_unit_vectors(checkpoints, tmp_path):
    image = _write_image(tmp_path / 'n.png')
    assert main(['predict', '--model', str(checkpoints['lotus_normals']), '--input',
                 str(image), '--output', str(tmp_path), '--processing-resolution', '64']) == 0
    normals = np.load(tmp_path / 'n.npy')
    assert normals.shape == (97, 131, 3)
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)


def test_missing_input_is_an_error(checkpoints, tmp_path, capsys):
    code = main(['predict', '--model', str(checkpoints['lotus_d']), '--input',
                 str(tmp_path / 'missing.png'), '--output', str(tmp_path)])
    assert code == 2
    assert 'missing.png' in capsys.readouterr().err


def test_bad_model_is_an_error_not_a_traceback(tmp_path):
    image = _write_image(tmp_path / 'a.png')
    result = subprocess.run(
        [sys.executable, '-m', 'densepred_ros.cli', 'predict', '--model', str(tmp_path),
         '--input', str(image), '--output', str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'model_index.json' in result.stderr
    assert 'Traceback' not in result.stderr


def test_demo_runs_the_node_on_generated_frames(checkpoints, tmp_path):
    code = main(['demo', '--output', str(tmp_path), '--frames', '2', '--width', '96',
                 '--height', '72', '--model', str(checkpoints['lotus_g']),
                 '--processing-resolution', '64'])
    assert code == 0
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['summary']['frames_with_output'] == 2
    with Image.open(tmp_path / 'frame_001.png') as picture:
        assert picture.size == (4 * 96, 72)


def test_demo_with_the_bundled_models_gives_metric_depth(tmp_path):
    """End to end through the node with real (miniature) weights: metres that mean something."""
    assert main(['demo', '--output', str(tmp_path), '--frames', '2']) == 0
    summary = json.loads((tmp_path / 'metrics.json').read_text())['summary']
    assert summary['frames_with_output'] == 2
    assert summary['coverage'] > 0.8
    # Looser than the model's own targets (see MODEL_CARD.md): this checks the chain.
    assert summary['abs_rel'] < 0.25 and summary['delta1'] > 0.6
    assert summary['normal_deg'] < 35.0
