"""The node with ``image_transport: compressed`` over real rclpy (JPEG, PNG, corrupt, bombs)."""

import io
import struct
import zlib

from densepred_ros import decode
from densepred_ros.feeder import stamp_key, wait_for
from densepred_ros.params import NodeConfig
from densepred_ros.pipeline import load_pipeline
from lifecycle_msgs.msg import State as StateMsg
from node_rig import diagnostics, extrinsic_parameter, state_id
import numpy as np
from PIL import Image as PilImage
from sensor_msgs.msg import CompressedImage


def _compressed(rgb: np.ndarray, fmt: str, ros_format: str, **kwargs) -> CompressedImage:
    buffer = io.BytesIO()
    PilImage.fromarray(rgb).save(buffer, format=fmt, **kwargs)
    msg = CompressedImage(format=ros_format)
    msg.data = buffer.getvalue()
    return msg


def _png_bomb(width: int, height: int) -> bytes:
    """Return a few hundred bytes of PNG whose header claims width × height pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body) & 0xffffffff))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
            + chunk(b'IDAT', zlib.compress(bytes(1 + 3 * 64) * 4)) + chunk(b'IEND', b''))


def _relative_of(rig, image, frame) -> np.ndarray:
    """Feed one kind of image until its depth/relative comes back; return it (H×W)."""
    sent = []

    def back() -> bool:
        return any(rig.find('depth/relative', key) is not None for key in sent)

    def publish_once() -> None:
        sent.append(stamp_key(rig.publish(frame, encoding_image=image)))

    deadline_ok = False
    for _ in range(40):
        publish_once()
        if wait_for(back, 0.5):
            deadline_ok = True
            break
    assert deadline_ok, 'no depth/relative for the frame'
    msg = next(rig.find('depth/relative', k) for k in sent
               if rig.find('depth/relative', k) is not None)
    return decode.image_to_depth(msg)


def test_jpeg_and_png_give_the_raw_depth(make_rig, checkpoint, frame) -> None:
    params = {'model.path': checkpoint, 'alignment.smoothing': 1.0,
              'alignment.extrinsic': extrinsic_parameter(frame.T_cam_lidar)}
    raw_rig = make_rig(params)
    assert raw_rig.node.start()
    raw_rig.subscribe(['depth/relative'])
    raw_rig.wait_inputs_matched()
    raw = _relative_of(raw_rig, None, frame)

    rig = make_rig({**params, 'image_transport': 'compressed'})
    assert rig.node.start()
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched(compressed=True)
    png = _compressed(frame.rgb, 'PNG', 'rgb8; png compressed bgr8')
    np.testing.assert_array_equal(_relative_of(rig, png, frame), raw)   # lossless

    jpeg = _compressed(frame.rgb, 'JPEG', 'rgb8; jpeg compressed bgr8', quality=90)
    from_jpeg = _relative_of(rig, jpeg, frame)
    # JPEG's own error, measured here: the same model on the decoded JPEG and on the raw
    # image (the node must add nothing to it).
    pipeline = load_pipeline(NodeConfig.from_parameters({**params, 'model.device': 'cpu'}))
    try:
        expected = pipeline.infer(decode.compressed_to_rgb(jpeg)).relative
        reference = pipeline.infer(frame.rgb).relative
    finally:
        pipeline.close()
    np.testing.assert_allclose(reference, raw, atol=1e-5)   # the node's own model settings
    jpeg_error = float(np.abs(expected - reference).max())
    assert 0.0 < jpeg_error   # the JPEG is lossy: a test of the tolerance, not of nothing
    np.testing.assert_allclose(from_jpeg, expected, atol=1e-5)
    assert float(np.abs(from_jpeg - raw).max()) <= jpeg_error + 1e-5
    assert not np.array_equal(from_jpeg, raw)


def test_corrupt_payloads_and_bombs_are_counted(make_rig, checkpoint, frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'image_transport': 'compressed',
                    'max_image_pixels': 640 * 480,
                    'alignment.extrinsic': extrinsic_parameter(frame.T_cam_lidar)})
    assert rig.node.start()
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched(compressed=True)
    jpeg = _compressed(frame.rgb, 'JPEG', 'jpeg', quality=90)
    truncated = CompressedImage(format='jpeg')
    truncated.data = bytes(jpeg.data)[:len(jpeg.data) // 3]
    garbage = CompressedImage(format='png')
    garbage.data = b'\0' * 200
    bomb = CompressedImage(format='png')
    bomb.data = _png_bomb(20000, 20000)   # 400 Mpixel claimed in a few hundred bytes
    unknown = CompressedImage(format='rgb8; tiff compressed rgb8')
    unknown.data = bytes(jpeg.data)
    bad = [truncated, garbage, bomb, unknown]
    for msg in bad:
        rig.publish(frame, encoding_image=msg, lidar=False)
        # one at a time: the holder keeps only the newest, so let the worker take each
        assert wait_for(lambda: diagnostics(rig) and int(
            diagnostics(rig)[-1]['decode errors']) >= bad.index(msg) + 1, 10.0), msg.format
    values = diagnostics(rig)[-1]
    assert int(values['decode errors']) == len(bad)
    assert values['processing errors'] == '0'
    assert rig.count('depth/relative') == 0
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_ACTIVE
    assert values['image transport'] == 'compressed'
    assert values['geometry kernels'] in ('numba', 'numpy')
    # and a good frame still goes through
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0, encoding_image=jpeg)
