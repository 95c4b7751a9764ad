"""densepred train --bag: frames from a generated rosbag2, held-out split, record, errors."""

import hashlib
import json
from pathlib import Path

from densepred_ros import bag, cli
from densepred_ros.synthetic import make_sequence
from densepred_ros.training import bag_frames
import numpy as np
import pytest

START = 1_700_000_000.0


@pytest.fixture(scope='module')
def frames():
    """Return 12 generated 64×48 street frames with a 16-beam lidar at 2 Hz (5.5 s)."""
    return make_sequence(3, 12, width=64, height=48, beams=16, rate_hz=2.0,
                         start_stamp=START)


@pytest.fixture(scope='module')
def street(frames, tmp_path_factory):
    """Return an MCAP recording of the frames whose second image is corrupt."""
    return bag.write_sequence_bag(tmp_path_factory.mktemp('bags') / 'street', frames,
                                  corrupt_frames=(1,))


def _train(init, output, *extra):
    return ['train', '--init', str(init), '--output', str(output), '--steps', '4',
            '--val-every', '2', '--batch-size', '2', '--device', 'cpu', '--threads', '1',
            '--train-size', '64', '--val-gap', '1', '--no-progress', *extra]


def test_end_to_end_records_what_it_was_adapted_on(street, checkpoints, tmp_path, capsys):
    from densepred_ros.models import load_predictor
    from densepred_ros.models.base import PredictorOptions
    out = tmp_path / 'adapted'
    code = cli.main(_train(checkpoints['lotus_d'], out, '--bag', str(street),
                           '--forgetting-scenes', '1'))
    text = capsys.readouterr().out
    assert code == 0, text
    # Frame 1 cannot be decoded: counted, not used. Span 5.5 s: held out from 4.4 s on
    # (3 frames), the gap drops 3.5 s and 4.0 s, frames 0..3.0 s but 0.5 s train.
    assert 'skipped undecodable input' in text and ': 1' in text
    assert '6 training frames' in text and '+ 6 generated' in text
    record = json.loads((out / 'densepred.json').read_text())
    assert record['space'] == 'disparity'
    adapted = record['adapted_on']
    assert adapted['bags'][0]['bag'] == 'street'
    assert adapted['bags'][0]['image_topic'] == '/camera/image_raw/compressed'
    assert adapted['bags'][0]['lidar_topic'] == '/lidar/points'
    (reason, count), = adapted['bags'][0]['skipped'].items()
    assert reason.startswith('undecodable input: CompressedImage JPEG') and count == 1
    assert adapted['frames'] == 6 and adapted['generated_frames'] == 6   # --mix 0.5
    assert adapted['first_stamp'] == START and adapted['last_stamp'] == START + 3.0
    held = adapted['held_out']
    assert held['frames'] == 3 and held['dropped_in_gap'] == 2
    assert held['first_stamp'] == START + 4.5
    assert held['first_stamp'] - adapted['last_stamp'] >= held['gap_s']
    validation = adapted['validation']
    assert [h['step'] for h in validation['history']] == [0, 2, 4]
    assert validation['before']['abs_rel'] == validation['history'][0]['abs_rel']
    best = min(validation['history'], key=lambda h: h['abs_rel'])
    assert validation['after']['abs_rel'] == best['abs_rel']
    assert np.isfinite(validation['before']['abs_rel'])
    generated = adapted['generated_scenes']
    assert generated['scenes'] == 1 and {'before', 'after'} <= set(generated)
    assert 'AbsRel' in text and 'δ1' in text and '->' in text and 'generated scenes' in text
    predictor = load_predictor(str(out), PredictorOptions(device='cpu', dtype='fp32'))
    assert predictor.predict(np.zeros((48, 64, 3), np.uint8)).values.shape == (48, 64)
    predictor.close()


def _unet_digest(path):
    return hashlib.sha256((path / 'unet' / 'diffusion_pytorch_model.safetensors')
                          .read_bytes()).hexdigest()


def test_early_stop_keeps_the_best_weights(street, checkpoints, tmp_path):
    """Scripted validation scores: the output keeps the weights of the best one."""
    from densepred_ros.training.trainer import train, TrainConfig
    reading = bag_frames.read_bag_frames(street, bag_frames.BagOptions(longest_side=64))
    scores = iter([0.5, 0.4, 0.45, 0.46, 0.1])
    seen = []

    def validator(path):
        seen.append(_unet_digest(Path(path)))
        return {'abs_rel': next(scores), 'delta1': 0.5, 'n': 1.0}

    record = {}
    out = tmp_path / 'out'
    train(TrainConfig(output=out, space='disparity', variant='d',
                      init=str(checkpoints['lotus_d']), steps=20, batch_size=2, val_every=2,
                      save_every=1, val_frames=0, device='cpu', threads=1, progress=False,
                      frame_set=bag_frames.frame_set(reading.frames), validator=validator,
                      patience=2, record=record), log=lambda text: None)
    assert len(seen) == 4              # steps 0, 2, 4, 6: two validations without gain
    assert record['validation']['best_step'] == 2
    assert _unet_digest(out) == seen[1] != seen[0]
    saved = json.loads((out / 'densepred.json').read_text())['adapted_on']
    assert saved['validation']['after']['abs_rel'] == 0.4


def _frame(stamp, name='a'):
    return bag_frames.BagFrame(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 2), np.int64),
                               np.zeros(0, np.float32), stamp, name)


def test_held_out_split_has_its_gap():
    frames = [_frame(t) for t in np.arange(0.0, 30.0, 0.5)] + \
        [_frame(100.0 + t, 'b') for t in np.arange(0.0, 10.0, 0.5)]
    train, held, dropped = bag_frames.split_held_out(frames, 0.2, 3.0)
    assert len(train) + len(held) + dropped == len(frames)
    for name, last in (('a', 29.5), ('b', 109.5)):
        own_train = [f.stamp for f in train if f.bag == name]
        own_held = [f.stamp for f in held if f.bag == name]
        first = min(f.stamp for f in frames if f.bag == name)
        assert min(own_held) >= last - 0.2 * (last - first)
        assert min(own_held) - max(own_train) > 3.0
    with pytest.raises(ValueError, match='too short'):
        bag_frames.split_held_out([_frame(t) for t in (0.0, 1.0, 2.0)], 0.2, 3.0)


def test_validation_scores_on_points_the_alignment_did_not_use(frames):
    """An exact prediction (in disparity) scores near 0; a shuffled one does not."""
    from densepred_ros.camera import project_points, transform_points

    class Exact:
        """A predictor whose output is the frame's true disparity (test double)."""

        def __init__(self, truth):
            self.truth = truth

        def predict(self, rgb):
            values = 1.0 / np.where(np.isfinite(self.truth), self.truth, 1e3)
            return type('P', (), {'values': values, 'space': 'disparity'})()

    frame = frames[0]
    uv, z = project_points(transform_points(frame.lidar_points, frame.T_cam_lidar),
                           frame.camera)
    held = [bag_frames.BagFrame(frame.rgb, np.asarray(uv), np.asarray(z, np.float32),
                                frame.stamp, 'x')]
    exact = bag_frames.score_frames(Exact(frame.depth), held)
    wrong = np.random.default_rng(0).permutation(frame.depth.ravel()).reshape(48, 64)
    shuffled = bag_frames.score_frames(Exact(wrong), held)
    # 64×48 pixels: rounding at depth edges and lidar noise leave a few per cent.
    assert exact['abs_rel'] < 0.1 and exact['n'] == 1 and not exact['failed']
    assert shuffled['failed'] or shuffled['abs_rel'] > 3 * exact['abs_rel']


@pytest.mark.parametrize('case, message', [
    ('no_lidar', 'no PointCloud2 topic for the lidar'),
    ('no_tf', 'the lidar pose is unknown'),
    ('few_points', 'fewer than 100000 lidar points in the image: 12'),
    ('normals', 'predicts normals; train --bag supervises depth'),
    ('space', '--space log_depth contradicts'),
    ('no_init', 'give --init CHECKPOINT'),
    ('short', 'too short for a held-out last 20% with a 30 s gap'),
])
def test_bad_input_is_one_clear_error(frames, checkpoints, tmp_path, capsys, case, message):
    init = checkpoints['lotus_normals' if case == 'normals' else 'lotus_d']
    kwargs = {'no_lidar': {'lidar': False}, 'no_tf': {'tf': False}}.get(case, {})
    source = bag.write_sequence_bag(tmp_path / 'in', frames, **kwargs)
    extra = {'few_points': ['--min-points', '100000'], 'space': ['--space', 'log_depth'],
             'short': ['--val-gap', '30']}.get(case, [])
    args = _train(init, tmp_path / 'out', '--bag', str(source), *extra)
    if case == 'no_init':
        args = args[:1] + args[3:]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and 'Traceback' not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'out').exists()


def test_dusk_style_changes_look_and_camera_not_the_scene():
    from densepred_ros.synthetic import make_frame
    default = make_frame(4, kind='outdoor', width=64, height=48, beams=16)
    dusk = make_frame(4, kind='outdoor', width=64, height=48, beams=16, style='dusk')
    assert np.isclose(dusk.camera.K[0, 0], 32.0 / np.tan(np.radians(45.0)))
    assert np.isclose(dusk.T_world_cam[2, 3] - default.T_world_cam[2, 3], 1.0)
    assert np.allclose(dusk.T_world_cam[:2, 3], default.T_world_cam[:2, 3])
    assert dusk.rgb.mean(axis=(0, 1))[2] < default.rgb.mean(axis=(0, 1))[2]   # warm grade
    with pytest.raises(ValueError, match='unknown style'):
        make_frame(4, style='noon')


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_autocast_and_gradient_checkpointing_train(street, checkpoints, tmp_path, precision):
    """The GPU options run (here on the CPU, fp16 with its loss scaler) and train."""
    import torch
    from densepred_ros.training.trainer import train, TrainConfig
    if precision == 'fp16' and not hasattr(torch.amp, 'GradScaler'):
        pytest.skip('no torch.amp.GradScaler')
    reading = bag_frames.read_bag_frames(street, bag_frames.BagOptions(longest_side=64))
    scores = []

    def validator(path):
        scores.append(len(scores))
        return {'abs_rel': 1.0 / (1 + len(scores)), 'delta1': 0.5, 'n': 1.0}

    out = tmp_path / 'out'
    record = {}
    train(TrainConfig(output=out, space='disparity', variant='d',
                      init=str(checkpoints['lotus_d']), steps=2, batch_size=2, val_every=1,
                      val_frames=0, device='cpu', threads=1, progress=False,
                      frame_set=bag_frames.frame_set(reading.frames), validator=validator,
                      record=record, mixed_precision=precision,
                      gradient_checkpointing=True), log=lambda text: None)
    log = [json.loads(line) for line in (out / 'training_log.jsonl').read_text().splitlines()]
    assert [e['step'] for e in log if e['event'] == 'validation'] == [0, 1, 2]
    assert _unet_digest(out) != _unet_digest(checkpoints['lotus_d'])
