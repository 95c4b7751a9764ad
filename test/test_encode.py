"""Tier-2 tests of densepred_ros.encode: message layout checked byte by byte."""

import struct
import sys

from densepred_ros.camera import CameraModel
from densepred_ros.encode import (
    camera_info_for, copy_header, depth_to_image, float_to_image, normals_to_image,
    points_to_pointcloud2, rgb_to_image)
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

NATIVE = '<' if sys.byteorder == 'little' else '>'


@pytest.fixture
def header() -> Header:
    h = Header(frame_id='cam_optical')
    h.stamp.sec = 1234
    h.stamp.nanosec = 567
    return h


def _assert_header(msg, header: Header) -> None:
    assert msg.header.frame_id == 'cam_optical'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 567)
    assert msg.header is not header  # a copy: later edits of the input do not leak


def test_copy_header_is_independent(header):
    copy = copy_header(header)
    header.stamp.sec = 1
    header.frame_id = 'other'
    assert copy.stamp.sec == 1234 and copy.frame_id == 'cam_optical'


def test_rgb_to_image_layout(header):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = rgb_to_image(rgb, header)
    assert isinstance(msg, Image)
    _assert_header(msg, header)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (2, 3, 'rgb8', 9)
    assert bytes(msg.data) == bytes(range(18))


def test_rgb_to_image_accepts_non_contiguous_input(header):
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)[:, ::2]
    msg = rgb_to_image(rgb, header)
    assert msg.width == 3 and msg.step == 9
    assert bytes(msg.data) == np.ascontiguousarray(rgb).tobytes()


def test_depth_to_image_keeps_non_finite_values(header):
    depth = np.array([[1.5, np.nan], [np.inf, 0.25]], dtype=np.float64)
    msg = depth_to_image(depth, header)
    _assert_header(msg, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('32FC1', 2, 2, 8)
    assert msg.is_bigendian == (sys.byteorder == 'big')
    values = struct.unpack(NATIVE + '4f', bytes(msg.data))
    assert values[0] == 1.5 and np.isnan(values[1]) and values[2] == np.inf
    assert values[3] == 0.25


def test_normals_and_float_images(header):
    normals = np.zeros((2, 3, 3), dtype=np.float32)
    normals[..., 2] = -1.0
    msg = normals_to_image(normals, header)
    assert (msg.encoding, msg.step) == ('32FC3', 36)
    assert struct.unpack(NATIVE + '3f', bytes(msg.data)[:12]) == (0.0, 0.0, -1.0)
    two = float_to_image(np.ones((2, 2, 2)), header)
    assert (two.encoding, two.step) == ('32FC2', 16)


@pytest.mark.parametrize('call, arr', [
    (rgb_to_image, np.zeros((2, 2, 3), dtype=np.float32)),
    (rgb_to_image, np.zeros((2, 2), dtype=np.uint8)),
    (depth_to_image, np.zeros((2, 2, 1), dtype=np.float32)),
    (normals_to_image, np.zeros((2, 2), dtype=np.float32)),
    (float_to_image, np.zeros((2, 2, 5), dtype=np.float32)),
    (float_to_image, np.array([['a']])),
])
def test_bad_arrays_raise(header, call, arr):
    with pytest.raises(ValueError):
        call(arr, header)


def test_pointcloud_xyz_layout_matches_depth_image_proc(header, kernels):
    points = np.array([[1.0, 2.0, 3.0], [-4.0, 5.5, 6.0]], dtype=np.float32)
    msg = points_to_pointcloud2(points, header)
    assert isinstance(msg, PointCloud2)
    _assert_header(msg, header)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1),
        ('z', 8, PointField.FLOAT32, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 2, 16, 32)
    assert msg.is_dense and msg.is_bigendian == (sys.byteorder == 'big')
    data = bytes(msg.data)
    assert len(data) == 32
    assert struct.unpack(NATIVE + '3f', data[16:28]) == (-4.0, 5.5, 6.0)
    assert data[12:16] == b'\0\0\0\0'  # padding is zeroed, not leaked memory


def test_pointcloud_rgb_field_is_packed_float(header, kernels):
    points = np.zeros((2, 3, 3), dtype=np.float32)
    points[..., 2] = 1.0
    points[1, 2] = np.nan
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (0x12, 0x34, 0x56)
    msg = points_to_pointcloud2(points, header, rgb=rgb)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields][-1] == (
        'rgb', 16, PointField.FLOAT32)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (2, 3, 32, 96)
    assert not msg.is_dense
    data = bytes(msg.data)
    point = data[32:64]  # row 0, column 1
    (word,) = struct.unpack(NATIVE + 'I', point[16:20])
    assert word == 0x00123456
    if sys.byteorder == 'little':
        assert point[16:20] == bytes([0x56, 0x34, 0x12, 0x00])  # b, g, r, 0 as PCL
    last = data[5 * 32:6 * 32]
    assert all(np.isnan(struct.unpack(NATIVE + '3f', last[:12])))


def test_pointcloud_bad_inputs(header):
    with pytest.raises(ValueError):
        points_to_pointcloud2(np.zeros((4, 2)), header)
    with pytest.raises(ValueError):
        points_to_pointcloud2(np.zeros((4, 3)), header, rgb=np.zeros((4, 3)))
    with pytest.raises(ValueError):
        points_to_pointcloud2(np.zeros((4, 3)), header, rgb=np.zeros((5, 3), dtype=np.uint8))


def test_empty_pointcloud(header, kernels):
    msg = points_to_pointcloud2(np.zeros((0, 3), dtype=np.float32), header)
    assert (msg.height, msg.width, len(msg.data)) == (1, 0, 0)


def _project(P: np.ndarray, point: np.ndarray) -> np.ndarray:
    hom = P @ np.append(point, 1.0)
    return hom[:2] / hom[2]


def test_camera_info_for_scaled_output(header):
    K = np.array([[500.0, 0.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]])
    P = np.array([[490.0, 0.0, 318.0, -24.5], [0.0, 490.0, 241.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    camera = CameraModel(width=640, height=480, K=K, P=P,
                         D=np.array([0.1, -0.05, 0.001, 0.002, 0.0]),
                         distortion_model='plumb_bob')
    info = camera_info_for(camera, header, 320, 240)
    assert isinstance(info, CameraInfo)
    _assert_header(info, header)
    assert (info.width, info.height, info.binning_x, info.binning_y) == (320, 240, 0, 0)
    assert (info.roi.width, info.roi.height) == (0, 0)
    assert info.distortion_model == 'plumb_bob'
    np.testing.assert_allclose(info.d, [0.1, -0.05, 0.001, 0.002, 0.0])
    k = np.asarray(info.k).reshape(3, 3)
    # The image centre of the 640×480 image (319.5, 239.5) is the centre of 320×240.
    np.testing.assert_allclose(k, [[250.0, 0.0, 159.5], [0.0, 240.0, 119.5], [0, 0, 1]])
    p = np.asarray(info.p).reshape(3, 4)
    # A 3-D point lands at u' = (u + 0.5)·s − 0.5 in the scaled image.
    for point in ([0.3, -0.2, 2.0], [-1.0, 0.7, 5.0]):
        u = _project(P, np.array(point))
        np.testing.assert_allclose(_project(p, np.array(point)), (u + 0.5) * 0.5 - 0.5)
    assert p[0, 3] == pytest.approx(-24.5 * 0.5)


def test_camera_info_for_same_size_keeps_matrices(header):
    camera = CameraModel.pinhole(400.0, 410.0, 200.0, 150.0, 400, 300)
    info = camera_info_for(camera, header, 400, 300)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), camera.K)
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4), camera.P)
    with pytest.raises(ValueError):
        camera_info_for(camera, header, 0, 300)


def _reference_cloud_bytes(points: np.ndarray, rgb=None) -> bytes:
    """Build PCL's layout field by field: x y z pad [rgb pad pad pad], native byte order."""
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    colours = None if rgb is None else np.asarray(rgb).reshape(-1, 3)
    out = bytearray()
    for i, p in enumerate(flat):
        out += struct.pack(NATIVE + '3f', *p) + bytes(4)
        if colours is not None:
            r, g, b = (int(c) for c in colours[i])
            out += struct.pack(NATIVE + 'I', (r << 16) | (g << 8) | b) + bytes(12)
    return bytes(out)


@pytest.mark.parametrize('with_rgb', [False, True])
@pytest.mark.parametrize('layout', ['organized', 'flat', 'strided', 'float64', 'integer'])
def test_pointcloud_bytes_match_a_field_by_field_reference(
        header, with_rgb, layout, kernels):
    rng = np.random.default_rng(2)
    points = rng.normal(0.0, 3.0, (6, 10, 3)).astype(np.float32)
    points[1, 2] = np.nan
    rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    if layout == 'flat':
        points, rgb = points.reshape(-1, 3), rgb.reshape(-1, 3)
    elif layout == 'strided':
        points, rgb = points[::2, ::3], rgb[::2, ::3]
    elif layout == 'float64':
        points = points.astype(np.float64)
    elif layout == 'integer':
        points = np.nan_to_num(points).astype(np.int32)
    colours = rgb if with_rgb else None
    msg = points_to_pointcloud2(points, header, colours)
    assert bytes(msg.data) == _reference_cloud_bytes(points, colours)
    assert msg.is_dense == bool(np.isfinite(points).all())


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_pointcloud_is_dense_only_without_non_finite_coordinates(header, bad, kernels):
    points = np.ones((5, 3), dtype=np.float32)
    assert points_to_pointcloud2(points, header).is_dense
    points[3, 1] = bad
    assert not points_to_pointcloud2(points, header).is_dense


def test_messages_take_their_payload_and_serialize(header):
    from rclpy.serialization import deserialize_message, serialize_message
    rng = np.random.default_rng(3)
    points = rng.normal(size=(4, 5, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    messages = [points_to_pointcloud2(points, header, rgb), rgb_to_image(rgb, header),
                depth_to_image(points[..., 2], header), normals_to_image(points, header)]
    for msg in messages:
        data = msg.data
        assert data.typecode == 'B'
        msg.data = data
        assert msg.data is data  # assigning an array.array does not copy it
        copy = deserialize_message(serialize_message(msg), type(msg))
        assert copy == msg and bytes(copy.data) == bytes(msg.data)
