"""Pieces of the demo that carry meaning: metrics, the extrinsic parameter, the cloud view."""

from densepred_ros.demo import (
    depth_metrics, normal_error_degrees, render_points)
from densepred_ros.synthetic import make_frame
import numpy as np
import pytest


def test_depth_metrics_against_known_errors():
    truth = np.array([[1.0, 2.0], [4.0, np.inf]])
    depth = np.array([[1.1, 2.0], [np.nan, 3.0]])
    metrics = depth_metrics(depth, truth)
    assert metrics['abs_rel'] == pytest.approx(0.05)     # (0.1 + 0) / 2
    assert metrics['delta1'] == 1.0
    assert metrics['coverage'] == pytest.approx(2 / 3)


def test_normal_error_degrees():
    a = np.zeros((1, 2, 3))
    a[..., 2] = -1.0
    b = a.copy()
    b[0, 1] = [0.0, -1.0, 0.0]
    assert normal_error_degrees(a, b) == pytest.approx(45.0)


def test_render_points_draws_the_cloud():
    frame = make_frame(2, kind='indoor', width=80, height=60, beams=16)
    v, u = np.mgrid[0:60, 0:80]
    fx, fy, cx, cy = frame.camera.intrinsics()
    z = np.where(np.isfinite(frame.depth), frame.depth, np.nan)
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1).astype(np.float32)
    picture = render_points(points, frame.rgb, 80, 60)
    assert picture.shape == (60, 80, 3) and picture.dtype == np.uint8
    assert (picture.sum(axis=-1) > 0).mean() > 0.2
    assert not render_points(np.full((4, 4, 3), np.nan, np.float32), None, 8, 8).any()
