"""decode.compressed_to_rgb with real sensor_msgs/CompressedImage messages."""

import io
import struct
import zlib

from densepred_ros import decode
from densepred_ros.decode import compressed_codec, compressed_size, compressed_to_rgb, DecodeError
from densepred_ros.synthetic import make_frame
import numpy as np
from PIL import Image as PilImage
from PIL.PngImagePlugin import PngImageFile
import pytest
from sensor_msgs.msg import CompressedImage


@pytest.fixture(scope='module')
def street():
    """Return a generated 160×96 street image (real texture, edges and sky)."""
    return make_frame(5, 'outdoor', width=160, height=96, beams=0).rgb


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    PilImage.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _msg(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack('>I', len(body)) + kind + body
            + struct.pack('>I', zlib.crc32(kind + body) & 0xffffffff))


def _png_claiming(width: int, height: int) -> bytes:
    """Return a valid-looking PNG of a few hundred bytes whose IHDR claims width × height."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1 + 3 * 64) * 4)   # a few rows of zeros, not all of them
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', idat)
            + _png_chunk(b'IEND', b''))


def _jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0) of a baseline JPEG to claim another size."""
    data = bytearray(jpeg)
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


@pytest.mark.parametrize('fmt, codec', [
    ('rgb8; jpeg compressed bgr8', 'jpeg'),
    ('bgr8; jpeg compressed bgr8', 'jpeg'),
    ('mono8; jpeg compressed mono8', 'jpeg'),
    ('bgr8; png compressed bgr8', 'png'),
    ('rgba8; png compressed bgra8', 'png'),
    ('jpeg', 'jpeg'), ('jpg', 'jpeg'), ('JPEG', 'jpeg'), ('png', 'png'), (' png ', 'png'),
])
def test_format_strings(fmt, codec):
    assert compressed_codec(fmt) == codec


@pytest.mark.parametrize('fmt', ['', 'tiff', '16UC1; compressedDepth png', 'rgb8; tiff',
                                 'compressed jpeg', 'h264', 'rgb8; jpegxl compressed bgr8'])
def test_unknown_formats_are_refused(fmt, street):
    with pytest.raises(DecodeError, match='unsupported CompressedImage format'):
        compressed_to_rgb(_msg(_encode(street, 'PNG'), fmt))


def test_png_round_trip_is_exact(street):
    out = compressed_to_rgb(_msg(_encode(street, 'PNG'), 'bgr8; png compressed bgr8'))
    assert out.dtype == np.uint8 and out.shape == street.shape
    np.testing.assert_array_equal(out, street)


@pytest.mark.parametrize('quality', [75, 95])
def test_jpeg_round_trip_within_jpeg_error(street, quality):
    data = _encode(street, 'JPEG', quality=quality)
    out = compressed_to_rgb(_msg(data, 'rgb8; jpeg compressed bgr8'))
    assert out.shape == street.shape and out.dtype == np.uint8
    # JPEG's own error: what an independent decoder (Pillow) makes of the same bytes.
    with PilImage.open(io.BytesIO(data)) as image:
        reference = np.asarray(image.convert('RGB')).astype(np.int16)
    jpeg_error = np.abs(reference - street).mean()
    assert jpeg_error > 0.0  # the test really goes through a lossy code
    ours = np.abs(out.astype(np.int16) - street).mean()
    assert ours <= jpeg_error * 1.05 + 0.1
    assert np.abs(out.astype(np.int16) - reference).max() <= 2


def test_grey_jpeg_and_png_become_rgb(street):
    grey = street[..., 1].copy()
    png = compressed_to_rgb(_msg(_encode(grey, 'PNG'), 'mono8; png compressed mono8'))
    np.testing.assert_array_equal(png, np.repeat(grey[..., None], 3, axis=-1))
    jpeg = compressed_to_rgb(_msg(_encode(grey, 'JPEG', quality=95), 'jpeg'))
    assert (jpeg[..., 0] == jpeg[..., 1]).all() and (jpeg[..., 1] == jpeg[..., 2]).all()
    assert np.abs(jpeg[..., 0].astype(np.int16) - grey).mean() < 3.0


def test_png_rgba_and_16_bit(street):
    rgba = np.concatenate([street, np.full(street.shape[:2] + (1,), 7, np.uint8)], axis=-1)
    out = compressed_to_rgb(_msg(_encode(rgba, 'PNG'), 'rgba8; png compressed bgra8'))
    np.testing.assert_array_equal(out, street)
    grey16 = (street[..., 0].astype(np.uint16) * 257 + 100).astype(np.uint16)
    buffer = io.BytesIO()
    PilImage.fromarray(grey16).save(buffer, format='PNG')
    out = compressed_to_rgb(_msg(buffer.getvalue(), 'mono16; png compressed mono16'))
    np.testing.assert_array_equal(out[..., 2], (grey16.astype(np.uint32) + 128) // 257)


def test_data_as_rclpy_delivers_it(street):
    """Decode the array.array('B') that rclpy delivers (and stores when given bytes)."""
    msg = _msg(_encode(street, 'PNG'), 'png')
    assert not isinstance(msg.data, bytes)
    np.testing.assert_array_equal(compressed_to_rgb(msg), street)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
@pytest.mark.parametrize('keep', [0, 5, 40, 0.5, 0.9])
def test_truncated_payload(street, fmt, keep):
    data = _encode(street, fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
    cut = data[:int(len(data) * keep) if isinstance(keep, float) else keep]
    with pytest.raises(DecodeError, match='CompressedImage'):
        compressed_to_rgb(_msg(cut, fmt.lower()))


def test_corrupt_payloads(street):
    jpeg = _encode(street, 'JPEG', quality=90)
    png = _encode(street, 'PNG')
    with pytest.raises(DecodeError, match='not a JPEG'):
        compressed_to_rgb(_msg(png, 'jpeg'))           # format says JPEG, payload is PNG
    with pytest.raises(DecodeError, match='not a PNG'):
        compressed_to_rgb(_msg(b'\0' * 100, 'png'))
    broken = bytearray(png)
    broken[len(png) // 2:len(png) // 2 + 64] = bytes(64)  # damaged IDAT: bad CRC/zlib
    with pytest.raises(DecodeError, match='corrupt or truncated'):
        compressed_to_rgb(_msg(bytes(broken), 'png'))
    broken = bytearray(jpeg)
    sos = broken.index(b'\xff\xda')
    del broken[sos - 200:sos]                         # tables cut out
    with pytest.raises(DecodeError):
        compressed_to_rgb(_msg(bytes(broken), 'jpeg'))


def test_png_bomb_is_refused_before_decoding(monkeypatch):
    def no_decode(self):
        raise AssertionError('pixels were decoded')

    monkeypatch.setattr(PngImageFile, 'load', no_decode)
    bomb = _png_claiming(9000, 9000)
    assert len(bomb) < 1000
    assert compressed_size(bomb, 'png') == (9000, 9000)
    with pytest.raises(DecodeError, match='decompression bomb'):
        compressed_to_rgb(_msg(bomb, 'png'), max_pixels=1920 * 1080)
    # Beyond Pillow's own limit the header is refused already when opened.
    with pytest.raises(DecodeError, match='decompression bomb'):
        compressed_to_rgb(_msg(_png_claiming(100000, 100000), 'png'))


def test_jpeg_bomb_is_refused_before_decoding(street, monkeypatch):
    import simplejpeg

    def no_decode(*args, **kwargs):
        raise AssertionError('pixels were decoded')

    monkeypatch.setattr(simplejpeg, 'decode_jpeg', no_decode)
    bomb = _jpeg_claiming(_encode(street, 'JPEG', quality=90), 60000, 60000)
    with pytest.raises(DecodeError, match='60000×60000.*decompression bomb'):
        compressed_to_rgb(_msg(bomb, 'jpeg'))


def test_pixel_limit_is_inclusive(street):
    data = _encode(street, 'PNG')
    height, width = street.shape[:2]
    assert compressed_to_rgb(_msg(data, 'png'), max_pixels=width * height).shape == street.shape
    with pytest.raises(DecodeError, match='decompression bomb'):
        compressed_to_rgb(_msg(data, 'png'), max_pixels=width * height - 1)
    assert decode.DEFAULT_MAX_PIXELS >= 3840 * 2160


def test_image_transport_parameter():
    from densepred_ros.params import ConfigError, NodeConfig

    assert NodeConfig.from_parameters({'model.path': 'm'}).image_transport == 'raw'
    config = NodeConfig.from_parameters({'model.path': 'm', 'image_transport': 'compressed',
                                         'max_image_pixels': 1000})
    assert (config.image_transport, config.max_image_pixels) == ('compressed', 1000)
    assert NodeConfig.from_parameters({'model.path': 'm'}).max_image_pixels == \
        decode.DEFAULT_MAX_PIXELS
    with pytest.raises(ConfigError, match='image_transport'):
        NodeConfig.from_parameters({'model.path': 'm', 'image_transport': 'theora'})
    with pytest.raises(ConfigError, match='max_image_pixels'):
        NodeConfig.from_parameters({'model.path': 'm', 'max_image_pixels': 0})


def test_compressed_images_through_rclpy(street):
    """JPEG and PNG CompressedImages published and received over real rclpy decode alike."""
    import time
    import uuid

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from densepred_ros.domain_ids import reserve_domain_id

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=reserve_domain_id())
    node = rclpy.create_node(f'compressed_test_{uuid.uuid4().hex[:8]}', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        topic = f'image_{uuid.uuid4().hex[:8]}/compressed'
        pub = node.create_publisher(CompressedImage, topic, qos)
        received = []
        node.create_subscription(CompressedImage, topic, received.append, qos)
        deadline = time.monotonic() + 10.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        jpeg = _encode(street, 'JPEG', quality=95)
        sent = [_msg(jpeg, 'rgb8; jpeg compressed bgr8'),
                _msg(_encode(street, 'PNG'), 'bgr8; png compressed bgr8'),
                _msg(jpeg[:len(jpeg) // 3], 'jpeg'),
                _msg(_png_claiming(9000, 9000), 'png')]
        for msg in sent:
            pub.publish(msg)
        while len(received) < len(sent) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert len(received) == len(sent), 'messages did not arrive within 10 s'
        np.testing.assert_array_equal(compressed_to_rgb(received[0]),
                                      compressed_to_rgb(sent[0]))
        np.testing.assert_array_equal(compressed_to_rgb(received[1]), street)
        with pytest.raises(DecodeError, match='corrupt or truncated'):
            compressed_to_rgb(received[2])
        with pytest.raises(DecodeError, match='decompression bomb'):
            compressed_to_rgb(received[3], max_pixels=1920 * 1080)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
