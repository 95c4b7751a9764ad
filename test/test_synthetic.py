"""Tests of the synthetic scene generator: exact ground truth, lidar geometry, sequences."""

from densepred_ros.camera import CameraModel
from densepred_ros.synthetic import (
    Box, camera_pose, Cylinder, LidarConfig, make_camera, make_frame, make_scene, make_sequence,
    Material, Plane, render_frame, Scene, simulate_lidar, Sphere, yaw_rotation)
import numpy as np
import pytest

SMALL = {'width': 160, 'height': 120}


def pixel_rays(camera: CameraModel) -> np.ndarray:
    """Return H×W×3 rays (x, y, 1) through pixel centres in the optical frame, from K."""
    K = camera.K
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1)


def back_project(depth: np.ndarray, camera: CameraModel, T_world_cam: np.ndarray) -> np.ndarray:
    """Return H×W×3 world points of a depth image (NaN/inf where depth is not finite)."""
    points_cam = pixel_rays(camera) * depth[..., None].astype(np.float64)
    points_cam[~np.isfinite(depth)] = np.nan
    with np.errstate(invalid='ignore'):
        return points_cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def project_lidar(frame):
    """Project a frame's lidar points with T_cam_lidar and K (nearest pixel).

    Returns the camera-frame z of the points inside the image and their pixel (u, v).
    """
    T = frame.T_cam_lidar
    points = frame.lidar_points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    points = points[points[:, 2] > 0.05]
    K = frame.camera.K
    u = np.rint(K[0, 0] * points[:, 0] / points[:, 2] + K[0, 2]).astype(int)
    v = np.rint(K[1, 1] * points[:, 1] / points[:, 2] + K[1, 2]).astype(int)
    inside = (u >= 0) & (u < frame.camera.width) & (v >= 0) & (v < frame.camera.height)
    return points[inside, 2], u[inside], v[inside]


def neighbourhood_depths(depth: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Return 9×N ground-truth depths of the 3×3 pixels around each (u, v)."""
    padded = np.pad(depth.astype(np.float64), 1, mode='edge')
    return np.stack([padded[v + 1 + dv, u + 1 + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])


def see_through(z: np.ndarray, around: np.ndarray) -> np.ndarray:
    """Points farther than every pixel around their projection: hidden from the camera."""
    return z > around.max(axis=0) * 1.1 + 0.1


@pytest.fixture(scope='module')
def frames():
    """Noise-free 64-beam frames of both kinds, 320×240."""
    lidar = LidarConfig(beams=64, range_noise_sigma=0.0)
    return {(kind, seed): make_frame(seed, kind, width=320, height=240, lidar=lidar)
            for kind in ('indoor', 'outdoor') for seed in (0, 1)}


@pytest.mark.parametrize('kind', ['indoor', 'outdoor'])
def test_same_seed_same_frame_other_seed_differs(kind):
    a = make_frame(3, kind, beams=16, **SMALL)
    b = make_frame(3, kind, beams=16, **SMALL)
    c = make_frame(4, kind, beams=16, **SMALL)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.normals, b.normals)
    np.testing.assert_array_equal(a.lidar_points, b.lidar_points)
    np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
    assert not np.array_equal(a.rgb, c.rgb)
    assert not np.array_equal(a.depth, c.depth)
    assert a.lidar_points.shape != c.lidar_points.shape or not np.allclose(
        a.lidar_points, c.lidar_points)


@pytest.mark.parametrize('kind', ['indoor', 'outdoor'])
def test_shapes_and_dtypes(kind):
    frame = make_frame(0, kind, width=96, height=64, beams=16, time=0.5)
    assert frame.rgb.shape == (64, 96, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth.shape == (64, 96) and frame.depth.dtype == np.float32
    assert frame.normals.shape == (64, 96, 3) and frame.normals.dtype == np.float32
    assert frame.lidar_points.ndim == 2 and frame.lidar_points.shape[1] == 3
    assert frame.lidar_points.dtype == np.float32 and len(frame.lidar_points) > 1000
    assert (frame.camera.width, frame.camera.height) == (96, 64)
    assert frame.T_cam_lidar.shape == (4, 4) and frame.T_cam_lidar.dtype == np.float64
    assert frame.T_world_cam.shape == (4, 4) and frame.T_world_cam.dtype == np.float64
    assert frame.stamp == 0.5
    # Depth is positive where finite; never 0 or NaN (REP 118).
    assert np.all(frame.depth > 0) and not np.isnan(frame.depth).any()
    # beams=0: images only.
    no_lidar = make_frame(0, kind, width=96, height=64, beams=0, time=0.5)
    assert no_lidar.lidar_points.shape == (0, 3)
    np.testing.assert_array_equal(no_lidar.depth, frame.depth)


def test_camera_helper_field_of_view():
    camera = make_camera(640, 480, hfov_deg=90.0)
    assert camera.K[0, 0] == pytest.approx(320.0) and camera.K[1, 1] == pytest.approx(320.0)
    assert camera.K[0, 2] == pytest.approx(319.5) and camera.K[1, 2] == pytest.approx(239.5)
    np.testing.assert_allclose(camera.P[:, :3], camera.K)


def test_optical_pose_and_lidar_mount_conventions():
    # yaw 90°: the camera looks along world +y; optical x (right) is world +x.
    T = camera_pose((1.0, 2.0, 3.0), yaw=np.pi / 2)
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    # pitch > 0 looks down.
    assert camera_pose((0, 0, 0), yaw=0.0, pitch=0.2)[2, 2] < 0
    # Lidar 0.3 m behind, 0.1 m left, 0.25 m above the camera: optical (-0.1, -0.25, -0.3).
    frame = make_frame(0, 'indoor', beams=16, lidar_offset=(-0.3, 0.1, 0.25), **SMALL)
    np.testing.assert_allclose(frame.T_cam_lidar[:3, 3], [-0.1, -0.25, -0.3], atol=1e-12)
    # Lidar x (forward) is optical z; lidar z (up) is optical -y.
    np.testing.assert_allclose(frame.T_cam_lidar[:3, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(frame.T_cam_lidar[:3, 2], [0, -1, 0], atol=1e-12)


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_plane_depth_and_normals_are_analytic(sign):
    # Either orientation of the plane's normal: the rendered normal faces the camera.
    normal = sign * np.array([0.2, -0.3, 1.0]) / np.linalg.norm([0.2, -0.3, 1.0])
    point = np.array([3.0, -1.0, 0.4])
    scene = Scene((Plane(point, normal, Material('checker')),))
    camera = make_camera(120, 90, hfov_deg=80.0)
    T = camera_pose((0.0, 0.0, 2.0), yaw=0.3, pitch=0.4, roll=0.05)
    rgb, depth, normals = render_frame(scene, camera, T)

    # Plane in the optical frame: n_c · p = n_c · p0_c; a ray (x, y, 1) meets it at z = t.
    R, o = T[:3, :3], T[:3, 3]
    n_c, p0_c = R.T @ normal, R.T @ (point - o)
    rays = pixel_rays(camera)
    with np.errstate(divide='ignore'):
        z = (n_c @ p0_c) / (rays @ n_c)
    expected = np.where(z > 0, z, np.inf)
    assert np.isfinite(expected).mean() > 0.3 and np.isinf(expected).any()
    np.testing.assert_array_equal(np.isinf(depth), np.isinf(expected))
    hit = np.isfinite(expected)
    np.testing.assert_allclose(depth[hit], expected[hit], rtol=1e-5)

    n = normals[hit].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
    assert np.all(np.einsum('ij,ij->i', n, rays[hit]) < 0)
    facing = n_c if n_c @ p0_c < 0 else -n_c  # the normal on the camera's side
    np.testing.assert_allclose(n, np.broadcast_to(facing, n.shape), atol=1e-6)
    assert np.isnan(normals[~hit]).all()


def test_sphere_points_lie_on_the_sphere():
    center, radius = np.array([4.0, 0.5, 1.2]), 0.9
    scene = Scene((Sphere(center, radius, Material('noise')),))
    camera = make_camera(160, 120, hfov_deg=60.0)
    T = camera_pose((0.0, 0.0, 1.5), yaw=0.1, pitch=0.05)
    _, depth, normals = render_frame(scene, camera, T)
    hit = np.isfinite(depth)
    assert 0.05 < hit.mean() < 0.9

    points = back_project(depth, camera, T)[hit]
    distance = np.linalg.norm(points - center, axis=1)
    np.testing.assert_allclose(distance, radius, atol=2e-5 * np.linalg.norm(center - T[:3, 3]))
    outward_cam = (points - center) / radius @ T[:3, :3]
    np.testing.assert_allclose(normals[hit], outward_cam, atol=1e-4)

    # The silhouette: pixels whose ray clearly misses the sphere are sky, and vice versa.
    rays = pixel_rays(camera) @ T[:3, :3].T
    rays /= np.linalg.norm(rays, axis=2, keepdims=True)
    oc = T[:3, 3] - center
    disc = (rays @ oc) ** 2 - (oc @ oc - radius ** 2)
    assert np.all(hit[disc > 1e-3]) and not np.any(hit[disc < -1e-3])


def test_rotated_box_and_cylinder_points_lie_on_their_surfaces():
    rotation = yaw_rotation(0.6)
    box = Box((5.0, -1.0, 0.75), (1.2, 2.0, 1.5), rotation, Material('wood'))
    cylinder = Cylinder((4.0, 1.5, 0.0), 0.4, 2.0, Material('stripes'))
    scene = Scene((box, cylinder), shadows=False)
    camera = make_camera(200, 150, hfov_deg=75.0)
    T = camera_pose((0.0, 0.2, 1.7), yaw=0.0, pitch=0.15)
    _, depth, normals = render_frame(scene, camera, T)
    points = back_project(depth, camera, T)

    local = (points - box.center) @ rotation  # box frame
    on_box = np.all(np.abs(local) <= box.size / 2 + 1e-4, axis=-1)
    box_gap = np.max(np.abs(local) - box.size / 2, axis=-1)
    radial = np.hypot(points[..., 0] - 4.0, points[..., 1] - 1.5)
    on_side = np.abs(radial - 0.4) < 1e-4
    on_cap = np.abs(points[..., 2] - 2.0) < 1e-4
    hit = np.isfinite(depth)
    assert on_box.sum() > 500 and on_side.sum() > 300
    # Every hit is on one of the two surfaces.
    assert np.all(on_box[hit] & (np.abs(box_gap[hit]) < 1e-4) | on_side[hit] | on_cap[hit])
    # Side normals of the cylinder are horizontal and radial.
    radial_dir = np.stack([points[..., 0] - 4.0, points[..., 1] - 1.5, 0 * radial], -1)
    expected = (radial_dir / 0.4) @ T[:3, :3]
    side = on_side & ~on_cap & hit
    np.testing.assert_allclose(normals[side], expected[side], atol=1e-3)


@pytest.mark.parametrize('kind', ['indoor', 'outdoor'])
def test_culled_casting_matches_brute_force(kind):
    # Tile culling must never drop a hit: compare with every primitive against every ray.
    scene = make_scene(1, kind)
    camera = make_camera(160, 120)
    T = scene.trajectory.pose(0.0)
    T_world_cam = camera_pose(T[:3, 3], yaw=0.3, pitch=-0.1)
    _, depth, _ = render_frame(scene, camera, T_world_cam)
    rays = pixel_rays(camera) @ T_world_cam[:3, :3].T
    scale = np.linalg.norm(rays, axis=2)  # distance along the ray per metre of depth
    rays /= scale[..., None]
    nearest = np.full(depth.shape, np.inf)
    for primitive in scene.primitives:
        nearest = np.minimum(nearest, primitive.intersect(T_world_cam[:3, 3], rays))
    np.testing.assert_array_equal(np.isinf(depth), np.isinf(nearest))
    hit = np.isfinite(nearest)
    np.testing.assert_allclose(depth[hit], nearest[hit] / scale[hit], rtol=1e-6)

    lidar = LidarConfig(beams=16, range_noise_sigma=0.0, max_range=1e4)
    points = simulate_lidar(scene, T, lidar)
    directions = lidar.directions() @ T[:3, :3].T
    expected = np.full(directions.shape[:2], np.inf)
    for primitive in scene.primitives:
        expected = np.minimum(expected, primitive.intersect(T[:3, 3], directions))
    expected = expected.T.ravel()  # azimuth-major, as the points are
    expected = expected[(expected >= lidar.min_range) & (expected <= lidar.max_range)]
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), expected, rtol=1e-5)


def test_shadows_fall_where_the_light_is_blocked():
    center, radius = np.array([4.0, 0.0, 1.0]), 0.6
    light = np.array([-0.3, 0.2, 1.0]) / np.linalg.norm([-0.3, 0.2, 1.0])
    scene = Scene((Plane((0, 0, 0), (0, 0, 1), Material('plain', detail=0.0)),
                   Sphere(center, radius, Material('plain', detail=0.0))),
                  light_direction=light, ambient=0.3)
    camera = make_camera(160, 120, hfov_deg=70.0)
    T = camera_pose((0.0, 0.0, 2.0), yaw=0.0, pitch=0.35)
    lit, depth, _ = render_frame(scene, camera, T, shadows=False)
    shaded, _, _ = render_frame(scene, camera, T, shadows=True)
    # Analytic shadow: floor points whose ray towards the light meets the sphere.
    points = back_project(depth, camera, T)
    floor = np.isfinite(depth) & (np.abs(points[..., 2]) < 1e-6)
    oc = points - center
    b = oc @ light
    disc = b ** 2 - (np.einsum('...i,...i->...', oc, oc) - radius ** 2)
    umbra = floor & (disc > 0.02) & (b < 0)
    sunny = floor & ((disc < -0.02) | (b > 0))
    assert umbra.sum() > 50 and sunny.sum() > 1000
    gray_lit, gray_shaded = lit.mean(axis=2), shaded.mean(axis=2)
    assert np.all(gray_shaded[umbra] < 0.6 * gray_lit[umbra])
    np.testing.assert_array_equal(shaded[sunny], lit[sunny])


@pytest.mark.parametrize('key', [('indoor', 0), ('indoor', 1), ('outdoor', 0), ('outdoor', 1)])
def test_lidar_projects_onto_matching_depth(frames, key):
    frame = frames[key]
    z, u, v = project_lidar(frame)
    assert len(z) > 5000
    around = neighbourhood_depths(frame.depth, u, v)
    hidden = see_through(z, around)
    # Nearest-pixel sampling: z lies within the depths of the 3×3 pixels around it.
    low, high = around.min(axis=0), around.max(axis=0)
    agree = (z >= low * 0.99 - 0.01) & (z <= high * 1.01 + 0.01)
    assert agree[~hidden].mean() > 0.99
    # And at the pixel itself for the large majority.
    exact = np.abs(frame.depth[v, u] - z) <= 0.01 * z + 0.01
    assert exact.mean() > 0.8


def test_lidar_projection_with_rotated_mount():
    lidar = LidarConfig(beams=32, range_noise_sigma=0.0)
    frame = make_frame(2, 'indoor', width=320, height=240, lidar=lidar,
                       lidar_offset=(-0.2, -0.15, 0.3), lidar_rpy=(0.03, -0.05, 0.1))
    z, u, v = project_lidar(frame)
    around = neighbourhood_depths(frame.depth, u, v)
    agree = (z >= around.min(axis=0) * 0.99 - 0.01) & (z <= around.max(axis=0) * 1.01 + 0.01)
    assert agree[~see_through(z, around)].mean() > 0.99
    # A mount error of a few degrees would show: check the test can tell.
    wrong = frame.T_cam_lidar.copy()
    wrong[:3, :3] = wrong[:3, :3] @ yaw_rotation(0.05)
    points = frame.lidar_points.astype(np.float64) @ wrong[:3, :3].T + wrong[:3, 3]
    points = points[points[:, 2] > 0.05]
    K = frame.camera.K
    uu = np.rint(K[0, 0] * points[:, 0] / points[:, 2] + K[0, 2]).astype(int)
    vv = np.rint(K[1, 1] * points[:, 1] / points[:, 2] + K[1, 2]).astype(int)
    ok = (uu >= 0) & (uu < 320) & (vv >= 0) & (vv < 240)
    zz = points[ok, 2]
    around = neighbourhood_depths(frame.depth, uu[ok], vv[ok])
    agree = (zz >= around.min(axis=0) * 0.99 - 0.01) & (zz <= around.max(axis=0) * 1.01 + 0.01)
    assert agree.mean() < 0.95


@pytest.mark.parametrize('key', [('indoor', 0), ('indoor', 1), ('outdoor', 0), ('outdoor', 1)])
def test_see_through_points_exist(frames, key):
    frame = frames[key]
    z, u, v = project_lidar(frame)
    around = neighbourhood_depths(frame.depth, u, v)
    hidden = see_through(z, around)
    # Seen by the lidar, yet behind a surface that covers all 3×3 pixels around them.
    assert hidden.sum() >= 30
    assert hidden.mean() < 0.1
    # They sit behind foreground objects: the camera sees something much nearer there.
    gap = z[hidden] - frame.depth[v[hidden], u[hidden]]
    assert np.median(gap) > 0.3


def test_lidar_on_a_floor_is_exact():
    scene = Scene((Plane((0, 0, 0), (0, 0, 1)),))
    height = 1.8
    T = np.eye(4)
    T[:3, 3] = (2.0, -1.0, height)
    config = LidarConfig(beams=16, horizontal_resolution_deg=1.0, range_noise_sigma=0.0,
                         max_range=1000.0)
    points, rings = simulate_lidar(scene, T, config, return_rings=True)
    # Only the downward beams (-15°..-1°, 8 of 16) hit the floor, 360 azimuths each.
    assert len(points) == 8 * 360
    np.testing.assert_allclose(points[:, 2], -height, atol=1e-5)
    elevation = np.radians(config.elevations_deg()[rings])
    horizontal = np.hypot(points[:, 0], points[:, 1])
    np.testing.assert_allclose(horizontal, height / np.tan(-elevation), rtol=1e-5)


@pytest.mark.parametrize('beams', [16, 32, 64])
def test_beam_count_sets_ring_count(beams):
    scene = make_scene(5, 'indoor')
    T = scene.trajectory.pose(0.0)
    config = LidarConfig(beams=beams, range_noise_sigma=0.0)
    points = simulate_lidar(scene, T, config)
    # A closed room returns every ray: beams × 1800 azimuths at 0.2°.
    assert len(points) == beams * 1800
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    levels = np.sort(elevation)
    rings = 1 + np.count_nonzero(np.diff(levels) > 0.05)
    assert rings == beams
    low, high = config.fov
    assert levels[0] == pytest.approx(low, abs=0.01) and levels[-1] == pytest.approx(high,
                                                                                     abs=0.01)


def test_lidar_noise_and_dropout():
    scene = make_scene(1, 'indoor')
    T = scene.trajectory.pose(0.0)
    clean = simulate_lidar(scene, T, LidarConfig(beams=32, range_noise_sigma=0.0))
    noisy = simulate_lidar(scene, T, LidarConfig(beams=32, range_noise_sigma=0.05),
                           np.random.default_rng(1))
    residual = np.linalg.norm(noisy, axis=1) - np.linalg.norm(clean, axis=1)
    assert np.std(residual) == pytest.approx(0.05, rel=0.05)
    assert abs(np.mean(residual)) < 0.002
    # The noise is along the ray: directions are unchanged.
    cosine = np.einsum('ij,ij->i', noisy, clean) / (np.linalg.norm(noisy, axis=1)
                                                    * np.linalg.norm(clean, axis=1))
    assert cosine.min() > 1 - 1e-6
    dropped = simulate_lidar(scene, T, LidarConfig(beams=32, dropout=0.3),
                             np.random.default_rng(2))
    assert len(dropped) / len(clean) == pytest.approx(0.7, abs=0.01)


def test_max_range_limits_returns():
    scene = make_scene(0, 'outdoor')
    T = scene.trajectory.pose(0.0)
    points = simulate_lidar(scene, T, LidarConfig(beams=32, max_range=20.0,
                                                  range_noise_sigma=0.0))
    ranges = np.linalg.norm(points, axis=1)
    assert len(points) > 1000 and ranges.max() <= 20.0 + 1e-4
    far = simulate_lidar(scene, T, LidarConfig(beams=32, max_range=200.0, range_noise_sigma=0))
    assert np.linalg.norm(far, axis=1).max() > 30.0


def test_outdoor_sky_is_infinite_with_nan_normals(frames):
    frame = frames[('outdoor', 0)]
    sky = np.isinf(frame.depth)
    assert 0.02 < sky.mean() < 0.6
    assert np.all(frame.depth[sky] > 0)
    np.testing.assert_array_equal(np.isnan(frame.normals).any(axis=2), sky)
    assert np.isnan(frame.normals[sky]).all()
    # Sky is in the upper part of the image and blue-ish.
    rows = np.nonzero(sky)[0]
    assert rows.mean() < frame.camera.height / 2
    rgb = frame.rgb[sky].astype(float)
    assert rgb[:, 2].mean() > rgb[:, 0].mean() + 20
    # The lidar returns nothing from the sky: all points finite and within range.
    assert np.isfinite(frame.lidar_points).all()
    assert np.linalg.norm(frame.lidar_points, axis=1).max() <= 100.0 + 1e-3
    # Indoor rooms are closed: no sky.
    assert np.isfinite(frames[('indoor', 0)].depth).all()


def test_normals_are_unit_and_face_the_camera(frames):
    for frame in frames.values():
        hit = np.isfinite(frame.depth)
        n = frame.normals[hit].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
        rays = pixel_rays(frame.camera)[hit]
        assert np.all(np.einsum('ij,ij->i', n, rays) < 0)


@pytest.mark.parametrize('kind', ['indoor', 'outdoor'])
def test_images_are_textured(kind):
    frame = make_frame(0, kind, width=320, height=240, beams=16)
    gray = frame.rgb.astype(float).mean(axis=2)
    # Mean horizontal gradient per 8×8 block; sky blocks are left out.
    blocks = np.abs(np.diff(gray, axis=1))[:, :312].reshape(30, 8, 39, 8).mean(axis=(1, 3))
    sky = np.isinf(frame.depth)[:, :312].reshape(30, 8, 39, 8).any(axis=(1, 3))
    assert (blocks[~sky] > 0.5).mean() > 0.6
    assert len(np.unique(frame.rgb.reshape(-1, 3), axis=0)) > 2000


@pytest.mark.parametrize('kind', ['outdoor', 'indoor'])
def test_sequence_moves_smoothly_with_a_rigid_rig(kind):
    frames = make_sequence(7, 5, kind, width=64, height=48, beams=16, rate_hz=5.0,
                           start_stamp=100.0)
    assert [f.stamp for f in frames] == pytest.approx([100.0, 100.2, 100.4, 100.6, 100.8])
    for f in frames[1:]:
        np.testing.assert_array_equal(f.T_cam_lidar, frames[0].T_cam_lidar)
    positions = np.array([f.T_world_cam[:3, 3] for f in frames])
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    if kind == 'outdoor':
        # Forward drive: 1-2.5 m per 0.2 s, along the camera's optical axis.
        assert np.all((steps > 1.0) & (steps < 2.5))
        forward = np.einsum('ij,ij->i', np.diff(positions, axis=0),
                            np.array([f.T_world_cam[:3, 2] for f in frames[:-1]]))
        assert np.all(forward > 0.95 * steps)
    else:
        assert np.all(steps < 0.1) and steps.sum() > 0.05
    # The camera never turns more than a few degrees between frames.
    for a, b in zip(frames, frames[1:]):
        relative = a.T_world_cam[:3, :3].T @ b.T_world_cam[:3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1)))
        assert angle < 6.0
    assert not np.array_equal(frames[0].rgb, frames[-1].rgb)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match='kind'):
        make_scene(0, 'forest')
    with pytest.raises(ValueError, match='seed'):
        make_scene(-1)
    with pytest.raises(ValueError, match='beams'):
        LidarConfig(beams=20)
    with pytest.raises(ValueError, match='dropout'):
        LidarConfig(dropout=1.0)
    with pytest.raises(ValueError, match='range'):
        LidarConfig(min_range=5.0, max_range=2.0)
    with pytest.raises(ValueError, match='hfov'):
        make_camera(64, 48, hfov_deg=180.0)
    with pytest.raises(ValueError, match='radius'):
        Sphere((0, 0, 0), -1.0)
    with pytest.raises(ValueError, match='pattern'):
        Material('marble')
    scene = make_scene(0)
    distorted = CameraModel(width=32, height=24, K=make_camera(32, 24).K,
                            D=np.array([0.1, 0, 0, 0, 0]), distortion_model='plumb_bob')
    with pytest.raises(ValueError, match='undistorted'):
        render_frame(scene, distorted, np.eye(4))
    with pytest.raises(ValueError, match='T_world_cam'):
        render_frame(scene, make_camera(32, 24), np.ones((4, 4)))
    with pytest.raises(ValueError, match='n_frames'):
        make_sequence(0, 0)
