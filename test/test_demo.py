"""Pieces of the demo that carry meaning: the point-cloud view."""

from densepred_ros.demo import render_points
from densepred_ros.synthetic import make_frame
import numpy as np


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
