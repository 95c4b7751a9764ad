"""The per-frame pipeline on numpy, without ROS: an oracle model must give the true depth."""

from densepred_ros.alignment import TemporalAligner
from densepred_ros.models import ModelSpec, Prediction
from densepred_ros.params import OutputConfig
from densepred_ros.pipeline import (
    DEPTH_COLOR, depth_order, DEPTH_RELATIVE, DepthPipeline, OUTPUTS, STAGES)
from densepred_ros.synthetic import make_frame
import numpy as np
import pytest

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
