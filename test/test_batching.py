"""Several cameras' frames through the model in one call (`predict_batch`, `infer_batch`).

No ROS: the real loading code on the bundled demo model and the tiny checkpoints. How a
batched frame's result relates to its batch-of-one result is measured here against a
float64 run of the same model (see `test_a_batch_adds_no_more_than_fp32_rounding`).
"""

import copy
from pathlib import Path

from densepred_ros.camera_io import camera_pipeline
from densepred_ros.models import load_predictor, PredictorOptions
from densepred_ros.models.components import MODULES
from densepred_ros.node import batching_label
from densepred_ros.params import NodeConfig
from densepred_ros.pipeline import DEPTH_RELATIVE, DepthPipeline, load_pipeline, NORMALS_IMAGE
from densepred_ros.synthetic import make_frame
import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[1] / 'densepred_ros' / 'demo_models' / \
    'lotus-depth-demo'


def _images(size=(120, 160)):
    return [make_frame(seed, kind, width=size[1], height=size[0], beams=0).rgb
            for seed, kind in ((1, 'indoor'), (2, 'outdoor'), (3, 'indoor'))]


class CallLog:
    """Wraps a component runner and records the batch size of every call."""

    def __init__(self, run) -> None:
        self.run, self.sizes = run, []

    def __call__(self, *tensors):
        self.sizes.append(int(tensors[0].shape[0]))
        return self.run(*tensors)


def test_one_model_call_per_processing_size(checkpoints) -> None:
    predictor = load_predictor(str(checkpoints['lotus_g']), PredictorOptions(
        device='cpu', dtype='fp32', processing_resolution=0))
    assert predictor.batching_reason == ''
    log = CallLog(predictor.components['unet'])
    predictor.components['unet'] = log
    images = _images((48, 64))
    images.insert(1, _images((40, 64))[0])          # another size: a batch of its own
    out = predictor.predict_batch(images)
    assert sorted(log.sizes) == [1, 3]
    assert [p.values.shape for p in out] == [im.shape[:2] for im in images]
    # The odd-sized frame ran alone, so it is exactly its single-frame result.
    np.testing.assert_array_equal(out[1].values, predictor.predict(images[1]).values)


@pytest.mark.parametrize('model', ['demo', 'lotus_g'])
def test_a_batch_adds_no_more_than_fp32_rounding(checkpoints, model) -> None:
    """A frame's result depends on its batch mates only through fp32 rounding.

    Checks ``batching: auto``: a batched frame is not bit-identical to its batch-of-one
    result, and after alignment not within 1e-5 m at tens of metres (docs/cameras.md);
    ``batching: off`` runs the single-camera code path and stays exact. The bound is the
    fp32 error of the batch-of-one results against a float64 run of the same model,
    measured here: a batch reorders the same fp32 sums (1.2-2.3× that error on AVX-512),
    while a Lotus-G frame given another draw of noise than its batch-of-one would be off
    by orders more (the tiny Lotus-G checks that; the demo model is a Lotus-D).
    """
    path = DEMO if model == 'demo' else checkpoints[model]
    options = PredictorOptions(device='cpu', dtype='fp32', processing_resolution=0)
    predictor = load_predictor(str(path), options)
    images = _images((64, 96))
    single = [predictor.predict(image).values for image in images]
    batch = [p.values for p in predictor.predict_batch(images)]
    exact = load_predictor(str(path), options)
    exact.components = {'vae_encoder': MODULES['vae_encoder'](copy.deepcopy(exact.vae).double()),
                        'unet': MODULES['unet'](copy.deepcopy(exact.unet).double()),
                        'vae_decoder': MODULES['vae_decoder'](copy.deepcopy(exact.vae).double())}
    reference = [exact.predict(image).values for image in images]
    fp32_error = max(float(np.abs(s - r).max()) for s, r in zip(single, reference))
    batch_error = max(float(np.abs(b - r).max()) for b, r in zip(batch, reference))
    assert 0.0 < fp32_error < 1e-4
    assert batch_error <= 8.0 * fp32_error, (batch_error, fp32_error)


def test_infer_batch_runs_the_normals_model_only_for_the_frames_that_want_normals(
        checkpoints) -> None:
    config = NodeConfig.from_parameters({
        'model.path': str(checkpoints['lotus_g']), 'model.device': 'cpu',
        'model.dtype': 'fp32', 'model.normals_path': str(checkpoints['lotus_normals']),
        'model.processing_resolution': 0, 'alignment.enabled': False})
    shared = load_pipeline(config)
    assert shared.batching_reason() == ''
    assert batching_label('auto', shared) == 'one batch'
    assert batching_label('off', shared).startswith('per-frame loop: batching: off')
    depth_log = CallLog(shared.predictor.components['unet'])
    normals_log = CallLog(shared.normals_predictor.components['unet'])
    shared.predictor.components['unet'] = depth_log
    shared.normals_predictor.components['unet'] = normals_log
    images = _images((48, 64))
    wanted = [{DEPTH_RELATIVE}, {DEPTH_RELATIVE, NORMALS_IMAGE}, None]
    pipelines = [camera_pipeline(shared) for _ in images]
    inferred = pipelines[0].infer_batch(images, wanted)
    assert depth_log.sizes == [3] and normals_log.sizes == [2]
    assert [i.normals is None for i in inferred] == [True, False, False]
    for pipeline, inference in zip(pipelines, inferred):
        result = pipeline.finish(inference)
        assert result.relative.shape == (48, 64)
    with pytest.raises(ValueError, match='2 images but 1 output sets'):
        shared.infer_batch(images[:2], wanted[:1])


def test_an_export_with_a_batch_of_one_loops_with_the_reason(checkpoints, tmp_path) -> None:
    from densepred_ros.models.export import export_lotus
    export_lotus(str(checkpoints['lotus_d']), 48, 64, tmp_path, components=['unet'],
                 log=lambda *_: None)
    predictor = load_predictor(str(checkpoints['lotus_d']), PredictorOptions(
        device='cpu', processing_resolution=0, backend='unet=onnxruntime',
        export_dir=str(tmp_path)))
    assert predictor.backend_choices['unet'].backend == 'onnxruntime'
    assert predictor.batching_reason == ('unet on onnxruntime exported with a batch '
                                         'dimension of 1: one frame at a time')
    pipeline = DepthPipeline(predictor, NodeConfig.from_parameters({'model.path': 'm'}).output)
    assert batching_label('auto', pipeline) == (
        f'per-frame loop: model: {predictor.batching_reason}')
    log = CallLog(predictor.components['unet'])
    predictor.components['unet'] = log
    images = _images((48, 64))
    out = predictor.predict_batch(images)
    assert log.sizes == [1, 1, 1]
    for image, prediction in zip(images, out):
        np.testing.assert_array_equal(prediction.values, predictor.predict(image).values)


def test_the_demo_model_in_bf16_takes_a_batch_too() -> None:
    """With dtype auto (bf16 where native) a batch runs; each frame at its own size, finite."""
    predictor = load_predictor(str(DEMO), PredictorOptions(device='cpu'))
    out = predictor.predict_batch(_images())
    assert all(p.values.shape == (120, 160) and np.isfinite(p.values).all() for p in out)


def test_lanes_run_the_shared_model_at_once_and_share_the_cores(
        checkpoints, monkeypatch) -> None:
    """Two threads calling one predictor get the results a single caller gets.

    Each gets cores // lanes torch threads (`share_cpu`); one lane gets the count back.
    """
    import threading
    import torch
    shared = load_pipeline(NodeConfig.from_parameters({
        'model.path': str(checkpoints['lotus_g']), 'model.device': 'cpu',
        'model.dtype': 'fp32', 'model.processing_resolution': 0}))
    assert shared.concurrency_reason() == ''
    monkeypatch.setattr('densepred_ros.scheduler.usable_cores', lambda: 4)
    before = shared.share_cpu(1)
    assert shared.share_cpu(2) == 2 == torch.get_num_threads()
    images = _images((48, 64))
    alone = [p.values for p in shared.predictor.predict_batch(images)]   # same threads
    got, threads = {}, {}

    def lane(index: int) -> None:
        threads[index] = shared.share_cpu(2)
        for _ in range(3):
            got[index] = [p.values for p in shared.predictor.predict_batch(images)]

    lanes = [threading.Thread(target=lane, args=(i,)) for i in range(2)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join(60.0)
    assert threads == {0: 2, 1: 2}
    for index in range(2):
        for a, b in zip(alone, got[index]):
            np.testing.assert_array_equal(a, b)   # no interference between the lanes
    assert shared.share_cpu(1) == before == torch.get_num_threads()
    shared.close()
