"""The inference core on tiny checkpoints loaded through the real diffusers code path."""

from densepred_ros.models import CheckpointError, load_predictor, PredictorOptions
from densepred_ros.models import runtime
from densepred_ros.models.lotus import encode_empty_prompt, task_embedding
import numpy as np
from precision import assert_as_precise_as_autocast, autocast_errors
import pytest
import torch

SIZES = [(375, 1242), (480, 640), (97, 131)]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def _options(**kwargs) -> PredictorOptions:
    kwargs.setdefault('device', 'cpu')
    return PredictorOptions(**kwargs)


@pytest.fixture(scope='module')
def lotus_g(checkpoints):
    return load_predictor(str(checkpoints['lotus_g']), _options(processing_resolution=0))


@pytest.mark.parametrize('name,variant,space', [
    ('lotus_g', 'g', 'depth'), ('lotus_d', 'd', 'disparity'), ('lotus_normals', 'g', 'normals')])
def test_lotus_spec_from_checkpoint(checkpoints, name, variant, space):
    predictor = load_predictor(str(checkpoints[name]), _options())
    assert predictor.spec.family == 'lotus'
    assert predictor.spec.variant == variant
    assert predictor.spec.space == space
    assert not hasattr(predictor, 'text_encoder')
    assert predictor.prompt_embeds.shape == (1, 2, 32)  # start + end token, no padding


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('name', ['lotus_g', 'lotus_d'])
def test_lotus_depth_shapes_and_range(checkpoints, name, size):
    predictor = load_predictor(str(checkpoints[name]), _options(processing_resolution=128))
    prediction = predictor.predict(_image(*size))
    assert prediction.values.shape == size
    assert prediction.values.dtype == np.float32
    assert np.isfinite(prediction.values).all()
    assert prediction.values.min() >= 0.0 and prediction.values.max() <= 1.0
    assert prediction.values.std() > 0.0


def test_lotus_native_resolution_odd_size(lotus_g):
    prediction = lotus_g.predict(_image(97, 131))
    assert prediction.values.shape == (97, 131)
    assert np.isfinite(prediction.values).all()


def test_lotus_normals_are_unit_vectors(checkpoints):
    predictor = load_predictor(str(checkpoints['lotus_normals']),
                               _options(processing_resolution=64))
    prediction = predictor.predict(_image(97, 131))
    assert prediction.space == 'normals'
    assert prediction.values.shape == (97, 131, 3)
    norms = np.linalg.norm(prediction.values, axis=-1)
    assert np.allclose(norms[np.isfinite(norms)], 1.0, atol=1e-5)


def test_deterministic_for_a_seed(checkpoints, lotus_g):
    image = _image(64, 96)
    first = lotus_g.predict(image).values
    again = load_predictor(str(checkpoints['lotus_g']), _options(processing_resolution=0))
    assert np.array_equal(first, again.predict(image).values)
    assert np.array_equal(first, lotus_g.predict(image).values)


def test_lotus_g_uses_its_seeded_noise(checkpoints, lotus_g):
    image = _image(64, 96)
    other = load_predictor(str(checkpoints['lotus_g']),
                           _options(processing_resolution=0, seed=1))
    assert not np.allclose(lotus_g.predict(image).values, other.predict(image).values)


def test_lotus_d_mean_latent_ignores_the_seed(checkpoints):
    image = _image(64, 96)
    outputs = [load_predictor(str(checkpoints['lotus_d']),
                              _options(processing_resolution=0, seed=s)).predict(image).values
               for s in (0, 1)]
    assert np.array_equal(outputs[0], outputs[1])


def test_sampled_latent_differs_from_mean(checkpoints):
    image = _image(64, 96)
    mean = load_predictor(str(checkpoints['lotus_d']), _options(processing_resolution=0))
    sample = load_predictor(str(checkpoints['lotus_d']),
                            _options(processing_resolution=0, latent='sample'))
    assert not np.allclose(mean.predict(image).values, sample.predict(image).values)


@pytest.mark.parametrize('dtype', ['bf16', 'fp16'])
def test_reduced_precision_close_to_fp32(checkpoints, lotus_g, dtype):
    image = _image(64, 96)
    low = load_predictor(str(checkpoints['lotus_g']),
                         _options(processing_resolution=0, dtype=dtype))
    assert low.unet.dtype == runtime.resolve_dtype(dtype)
    assert_as_precise_as_autocast(
        low.predict(image).values, lotus_g.predict(image).values,
        # The authors' CPU setting (bf16 autocast) is the yardstick for both: fp16 weights
        # keep three more mantissa bits than bf16.
        autocast_errors(str(checkpoints['lotus_g']), image, torch.bfloat16,
                        processing_resolution=0))


def test_invalid_options_are_rejected(checkpoints):
    with pytest.raises(ValueError, match='dtype'):
        load_predictor(str(checkpoints['lotus_g']), _options(dtype='fp8'))
    with pytest.raises(ValueError, match='latent'):
        load_predictor(str(checkpoints['lotus_g']), _options(latent='median'))
    with pytest.raises(ValueError, match='device'):
        load_predictor(str(checkpoints['lotus_g']), _options(device='tpu'))


@pytest.mark.parametrize('bad', [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((4, 40, 3), np.uint8)])
def test_bad_images_are_rejected(lotus_g, bad):
    with pytest.raises(ValueError):
        lotus_g.predict(bad)


def test_task_embedding_is_sin_cos_of_switch():
    expected = torch.tensor([[np.sin(1.0), 0.0, np.cos(1.0), 1.0]], dtype=torch.float32)
    assert torch.allclose(task_embedding(True), expected)
    expected = torch.tensor([[0.0, np.sin(1.0), 1.0, np.cos(1.0)]], dtype=torch.float32)
    assert torch.allclose(task_embedding(False), expected)


def test_empty_prompt_is_not_padded(checkpoints):
    from transformers import CLIPTextModel, CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(checkpoints['lotus_g'], subfolder='tokenizer')
    encoder = CLIPTextModel.from_pretrained(checkpoints['lotus_g'], subfolder='text_encoder')
    embeds = encode_empty_prompt(tokenizer, encoder)
    ids = torch.tensor([[tokenizer.bos_token_id, tokenizer.eos_token_id]])
    with torch.no_grad():
        assert torch.equal(embeds, encoder(ids)[0])


def test_model_normals_to_optical_frame():
    # Model frame: x right, y up, z towards the viewer.
    model = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    optical = runtime.model_normals_to_optical(model)
    assert np.array_equal(optical[0], [0.0, 0.0, -1.0])   # facing the camera: z < 0
    assert np.array_equal(optical[1], [0.0, -1.0, 0.0])   # up is -y in the optical frame
    assert np.array_equal(optical[2], [1.0, 0.0, 0.0])    # right stays right
    assert optical.dtype == np.float32


def test_processing_size_keeps_aspect_and_longest_edge():
    assert runtime.processing_size(375, 1242, 768) == (231, 768)
    assert runtime.processing_size(480, 640, 0) == (480, 640)
    assert runtime.processing_size(640, 480, 320) == (320, 240)
    with pytest.raises(ValueError):
        runtime.processing_size(10, 10, -1)


def test_resize_back_is_smooth_not_blocky():
    ramp = torch.linspace(0.0, 1.0, 4).reshape(1, 1, 1, 4).repeat(1, 1, 4, 1)
    up = runtime.resize(ramp, (16, 16))[0, 0, 0].numpy()
    assert len(np.unique(np.round(up, 6))) > 8           # nearest would give 4 levels
    assert np.all(np.diff(up) >= -1e-7)


def test_lower_processing_resolution_upsamples_smoothly(checkpoints):
    predictor = load_predictor(str(checkpoints['lotus_d']), _options(processing_resolution=32))
    values = predictor.predict(_image(96, 128)).values
    assert values.shape == (96, 128)
    # Bilinear upsampling from 24×32: neighbouring pixels rarely repeat exactly.
    assert np.mean(values[:, 1:] == values[:, :-1]) < 0.5


def test_marigold_depth(checkpoints):
    predictor = load_predictor(str(checkpoints['marigold_depth']),
                               _options(processing_resolution=64, steps=1))
    assert predictor.spec.family == 'marigold' and predictor.spec.space == 'depth'
    prediction = predictor.predict(_image(97, 131))
    assert prediction.values.shape == (97, 131)
    assert prediction.values.min() >= 0.0 and prediction.values.max() <= 1.0
    assert prediction.uncertainty is None


@pytest.mark.parametrize('native_bf16', [True, False])
def test_marigold_auto_runs_in_fp32_on_any_cpu(checkpoints, monkeypatch, native_bf16):
    monkeypatch.setattr(runtime, 'cpu_has_bf16', lambda: native_bf16)
    predictor = load_predictor(str(checkpoints['marigold_depth']),
                               _options(processing_resolution=64, steps=1, dtype='auto'))
    assert predictor.dtype == torch.float32
    assert predictor.predict(_image(40, 56)).values.shape == (40, 56)
    with pytest.raises(ValueError, match='bf16'):
        load_predictor(str(checkpoints['marigold_depth']), _options(dtype='bf16'))


def test_marigold_ensemble_gives_uncertainty(checkpoints):
    predictor = load_predictor(str(checkpoints['marigold_depth']),
                               _options(processing_resolution=64, steps=1, ensemble_size=3))
    prediction = predictor.predict(_image(64, 80))
    assert prediction.uncertainty.shape == (64, 80)
    assert (prediction.uncertainty >= 0).all() and prediction.uncertainty.max() > 0


def test_marigold_normals(checkpoints):
    predictor = load_predictor(str(checkpoints['marigold_normals']),
                               _options(processing_resolution=64, steps=1))
    assert predictor.spec.space == 'normals'
    prediction = predictor.predict(_image(97, 131))
    assert prediction.values.shape == (97, 131, 3)
    norms = np.linalg.norm(prediction.values, axis=-1)
    assert np.allclose(norms[np.isfinite(norms)], 1.0, atol=1e-4)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        load_predictor(str(tmp_path / 'nope' / 'here'))


def test_folder_without_model_index_is_a_clear_error(tmp_path):
    (tmp_path / 'unet').mkdir()
    with pytest.raises(CheckpointError, match='model_index.json'):
        load_predictor(str(tmp_path))


def test_missing_component_is_named(checkpoints, tmp_path):
    import shutil
    broken = tmp_path / 'broken'
    shutil.copytree(checkpoints['lotus_d'], broken)
    shutil.rmtree(broken / 'vae')
    with pytest.raises(CheckpointError, match='vae'):
        load_predictor(str(broken))


def test_pickle_weights_are_refused_by_default(checkpoints, tmp_path):
    import shutil
    pickled = tmp_path / 'pickled'
    shutil.copytree(checkpoints['lotus_d'], pickled)
    for weights in (pickled / 'unet').glob('*.safetensors'):
        weights.rename(weights.with_name('diffusion_pytorch_model.bin'))
    with pytest.raises(CheckpointError, match='pickle'):
        load_predictor(str(pickled))


def test_corrupt_weights_are_a_clear_error(checkpoints, tmp_path):
    import shutil
    corrupt = tmp_path / 'corrupt'
    shutil.copytree(checkpoints['lotus_d'], corrupt)
    for weights in (corrupt / 'vae').glob('*.safetensors'):
        weights.write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError):
        load_predictor(str(corrupt))


def test_offline_hub_id_names_what_to_download(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError('offline')

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', offline)
    with pytest.raises(CheckpointError) as info:
        load_predictor('jingheya/lotus-depth-g-v2-1-disparity')
    message = str(info.value)
    assert 'jingheya/lotus-depth-g-v2-1-disparity' in message
    assert 'huggingface-cli download' in message
