"""Tier-1 tests of densepred_ros.geometry on generated depth images (numpy only).

Every test runs on both paths of geometry.py: the numpy one and, when numba is installed,
the numba kernels.
"""

import math

from densepred_ros import geometry
from densepred_ros.camera import CameraModel
from densepred_ros.geometry import (
    colorize_depth, colorize_normals, colormap_lut, depth_edge_mask, depth_to_points,
    normals_from_depth, pack_rgb, unpack_rgb)
import numpy as np
import pytest

W, H = 64, 48
FX, FY, CX, CY = 60.0, 55.0, 31.5, 23.0
_NUMBA = geometry._load_kernels()
# Every test runs with geometry's numpy path, then with its numba kernels (conftest).
pytestmark = pytest.mark.usefixtures('kernels')


@pytest.fixture
def camera() -> CameraModel:
    return CameraModel.pinhole(FX, FY, CX, CY, W, H)


def _rays(camera: CameraModel) -> np.ndarray:
    """H×W×3 rays (x/z, y/z, 1) through pixel centres, from the pinhole model."""
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    return np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u, dtype=float)], axis=-1)


def _plane_depth(camera: CameraModel, normal: np.ndarray, distance: float) -> np.ndarray:
    """Depth of the plane {p : n·p + distance = 0} seen through every pixel."""
    return (-distance / (_rays(camera) @ normal)).astype(np.float32)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def test_fronto_parallel_plane_back_projects_onto_plane(camera):
    depth = np.full((H, W), 2.5, dtype=np.float32)
    points = depth_to_points(depth, camera)
    assert points.shape == (H, W, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points[..., 2], 2.5)
    # Corner pixel (0, 0) and pixel (W-1, H-1) from x = (u - cx)·z/fx.
    np.testing.assert_allclose(points[0, 0], [-CX * 2.5 / FX, -CY * 2.5 / FY, 2.5], rtol=1e-6)
    np.testing.assert_allclose(points[H - 1, W - 1],
                               [(W - 1 - CX) * 2.5 / FX, (H - 1 - CY) * 2.5 / FY, 2.5],
                               rtol=1e-6)


def test_points_reproject_to_their_pixels(camera):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 20.0, size=(H, W)).astype(np.float32)
    points = depth_to_points(depth, camera).astype(np.float64)
    u = FX * points[..., 0] / points[..., 2] + CX
    v = FY * points[..., 1] / points[..., 2] + CY
    grid_v, grid_u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(u, grid_u, atol=1e-3)
    np.testing.assert_allclose(v, grid_v, atol=1e-3)
    np.testing.assert_allclose(points[..., 2], depth)


def test_tilted_plane_points_satisfy_plane_equation(camera):
    normal = _unit([0.3, -0.4, -1.0])
    depth = _plane_depth(camera, normal, 3.0)
    points = depth_to_points(depth, camera)
    residual = points.astype(np.float64) @ normal + 3.0
    assert np.abs(residual).max() < 1e-5


def test_uses_rectified_projection_matrix_not_k():
    K = np.array([[100.0, 0.0, 10.0], [0.0, 100.0, 10.0], [0.0, 0.0, 1.0]])
    P = np.array([[50.0, 0.0, 4.0, 0.0], [0.0, 40.0, 3.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    camera = CameraModel(width=8, height=6, K=K, P=P)
    points = depth_to_points(np.ones((6, 8), dtype=np.float32), camera)
    np.testing.assert_allclose(points[0, 0], [-4.0 / 50.0, -3.0 / 40.0, 1.0], rtol=1e-6)


def test_invalid_depths_become_nan(camera):
    depth = np.full((H, W), 4.0, dtype=np.float32)
    depth[1, 2] = np.nan
    depth[3, 4] = np.inf
    depth[5, 6] = -np.inf
    depth[7, 8] = 0.0
    depth[9, 10] = -1.0
    depth[11, 12] = 30.0
    points = depth_to_points(depth, camera, max_depth=10.0)
    bad = np.isnan(points).all(axis=-1)
    assert set(zip(*np.nonzero(bad))) == {(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)}
    assert np.isfinite(points[~bad]).all()


def test_max_depth_keeps_points_at_the_limit(camera):
    depth = np.full((H, W), 10.0, dtype=np.float32)
    assert np.isfinite(depth_to_points(depth, camera, max_depth=10.0)).all()
    assert np.isnan(depth_to_points(depth, camera, max_depth=9.99)).all()


@pytest.mark.parametrize('stride', [1, 2, 3, 5, 7])
def test_stride_samples_every_nth_pixel(camera, stride):
    rng = np.random.default_rng(stride)
    depth = rng.uniform(1.0, 5.0, size=(H, W)).astype(np.float32)
    full = depth_to_points(depth, camera)
    decimated = depth_to_points(depth, camera, stride=stride)
    assert decimated.shape == (-(-H // stride), -(-W // stride), 3)
    np.testing.assert_allclose(decimated, full[::stride, ::stride], rtol=1e-6)


@pytest.mark.parametrize('kwargs', [{'stride': 0}, {'stride': 1.5}, {'max_depth': 0.0},
                                    {'max_depth': float('nan')}])
def test_bad_arguments_raise(camera, kwargs):
    with pytest.raises(ValueError):
        depth_to_points(np.ones((H, W), dtype=np.float32), camera, **kwargs)


def test_shape_mismatch_and_integer_depth_raise(camera):
    with pytest.raises(ValueError, match='does not match'):
        depth_to_points(np.ones((H, W + 1), dtype=np.float32), camera)
    with pytest.raises(ValueError, match='dtype'):
        depth_to_points(np.ones((H, W), dtype=np.uint16), camera)


def test_binned_camera_uses_delivered_resolution():
    # Calibrated at 8×6, delivered binned by 2 → 4×3 with fx/2 and cx' = (cx + 0.5)/2 − 0.5.
    base = CameraModel.pinhole(40.0, 40.0, 3.5, 2.5, 8, 6)
    binned = CameraModel(width=8, height=6, K=base.K, P=base.P, binning_x=2, binning_y=2)
    points = depth_to_points(np.full((3, 4), 2.0, dtype=np.float32), binned)
    np.testing.assert_allclose(points[0, 0], [-1.5 * 2.0 / 20.0, -1.0 * 2.0 / 20.0, 2.0],
                               rtol=1e-6)
    with pytest.raises(ValueError, match='does not match'):
        depth_to_points(np.ones((6, 8), dtype=np.float32), binned)


@pytest.mark.parametrize('normal', [[0.0, 0.0, -1.0], [0.3, -0.4, -1.0], [-0.5, 0.2, -1.0],
                                    [0.0, -0.6, -1.0]])
def test_normals_of_tilted_plane_match_analytic_normal(camera, normal):
    normal = _unit(normal)
    depth = _plane_depth(camera, normal, 2.0)
    assert (depth > 0).all()
    normals = normals_from_depth(depth, camera, max_rel_jump=0.2)
    assert normals.shape == (H, W, 3) and normals.dtype == np.float32
    assert np.isfinite(normals).all()
    np.testing.assert_allclose(normals, np.broadcast_to(normal, normals.shape), atol=1e-3)


def test_normals_of_sphere_point_outwards_towards_camera(camera):
    centre, radius = np.array([0.1, -0.05, 3.0]), 1.2
    rays = _rays(camera)
    # Nearest intersection of p = t·ray with the sphere |p − c| = r.
    a = np.sum(rays * rays, axis=-1)
    b = -2.0 * rays @ centre
    c = centre @ centre - radius ** 2
    disc = b * b - 4 * a * c
    with np.errstate(invalid='ignore'):
        t = (-b - np.sqrt(disc)) / (2 * a)
    depth = np.where(disc > 0, t, np.inf).astype(np.float32)
    normals = normals_from_depth(depth, camera)
    points = depth_to_points(depth, camera).astype(np.float64)
    expected = (points - centre) / radius
    # Away from the silhouette (where the surface is seen edge-on) normals match closely.
    facing = -np.sum(expected * _unit_rows(points), axis=-1)
    inner = facing > 0.5
    assert inner.sum() > 200
    angle = np.degrees(np.arccos(np.clip(np.sum(normals[inner] * expected[inner], -1), -1, 1)))
    assert angle.max() < 2.0
    assert np.isnan(normals[np.isinf(depth)]).all()


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_normals_at_depth_discontinuity_come_from_own_surface(camera):
    depth = np.full((H, W), 5.0, dtype=np.float32)
    depth[10:30, 20:40] = 1.0  # a box face in front of a wall, both facing the camera
    normals = normals_from_depth(depth, camera)
    # Every pixel, including both sides of the box outline, belongs to a fronto-parallel
    # surface: no mixed "edge" normals.
    np.testing.assert_allclose(normals, np.broadcast_to([0.0, 0.0, -1.0], normals.shape),
                               atol=1e-5)


def test_isolated_pixel_and_unknown_depth_give_nan_normals(camera):
    depth = np.full((H, W), 2.0, dtype=np.float32)
    depth[20, 20] = 0.5  # flying pixel with no neighbour on its surface
    depth[30, 30] = np.nan
    normals = normals_from_depth(depth, camera)
    assert np.isnan(normals[20, 20]).all()
    assert np.isnan(normals[30, 30]).all()
    # Neighbours of the unknown pixel use their other side and stay valid.
    assert np.isfinite(normals[30, 29]).all() and np.isfinite(normals[29, 30]).all()
    assert np.isfinite(normals[20, 21]).all()


def test_normals_are_unit_and_face_the_camera(camera):
    rng = np.random.default_rng(3)
    # A smooth random surface.
    v, u = np.mgrid[0:H, 0:W]
    depth = (3.0 + 0.3 * np.sin(u / 7.0 + rng.uniform()) * np.cos(v / 5.0)).astype(np.float32)
    normals = normals_from_depth(depth, camera)
    points = depth_to_points(depth, camera)
    valid = np.isfinite(normals).all(axis=-1)
    assert valid.mean() > 0.99
    np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-5)
    assert (np.sum(normals[valid] * points[valid], axis=-1) < 0).all()


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(float) @ np.array([0.2126, 0.7152, 0.0722])


def test_lut_shapes_and_heat_luminance_rises():
    for name in ('spectral', 'heat', 'gray'):
        lut = colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    luma = _luma(colormap_lut('heat'))
    assert (np.diff(luma) > -0.5).all() and luma[-1] - luma[0] > 200
    with pytest.raises(ValueError, match='unknown colour map'):
        colormap_lut('jet')


def test_spectral_lut_is_smooth_and_distinct():
    lut = colormap_lut('spectral').astype(int)
    steps = np.abs(np.diff(lut, axis=0)).max(axis=1)
    assert steps.max() <= 10  # no jumps between neighbouring entries
    assert len({tuple(c) for c in lut}) > 240  # nearly every entry is its own colour
    assert np.linalg.norm(lut[0] - lut[-1]) > 100  # near and far look different


def test_colorize_depth_range_and_invalid_colour():
    depth = np.tile(np.linspace(1.0, 9.0, 20, dtype=np.float32), (4, 1))
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    depth[0, 2] = -np.inf
    rgb = colorize_depth(depth, vmin=1.0, vmax=9.0, invalid_color=(1, 2, 3))
    lut = colormap_lut('spectral')
    assert rgb.shape == (4, 20, 3) and rgb.dtype == np.uint8
    assert (rgb[0, :3] == [1, 2, 3]).all()
    assert (rgb[1, 0] == lut[0]).all() and (rgb[1, -1] == lut[255]).all()
    # Values outside [vmin, vmax] clip to the end colours.
    clipped = colorize_depth(np.array([[0.0, 100.0]], dtype=np.float32), vmin=1.0, vmax=9.0)
    assert (clipped[0, 0] == lut[0]).all() and (clipped[0, 1] == lut[255]).all()


def test_colorize_depth_automatic_range_ignores_outliers():
    depth = np.tile(np.linspace(1.0, 10.0, 100, dtype=np.float32), (10, 1))
    depth[0, 0] = 1e6
    rgb = colorize_depth(depth, cmap='heat')
    # The ramp spreads over most of the map instead of collapsing to its first colours.
    assert len({tuple(c) for c in rgb[5]}) > 80
    assert _luma(rgb[5, -1]) - _luma(rgb[5, 0]) > 150


def test_colorize_depth_all_invalid_and_bad_range():
    rgb = colorize_depth(np.full((3, 3), np.nan, dtype=np.float32), invalid_color=(9, 9, 9))
    assert (rgb == 9).all()
    with pytest.raises(ValueError):
        colorize_depth(np.ones((3, 3), dtype=np.float32), vmin=5.0, vmax=1.0)
    with pytest.raises(ValueError):
        colorize_depth(np.ones((3, 3), dtype=np.float32), invalid_color=(0, 0, 300))


def test_colorize_normals_conventional_colours():
    normals = np.array([[[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0],
                         [np.nan, 0.0, 0.0]]], dtype=np.float32)
    rgb = colorize_normals(normals)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(rgb[0, 0], [128, 128, 255])  # wall facing camera
    np.testing.assert_array_equal(rgb[0, 1], [128, 255, 128])  # floor (normal up = −y)
    np.testing.assert_array_equal(rgb[0, 2], [255, 128, 128])  # facing right
    np.testing.assert_array_equal(rgb[0, 3], [0, 0, 0])
    with pytest.raises(ValueError):
        colorize_normals(np.zeros((4, 4, 2), dtype=np.float32))


def test_pack_rgb_matches_pcl_byte_layout():
    rgb = np.array([[0x12, 0x34, 0x56], [255, 0, 7]], dtype=np.uint8)
    packed = pack_rgb(rgb)
    assert packed.dtype == np.float32 and packed.shape == (2,)
    words = packed.view(np.uint32)
    assert words[0] == 0x00123456 and words[1] == 0x00FF0007
    # Little-endian memory order of the word is b, g, r, 0.
    assert packed.astype('<f4').tobytes()[:4] == bytes([0x56, 0x34, 0x12, 0x00])
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)
    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_rgb(pack_rgb(image)), image)
    with pytest.raises(ValueError):
        pack_rgb(image.astype(np.float32))


# ---------------------------------------------------------------------------------------
# The original algorithms, kept here as references for the faster implementations.
# ---------------------------------------------------------------------------------------

def _reference_normals(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                       max_rel_jump: float = 0.05) -> np.ndarray:
    """Return normals as the cross product of explicit tangents, in float64 (original method).

    Back-project every pixel; per axis take the difference to the neighbour whose depth
    is closer (the next one only when strictly closer, or when the previous one is
    missing), NaN when that jump exceeds max_rel_jump·z; cross u × v; flip towards the
    camera; normalise.
    """
    z = np.array(depth, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        z[~(np.isfinite(z) & (z > 0))] = np.nan
    v, u = np.mgrid[0:z.shape[0], 0:z.shape[1]]
    p = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=-1)

    def tangent(axis: int) -> np.ndarray:
        pad = [(0, 0)] * 3
        pad[axis] = (1, 1)
        q = np.pad(p, pad, constant_values=np.nan)
        n = p.shape[axis]
        before = np.take(q, np.arange(0, n), axis=axis)
        after = np.take(q, np.arange(2, n + 2), axis=axis)
        back, fwd = p - before, after - p
        with np.errstate(invalid='ignore'):
            jb, jf = np.abs(back[..., 2]), np.abs(fwd[..., 2])
            use_fwd = (jf < jb) | np.isnan(jb)
            t = np.where(use_fwd[..., None], fwd, back)
            bad = ~(np.abs(t[..., 2]) <= max_rel_jump * z)
        t[bad] = np.nan
        return t

    n = np.cross(tangent(1), tangent(0))
    with np.errstate(invalid='ignore', divide='ignore'):
        n *= np.where(np.sum(n * p, axis=-1) > 0, -1.0, 1.0)[..., None]
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return n


def _reference_colorize_depth(depth, vmin, vmax, invalid_color=(0, 0, 0), cmap='spectral'):
    """Map depth to colours as originally: clip, round, look up, paint non-finite pixels."""
    depth = np.asarray(depth, dtype=np.float32)
    finite = np.isfinite(depth)
    scale = 255.0 / max(vmax - vmin, 1e-12)
    with np.errstate(invalid='ignore'):
        index = np.clip((depth - vmin) * scale, 0.0, 255.0)
    index[~finite] = 0
    rgb = colormap_lut(cmap)[np.round(index).astype(np.intp)]
    rgb[~finite] = invalid_color
    return rgb


def _reference_colorize_normals(normals):
    """Colour normals as originally: (n_x, −n_y, −n_z)·127.5 + 127.5, black if not finite."""
    with np.errstate(invalid='ignore'):
        values = normals * np.array([127.5, -127.5, -127.5], dtype=np.float32) + 127.5
        values = np.rint(np.clip(values, 0.0, 255.0))
    values[~np.isfinite(normals).all(axis=-1)] = 0.0
    return values.astype(np.uint8)


def _rough_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Depth with slopes, steps, noise, holes, zeros, negative and infinite values."""
    v, u = np.mgrid[0:height, 0:width]
    depth = 4.0 + 0.05 * u + 2.0 * (v > height // 2) + rng.normal(0.0, 0.05, (height, width))
    depth[rng.random((height, width)) < 0.05] = np.nan
    depth[rng.random((height, width)) < 0.02] = 0.0
    depth[rng.random((height, width)) < 0.01] = -1.0
    depth[rng.random((height, width)) < 0.02] = np.inf
    depth[5:9, 10:14] = 0.8  # a near patch: discontinuities on all sides
    return depth.astype(np.float32)


@pytest.mark.parametrize('max_rel_jump', [0.01, 0.05, 1.0])
def test_normals_match_the_reference_method(camera, max_rel_jump):
    depth = _rough_scene(np.random.default_rng(4), H, W)
    normals = normals_from_depth(depth, camera, max_rel_jump=max_rel_jump)
    expected = _reference_normals(depth, FX, FY, CX, CY, max_rel_jump)
    np.testing.assert_array_equal(np.isnan(normals), np.isnan(expected))
    assert np.isfinite(normals).any(axis=-1).mean() > 0.3
    np.testing.assert_allclose(normals, expected, atol=1e-4)


def test_normals_match_the_reference_on_a_generated_street():
    from densepred_ros.synthetic import make_frame
    frame = make_frame(seed=1, kind='outdoor', width=320, height=96, beams=0)
    fx, fy, cx, cy = frame.camera.intrinsics()
    normals = normals_from_depth(frame.depth, frame.camera)
    expected = _reference_normals(frame.depth, fx, fy, cx, cy)
    np.testing.assert_array_equal(np.isnan(normals), np.isnan(expected))
    assert np.isfinite(normals).all(axis=-1).mean() > 0.5
    np.testing.assert_allclose(normals, expected, atol=1e-4)


@pytest.mark.parametrize('shape', [(1, 5), (5, 1), (2, 2), (3, 70)])
def test_normals_of_thin_images(shape):
    camera = CameraModel.pinhole(50.0, 50.0, 2.0, 1.0, shape[1], shape[0])
    depth = np.random.default_rng(5).uniform(2.0, 2.05, shape).astype(np.float32)
    normals = normals_from_depth(depth, camera)
    expected = _reference_normals(depth, 50.0, 50.0, 2.0, 1.0)
    np.testing.assert_array_equal(np.isnan(normals), np.isnan(expected))
    np.testing.assert_allclose(normals, expected, atol=1e-4)


def test_points_are_the_reference_back_projection(camera):
    depth = _rough_scene(np.random.default_rng(6), H, W)
    for max_depth in (math.inf, 6.0):
        points = depth_to_points(depth, camera, max_depth=max_depth)
        z = depth.astype(np.float64)
        with np.errstate(invalid='ignore'):
            z[~(np.isfinite(z) & (z > 0) & (z <= max_depth))] = np.nan
        v, u = np.mgrid[0:H, 0:W]
        expected = np.stack([(u - CX) / FX * z, (v - CY) / FY * z, z], axis=-1)
        np.testing.assert_allclose(points, expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize('cmap', ['spectral', 'heat', 'gray'])
def test_colorize_depth_is_the_reference_mapping(cmap):
    depth = _rough_scene(np.random.default_rng(7), H, W)
    finite = depth[np.isfinite(depth)]
    low, high = np.percentile(finite, (2.0, 98.0))
    np.testing.assert_array_equal(colorize_depth(depth, cmap=cmap, invalid_color=(7, 8, 9)),
                                  _reference_colorize_depth(depth, low, high, (7, 8, 9), cmap))
    np.testing.assert_array_equal(colorize_depth(depth, vmin=3.0, vmax=3.0),
                                  _reference_colorize_depth(depth, 3.0, 3.0))
    strided = depth[::2, ::3]
    np.testing.assert_array_equal(colorize_depth(strided, vmin=1.0, vmax=8.0),
                                  _reference_colorize_depth(strided, 1.0, 8.0))


def test_colorize_normals_is_the_reference_mapping():
    rng = np.random.default_rng(8)
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[::7, ::5] = np.nan
    normals[3, 4, 1] = np.inf
    normals[4, 4, 2] = -np.inf
    normals[5, 5] = [0.5 / 127.5, 1.5 / 127.5, 0.0]  # exact halves: round half to even
    normals[6, 6] = [1.3, -2.0, 0.0]  # out of range: clipped
    np.testing.assert_array_equal(colorize_normals(normals),
                                  _reference_colorize_normals(normals))
    np.testing.assert_array_equal(colorize_normals(normals[:, ::2]),
                                  _reference_colorize_normals(normals[:, ::2]))


def test_normals_on_ridges_take_the_previous_neighbour_on_ties(camera):
    # Every interior pixel has two neighbours at the same depth distance on both axes.
    v, u = np.mgrid[0:H, 0:W]
    depth = (2.0 + 0.04 * (u % 2) + 0.03 * (v % 2)).astype(np.float32)
    normals = normals_from_depth(depth, camera)
    expected = _reference_normals(depth, FX, FY, CX, CY)
    assert np.isfinite(normals).all()
    np.testing.assert_allclose(normals, expected, atol=1e-4)


def _numpy_edge_mask(depth, threshold, step):
    """depth_edge_mask on geometry's numpy path, whichever path the test runs on."""
    kernels = geometry._kernels
    geometry._kernels = None
    try:
        return depth_edge_mask(depth, threshold=threshold, step=step)
    finally:
        geometry._kernels = kernels


def _edge_scenes():
    """Depth images with flying-pixel ramps, noise, holes, ±inf, zeros and tiny depths."""
    from densepred_ros.synthetic import make_frame
    rng = np.random.default_rng(11)
    rough = _rough_scene(rng, H, W)
    rough[20:23, 30] = np.linspace(0.8, 6.0, 5)[1:4]  # a ramp between two surfaces
    rough[30, 40:45] = [1e-40, 1e-45, np.float32(1e-30), -np.inf, 3e38]
    street = make_frame(seed=2, kind='outdoor', width=160, height=64, beams=0).depth.copy()
    street[::9, ::13] = np.nan
    v, u = np.mgrid[0:40, 0:50]
    steps = np.where(u < 25, 2.0, 9.0) + 0.01 * v
    steps[:, 24:27] = [3.5, 5.0, 7.5]  # flying pixels across a vertical edge
    return [rough, street, steps.astype(np.float32), steps, rough[::2, 1::3],
            rough[:1], rough[:, :1], rough[:3, :4], np.full((5, 6), np.nan, np.float32)]


@pytest.mark.filterwarnings('ignore:overflow encountered in divide:RuntimeWarning')
@pytest.mark.parametrize('threshold', [0.01, 0.05, np.float64(0.05), 0.3, 2])
@pytest.mark.parametrize('step', [1, 2, 3, 5])
def test_depth_edge_mask_is_the_numpy_mask(threshold, step):
    flagged_total = 0
    for depth in _edge_scenes():
        mask = depth_edge_mask(depth, threshold=threshold, step=step)
        assert mask.dtype == bool and mask.shape == depth.shape
        np.testing.assert_array_equal(mask, _numpy_edge_mask(depth, threshold, step))
        flagged_total += int(mask.sum())
        assert not mask[np.isnan(depth)].any()
    assert flagged_total > 0


def test_depth_edge_mask_flags_the_ramp_only():
    v, u = np.mgrid[0:40, 0:50]
    depth = (np.where(u < 25, 2.0, 9.0) + 0.01 * v).astype(np.float32)
    depth[:, 24:27] = [3.5, 5.0, 7.5]
    mask = depth_edge_mask(depth)
    assert mask[:, 24:27].all()
    assert not mask[:, :24].any() and not mask[:, 27:].any()


def test_warm_up_names_the_path_in_use(kernels):
    assert geometry.warm_up() == kernels


def test_display_range_is_numpys_percentile():
    rng = np.random.default_rng(9)
    cases = [rng.lognormal(1.0, 1.0, (40, 50)), rng.normal(0.0, 5.0, (30, 20)),
             np.round(rng.uniform(0.0, 3.0, (25, 25)), 1), np.full((3, 4), 7.5),
             np.array([[2.0]]), rng.uniform(-1e-39, 1e-39, (10, 10))]
    for depth in cases:
        depth = depth.astype(np.float32)
        depth.flat[::7] = np.nan
        depth.flat[3::11] = np.inf
        depth.flat[5::13] = -np.inf
        depth[0, 0] = 2.0
        for image in (depth, depth[::2, 1::3]):
            values = image[np.isfinite(image)]
            for q in ((2.0, 98.0), (0.0, 100.0), (33.3, 66.7), (50.0, 99.99), (1.0, 1.0)):
                expected = (tuple(float(v) for v in np.percentile(values, q)) if values.size
                            else None)
                assert geometry._finite_percentiles(image, q) == expected
    assert geometry._finite_percentiles(np.full((2, 2), np.nan, np.float32), (2, 98)) is None
    with pytest.raises(ValueError):
        colorize_depth(np.ones((3, 3), dtype=np.float32), percentiles=(-1.0, 50.0))
