"""geometry_torch against the numpy path of geometry.py and alignment.to_metric.

On the CPU always; on CUDA too when a GPU is present (tolerances then cover the device's
own float rounding of exp, sqrt and division).
"""

import math

from densepred_ros import alignment, geometry
from densepred_ros.camera import CameraModel
import numpy as np
import pytest

torch = pytest.importorskip('torch')
geometry_torch = pytest.importorskip('densepred_ros.geometry_torch')

H, W = 60, 90
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def camera() -> CameraModel:
    return CameraModel.pinhole(70.0, 65.0, 44.5, 29.0, W, H)


def _depth(seed: int = 0) -> np.ndarray:
    """Slopes, a step, a near patch, noise, holes, zeros, negative and infinite values."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:H, 0:W]
    depth = 3.0 + 0.04 * u + 1.5 * (v > H // 2) + rng.normal(0.0, 0.03, (H, W))
    depth[10:16, 20:30] = 0.9
    depth[rng.random((H, W)) < 0.04] = np.nan
    depth[rng.random((H, W)) < 0.02] = 0.0
    depth[rng.random((H, W)) < 0.01] = -2.0
    depth[rng.random((H, W)) < 0.02] = np.inf
    return depth.astype(np.float32)


def _tensor(array: np.ndarray, device: str):
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


@pytest.mark.parametrize('space', ['depth', 'disparity', 'log_depth'])
def test_to_metric_matches_alignment(device, space):
    rng = np.random.default_rng(1)
    relative = rng.uniform(-0.2, 1.2, (H, W)).astype(np.float32)
    relative[3, 4] = np.nan
    scale, shift = {'depth': (20.0, -1.0), 'disparity': (0.5, 0.01),
                    'log_depth': (4.0, 0.5)}[space]
    expected = alignment.to_metric(relative, space, scale, shift, 0.3, 80.0)
    metric = geometry_torch.to_metric(_tensor(relative, device), space, scale, shift, 0.3, 80.0)
    got = geometry_torch.to_numpy(metric)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError):
        geometry_torch.to_metric(_tensor(relative, device), 'inverse', 1.0, 0.0, 0.3, 80.0)


@pytest.mark.parametrize('stride, max_depth', [(1, math.inf), (3, 5.0)])
def test_points_match_numpy(device, camera, stride, max_depth):
    depth = _depth(2)
    expected = geometry.depth_to_points(depth, camera, stride=stride, max_depth=max_depth)
    got = geometry_torch.to_numpy(geometry_torch.depth_to_points(
        _tensor(depth, device), camera, stride=stride, max_depth=max_depth))
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize('max_rel_jump', [0.02, 0.05, 1.0])
def test_normals_match_numpy(device, camera, max_rel_jump):
    depth = _depth(3)
    expected = geometry.normals_from_depth(depth, camera, max_rel_jump=max_rel_jump)
    got = geometry_torch.to_numpy(geometry_torch.normals_from_depth(
        _tensor(depth, device), camera, max_rel_jump=max_rel_jump))
    assert got.shape == (H, W, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isfinite(got).all(axis=-1).mean() > 0.3
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_normals_on_a_generated_street_match_numpy(device):
    from densepred_ros.synthetic import make_frame
    frame = make_frame(seed=2, kind='outdoor', width=240, height=80, beams=0)
    expected = geometry.normals_from_depth(frame.depth, frame.camera)
    got = geometry_torch.to_numpy(
        geometry_torch.normals_from_depth(_tensor(frame.depth, device), frame.camera))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize('kwargs', [{}, {'vmin': 2.0, 'vmax': 6.0, 'cmap': 'heat'},
                                    {'percentiles': (0.0, 100.0), 'invalid_color': (5, 6, 7)},
                                    {'percentiles': (10.0, 90.0), 'cmap': 'gray'}])
def test_colorize_depth_matches_numpy(device, kwargs):
    depth = _depth(4)
    expected = geometry.colorize_depth(depth, **kwargs)
    got = geometry_torch.to_numpy(geometry_torch.colorize_depth(_tensor(depth, device),
                                                                **kwargs))
    assert got.dtype == np.uint8
    if device == 'cpu':
        np.testing.assert_array_equal(got, expected)
    else:  # a range rounded differently may move a pixel by one colour step
        assert np.abs(got.astype(int) - expected).max() <= 10
        assert (got != expected).any(axis=-1).mean() < 1e-3


def test_percentiles_are_numpys():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 10, 101, 4567):
        values = rng.lognormal(1.0, 1.0, n).astype(np.float32)
        for q in ((2.0, 98.0), (0.0, 100.0), (33.3, 66.7), (50.0, 99.99)):
            assert geometry_torch._percentiles(torch.from_numpy(values), q) == tuple(
                float(v) for v in np.percentile(values, q))


def test_colorize_normals_matches_numpy(device):
    rng = np.random.default_rng(6)
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[::5, ::7] = np.nan
    normals[1, 2, 0] = np.inf
    normals[2, 2] = [0.5 / 127.5, 1.5 / 127.5, 0.0]
    expected = geometry.colorize_normals(normals)
    got = geometry_torch.to_numpy(geometry_torch.colorize_normals(_tensor(normals, device)))
    np.testing.assert_array_equal(got, expected)


def test_bad_inputs_raise(camera):
    depth = torch.ones(H, W)
    with pytest.raises(ValueError, match='does not match'):
        geometry_torch.normals_from_depth(torch.ones(H, W + 1), camera)
    with pytest.raises(ValueError, match='float'):
        geometry_torch.depth_to_points(torch.ones(H, W, dtype=torch.int32), camera)
    with pytest.raises(ValueError):
        geometry_torch.normals_from_depth(depth, camera, max_rel_jump=0.0)
    with pytest.raises(ValueError):
        geometry_torch.depth_to_points(depth, camera, stride=0)
    with pytest.raises(ValueError):
        geometry_torch.colorize_depth(depth, vmin=3.0, vmax=1.0)
    with pytest.raises(ValueError):
        geometry_torch.colorize_normals(torch.ones(H, W, 2))


def test_geometry_does_not_import_torch():
    import subprocess
    import sys
    code = ('import sys, densepred_ros.geometry, densepred_ros.camera; '
            'sys.exit(1 if "torch" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code], timeout=120).returncode == 0
