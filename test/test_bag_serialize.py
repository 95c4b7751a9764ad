"""bag.to_raw (rosbags' CDR serializer) writes the bytes rclpy's serialize_message writes.

rclpy (Fast-CDR) leaves the alignment padding after a string uninitialised (two calls on one
message can differ there); rosbags writes zeros. So the bytes must be equal except where
ours are zero and rclpy's carry nothing, and rclpy must read ours as the same message.
"""

from densepred_ros import bag, encode
from densepred_ros.camera import CameraModel
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2


def _assert_like_rclpy(msg):
    ours = np.frombuffer(bag.to_raw(msg), np.uint8)
    theirs = np.frombuffer(serialize_message(msg), np.uint8)
    name = type(msg).__name__
    assert ours.shape == theirs.shape, name
    differ = np.flatnonzero(ours != theirs)
    assert not ours[differ].any(), f'{name}: not zero padding at {differ}'
    # Where they differ rclpy's bytes carry nothing: changed, they read as the same message.
    changed = theirs.copy()
    changed[differ] = 0x5a
    assert deserialize_message(changed.tobytes(), type(msg)) == msg, name
    assert deserialize_message(ours.tobytes(), type(msg)) == msg, name


def _header(frame_id='camera_optical_frame'):
    return bag._header(1_700_000_000.123457, frame_id)


def _outputs(width, height, seed=0):
    """Messages as the node encodes them, with every value kind (NaN, inf, odd sizes)."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 80.0, (height, width)).astype(np.float32)
    depth[0, 0], depth[-1, -1] = np.nan, np.inf
    normals = rng.normal(size=(height, width, 3))
    points = rng.normal(size=(height, width, 3)).astype(np.float32)
    points[0, 0] = np.nan
    colors = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    K = [[0.9 * width, 0, width / 2], [0, 0.8 * width, height / 2], [0, 0, 1]]
    camera = CameraModel(width=width, height=height, K=np.array(K),
                         D=[0.1, -0.05, 0.001, 0.0, 0.01], distortion_model='plumb_bob')
    header = _header()
    return [
        encode.depth_to_image(depth, header),
        encode.normals_to_image(normals, header),
        encode.rgb_to_image(colors, header),
        encode.camera_info_for(camera, header, width, height),
        encode.points_to_pointcloud2(points, header, colors),
        encode.points_to_pointcloud2(points.reshape(-1, 3)[:7], _header('lidar')),
    ]


@pytest.mark.parametrize('size', [(320, 240), (5, 3), (1, 1)])
def test_outputs_serialize_like_rclpy(size):
    for msg in _outputs(*size):
        _assert_like_rclpy(msg)


def test_other_field_kinds_serialize_like_rclpy():
    info = CameraInfo(header=_header(), height=3, width=4, distortion_model='plumb_bob',
                      d=[0.1, -0.2, 0.0, 0.001, 0.3], binning_x=2, binning_y=1)
    info.k[:] = np.arange(9.0)
    info.r[:] = np.eye(3).ravel()
    info.p[:] = np.arange(12.0) / 7
    info.roi.x_offset, info.roi.width, info.roi.do_rectify = 1, 2, True
    empty = Image(header=_header(''), encoding='mono8')
    big_endian = Image(header=_header(), height=1, width=2, encoding='16UC1', is_bigendian=1,
                       step=4, data=bytes([1, 2, 3, 4]))
    compressed = CompressedImage(header=_header(), format='rgb8; jpeg compressed bgr8',
                                 data=bytes(range(256)) * 3)
    cloud = PointCloud2(header=_header('ünïcode'), height=0, width=0, is_dense=True)
    diagnostics = DiagnosticArray(header=_header(), status=[DiagnosticStatus(
        level=DiagnosticStatus.WARN, name='densepred', message='x',
        values=[KeyValue(key='a', value='1'), KeyValue(key='b', value='')])])
    for msg in (info, empty, big_endian, compressed, cloud, diagnostics):
        _assert_like_rclpy(msg)


def test_to_raw_does_not_change_the_message():
    msg = _outputs(6, 4)[4]
    before = bytes(msg.data)
    raw = bag.to_raw(msg)
    msg.data[0] ^= 0xff  # the payload is still the message's own, writable and not shared
    assert bytes(raw) != bag.to_raw(msg)
    msg.data[0] ^= 0xff
    assert bytes(msg.data) == before and bytes(raw) == bag.to_raw(msg)
