"""Property-based tests of every message decoder, on real sensor_msgs messages.

Each generated message either decodes to what a slow pure-Python reference (struct.unpack
per pixel or point, written here from the message definitions) computes, or raises
`DecodeError`, the one error type the node turns into a throttled warning and a counter.
Any other exception fails the test.
"""

import math
import struct
from typing import List, Optional, Tuple

from densepred_ros.decode import (
    camera_info_to_model, DecodeError, image_to_depth, image_to_float, image_to_rgb,
    pointcloud2_to_xyz)
from hypothesis import assume, given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# encoding → (channels, bytes per channel), as defined by REP 104 / sensor_msgs encodings.
RGB = {'rgb8': (3, 1), 'bgr8': (3, 1), 'rgba8': (4, 1), 'bgra8': (4, 1), 'mono8': (1, 1),
       'mono16': (1, 2)}
DEPTH = {'32FC1': (1, 4), '64FC1': (1, 8), '16UC1': (1, 2)}
FLOAT = {f'32FC{c}': (c, 4) for c in (1, 2, 3, 4)}
UNSUPPORTED = ['yuv422', 'bayer_rggb8', '8UC3', 'RGB8', '', 'jpeg', '32SC1', '16SC1']
STRUCT = {(1, False): 'B', (2, False): 'H', (4, True): 'f', (8, True): 'd'}


def decode_or_error(decoder, msg) -> Optional[np.ndarray]:
    """Return the decoded array, or None when the decoder raised DecodeError."""
    try:
        return decoder(msg)
    except DecodeError:
        return None


# Images --------------------------------------------------------------------------------

@st.composite
def images(draw, table: dict) -> Tuple[Image, bool]:
    """Draw (Image, valid): any encoding of table, random size, padding and byte order.

    About a third of the images are broken on purpose (truncated data, step too small,
    empty, unsupported encoding); valid says whether the image is well-formed.
    """
    encoding = draw(st.sampled_from(sorted(table)))
    channels, size = table[encoding]
    width, height = draw(st.integers(1, 7)), draw(st.integers(1, 6))
    step = width * channels * size + draw(st.integers(0, 9))
    big = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    data = np.random.default_rng(seed).bytes(step * height + draw(st.integers(0, 4)))
    if size == 4 or size == 8:  # plant NaN/inf/0 in some float pixels
        data = bytearray(data)
        for value in draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
                                   max_size=3)):
            u, v = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
            code = ('>' if big else '<') + ('f' if size == 4 else 'd')
            struct.pack_into(code, data, v * step + u * channels * size, value)
        data = bytes(data)
    fault = draw(st.sampled_from(['none'] * 4 + ['truncated', 'step', 'empty', 'encoding']))
    if fault == 'truncated':
        data = data[:step * height - draw(st.integers(1, step * height))]
    elif fault == 'step':
        step = draw(st.integers(0, width * channels * size - 1))
    elif fault == 'empty':
        width, height = draw(st.sampled_from([(0, height), (width, 0), (0, 0)]))
    elif fault == 'encoding':
        encoding = draw(st.sampled_from(UNSUPPORTED))
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big),
                step=step, data=data)
    return msg, fault == 'none'


def pixel_values(msg: Image, channels: int, size: int, floating: bool) -> List[list]:
    """Unpack every pixel with struct: rows of lists of channel values."""
    code = ('>' if msg.is_bigendian else '<') + STRUCT[(size, floating)] * channels
    data = bytes(msg.data)
    return [[list(struct.unpack_from(code, data, v * msg.step + u * channels * size))
             for u in range(msg.width)] for v in range(msg.height)]


def reference_rgb(msg: Image) -> np.ndarray:
    """Return the RGB of an Image, computed pixel by pixel."""
    channels, size = RGB[msg.encoding]
    rows = pixel_values(msg, channels, size, floating=False)
    out = []
    for row in rows:
        out_row = []
        for px in row:
            if msg.encoding in ('rgb8', 'rgba8'):
                out_row.append(px[:3])
            elif msg.encoding in ('bgr8', 'bgra8'):
                out_row.append([px[2], px[1], px[0]])
            elif msg.encoding == 'mono8':
                out_row.append([px[0]] * 3)
            else:  # mono16 → 8 bits, nearest (v / 257 is never exactly half-way)
                out_row.append([round(px[0] / 257)] * 3)
        out.append(out_row)
    return np.array(out, dtype=np.uint8)


def reference_depth(msg: Image) -> np.ndarray:
    """Return depth in metres, pixel by pixel (16UC1: millimetres, 0 = unknown)."""
    channels, size = DEPTH[msg.encoding]
    rows = pixel_values(msg, channels, size, floating=msg.encoding != '16UC1')
    if msg.encoding == '16UC1':
        return np.array([[px[0] * 0.001 if px[0] else math.nan for px in row]
                         for row in rows], dtype=np.float64)
    with np.errstate(over='ignore'):
        return np.array([[np.float32(px[0]) for px in row] for row in rows],
                        dtype=np.float32)


def assert_same_floats(actual: np.ndarray, expected: np.ndarray, rtol: float = 0.0) -> None:
    """Assert equal values, NaN where NaN and the same infinities."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)])
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=0)


@SETTINGS
@given(images(RGB))
def test_image_to_rgb_matches_reference(case) -> None:
    msg, valid = case
    rgb = decode_or_error(image_to_rgb, msg)
    assert (rgb is not None) == valid
    if valid:
        assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)
        np.testing.assert_array_equal(rgb, reference_rgb(msg))


@SETTINGS
@given(images(DEPTH))
def test_image_to_depth_matches_reference(case) -> None:
    msg, valid = case
    depth = decode_or_error(image_to_depth, msg)
    assert (depth is not None) == valid
    if valid:
        assert depth.dtype == np.float32 and depth.shape == (msg.height, msg.width)
        assert_same_floats(depth, reference_depth(msg),
                           rtol=1e-6 if msg.encoding == '16UC1' else 0.0)


@SETTINGS
@given(images(FLOAT))
def test_image_to_float_matches_reference(case) -> None:
    msg, valid = case
    values = decode_or_error(image_to_float, msg)
    assert (values is not None) == valid
    if valid:
        channels, _ = FLOAT[msg.encoding]
        expected = np.array(pixel_values(msg, channels, 4, floating=True), dtype=np.float32)
        assert values.dtype == np.float32
        assert_same_floats(values, expected)


@SETTINGS
@given(images(FLOAT), st.sampled_from([image_to_rgb, image_to_depth]))
def test_decoders_refuse_encodings_of_other_decoders(case, decoder) -> None:
    msg, _ = case
    assume(msg.encoding not in ('32FC1',) or decoder is image_to_rgb)
    with pytest.raises(DecodeError):
        decoder(msg)


# Point clouds ----------------------------------------------------------------------------

# PointField datatypes → (size, struct code).
FIELD_TYPES = {1: (1, 'b'), 2: (1, 'B'), 3: (2, 'h'), 4: (2, 'H'), 5: (4, 'i'), 6: (4, 'I'),
               7: (4, 'f'), 8: (8, 'd')}
COORDINATES = st.one_of(st.floats(-1e6, 1e6, width=32),
                        st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]))


@st.composite
def clouds(draw) -> Tuple[PointCloud2, str]:
    """Draw (PointCloud2, fault): random field layout, padding, byte order, size, values.

    fault is 'none' for a well-formed cloud, else what was broken on purpose.
    """
    names = ['x', 'y', 'z'] + draw(st.lists(st.sampled_from(['intensity', 'ring', 't']),
                                            max_size=3, unique=True))
    names = draw(st.permutations(names))
    types = {name: draw(st.sampled_from([7, 8]) if name in 'xyz'
                        else st.sampled_from(sorted(FIELD_TYPES))) for name in names}
    fields, cursor = [], 0
    for name in names:
        offset = cursor + draw(st.integers(0, 3))
        fields.append(PointField(name=name, offset=offset, datatype=types[name], count=1))
        cursor = offset + FIELD_TYPES[types[name]][0]
    point_step = cursor + draw(st.integers(0, 5))
    height, width = draw(st.integers(0, 3)), draw(st.integers(0, 5))
    row_step = width * point_step + draw(st.integers(0, 7))
    big = draw(st.booleans())
    data = bytearray(np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(
        row_step * height + draw(st.integers(0, 3))))
    by_name = {f.name: f for f in fields}
    for v in range(height):
        for u in range(width):
            for name in 'xyz':
                f = by_name[name]
                code = ('>' if big else '<') + FIELD_TYPES[f.datatype][1]
                struct.pack_into(code, data, v * row_step + u * point_step + f.offset,
                                 draw(COORDINATES))
    fault = 'none'
    if height and width:
        fault = draw(st.sampled_from(['none'] * 4 + [
            'missing', 'datatype', 'offset', 'row_step', 'truncated', 'point_step']))
    if fault == 'missing':
        gone = draw(st.sampled_from('xyz'))
        fields = [f for f in fields if f.name != gone]
    elif fault == 'datatype':
        f = by_name[draw(st.sampled_from('xyz'))]
        f.datatype = draw(st.sampled_from([1, 2, 3, 4, 5, 6]))
    elif fault == 'offset':
        f = by_name[draw(st.sampled_from('xyz'))]
        f.offset = point_step - FIELD_TYPES[f.datatype][0] + draw(st.integers(1, 8))
    elif fault == 'row_step':
        row_step = draw(st.integers(0, width * point_step - 1))
    elif fault == 'truncated':
        needed = row_step * (height - 1) + width * point_step
        data = data[:needed - draw(st.integers(1, needed))]
    elif fault == 'point_step':
        point_step = 0
    msg = PointCloud2(height=height, width=width, fields=fields, is_bigendian=big,
                      point_step=point_step, row_step=row_step, data=bytes(data),
                      is_dense=False)
    return msg, fault


def reference_xyz(msg: PointCloud2) -> np.ndarray:
    """Return the finite points of a cloud, unpacked one by one and cast to float32."""
    by_name = {f.name: f for f in msg.fields}
    data = bytes(msg.data)
    points = []
    for v in range(msg.height):
        for u in range(msg.width):
            point = []
            for name in 'xyz':
                f = by_name[name]
                code = ('>' if msg.is_bigendian else '<') + FIELD_TYPES[f.datatype][1]
                (value,) = struct.unpack_from(code, data,
                                              v * msg.row_step + u * msg.point_step + f.offset)
                with np.errstate(over='ignore'):
                    point.append(np.float32(value))
            if all(math.isfinite(c) for c in point):
                points.append(point)
    return np.array(points, dtype=np.float32).reshape(-1, 3)


@SETTINGS
@given(clouds())
def test_pointcloud2_to_xyz_matches_reference(case) -> None:
    msg, fault = case
    xyz = decode_or_error(pointcloud2_to_xyz, msg)
    assert (xyz is not None) == (fault == 'none'), fault
    if xyz is not None:
        assert xyz.dtype == np.float32 and xyz.ndim == 2 and xyz.shape[1] == 3
        assert np.isfinite(xyz).all()
        np.testing.assert_array_equal(xyz, reference_xyz(msg))


# Camera info ---------------------------------------------------------------------------

KNOWN_MODELS = {'': 0, 'none': 0, 'plumb_bob': 5, 'rational_polynomial': 8,
                'equidistant': 4}
UNKNOWN_MODELS = ['fisheye', 'PLUMB_BOB', 'kannala_brandt', 'unknown']


@st.composite
def camera_infos(draw) -> Tuple[CameraInfo, Optional[np.ndarray]]:
    """Draw (CameraInfo, expected K, or None when it must be refused).

    A well-formed message has a valid K, or a broken K (zero, NaN or negative focal
    length) with a valid P to take it from, a known distortion model and finite D. About
    half of the messages get one fault: zero size, unknown model, NaN in D, NaN in P, a
    NaN principal point in a K with valid focal lengths, or no valid focal length at all.
    """
    width, height = draw(st.integers(1, 4000)), draw(st.integers(1, 3000))
    fx, fy = draw(st.floats(1.0, 1e4)), draw(st.floats(1.0, 1e4))
    cx, cy = draw(st.floats(-10.0, width + 10.0)), draw(st.floats(-10.0, height + 10.0))
    good_k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    broken_k = {'zero': [0.0] * 9,
                'nan_focal': [math.nan, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                'negative_focal': [fx, 0.0, cx, 0.0, -fy, cy, 0.0, 0.0, 1.0]}
    pfx = draw(st.floats(1.0, 1e4))
    good_p = [pfx, 0.0, cx, 0.0, 0.0, pfx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    fault = draw(st.sampled_from(['none'] * 6 + ['zero_size', 'unknown_model', 'nan_d',
                                                 'nan_p', 'nan_center', 'no_focal']))
    k_from_p = draw(st.booleans())
    if k_from_p or fault == 'no_focal':
        k = broken_k[draw(st.sampled_from(sorted(broken_k)))]
        p = good_p if fault != 'no_focal' else [0.0] * 12
    else:
        k = list(good_k)
        p = good_p if draw(st.booleans()) else [0.0] * 12  # all-zero P means [K | 0]
    if fault == 'nan_center':
        k = list(good_k)
        k[2 + 3 * draw(st.integers(0, 1))] = math.nan
    if fault == 'nan_p':
        p = list(good_p)
        p[draw(st.sampled_from([0, 2, 3, 5, 6, 7]))] = math.nan
    if fault == 'unknown_model':
        model = draw(st.sampled_from(UNKNOWN_MODELS))
        d = draw(st.lists(st.floats(-1.0, 1.0), max_size=5))
    else:
        model = draw(st.sampled_from(sorted(KNOWN_MODELS)))
        n_coeffs = KNOWN_MODELS[model]
        d = draw(st.lists(st.floats(-1.0, 1.0) if n_coeffs else st.just(0.0),
                          min_size=1 if fault == 'nan_d' else 0, max_size=max(n_coeffs, 1)))
        if fault == 'nan_d':
            d[draw(st.integers(0, len(d) - 1))] = math.nan
    msg = CameraInfo(width=0 if fault == 'zero_size' else width, height=height,
                     distortion_model=model, d=d, k=k, p=p)
    if fault != 'none':
        return msg, None
    return msg, np.reshape(p[0:3] + p[4:7] + p[8:11] if k_from_p else k, (3, 3))


@SETTINGS
@given(camera_infos())
def test_camera_info_to_model_matches_the_contract(case) -> None:
    msg, expected_k = case
    model = decode_or_error(camera_info_to_model, msg)
    assert (model is not None) == (expected_k is not None), (msg, expected_k)
    if model is not None:
        assert (model.width, model.height) == (msg.width, msg.height)
        np.testing.assert_array_equal(model.K, expected_k)
        assert np.isfinite(model.P).all() and np.isfinite(model.D).all()
        # D is msg.d zero-padded to the model's coefficient count (none for '' / none).
        d = np.zeros(max(model.D.size, len(msg.d)))
        d[:len(msg.d)] = msg.d
        np.testing.assert_array_equal(model.D, d[:model.D.size])
        assert not d[model.D.size:].any()
