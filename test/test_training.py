"""Tests of the Lotus trainer on the tiny config and a handful of generated frames."""

import json
import math

from densepred_ros.models import load_predictor
from densepred_ros.models.base import PredictorOptions
from densepred_ros.models.lotus import task_embedding
from densepred_ros.training import dataset
from densepred_ros.training.configs import build_unet, build_vae, load_model_config
from densepred_ros.training.trainer import (
    adapt_unet, encode_latents, latent_valid, LOG_FILE, LotusTrainer, STATE_FILE, train,
    TrainConfig)
import numpy as np
import pytest
import torch

HEIGHT, WIDTH = 32, 48


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """Render six generated frames at 48×32 (three indoor, three outdoor)."""
    root = tmp_path_factory.mktemp('cache')
    dataset.render_synthetic(root / f'synthetic_{HEIGHT}x{WIDTH}', range(6), HEIGHT, WIDTH)
    return root


def _config(output, cache, **kwargs) -> TrainConfig:
    base = {'output': output, 'model_config': 'lotus_tiny', 'frames': 6, 'cache': cache,
            'steps': 3, 'batch_size': 2, 'vae_steps': 2, 'val_every': 0, 'val_frames': 1,
            'threads': 1, 'progress': False}
    base.update(kwargs)
    return TrainConfig(**base)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, cache):
    """Train a Lotus-D disparity checkpoint for 3 steps (after 2 VAE steps)."""
    output = tmp_path_factory.mktemp('run') / 'depth'
    train(_config(output, cache), log=lambda _: None)
    return output


def test_checkpoint_loads_and_predicts(trained):
    predictor = load_predictor(str(trained), PredictorOptions(device='cpu'))
    assert (predictor.spec.family, predictor.spec.variant, predictor.spec.space) == (
        'lotus', 'd', 'disparity')
    assert predictor.processing_resolution == WIDTH
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    values = predictor.predict(rgb).values
    assert values.shape == (40, 60)
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
    assert (trained / STATE_FILE).is_file()
    events = [json.loads(line)['event']
              for line in (trained / LOG_FILE).read_text().splitlines()]
    assert events[0] == 'start' and 'validation' in events


def test_resume_continues_step_count(trained, cache, tmp_path):
    import shutil
    output = tmp_path / 'resumed'
    shutil.copytree(trained, output)
    messages = []
    train(_config(output, cache, steps=5, resume=True), log=messages.append)
    assert 'resumed at step 3' in messages
    state = torch.load(output / STATE_FILE, weights_only=True)
    assert state['step'] == 5


def test_time_limit_stops_training(cache, tmp_path):
    output = tmp_path / 'limited'
    messages = []
    train(_config(output, cache, steps=10_000, time_limit=1e-9, vae_steps=1),
          log=messages.append)
    state = torch.load(output / STATE_FILE, weights_only=True)
    assert state['step'] < 10_000
    assert any('time limit' in m for m in messages)


def _latents(cache, space='disparity'):
    torch.manual_seed(0)
    config = load_model_config('lotus_tiny')
    vae = build_vae(config).eval()
    frames = dataset.load_frames(cache / f'synthetic_{HEIGHT}x{WIDTH}', HEIGHT, WIDTH)
    images, valid = dataset.annotations(frames, space)
    return (config, vae, encode_latents(vae, dataset.rgb_images(frames), torch.device('cpu')),
            encode_latents(vae, images, torch.device('cpu')), latent_valid(valid))


def _trainer(config, vae, variant='d', lr=1e-3, preserver=0.5):
    from densepred_ros.testing import _ddim_scheduler
    unet = build_unet(config, variant, vae.config.latent_channels)
    prompt = torch.randn(1, 2, config['unet']['cross_attention_dim'])
    return LotusTrainer(unet, vae, _ddim_scheduler('sample'), prompt, variant, lr,
                        torch.device('cpu'), seed=0, preserver_fraction=preserver)


@pytest.mark.parametrize('variant', ['d', 'g'])
def test_loss_goes_down_on_a_fixed_batch(cache, variant):
    torch.set_num_threads(1)
    config, vae, rgb, ann, valid = _latents(cache)
    trainer = _trainer(config, vae, variant)
    losses = [trainer.train_step(rgb[:4], ann[:4], valid[:4])['loss'] for _ in range(20)]
    assert trainer.step == 20
    assert losses[-1] < 0.5 * losses[0], losses


def test_detail_preserver_rows(cache):
    config, vae, rgb, ann, valid = _latents(cache)
    trainer = _trainer(config, vae, preserver=0.5)
    seen = {}
    forward = trainer.unet.forward

    def spy(sample, timestep, **kwargs):
        out = forward(sample, timestep, **kwargs)
        seen.update(sample=sample, timestep=timestep, labels=kwargs['class_labels'],
                    pred=out[0])
        return out
    trainer.unet.forward = spy
    losses = trainer.losses(rgb[:4], ann[:4], valid[:4])
    # 4 annotation rows + round(0.5 · 4) = 2 reconstruction rows of the first two images.
    assert seen['sample'].shape[0] == 6
    assert torch.equal(seen['sample'][4:], rgb[:2])
    assert (seen['timestep'] == 999).all()
    image_label = torch.tensor([math.sin(0), math.sin(1), math.cos(0), math.cos(1)])
    annotation_label = torch.tensor([math.sin(1), math.sin(0), math.cos(1), math.cos(0)])
    assert torch.allclose(seen['labels'][4:], image_label.expand(2, 4))
    assert torch.allclose(seen['labels'][:4], annotation_label.expand(4, 4))
    pred = seen['pred'].detach()
    assert math.isclose(losses['image'].item(), float(((pred[4:] - rgb[:2]) ** 2).mean()),
                        rel_tol=1e-5)
    mask = valid[:4].expand_as(ann[:4])
    expected = float(((pred[:4] - ann[:4])[mask] ** 2).mean())
    assert math.isclose(losses['annotation'].item(), expected, rel_tol=1e-5)
    assert torch.allclose(task_embedding(False)[0], image_label)


def test_no_preserver_rows_when_fraction_is_zero(cache):
    config, vae, rgb, ann, valid = _latents(cache)
    losses = _trainer(config, vae, preserver=0.0).losses(rgb[:4], ann[:4], valid[:4])
    assert 'image' not in losses
    assert losses['loss'].item() == losses['annotation'].item()


def test_depth_annotation_truncates_percentiles():
    depth = np.linspace(1.0, 100.0, 10_000, dtype=np.float32).reshape(100, 100)
    depth[0, :10] = np.inf                                    # sky
    depth[1, :10] = np.nan                                    # unknown
    ann, valid = dataset.depth_annotation(depth, 'depth')
    assert ann.min() == -1.0 and ann.max() == 1.0
    assert (ann[0, :10] == 1.0).all()                         # sky is the far end
    assert not valid[1, :10].any() and valid[0, :10].all()
    finite = depth[valid & np.isfinite(depth)]
    lo, hi = np.percentile(finite, [2, 98])
    middle = (depth > lo) & (depth < hi) & valid
    np.testing.assert_allclose(ann[middle], ((depth[middle] - lo) / (hi - lo) - 0.5) * 2,
                               atol=1e-4)
    disparity, _ = dataset.depth_annotation(depth, 'disparity')
    assert (disparity[0, :10] == -1.0).all()                  # sky: disparity 0, the far end
    assert disparity[5, 0] > disparity[90, 0]                 # nearer = larger
    log_depth, _ = dataset.depth_annotation(depth, 'log_depth')
    assert (log_depth[0, :10] == 1.0).all()                   # sky is the far end
    lo, hi = np.percentile(np.log(finite), [2, 98])
    middle = (np.log(depth) > lo) & (np.log(depth) < hi) & valid
    np.testing.assert_allclose(log_depth[middle],
                               ((np.log(depth[middle]) - lo) / (hi - lo) - 0.5) * 2, atol=1e-4)


def test_normals_annotation_is_the_model_frame():
    optical = np.array([[[0.0, 0.0, -1.0], [0.6, 0.8, 0.0], [np.nan] * 3]], np.float32)
    ann, valid = dataset.normals_annotation(optical, sky=np.array([[False, False, True]]))
    np.testing.assert_allclose(ann[0, 0], [0, 0, 1])          # facing the camera: +z
    np.testing.assert_allclose(ann[0, 1], [0.6, -0.8, 0.0])   # pointing down: -y
    np.testing.assert_allclose(ann[0, 2], [0, 0, 1])          # sky faces the viewer
    assert valid.all()


def test_latent_mask_drops_cells_with_unknown_pixels():
    valid = np.ones((1, 16, 24), bool)
    valid[0, 9, 17] = False
    mask = latent_valid(valid)
    assert mask.shape == (1, 1, 2, 3)
    assert not mask[0, 0, 1, 2] and mask.sum() == 5


def test_sparse_depth_keeps_its_points_at_the_training_resolution(tmp_path):
    depth = np.full((32, 32), np.nan, np.float32)
    depth[::4, ::4] = 5.0                                     # 64 points
    depth[1, 0], depth[0, 1] = 3.0, 4.0                       # same 16×16 pixel as (0, 0)
    np.savez(tmp_path / 'a.npz', rgb=np.zeros((32, 32, 3), np.uint8), depth=depth)
    frames = dataset.load_frames(tmp_path, 16, 16)
    assert frames.sparse.tolist() == [True]
    small = frames.depth[0]
    assert np.isfinite(small).sum() == 64                     # nearest sampling keeps 16
    assert small[0, 0] == 3.0 and small[2, 2] == 5.0          # the nearest point wins
    ann, valid = dataset.depth_annotation(small, 'disparity')
    assert valid.sum() == 64 and ann[0, 0] == 1.0             # nearest = largest disparity
    np.savez(tmp_path / 'a.npz', rgb=np.zeros((32, 32, 3), np.uint8),
             depth=np.full((32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match='no finite positive'):
        dataset.load_frames(tmp_path, 16, 16)


def test_scale_shift_invariant_mse():
    from densepred_ros.training.trainer import scale_shift_invariant_mse
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(-1, 1, (2, 8, 8)).astype(np.float32))
    mask = torch.from_numpy(rng.random((2, 8, 8)) < 0.3)
    affine = 0.3 * target - 0.2
    assert scale_shift_invariant_mse(affine, target, mask).item() < 1e-8
    outside = affine.clone()
    outside[~mask] = 5.0                                      # unknown pixels do not count
    assert scale_shift_invariant_mse(outside, target, mask).item() < 1e-8
    noisy = (affine + 0.1 * torch.randn(2, 8, 8)).requires_grad_(True)
    loss = scale_shift_invariant_mse(noisy, target, mask)
    assert loss.item() > 1e-3
    loss.backward()
    assert noisy.grad[~mask].abs().max() == 0 and noisy.grad[mask].abs().max() > 0
    none = torch.zeros_like(mask)
    assert scale_shift_invariant_mse(noisy, target, none).item() == 0.0


def _sparse_folder(root, count=6):
    """Write generated frames whose depth is only their lidar points (NaN elsewhere)."""
    from densepred_ros.camera import project_points, transform_points
    from densepred_ros.synthetic import make_frame
    root.mkdir()
    for seed in range(count):
        frame = make_frame(seed, kind=('indoor', 'outdoor')[seed % 2], width=2 * WIDTH,
                           height=2 * HEIGHT, beams=16)
        uv, z = project_points(transform_points(frame.lidar_points, frame.T_cam_lidar),
                               frame.camera)
        depth = np.full(frame.depth.shape, np.nan, np.float32)
        depth[uv[:, 1], uv[:, 0]] = z
        np.savez(root / f'f{seed}.npz', rgb=frame.rgb, depth=depth)
    return root


def test_sparse_supervision_lowers_its_loss_and_trains_end_to_end(tmp_path, cache):
    torch.set_num_threads(1)
    folder = _sparse_folder(tmp_path / 'sparse')
    frames = dataset.load_frames(folder, HEIGHT, WIDTH)
    assert frames.sparse.all() and np.isfinite(frames.depth).mean() < 0.5
    images, known = dataset.annotations(frames, 'disparity')
    target, known = torch.from_numpy(images[:, 0].copy()), torch.from_numpy(known)
    config, vae, *_ = _latents(cache)
    rgb = encode_latents(vae, dataset.rgb_images(frames), torch.device('cpu'))
    trainer = _trainer(config, vae)
    losses = [trainer.train_step(rgb[:4], target[:4], known[:4], sparse=True)['annotation']
              for _ in range(40)]
    assert losses[-1] < 0.7 * losses[0], losses               # measured: 0.354 → 0.215
    assert all(p.grad is None for p in vae.parameters())      # the VAE stays frozen
    messages = []
    output = tmp_path / 'run'
    train(_config(output, cache, data=folder, space='log_depth'), log=messages.append)
    assert any('6 of 6 frames have sparse depth' in m for m in messages), messages
    predictor = load_predictor(str(output), PredictorOptions(device='cpu'))
    assert predictor.spec.space == 'log_depth' and predictor.spec.is_relative_depth
    assert predictor.predict(frames.rgb[0]).values.shape == (HEIGHT, WIDTH)


def test_bad_settings_raise(tmp_path):
    with pytest.raises(ValueError, match='variant'):
        TrainConfig(output=tmp_path, variant='x').check()
    with pytest.raises(ValueError, match='preserver_fraction'):
        TrainConfig(output=tmp_path, preserver_fraction=2.0).check()
    with pytest.raises(ValueError, match='model config'):
        load_model_config('no_such_config')


def test_adapt_stable_diffusion_unet_keeps_its_output():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    config = load_model_config('lotus_tiny')['unet']
    kwargs = {k: v for k, v in config.items()
              if not k.startswith(('_', 'class_embed', 'projection_class'))}
    sd = UNet2DConditionModel(in_channels=4, **kwargs).eval()
    lotus = adapt_unet(sd, 'g', latent_channels=4).eval()
    assert lotus.config.in_channels == 8 and lotus.config.class_embed_type == 'projection'
    x = torch.randn(1, 4, 8, 8)
    prompt = torch.randn(1, 2, config['cross_attention_dim'])
    with torch.no_grad():
        before = sd(x, 999, encoder_hidden_states=prompt).sample
        # Same latent twice through the halved, duplicated conv_in; zero class embedding.
        after = lotus(torch.cat([x, x], 1), 999, encoder_hidden_states=prompt,
                      class_labels=task_embedding(True)).sample
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='cannot adapt'):
        adapt_unet(lotus, 'd', latent_channels=4)
