"""ONNX export of the Lotus components, checked against the torch predictor on ONNX Runtime."""

import json

from densepred_ros.cli import main
from densepred_ros.models import load_predictor, PredictorOptions
from densepred_ros.models.export import export_lotus, export_size, ExportError, file_sha256
from densepred_ros.models.export import METADATA
from densepred_ros.models.export import onnx_io, padded_size, parse_components, read_metadata
from densepred_ros.testing import write_tiny_lotus
import numpy as np
from precision import fp32_bound
import pytest

pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

# (height, width): a multiple of 64, and one that is not even a multiple of 8.
SIZES = [(64, 64), (70, 100)]


def _image(height, width, seed=0):
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope='module', params=['g', 'd'])
def exported(request, checkpoints, tmp_path_factory):
    """One Lotus variant exported at both sizes: (checkpoint, {size: folder})."""
    checkpoint = checkpoints['lotus_g' if request.param == 'g' else 'lotus_d']
    folders = {}
    for size in SIZES:
        folder = tmp_path_factory.mktemp(f'onnx_{request.param}_{size[0]}x{size[1]}')
        export_lotus(str(checkpoint), size[0], size[1], folder, log=lambda *_: None)
        folders[size] = folder
    return checkpoint, folders


@pytest.mark.parametrize('size', SIZES)
def test_onnxruntime_reproduces_torch_predictor(exported, size):
    checkpoint, folders = exported
    rgb = _image(*size, seed=size[1])
    for latent in ('mean', 'sample'):
        common = {'device': 'cpu', 'processing_resolution': 0, 'latent': latent, 'seed': 7}
        torch_depth = load_predictor(str(checkpoint), PredictorOptions(
            dtype='fp32', **common)).predict(rgb)
        ort = load_predictor(str(checkpoint), PredictorOptions(
            backend='onnxruntime', export_dir=str(folders[size]), **common))
        assert all(c.backend == 'onnxruntime' for c in ort.backend_choices.values())
        ort_depth = ort.predict(rgb)
        assert ort_depth.values.shape == size
        assert torch_depth.values.std() > 1e-3   # a flat output would hide differences
        bound = fp32_bound(str(checkpoint), rgb, **common)
        assert np.abs(ort_depth.values - torch_depth.values).max() <= bound


def test_metadata_records_padding_and_shapes(exported):
    checkpoint, folders = exported
    meta = read_metadata(folders[(70, 100)])
    assert (meta['height'], meta['width']) == (70, 100)
    assert (meta['padded_height'], meta['padded_width']) == (72, 104)
    assert (meta['pad_bottom'], meta['pad_right']) == (2, 4)
    assert meta['opset'] == 17 and meta['precision'] == 'fp32'
    channels = 8 if meta['variant'] == 'g' else 4
    unet = meta['components']['unet']
    assert unet['inputs'] == {'sample': [1, channels, 9, 13], 'timestep': [1],
                              'encoder_hidden_states': [1, 2, 32], 'class_labels': [1, 4]}
    assert unet['outputs'] == {'x0': [1, 4, 9, 13]}
    for name, entry in meta['components'].items():
        path = folders[(70, 100)] / entry['file']
        assert entry['sha256'] == file_sha256(path)
        io = onnx_io(path)   # the ONNX graph's inputs carry the static shapes
        for tensor, shape in entry['inputs'].items():
            assert io[tensor] == shape
        for tensor, shape in entry['outputs'].items():
            assert len(io[tensor]) == len(shape)
            assert all(d is None or d == s for d, s in zip(io[tensor], shape))


def test_graphs_are_opset_17_without_random_ops(exported):
    _, folders = exported
    folder = folders[(64, 64)]
    for name in ('vae_encoder', 'unet', 'vae_decoder'):
        model = onnx.load(str(folder / f'{name}.onnx'))
        opsets = {o.domain: o.version for o in model.opset_import}
        assert opsets.get('', opsets.get('ai.onnx')) == 17
        ops = {node.op_type for node in model.graph.node}
        assert not any(op.startswith('Random') for op in ops), (name, ops)


def test_wrong_size_is_a_clear_error(exported):
    checkpoint, folders = exported
    predictor = load_predictor(str(checkpoint), PredictorOptions(
        device='cpu', processing_resolution=0, backend='onnxruntime',
        export_dir=str(folders[(64, 64)])))
    with pytest.raises(ValueError, match='exported for 64×64'):
        predictor.predict(_image(70, 100))


def test_variant_mismatch_is_refused(checkpoints, exported):
    checkpoint, folders = exported
    other = checkpoints['lotus_d' if 'depth-g' in str(checkpoint) else 'lotus_g']
    with pytest.raises(ValueError, match='Lotus-'):
        load_predictor(str(other), PredictorOptions(
            device='cpu', backend='onnxruntime', export_dir=str(folders[(64, 64)])))


def test_export_of_other_weights_or_space_is_refused(exported, tmp_path):
    checkpoint, folders = exported
    meta = read_metadata(folders[(64, 64)])
    assert len(meta['weights']) == 64
    options = PredictorOptions(device='cpu', backend='onnxruntime',
                               export_dir=str(folders[(64, 64)]))
    retrained = write_tiny_lotus(tmp_path / 'other', variant=meta['variant'],
                                 space=meta['space'], seed=1)
    with pytest.raises(ValueError, match='other weights'):
        load_predictor(str(retrained), options)
    normals = write_tiny_lotus(tmp_path / 'normals', variant=meta['variant'], space='normals')
    with pytest.raises(ValueError, match='normals'):
        load_predictor(str(normals), options)


def test_export_command_subset_and_pad_64(checkpoints, tmp_path):
    out = tmp_path / 'unet_only'
    code = main(['export', '--model', str(checkpoints['lotus_d']), '--height', '72',
                 '--width', '100', '--output', str(out), '--components', 'unet',
                 '--pad-multiple', '64'])
    assert code == 0
    meta = json.loads((out / METADATA).read_text())
    assert sorted(meta['components']) == ['unet']
    assert (meta['padded_height'], meta['padded_width']) == (128, 128)
    assert meta['components']['unet']['inputs']['sample'] == [1, 4, 16, 16]
    assert not (out / 'vae_decoder.onnx').exists()
    # Only the UNet is exported: asking ONNX Runtime for the decoder falls back to torch.
    predictor = load_predictor(str(checkpoints['lotus_d']), PredictorOptions(
        device='cpu', processing_resolution=0, backend='unet=onnxruntime,vae_decoder=onnxruntime',
        export_dir=str(out)))
    assert predictor.backend_choices['unet'].backend == 'onnxruntime'
    assert predictor.backend_choices['vae_decoder'].backend == 'torch'
    assert 'no exported vae_decoder' in ' '.join(predictor.backend_choices['vae_decoder'].skipped)
    assert predictor.predict(_image(72, 100)).values.shape == (72, 100)


def test_export_size_from_the_camera_size(checkpoints):
    # The tiny checkpoints record processing resolution 64: 640×480 runs at 64×48.
    assert export_size(str(checkpoints['lotus_g']), None, None, (640, 480)) == (48, 64)
    assert export_size(str(checkpoints['lotus_g']), None, None, (640, 480), 768) == (576, 768)
    assert export_size('unused', 70, 100) == (70, 100)
    with pytest.raises(ValueError, match='image-size'):
        export_size('unused', 70, None)
    with pytest.raises(ValueError, match='not both'):
        export_size('unused', 70, 100, (640, 480))


def test_bad_requests():
    with pytest.raises(ValueError, match='components'):
        parse_components('unet,text_encoder')
    with pytest.raises(ValueError, match='multiple'):
        padded_size(64, 64, 12)
    assert padded_size(70, 100, 8) == (72, 104)
    assert padded_size(70, 100, 64) == (128, 128)


def test_missing_export_folder(checkpoints, tmp_path):
    with pytest.raises(ExportError, match=METADATA):
        read_metadata(tmp_path)
    with pytest.raises(ValueError, match='export_dir'):
        load_predictor(str(checkpoints['lotus_g']), PredictorOptions(
            device='cpu', backend='onnxruntime'))
