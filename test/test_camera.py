"""Camera models, transforms, projection with z-buffer and the see-through filter.

Every test runs with geometry's numpy path and, when numba is installed, its kernels (the
rectified projection has a numba kernel).
"""

import math

from densepred_ros import geometry
from densepred_ros.camera import CameraModel
from densepred_ros.camera import extrinsic_from_xyz_quat
from densepred_ros.camera import project_points
from densepred_ros.camera import transform_points
from densepred_ros.camera import xyz_quat_from_extrinsic
from densepred_ros.synthetic import make_frame
import numpy as np
import pytest


_NUMBA = geometry._load_kernels()
# Every test runs with geometry's numpy path, then with its numba kernels (conftest).
pytestmark = pytest.mark.usefixtures('kernels')


def _cam(width=64, height=48, fx=50.0, fy=55.0, cx=31.5, cy=23.5):
    return CameraModel.pinhole(fx, fy, cx, cy, width, height)


def _points_in_view(cam, n, rng, z_lo=1.0, z_hi=30.0):
    """N×3 points whose rounded projections lie inside the image (pinhole, no Tx)."""
    fx, fy, cx, cy = cam.intrinsics()
    u = rng.uniform(-0.49, cam.width - 0.51, n)
    v = rng.uniform(-0.49, cam.height - 0.51, n)
    z = rng.uniform(z_lo, z_hi, n)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1)


def _brute_force_filter(uv, z, width, height, window, min_gap, rel_gap):
    """Keep mask from an explicit per-point window scan of the z-buffer."""
    zbuf = np.full((height, width), np.inf)
    zbuf[uv[:, 1], uv[:, 0]] = z
    r = window // 2
    keep = np.empty(len(z), dtype=bool)
    for i, ((u, v), zi) in enumerate(zip(uv, z)):
        patch = zbuf[max(v - r, 0):v + r + 1, max(u - r, 0):u + r + 1]
        keep[i] = zi - patch.min() <= max(min_gap, rel_gap * zi)
    return keep


# --- construction and validation -------------------------------------------------------

def test_pinhole_fields_and_intrinsics():
    cam = CameraModel.pinhole(500.0, 510.0, 320.0, 240.0, 640, 480)
    assert cam.intrinsics() == (500.0, 510.0, 320.0, 240.0)
    assert cam.P.shape == (3, 4) and np.all(cam.P[:, 3] == 0.0)
    assert cam.image_size == (640, 480)


def test_from_camera_info_zero_p_and_r_mean_defaults():
    k = [400.0, 0.0, 100.0, 0.0, 410.0, 80.0, 0.0, 0.0, 1.0]
    cam = CameraModel.from_camera_info(200, 160, 'plumb_bob', [0.1, 0.0, 0.0, 0.0, 0.0],
                                       k, [0.0] * 9, [0.0] * 12)
    np.testing.assert_array_equal(cam.P[:, :3], np.reshape(k, (3, 3)))
    np.testing.assert_array_equal(cam.R, np.eye(3))
    assert cam.D.shape == (5,) and cam.D[0] == 0.1


@pytest.mark.parametrize('k, match', [
    ([0.0] * 9, 'focal'),
    ([math.nan, 0, 10, 0, 100, 10, 0, 0, 1], 'non-finite'),
    ([-100.0, 0, 10, 0, 100, 10, 0, 0, 1], 'focal'),
])
def test_invalid_focal_lengths_are_rejected(k, match):
    with pytest.raises(ValueError, match=match):
        CameraModel.from_camera_info(20, 20, 'plumb_bob', [], k, [0.0] * 9, [0.0] * 12)


def test_unknown_distortion_model_is_named():
    k = [100.0, 0, 10, 0, 100, 10, 0, 0, 1]
    with pytest.raises(ValueError, match='fisheye_v9'):
        CameraModel.from_camera_info(20, 20, 'fisheye_v9', [], k, [0.0] * 9, [0.0] * 12)


def test_too_many_coefficients_and_distortion_without_model_are_rejected():
    k = [100.0, 0, 10, 0, 100, 10, 0, 0, 1]
    with pytest.raises(ValueError, match='at most 4'):
        CameraModel.from_camera_info(20, 20, 'equidistant', [0.1] * 5, k, [0] * 9, [0] * 12)
    with pytest.raises(ValueError, match='non-zero D'):
        CameraModel.from_camera_info(20, 20, '', [0.1], k, [0] * 9, [0] * 12)
    # Trailing zeros beyond the model's count (e.g. 14-element rational D) are fine.
    cam = CameraModel.from_camera_info(20, 20, 'rational_polynomial', [0.1] + [0.0] * 13,
                                       k, [0] * 9, [0] * 12)
    assert cam.D.shape == (8,)


def test_roi_outside_image_is_rejected():
    with pytest.raises(ValueError, match='roi'):
        CameraModel(width=100, height=80, K=np.diag([50.0, 50.0, 1.0]), roi=(60, 0, 50, 10))


# --- transforms --------------------------------------------------------------------------

def test_extrinsic_from_quaternion_rotates_and_translates():
    s = math.sqrt(0.5)
    T = extrinsic_from_xyz_quat(1.0, 2.0, 3.0, 0.0, 0.0, s, s)  # +90° about z
    out = transform_points(np.array([[1.0, 0.0, 0.0]]), T)
    np.testing.assert_allclose(out, [[1.0, 3.0, 3.0]], atol=1e-12)
    # Non-unit quaternions are normalised.
    T2 = extrinsic_from_xyz_quat(1.0, 2.0, 3.0, 0.0, 0.0, 2 * s, 2 * s)
    np.testing.assert_allclose(T, T2, atol=1e-12)
    with pytest.raises(ValueError, match='quaternion'):
        extrinsic_from_xyz_quat(0, 0, 0, 0, 0, 0, 0)


def test_transform_points_matches_matrix_product_and_keeps_float32():
    rng = np.random.default_rng(0)
    q = rng.normal(size=4)
    T = extrinsic_from_xyz_quat(0.3, -0.2, 1.5, *q)
    pts = rng.normal(size=(500, 3)).astype(np.float32)
    out = transform_points(pts, T)
    assert out.dtype == np.float32 and out.shape == (500, 3)
    ref = (T @ np.c_[pts.astype(np.float64), np.ones(500)].T).T[:, :3]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match='homogeneous'):
        transform_points(pts, np.ones((4, 4)))
    with pytest.raises(ValueError, match='N×3'):
        transform_points(pts[:, :2], T)


# --- projection ----------------------------------------------------------------------------

def test_pinhole_projection_rounds_to_pixel_centres():
    cam = _cam()
    rng = np.random.default_rng(1)
    pts = _points_in_view(cam, 300, rng)
    uv, z = project_points(pts, cam, window=1)
    fx, fy, cx, cy = cam.intrinsics()
    u_ref = np.floor(fx * pts[:, 0] / pts[:, 2] + cx + 0.5).astype(int)
    v_ref = np.floor(fy * pts[:, 1] / pts[:, 2] + cy + 0.5).astype(int)
    # Nearest point per pixel from an explicit dictionary.
    nearest = {}
    for u, v, zz in zip(u_ref, v_ref, pts[:, 2]):
        nearest[(u, v)] = min(nearest.get((u, v), np.inf), zz)
    assert uv.dtype == np.int32 and z.dtype == np.float32
    got = {(int(u), int(v)): float(zz) for (u, v), zz in zip(uv, z)}
    assert got.keys() == nearest.keys()
    for key, zz in nearest.items():
        assert got[key] == pytest.approx(zz, rel=1e-6)


def test_zbuffer_keeps_nearest_and_drops_behind_and_outside():
    cam = _cam()
    fx, fy, cx, cy = cam.intrinsics()
    pts = np.array([
        [0.0, 0.0, 9.0], [0.0, 0.0, 4.0], [0.0, 0.0, 6.0],    # same pixel: 4 m wins
        [0.0, 0.0, -5.0],                                        # behind the camera
        [100.0, 0.0, 5.0],                                       # far right of the image
        [(10 - cx) * 3 / fx, (5 - cy) * 3 / fy, 3.0],            # pixel (10, 5)
    ])
    uv, z = project_points(pts, cam, window=1)
    got = sorted(zip(map(tuple, uv.tolist()), z.tolist()))
    centre = (int(round(cx + 0.01)), int(round(cy + 0.01)))
    assert got == sorted([(centre, 4.0), ((10, 5), 3.0)])


def test_edges_of_the_image_follow_the_pixel_centre_convention():
    cam = _cam(width=10, height=10, fx=10.0, fy=10.0, cx=4.5, cy=4.5)
    # u = -0.49 rounds to column 0; u = -0.51 is outside; u = 9.49 is column 9.
    us = np.array([-0.49, -0.51, 9.49, 9.51])
    pts = np.stack([(us - 4.5) / 10.0, np.zeros(4), np.ones(4)], axis=1)
    pts[:, 2] = [1.0, 1.1, 1.2, 1.3]
    pts[:, 0] *= pts[:, 2]
    uv, z = project_points(pts, cam, window=1)
    assert sorted(uv[:, 0].tolist()) == [0, 9]
    assert sorted(z.tolist()) == pytest.approx([1.0, 1.2])


def test_see_through_points_behind_a_foreground_object_are_removed():
    cam = _cam(width=80, height=40, fx=40.0, fy=40.0, cx=39.5, cy=19.5)
    fx, fy, cx, cy = cam.intrinsics()
    vv, uu = np.mgrid[0:40:2, 0:80:2]
    uu, vv = uu.ravel().astype(float), vv.ravel().astype(float)
    # Background wall at 20 m everywhere, a pole at 5 m covering columns 30..40.
    z = np.full(uu.shape, 20.0)
    pole = (uu >= 30) & (uu <= 40)
    # Interleave: the lidar sees the wall through the pole on odd rows (parallax).
    see_through = pole & (vv % 4 == 2)
    z[pole & ~see_through] = 5.0
    pts = np.stack([(uu - cx) * z / fx, (vv - cy) * z / fy, z], axis=1)
    uv, zk = project_points(pts, cam, window=7)
    kept = {(int(u), int(v)) for u, v in uv}
    lost = {(int(u), int(v)) for u, v in zip(uu, vv)} - kept
    expected_lost = {(int(u), int(v)) for u, v in zip(uu[see_through], vv[see_through])}
    # Every see-through point goes; wall points within 3 px of the pole go as well (they
    # are equally behind it); wall points farther away stay.
    assert expected_lost <= lost
    near_pole = {(int(u), int(v)) for u, v, zz in zip(uu, vv, z)
                 if zz == 20.0 and 27 <= u <= 43}
    assert lost <= expected_lost | near_pole
    assert all(zz == 5.0 or u < 27 or u > 43 for (u, v), zz in zip(uv, zk))
    assert len(kept) > 0.8 * len(uu) - len(near_pole)


@pytest.mark.parametrize('kind, seed', [('outdoor', 0), ('indoor', 2)])
def test_synthetic_frame_projects_onto_its_depth_and_loses_see_through_points(kind, seed):
    frame = make_frame(seed=seed, kind=kind, width=320, height=240, beams=32)
    pts = transform_points(frame.lidar_points, frame.T_cam_lidar)

    def counts(window):
        uv, z = project_points(pts, frame.camera, window=window)
        gt = frame.depth[uv[:, 1], uv[:, 0]]
        behind = z - gt > np.maximum(1.5, 0.15 * z)  # seen through a nearer surface
        good = np.abs(z - gt) <= 0.05 * gt
        return len(z), int(behind.sum()), int(good.sum())

    n0, behind0, good0 = counts(1)
    n, behind, good = counts(7)
    # The renderer's ground truth agrees with the projection almost everywhere...
    assert good0 >= 0.9 * n0
    # ...but the lidar's offset viewpoint does see through foreground edges.
    assert behind0 >= 30
    assert behind <= 0.1 * behind0
    assert good >= 0.9 * good0


def test_see_through_threshold_grows_with_range():
    cam = _cam(width=40, height=20, fx=20.0, fy=20.0, cx=19.5, cy=9.5)
    fx, fy, cx, cy = cam.intrinsics()

    def two_points(z_near, z_far):
        return np.array([[(10 - cx) * z_near / fx, 0.5 * z_near / fy, z_near],
                         [(12 - cx) * z_far / fx, 0.5 * z_far / fy, z_far]])

    # 4 m behind a 36 m neighbour: 4 < 0.15·40 = 6, kept; an absolute 1.5 m gate drops it.
    _, z = project_points(two_points(36.0, 40.0), cam)
    assert sorted(z.tolist()) == [36.0, 40.0]
    _, z = project_points(two_points(36.0, 40.0), cam, rel_gap=0.0)
    assert z.tolist() == [36.0]
    # 4 m behind a 2 m neighbour: far beyond max(1.5, 0.9): dropped.
    _, z = project_points(two_points(2.0, 6.0), cam)
    assert z.tolist() == [2.0]
    # Outside the window (5 px apart with window 3): both kept.
    _, z = project_points(two_points(2.0, 6.0), cam, window=3)
    assert sorted(z.tolist()) == [2.0, 6.0]


@pytest.mark.parametrize('n, window', [(400, 7), (6000, 7), (3000, 5), (2000, 11)])
def test_filter_matches_a_brute_force_window_scan(n, window):
    # Sparse and dense clouds exercise both the gather and the dense min-filter paths.
    cam = _cam(width=120, height=60, fx=60.0, fy=60.0, cx=59.5, cy=29.5)
    rng = np.random.default_rng(n + window)
    pts = _points_in_view(cam, n, rng, 1.0, 40.0)
    uv_all, z_all = project_points(pts, cam, window=1)
    uv, z = project_points(pts, cam, window=window, min_gap=1.5, rel_gap=0.15)
    keep = _brute_force_filter(uv_all, z_all, cam.width, cam.height, window, 1.5, 0.15)
    np.testing.assert_array_equal(uv, uv_all[keep])
    np.testing.assert_array_equal(z, z_all[keep])


def test_projection_parameters_are_validated():
    cam = _cam()
    pts = np.ones((3, 3))
    with pytest.raises(ValueError, match='window'):
        project_points(pts, cam, window=4)
    with pytest.raises(ValueError, match='N×3'):
        project_points(np.ones((3, 2)), cam)
    with pytest.raises(ValueError, match='min_gap'):
        project_points(pts, cam, min_gap=-1.0)


def test_depth_range_limits():
    cam = _cam()
    pts = np.array([[0.0, 0.0, 0.05], [0.0, 0.0, 50.0], [0.3, 0.0, 10.0]])
    _, z = project_points(pts, cam, z_min=0.1, z_max=40.0, window=1)
    assert z.tolist() == [10.0]


def test_projection_uses_p_including_tx():
    # A right stereo camera: P = [fx 0 cx Tx; 0 fy cy 0; 0 0 1 0] with Tx = -fx·B.
    fx, cx, baseline = 50.0, 31.5, 0.5
    P = np.array([[fx, 0, cx, -fx * baseline], [0, fx, 23.5, 0], [0, 0, 1, 0]])
    cam = CameraModel(width=64, height=48, K=P[:, :3], P=P)
    pts = np.array([[1.0, 0.0, 5.0]])
    uv, z = project_points(pts, cam, window=1)
    assert uv.tolist() == [[int(np.floor(fx * (1.0 - baseline) / 5.0 + cx + 0.5)), 24]]
    assert z.tolist() == [5.0]


# --- distortion -----------------------------------------------------------------------------

def _raw_cam(model, d, width=400, height=400):
    k = [100.0, 0.0, 199.5, 0.0, 100.0, 199.5, 0.0, 0.0, 1.0]
    return CameraModel.from_camera_info(width, height, model, d, k, [0] * 9, [0] * 12)


@pytest.mark.parametrize('model, d, xy, expected_xy', [
    # k1 only: r² = 0.25 → factor 1 + 0.1·0.25.
    ('plumb_bob', [0.1, 0, 0, 0, 0], (0.5, 0.0), (0.5 * 1.025, 0.0)),
    # p1 only: x' = x + p1·(r² + 2y²)·... → y' = y + p1·(r² + 2y²), x' = x + 2·p1·x·y.
    ('plumb_bob', [0, 0, 0.01, 0, 0], (0.3, 0.4), (0.3 + 2 * 0.01 * 0.12,
                                                   0.4 + 0.01 * (0.25 + 0.32))),
    # Rational: (1 + k1 r²) / (1 + k4 r²) with r² = 0.25.
    ('rational_polynomial', [0.2, 0, 0, 0, 0, 0.4, 0, 0], (0.0, 0.5),
     (0.0, 0.5 * 1.05 / 1.1)),
    # Equidistant at 45°: θ = π/4, θd = θ(1 + k1 θ²), x' = θd (r = 1).
    ('equidistant', [0.05, 0, 0, 0], (1.0, 0.0),
     (math.pi / 4 * (1 + 0.05 * (math.pi / 4) ** 2), 0.0)),
])
def test_distortion_models_match_hand_computed_values(model, d, xy, expected_xy):
    cam = _raw_cam(model, d)
    z = 2.0
    uv, depth, valid = cam.project(np.array([[xy[0] * z, xy[1] * z, z]]), rectified=False)
    assert valid[0] and depth[0] == z
    np.testing.assert_allclose(uv[0], [100.0 * expected_xy[0] + 199.5,
                                       100.0 * expected_xy[1] + 199.5], atol=1e-9)


def test_raw_projection_with_zero_distortion_equals_rectified():
    cam = _cam()
    pts = _points_in_view(cam, 200, np.random.default_rng(3))
    a = project_points(pts, cam, rectified=True)
    b = project_points(pts, cam, rectified=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_folding_distortion_drops_points_far_outside_the_view():
    # With k1 = -0.3 the radial map r(1 - 0.3 r²) peaks at r = 1/sqrt(0.9) and folds
    # back: a point at r = 1.8 would land at r' = 0.05, near the image centre.
    cam = _raw_cam('plumb_bob', [-0.3, 0, 0, 0, 0])
    pts = np.array([[1.8, 0.0, 1.0], [0.5, 0.0, 1.0]])
    _, _, valid = cam.project(pts, rectified=False)
    assert valid.tolist() == [False, True]
    uv, z = project_points(pts, cam, rectified=False, window=1)
    assert z.tolist() == [1.0] and uv[0, 0] == int(np.floor(199.5 + 100 * 0.5 * 0.925 + 0.5))


# --- resolution changes, binning, ROI --------------------------------------------------------

def test_scaled_to_maps_image_borders_and_projections_exactly():
    cam = CameraModel.pinhole(700.0, 690.0, 600.3, 180.7, 1242, 375)
    small = cam.scaled_to(621, 250)
    sx, sy = 621 / 1242, 250 / 375
    fx, fy, cx, cy = small.intrinsics()
    assert (fx, fy) == pytest.approx((700.0 * sx, 690.0 * sy))
    assert (cx, cy) == pytest.approx(((600.3 + 0.5) * sx - 0.5, (180.7 + 0.5) * sy - 0.5))
    # The outer edges of the images (-0.5 and W - 0.5) correspond.
    rng = np.random.default_rng(4)
    pts = rng.uniform([-5, -2, 3], [5, 2, 30], (50, 3))
    uv_big, _, _ = cam.project(pts)
    uv_small, _, _ = small.project(pts)
    np.testing.assert_allclose(uv_small[:, 0], (uv_big[:, 0] + 0.5) * sx - 0.5, atol=1e-9)
    np.testing.assert_allclose(uv_small[:, 1], (uv_big[:, 1] + 0.5) * sy - 0.5, atol=1e-9)
    np.testing.assert_allclose(small.K[:, :3], small.P[:, :3])
    with pytest.raises(ValueError, match='positive'):
        cam.scaled_to(0, 10)


def test_binning_and_roi_are_applied():
    K = np.array([[400.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
    cam = CameraModel(width=640, height=480, K=K, binning_x=2, binning_y=2,
                      roi=(100, 40, 400, 300))
    assert cam.image_size == (200, 150)
    full = CameraModel(width=640, height=480, K=K)
    pts = np.array([[0.5, 0.2, 4.0], [-0.3, -0.1, 2.0]])
    uv_full, _, _ = full.project(pts)
    uv, _, _ = cam.project(pts)
    np.testing.assert_allclose(uv[:, 0], (uv_full[:, 0] - 100 + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(uv[:, 1], (uv_full[:, 1] - 40 + 0.5) / 2 - 0.5)
    uv_i, _ = project_points(pts, cam, window=1)
    assert (uv_i[:, 0] < 200).all() and (uv_i[:, 1] < 150).all()


def test_roi_of_a_distorted_camera_is_refused_for_rectified_projection():
    K = np.array([[400.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
    cam = CameraModel(width=640, height=480, K=K, D=[0.1, 0, 0, 0, 0],
                      distortion_model='plumb_bob', roi=(100, 40, 400, 300))
    pts = np.array([[0.1, 0.1, 3.0]])
    with pytest.raises(ValueError, match='ROI'):
        project_points(pts, cam, rectified=True)
    uv, z = project_points(pts, cam, rectified=False)
    assert z.tolist() == [3.0]


@pytest.mark.parametrize('seed', range(6))
def test_xyz_quat_round_trips_through_the_extrinsic(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    if seed == 5:
        q = np.array([0.0, 1.0, 0.0, 1e-3])        # w ≈ 0: the pivot must switch
    T = extrinsic_from_xyz_quat(*rng.normal(size=3), *q)
    values = xyz_quat_from_extrinsic(T)
    assert len(values) == 7
    np.testing.assert_allclose(extrinsic_from_xyz_quat(*values), T, atol=1e-12)
    with pytest.raises(ValueError):
        xyz_quat_from_extrinsic(np.eye(3))


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_kernel_and_numpy_projections_are_identical(dtype, monkeypatch):
    rng = np.random.default_rng(11)
    K = np.array([[250.0, 0.2, 159.5], [0.0, 255.0, 119.5], [0.0, 0.0, 1.0]])
    P = np.hstack([K, [[3.0], [-2.0], [0.05]]])
    cam = CameraModel(width=320, height=240, K=K, P=P)
    points = rng.uniform([-20.0, -15.0, -2.0], [20.0, 15.0, 40.0], (20000, 3)).astype(dtype)
    points[::97] = [0.0, 0.0, np.float32(0.1)]  # at z_min and z_max, rounded to float32
    points[5::101] = [0.0, 0.0, np.float32(34.9)]
    points[1::89, 2] = np.nan
    points[2::83] = np.inf
    results = []
    for kernels in (None, _NUMBA):
        if kernels is None and _NUMBA is None:
            pytest.skip('numba is not installed')
        monkeypatch.setattr(geometry, '_kernels', kernels)
        results.append(project_points(points, cam, z_min=0.1, z_max=34.9, window=0))
    (uv_a, z_a), (uv_b, z_b) = results
    assert len(z_a) > 5000
    np.testing.assert_array_equal(uv_a, uv_b)
    np.testing.assert_array_equal(z_a, z_b)
