"""Tier-2 tests of densepred_ros.decode with real sensor_msgs objects (and one rclpy hop)."""

import array
import struct
import time
import uuid

from densepred_ros.camera import CameraModel
from densepred_ros.decode import (
    camera_info_to_model, DecodeError, image_to_depth, image_to_rgb, pointcloud2_to_xyz)
from densepred_ros.domain_ids import reserve_domain_id
from densepred_ros.encode import (
    camera_info_for, depth_to_image, points_to_pointcloud2, rgb_to_image)
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header


def _image(encoding: str, width: int, height: int, rows: list, is_bigendian: int = 0,
           step: int = None) -> Image:
    """Build an Image from rows given as bytes (padding included)."""
    data = b''.join(rows)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
                 step=step if step is not None else len(rows[0]), data=data)


def _random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize('pad', [0, 1, 5])
def test_rgb8_with_row_padding(pad):
    rgb = _random_rgb(3, 4)
    rows = [rgb[r].tobytes() + b'\xee' * pad for r in range(3)]
    out = image_to_rgb(_image('rgb8', 4, 3, rows))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('encoding, pixel', [
    ('rgb8', bytes([10, 20, 30])),
    ('bgr8', bytes([30, 20, 10])),
    ('rgba8', bytes([10, 20, 30, 99])),
    ('bgra8', bytes([30, 20, 10, 99])),
])
def test_channel_order_on_one_pixel(encoding, pixel):
    other = bytes(len(pixel))
    msg = _image(encoding, 2, 1, [other + pixel + b'\x01\x02'])  # 2-byte row padding
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    assert out.flags['C_CONTIGUOUS'] or encoding == 'rgb8'


def test_mono8_is_replicated():
    out = image_to_rgb(_image('mono8', 3, 1, [bytes([0, 128, 255])]))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [128, 128, 128], [255, 255, 255]])


@pytest.mark.parametrize('big', [0, 1])
def test_mono16_byte_order_and_scaling(big):
    values = [0, 0x1234, 65535, 257 * 100]
    fmt = ('>' if big else '<') + 'H' * len(values)
    msg = _image('mono16', 4, 1, [struct.pack(fmt, *values) + b'\0\0'], is_bigendian=big)
    out = image_to_rgb(msg)
    # 8-bit value = round(v / 257): 0x1234 = 4660 → 18.13 → 18.
    np.testing.assert_array_equal(out[0, :, 0], [0, 18, 255, 100])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize('wrap', [bytes, bytearray, memoryview, list,
                                  lambda b: array.array('B', b)])
def test_data_container_types(wrap):
    rgb = _random_rgb(2, 3, seed=4)
    msg = Image(height=2, width=3, encoding='rgb8', step=9)
    raw = rgb.tobytes()
    # Bypass the setter so the container type reaches the decoder as given.
    object.__setattr__(msg, '_data', wrap(raw))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_rgb8_decode_is_a_view_of_received_array():
    msg = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
    out = image_to_rgb(msg)
    msg.data[0] = 77  # rclpy delivers array.array('B'): the decoded view shares it
    assert out[0, 0, 0] == 77


@pytest.mark.parametrize('kwargs, match', [
    ({'encoding': 'yuv422', 'step': 8}, "'yuv422'.*rgb8, bgr8"),
    ({'encoding': 'rgb8', 'step': 11}, 'step 11 is smaller'),
    ({'encoding': 'rgb8', 'step': 12, 'data': bytes(12 * 3 - 1)}, 'expected step·height'),
    ({'encoding': 'rgb8', 'step': 12, 'width': 0}, 'empty image'),
    ({'encoding': '32FC1', 'step': 16}, "'32FC1'"),
])
def test_bad_images_raise_decode_error(kwargs, match):
    fields = {'height': 3, 'width': 4, 'data': bytes(48)}
    fields.update(kwargs)
    with pytest.raises(DecodeError, match=match):
        image_to_rgb(Image(**fields))


def test_depth_32fc1_16uc1_and_64fc1():
    values = [1.25, float('nan'), float('inf'), 0.0]
    msg = _image('32FC1', 2, 2, [struct.pack('<2f', *values[:2]), struct.pack('<2f', *values[2:])])
    out = image_to_depth(msg)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert out[0, 0] == 1.25 and np.isnan(out[0, 1]) and out[1, 0] == np.inf
    assert out[1, 1] == 0.0  # float depth values are kept as given

    mm = _image('16UC1', 3, 1, [struct.pack('>3H', 1500, 0, 65535) + b'\0'], is_bigendian=1)
    out = image_to_depth(mm)
    np.testing.assert_allclose(out[0, [0, 2]], [1.5, 65.535], rtol=1e-6)
    assert np.isnan(out[0, 1])

    f64 = _image('64FC1', 2, 1, [struct.pack('>2d', 3.5, -1.0)], is_bigendian=1)
    np.testing.assert_array_equal(image_to_depth(f64), [[3.5, -1.0]])
    with pytest.raises(DecodeError, match="'rgb8'"):
        image_to_depth(_image('rgb8', 1, 1, [bytes(3)]))


def test_rgb_and_depth_round_trip():
    header = Header(frame_id='cam')
    rgb = _random_rgb(48, 64, seed=2)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb, header)), rgb)
    depth = np.random.default_rng(5).uniform(0.1, 80.0, (48, 64)).astype(np.float32)
    depth[0, :5] = [np.nan, np.inf, -np.inf, 0.0, -2.0]
    np.testing.assert_array_equal(image_to_depth(depth_to_image(depth, header)), depth)


# ---------------------------------------------------------------------------- PointCloud2

_FORMATS = {PointField.FLOAT32: 'f', PointField.FLOAT64: 'd', PointField.UINT16: 'H',
            PointField.UINT8: 'B', PointField.INT32: 'i'}


def _cloud(points: np.ndarray, layout: dict, height: int = 1, big: bool = False,
           row_pad: int = 0) -> PointCloud2:
    """Pack points with struct, one point at a time (an independent reference packer).

    layout: name → (offset, datatype); names other than x, y, z get the value 7.
    """
    point_step = layout.pop('_step')
    width = len(points) // height
    order = '>' if big else '<'
    rows = []
    for r in range(height):
        row = bytearray()
        for p in points[r * width:(r + 1) * width]:
            buf = bytearray(b'\xab' * point_step)  # garbage in the padding
            for name, (offset, datatype) in layout.items():
                value = {'x': p[0], 'y': p[1], 'z': p[2]}.get(name, 7)
                struct.pack_into(order + _FORMATS[datatype], buf, offset, value)
            row += buf
        rows.append(bytes(row) + b'\xcd' * row_pad)
    fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, (o, d) in layout.items()]
    return PointCloud2(height=height, width=width, fields=fields, is_bigendian=big,
                       point_step=point_step, row_step=width * point_step + row_pad,
                       data=b''.join(rows), is_dense=False)


F32, F64 = PointField.FLOAT32, PointField.FLOAT64
LAYOUTS = {
    'pcl_xyz': {'x': (0, F32), 'y': (4, F32), 'z': (8, F32), '_step': 16},
    'float64_with_intensity': {'x': (0, F64), 'y': (8, F64), 'z': (16, F64),
                               'intensity': (24, F32), '_step': 32},
    'velodyne_like': {'x': (0, F32), 'y': (4, F32), 'z': (8, F32), 'intensity': (16, F32),
                      'ring': (20, PointField.UINT16), '_step': 22},
    'shuffled_mixed': {'intensity': (0, F32), 'z': (4, F64), 'x': (13, F32), 'y': (17, F64),
                       '_step': 29},
}


@pytest.mark.parametrize('big', [False, True])
@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_pointcloud_layouts(name, big):
    points = np.random.default_rng(7).uniform(-50, 50, (12, 3))
    points[3] = [np.nan, 1.0, 2.0]
    points[8] = [1.0, np.inf, 2.0]
    msg = _cloud(points, dict(LAYOUTS[name]), height=3, big=big, row_pad=3)
    out = pointcloud2_to_xyz(msg)
    keep = np.isfinite(points).all(axis=1)
    assert out.dtype == np.float32 and out.shape == (keep.sum(), 3)
    np.testing.assert_allclose(out, points[keep].astype(np.float32), rtol=1e-6)


def test_pointcloud_round_trip_organized_with_rgb():
    points = np.random.default_rng(9).uniform(-5, 5, (6, 8, 3)).astype(np.float32)
    points[2, 3] = np.nan
    rgb = _random_rgb(6, 8)
    msg = points_to_pointcloud2(points, Header(), rgb=rgb)
    out = pointcloud2_to_xyz(msg)
    flat = points.reshape(-1, 3)
    np.testing.assert_array_equal(out, flat[np.isfinite(flat).all(axis=1)])


def test_empty_pointcloud_gives_0x3():
    msg = PointCloud2(height=1, width=0, point_step=16, row_step=0,
                      fields=[PointField(name=n, offset=4 * i, datatype=F32, count=1)
                              for i, n in enumerate('xyz')])
    out = pointcloud2_to_xyz(msg)
    assert out.shape == (0, 3) and out.dtype == np.float32


def _good_cloud() -> PointCloud2:
    return _cloud(np.ones((4, 3)), dict(LAYOUTS['pcl_xyz']))


@pytest.mark.parametrize('edit, match', [
    (lambda m: m.fields.pop(2), "no 'z' field"),
    (lambda m: setattr(m.fields[0], 'datatype', PointField.INT32), "'x' has datatype 5"),
    (lambda m: setattr(m.fields[1], 'offset', 14), "'y' at offset 14"),
    (lambda m: setattr(m, 'row_step', 16), 'row_step 16 is smaller'),
    (lambda m: setattr(m, 'data', bytes(63)), 'has 63 bytes'),
    (lambda m: setattr(m, 'point_step', 0), 'point_step 0'),
])
def test_bad_pointclouds_raise_decode_error(edit, match):
    msg = _good_cloud()
    assert pointcloud2_to_xyz(msg).shape == (4, 3)
    edit(msg)
    with pytest.raises(DecodeError, match=match):
        pointcloud2_to_xyz(msg)


# ----------------------------------------------------------------------------- CameraInfo

def _camera_info(**kwargs) -> CameraInfo:
    msg = CameraInfo(width=640, height=480, distortion_model='plumb_bob',
                     d=[0.1, -0.2, 0.001, 0.002, 0.03],
                     k=[500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0],
                     r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                     p=[490.0, 0.0, 318.0, 0.0, 0.0, 495.0, 242.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                     binning_x=2, binning_y=2)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 0, 0, 640, 480
    for key, value in kwargs.items():
        setattr(msg, key, value)
    return msg


def test_camera_info_fields_are_copied():
    camera = camera_info_to_model(_camera_info())
    assert isinstance(camera, CameraModel)
    assert (camera.width, camera.height, camera.distortion_model) == (640, 480, 'plumb_bob')
    np.testing.assert_allclose(camera.D, [0.1, -0.2, 0.001, 0.002, 0.03])
    np.testing.assert_allclose(camera.K, [[500, 0, 320], [0, 505, 240], [0, 0, 1]])
    np.testing.assert_allclose(camera.P, [[490, 0, 318, 0], [0, 495, 242, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(camera.R, np.eye(3))
    assert (camera.binning_x, camera.binning_y) == (2, 2)
    assert camera.roi == (0, 0, 640, 480)


def test_camera_info_missing_p_or_k_is_filled_from_the_other():
    no_p = camera_info_to_model(_camera_info(p=[0.0] * 12))
    np.testing.assert_allclose(no_p.P[:, :3], no_p.K)
    no_k = camera_info_to_model(_camera_info(k=[0.0] * 9))
    np.testing.assert_allclose(no_k.K, [[490, 0, 318], [0, 495, 242], [0, 0, 1]])


@pytest.mark.parametrize('kwargs, match', [
    ({'k': [0.0] * 9, 'p': [0.0] * 12}, 'no valid focal lengths'),
    ({'k': [float('nan')] + [0.0] * 8, 'p': [0.0] * 12}, 'no valid focal lengths'),
    ({'distortion_model': 'banana'}, 'banana'),
    ({'width': 0}, 'invalid camera_info'),
])
def test_bad_camera_info_raises_decode_error(kwargs, match):
    with pytest.raises(DecodeError, match=match):
        camera_info_to_model(_camera_info(**kwargs))


def test_camera_info_round_trip():
    camera = camera_info_to_model(_camera_info(binning_x=0, binning_y=0))
    back = camera_info_to_model(camera_info_for(camera, Header(), 640, 480))
    for name in ('K', 'P', 'R', 'D'):
        np.testing.assert_allclose(getattr(back, name), getattr(camera, name))


# ------------------------------------------------------------------ through real rclpy

def test_messages_survive_rclpy_publish_subscribe():
    rclpy = pytest.importorskip('rclpy')
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=reserve_domain_id())
    node = rclpy.create_node(f'decode_test_{uuid.uuid4().hex[:8]}', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        suffix = uuid.uuid4().hex[:8]
        received = {}
        pubs = {
            'image': node.create_publisher(Image, f'image_{suffix}', qos),
            'cloud': node.create_publisher(PointCloud2, f'cloud_{suffix}', qos),
        }
        for key, msg_type in (('image', Image), ('cloud', PointCloud2)):
            node.create_subscription(msg_type, pubs[key].topic_name,
                                     lambda m, k=key: received.setdefault(k, m), qos)
        deadline = time.monotonic() + 10.0
        while (any(p.get_subscription_count() == 0 for p in pubs.values())
               and time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.05)
        header = Header(frame_id='cam_optical')
        header.stamp.sec = 42
        rgb = _random_rgb(30, 40, seed=11)
        rgb_msg = rgb_to_image(rgb, header)
        rgb_msg.encoding = 'bgr8'  # the same bytes read as bgr must swap channels
        points = np.random.default_rng(12).uniform(-3, 3, (30, 40, 3)).astype(np.float32)
        points[0, 0] = np.nan
        pubs['image'].publish(rgb_msg)
        pubs['cloud'].publish(points_to_pointcloud2(points, header, rgb=rgb))
        while len(received) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert set(received) == {'image', 'cloud'}, 'messages did not arrive within 10 s'
        image = received['image']
        assert isinstance(image.data, array.array)
        assert (image.header.stamp.sec, image.header.frame_id) == (42, 'cam_optical')
        np.testing.assert_array_equal(image_to_rgb(image), rgb[..., ::-1])
        cloud = received['cloud']
        assert (cloud.height, cloud.width, cloud.is_dense) == (30, 40, False)
        flat = points.reshape(-1, 3)
        np.testing.assert_array_equal(pointcloud2_to_xyz(cloud), flat[1:])
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
