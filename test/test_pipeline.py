"""The per-frame pipeline without ROS: true depth from an oracle, torch path = numpy path."""

from densepred_ros.alignment import TemporalAligner
from densepred_ros.models import load_predictor, ModelSpec, Prediction, PredictorOptions
from densepred_ros.params import OutputConfig
from densepred_ros.pipeline import (
    DEPTH_COLOR, depth_order, DEPTH_RELATIVE, DepthPipeline, FrameResult, OUTPUTS, STAGES)
from densepred_ros.synthetic import make_frame
import numpy as np
import pytest
import torch

OUTPUT = OutputConfig(points_stride=2, max_depth=50.0, publish_points=True, points_color=True)


class Oracle:
    """Returns the frame's true depth normalised to [0, 1] (depth space)."""

    def __init__(self, frame) -> None:
        finite = np.isfinite(frame.depth)
        lo, hi = frame.depth[finite].min(), frame.depth[finite].max()
        self.relative = np.where(finite, (frame.depth - lo) / (hi - lo), 1.0).astype(np.float32)
        self.spec = ModelSpec(family='lotus', variant='g', space='depth',
                              default_processing_resolution=0, source='oracle')

    def predict(self, rgb: np.ndarray) -> Prediction:
        return Prediction(space='depth', values=self.relative.copy())

    def close(self) -> None:
        pass


@pytest.fixture(scope='module')
def frame():
    return make_frame(seed=3, kind='indoor', width=96, height=72, beams=32)


def test_every_output_from_numpy_inputs(frame) -> None:
    pipeline = DepthPipeline(Oracle(frame), OUTPUT, TemporalAligner('depth'))
    out = pipeline.process(frame.rgb, frame.camera, frame.lidar_points, frame.T_cam_lidar)
    assert out.aligned and out.alignment.ok and out.alignment_reason == ''
    both = np.isfinite(out.metric) & np.isfinite(frame.depth)
    assert both.mean() > 0.9
    rel_error = np.abs(out.metric[both] - frame.depth[both]) / frame.depth[both]
    assert np.median(rel_error) < 0.02
    assert out.metric.dtype == np.float32 and not np.any(out.metric == 0.0)
    valid = np.isfinite(out.normals).all(axis=-1)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(np.linalg.norm(out.normals[valid], axis=-1), 1.0, atol=1e-4)
    assert out.depth_color.shape == out.normals_color.shape == (72, 96, 3)
    assert out.points.shape == (36, 48, 3) and out.points.dtype == np.float32
    z = out.points[..., 2]
    np.testing.assert_allclose(z[np.isfinite(z)], out.metric[::2, ::2][np.isfinite(z)])
    np.testing.assert_array_equal(out.point_colors, frame.rgb[::2, ::2])
    assert (out.camera.width, out.camera.height) == (96, 72)
    # Every stage the pipeline runs is timed; decode and encode belong to the caller.
    assert set(out.timings) == set(STAGES) - {'decode', 'encode'}
    assert all(t >= 0 for t in out.timings.values()) and out.inference_time > 0


def test_only_wanted_outputs_and_the_reasons_without_inputs(frame) -> None:
    pipeline = DepthPipeline(Oracle(frame), OUTPUT, TemporalAligner('depth'))
    out = pipeline.process(frame.rgb, frame.camera, frame.lidar_points, frame.T_cam_lidar,
                           wanted={DEPTH_RELATIVE})
    assert out.aligned  # the fit still runs (its status is reported)
    assert out.normals is None and out.points is None and out.depth_color is None
    out = pipeline.process(frame.rgb, frame.camera, wanted=OUTPUTS,
                           no_points_reason='no lidar scan within 0.1 s of the image')
    assert not out.aligned and out.alignment_reason.startswith('no lidar scan')
    assert out.depth_color is not None and out.normals is None and out.points is None
    out = pipeline.process(frame.rgb, None, frame.lidar_points, frame.T_cam_lidar)
    assert out.alignment_reason == 'no usable camera_info' and out.camera is None
    out = DepthPipeline(Oracle(frame), OUTPUT).process(frame.rgb, frame.camera,
                                                       wanted={DEPTH_COLOR})
    assert out.alignment_reason == 'alignment disabled' and out.depth_color is not None


def test_infer_then_finish_equals_process(frame) -> None:
    a = DepthPipeline(Oracle(frame), OUTPUT, TemporalAligner('depth'))
    b = DepthPipeline(Oracle(frame), OUTPUT, TemporalAligner('depth'))
    whole = a.process(frame.rgb, frame.camera, frame.lidar_points, frame.T_cam_lidar)
    split = b.finish(b.infer(frame.rgb), frame.camera, frame.lidar_points, frame.T_cam_lidar)
    np.testing.assert_array_equal(whole.metric, split.metric)
    np.testing.assert_array_equal(whole.depth_color, split.depth_color)


def test_depth_order_is_the_one_display_rule() -> None:
    values = np.array([[0.0, 0.25, 1.0]], np.float32)
    np.testing.assert_array_equal(depth_order(values, 'disparity'), [[1.0, 0.75, 0.0]])
    for space in ('depth', 'log_depth'):
        assert depth_order(values, space) is values


def _assert_same_result(device: FrameResult, host: FrameResult) -> None:
    """Compare the torch path's outputs with the numpy path's (tolerances of issue 17)."""
    assert device.aligned == host.aligned and device.alignment_reason == host.alignment_reason
    for name in ('metric', 'normals', 'depth_color', 'normals_color', 'points',
                 'point_colors'):
        got, expected = getattr(device, name), getattr(host, name)
        assert (got is None) == (expected is None), name
        if expected is None:
            continue
        assert got.shape == expected.shape and got.dtype == expected.dtype, name
        assert isinstance(got, np.ndarray), name
        if expected.dtype == np.uint8:
            # Exact: on the CPU the twins use the same float32 operations, percentiles and
            # lookup table as numpy (test_geometry_torch asserts the same).
            np.testing.assert_array_equal(got, expected, err_msg=name)
            continue
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected), err_msg=name)
        finite = np.isfinite(expected)
        atol = 1e-4 if name == 'normals' else 1e-5  # unit normals; metres
        np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=atol,
                                   err_msg=name)
    assert set(device.timings) == set(host.timings)


def _run_both(make_pipeline, frame, **inputs):
    """Return (torch path, numpy path) results of one frame from two fresh pipelines."""
    on_device, on_host = make_pipeline(True), make_pipeline(False)
    assert on_device.device_geometry and not on_host.device_geometry
    return (on_device.process(frame.rgb, frame.camera, **inputs),
            on_host.process(frame.rgb, frame.camera, **inputs))


@pytest.mark.parametrize('aligned', [True, False])
def test_torch_geometry_on_cpu_equals_numpy_oracle(frame, aligned) -> None:
    lidar = {'lidar_points': frame.lidar_points, 'T_cam_lidar': frame.T_cam_lidar}
    device, host = _run_both(
        lambda on: DepthPipeline(Oracle(frame), OUTPUT, TemporalAligner('depth'),
                                 device_geometry=on),
        frame, **(lidar if aligned else {}))
    assert host.aligned == aligned and host.depth_color is not None
    if aligned:
        assert host.points is not None and host.normals is not None
    _assert_same_result(device, host)


def _lotus(checkpoints, name: str):
    return load_predictor(str(checkpoints[name]),
                          PredictorOptions(device='cpu', processing_resolution=0))


def test_torch_geometry_on_cpu_equals_numpy_tiny_lotus(frame, checkpoints) -> None:
    depth_model, normals_model = _lotus(checkpoints, 'lotus_g'), \
        _lotus(checkpoints, 'lotus_normals')
    lidar = {'lidar_points': frame.lidar_points, 'T_cam_lidar': frame.T_cam_lidar}
    for normals in (None, normals_model):  # normals from depth, then from the model
        device, host = _run_both(
            lambda on: DepthPipeline(depth_model, OUTPUT, TemporalAligner('depth'),
                                     normals_predictor=normals, device_geometry=on),
            frame, **lidar)
        # Random weights do not align (the oracle tests cover metric depth): the relative
        # depth's colour map, then the normals model's normals and colour map.
        assert host.depth_color is not None
        assert (host.normals_color is not None) == (normals is not None)
        _assert_same_result(device, host)


def test_lotus_hands_out_its_prediction_tensor(checkpoints) -> None:
    predictor = _lotus(checkpoints, 'lotus_g')
    rgb = (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)
    plain, kept = predictor.predict(rgb), predictor.predict(rgb, keep_tensor=True)
    assert plain.tensor is None
    np.testing.assert_array_equal(kept.values, plain.values)
    assert isinstance(kept.tensor, torch.Tensor) and kept.tensor.device == predictor.device
    np.testing.assert_array_equal(kept.tensor.cpu().numpy(), kept.values)
    inference = DepthPipeline(predictor, OUTPUT, device_geometry=True).infer(rgb)
    assert inference.relative_tensor is not None
    assert DepthPipeline(predictor, OUTPUT).infer(rgb).relative_tensor is None  # auto: CPU


def test_device_geometry_choice(frame) -> None:
    assert not DepthPipeline(Oracle(frame), OUTPUT).device_geometry  # no CUDA model
    with pytest.raises(ValueError, match='device_geometry'):
        DepthPipeline(Oracle(frame), OUTPUT, device_geometry='yes')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_torch_geometry_on_cuda_matches_numpy(frame, checkpoints) -> None:
    options = PredictorOptions(device='cuda', processing_resolution=0, dtype='fp32')
    predictor = load_predictor(str(checkpoints['lotus_g']), options)
    lidar = {'lidar_points': frame.lidar_points, 'T_cam_lidar': frame.T_cam_lidar}
    device = DepthPipeline(predictor, OUTPUT, TemporalAligner('depth'))
    host = DepthPipeline(predictor, OUTPUT, TemporalAligner('depth'), device_geometry=False)
    assert device.device_geometry
    a = device.process(frame.rgb, frame.camera, **lidar)
    b = host.process(frame.rgb, frame.camera, **lidar)
    np.testing.assert_array_equal(a.metric, b.metric)
    for name in ('normals', 'points'):
        got, expected = getattr(a, name), getattr(b, name)
        if expected is not None:
            finite = np.isfinite(expected)
            np.testing.assert_array_equal(np.isfinite(got), finite)
            np.testing.assert_allclose(got[finite], expected[finite], rtol=0,
                                       atol=1e-4 if name == 'normals' else 1e-5)
    # CUDA rounds percentiles and sums differently: a pixel may move one colour step.
    for name in ('depth_color', 'normals_color'):
        got, expected = getattr(a, name), getattr(b, name)
        if expected is not None:
            assert (got != expected).any(axis=-1).mean() < 1e-3
