"""ROS messages → numpy arrays, vectorised and zero-copy where the layout allows.

cv_bridge and sensor_msgs_py are not used on purpose: neither is installable from PyPI (the
package must run and be tested without a ROS distro), and the few conversions the node needs
are short with numpy. Every decoder raises :class:`DecodeError` on malformed or unsupported
input, so the node can catch that one type, warn (throttled) and count the dropped message.

``msg.data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')`` (what rclpy
delivers) or a list of ints; buffer-protocol inputs are read without copying, so returned
views may be read-only and share memory with the message.
"""

import io
from typing import Any, Dict, Tuple

from densepred_ros.camera import CameraModel
import numpy as np

# encoding → (channels, bytes per channel)
_RGB_ENCODINGS: Dict[str, Tuple[int, int]] = {
    'rgb8': (3, 1),
    'bgr8': (3, 1),
    'rgba8': (4, 1),
    'bgra8': (4, 1),
    'mono8': (1, 1),
    'mono16': (1, 2),
}
_DEPTH_ENCODINGS: Dict[str, Tuple[int, int]] = {
    '32FC1': (1, 4),
    '64FC1': (1, 8),
    '16UC1': (1, 2),
}
_DEPTH_DTYPES = {'32FC1': 'f4', '64FC1': 'f8', '16UC1': 'u2'}
_FLOAT_ENCODINGS: Dict[str, Tuple[int, int]] = {f'32FC{c}': (c, 4) for c in (1, 2, 3, 4)}
_FLOAT_DTYPES = dict.fromkeys(_FLOAT_ENCODINGS, 'f4')

# sensor_msgs/PointField datatype constants for the types x, y, z may have.
_FLOAT32 = 7
_FLOAT64 = 8
_POINT_FIELD_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}


class DecodeError(ValueError):
    """A message cannot be converted: unsupported encoding, truncated data or bad fields."""


def _byte_array(data: Any) -> np.ndarray:
    """Return msg.data as a 1-D uint8 array, without copying when it exposes a buffer."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        view = memoryview(data)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DecodeError(f'message data of type {type(data).__name__} is not bytes-like: '
                              f'{exc}') from exc
    if not view.contiguous:
        raise DecodeError('message data is a non-contiguous buffer')
    return np.frombuffer(view.cast('B') if view.format != 'B' else view, dtype=np.uint8)


def _strided(buffer: np.ndarray, dtype: np.dtype, shape: Tuple[int, ...],
             strides: Tuple[int, ...]) -> np.ndarray:
    """View ``buffer`` as an array of ``shape``/``strides`` (bounds checked by the caller)."""
    return np.ndarray(shape, dtype=dtype, buffer=buffer, offset=0, strides=strides)


def _image_pixels(msg: Any, table: Dict[str, Tuple[int, int]], dtypes: Dict[str, str],
                  kind: str) -> Tuple[str, np.ndarray]:
    """Check an Image's geometry and return (encoding, H×W×C view of its pixels)."""
    encoding = str(msg.encoding)
    if encoding not in table:
        raise DecodeError(f'unsupported {kind} encoding {encoding!r}; supported: '
                          f'{", ".join(table)}')
    channels, size = table[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise DecodeError(f'empty image: {width}×{height} ({encoding})')
    if step < width * channels * size:
        raise DecodeError(f'step {step} is smaller than width·bytes per pixel = '
                          f'{width}·{channels * size} for {encoding}')
    buffer = _byte_array(msg.data)
    if buffer.size < step * height:
        raise DecodeError(f'image data has {buffer.size} bytes, expected step·height = '
                          f'{step}·{height} = {step * height} ({encoding})')
    order = '>' if msg.is_bigendian and size > 1 else '<' if size > 1 else '|'
    dtype = np.dtype(order + dtypes.get(encoding, 'u1' if size == 1 else 'u2'))
    pixels = _strided(buffer, dtype, (height, width, channels), (step, channels * size, size))
    return encoding, pixels


def image_to_rgb(msg: Any) -> np.ndarray:
    """Convert a sensor_msgs/Image to an RGB array.

    Supported encodings: rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (grey replicated
    into three channels) and mono16 (scaled to 8 bits as round(v/257), honouring
    ``is_bigendian``). Row padding (``step`` > width·bytes per pixel) is skipped.

    Args:
        msg: sensor_msgs/Image.

    Returns:
        H×W×3 uint8 RGB. For rgb8 this is a view of msg.data (read-only when the data is
        immutable); other encodings return a new contiguous array.

    Raises:
        DecodeError: unsupported encoding, empty image, step too small or data truncated.
    """
    encoding, pixels = _image_pixels(msg, _RGB_ENCODINGS, {}, 'colour')
    if encoding == 'rgb8':
        return pixels
    if encoding in ('bgr8', 'bgra8'):
        return np.ascontiguousarray(pixels[..., 2::-1])
    if encoding == 'rgba8':
        return np.ascontiguousarray(pixels[..., :3])
    if encoding == 'mono16':
        grey = ((pixels[..., 0].astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        grey = pixels[..., 0]
    return np.repeat(grey[..., None], 3, axis=-1)


def image_to_depth(msg: Any) -> np.ndarray:
    """Convert a depth sensor_msgs/Image to metres.

    Supported encodings: 32FC1 and 64FC1 (metres, values kept, including NaN/±inf) and
    16UC1 (millimetres, REP 118's raw form; 0 becomes NaN).

    Args:
        msg: sensor_msgs/Image.

    Returns:
        H×W float32 depth in metres (native byte order). A 32FC1 image in native byte order
        without padding is returned as a view of msg.data.

    Raises:
        DecodeError: unsupported encoding, empty image, step too small or data truncated.
    """
    encoding, pixels = _image_pixels(msg, _DEPTH_ENCODINGS, _DEPTH_DTYPES, 'depth')
    values = pixels[..., 0]
    if encoding == '16UC1':
        depth = values.astype(np.float32) * np.float32(0.001)
        depth[values == 0] = np.nan
        return depth
    with np.errstate(over='ignore'):   # 64FC1 beyond float32's range becomes ±inf (REP 117)
        return values.astype(np.float32, copy=False)


def image_to_float(msg: Any) -> np.ndarray:
    """Convert a 32FC1..32FC4 sensor_msgs/Image (e.g. normals/image) to float32.

    Returns:
        H×W×C float32 array (native byte order); values are kept as they are.

    Raises:
        DecodeError: unsupported encoding, empty image, step too small or data truncated.
    """
    _, pixels = _image_pixels(msg, _FLOAT_ENCODINGS, _FLOAT_DTYPES, 'float')
    return pixels.astype(np.float32, copy=False)


def _xyz_dtype(msg: Any) -> np.dtype:
    """Build a structured dtype reading x, y, z out of one point of a PointCloud2."""
    point_step = int(msg.point_step)
    fields = {}
    for field in msg.fields:
        fields.setdefault(str(field.name), field)
    order = '>' if msg.is_bigendian else '<'
    formats, offsets = [], []
    for name in ('x', 'y', 'z'):
        field = fields.get(name)
        if field is None:
            raise DecodeError(f'point cloud has no {name!r} field (fields: '
                              f'{", ".join(fields) or "none"})')
        if field.datatype not in (_FLOAT32, _FLOAT64):
            raise DecodeError(f'point field {name!r} has datatype {field.datatype}; only '
                              f'FLOAT32 ({_FLOAT32}) and FLOAT64 ({_FLOAT64}) are supported')
        size = _POINT_FIELD_SIZES[field.datatype]
        offset = int(field.offset)
        if offset < 0 or offset + size > point_step:
            raise DecodeError(f'point field {name!r} at offset {offset} (size {size}) does not '
                              f'fit in point_step {point_step}')
        formats.append(order + ('f4' if size == 4 else 'f8'))
        offsets.append(offset)
    return np.dtype({'names': ['x', 'y', 'z'], 'formats': formats, 'offsets': offsets,
                     'itemsize': point_step})


def pointcloud2_to_xyz(msg: Any) -> np.ndarray:
    """Extract the finite x, y, z coordinates of a sensor_msgs/PointCloud2.

    Accepts FLOAT32 or FLOAT64 x/y/z fields at any offsets, extra fields and padding (any
    point_step), organized (height > 1) or unorganized clouds, row_step padding and either
    byte order.

    Args:
        msg: sensor_msgs/PointCloud2.

    Returns:
        N×3 float32 coordinates in the cloud's frame (metres), points with any NaN/±inf
        coordinate removed; row-major point order. An empty cloud gives a 0×3 array.

    Raises:
        DecodeError: missing x/y/z, unsupported field datatype, inconsistent
            point_step/row_step or truncated data.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise DecodeError(f'point cloud has negative size {width}×{height}')
    if point_step <= 0:
        raise DecodeError(f'point cloud has point_step {point_step}')
    dtype = _xyz_dtype(msg)
    if height == 0 or width == 0:
        return np.zeros((0, 3), dtype=np.float32)
    if row_step < width * point_step:
        raise DecodeError(f'row_step {row_step} is smaller than width·point_step = '
                          f'{width}·{point_step}')
    buffer = _byte_array(msg.data)
    needed = row_step * (height - 1) + width * point_step
    if buffer.size < needed:
        raise DecodeError(f'point cloud data has {buffer.size} bytes, expected at least '
                          f'{needed} for {width}×{height} points (point_step {point_step}, '
                          f'row_step {row_step})')
    points = _strided(buffer, dtype, (height, width), (row_step, point_step))
    xyz = np.empty((height * width, 3), dtype=np.float32)
    finite = np.ones(height * width, dtype=bool)
    for column, name in enumerate(('x', 'y', 'z')):
        xyz[:, column] = points[name].reshape(-1)
        finite &= np.isfinite(xyz[:, column])
    return xyz if finite.all() else xyz[finite]


def _valid_focal(mat: np.ndarray) -> bool:
    fx, fy = mat[0, 0], mat[1, 1]
    return bool(np.isfinite(fx) and np.isfinite(fy) and fx > 0 and fy > 0)


def camera_info_to_model(msg: Any) -> CameraModel:
    """Convert a sensor_msgs/CameraInfo to a :class:`CameraModel`.

    Copies width, height, distortion_model, d, k, r, p, binning and roi through
    :meth:`CameraModel.from_camera_info` (all-zero R reads as the identity, all-zero P as
    [K | 0]). When K has no valid focal lengths but P has, K is taken as P[:3, :3].

    Args:
        msg: sensor_msgs/CameraInfo.

    Returns:
        The camera model (float64 matrices), as calibrated: apply ``effective()`` for the
        delivered image when binning or a ROI are set.

    Raises:
        DecodeError: no valid focal lengths (fx, fy > 0 and finite) in either K or P, or
            any field the camera model rejects (size, non-finite values, unknown
            distortion model, ROI outside the image).
    """
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    p = np.asarray(msg.p, dtype=np.float64).reshape(-1)
    if k.size != 9 or p.size != 12:
        raise DecodeError(f'camera_info has {k.size} values in k and {p.size} in p, '
                          f'expected 9 and 12')
    k_ok, p_ok = _valid_focal(k.reshape(3, 3)), _valid_focal(p.reshape(3, 4))
    if not (k_ok or p_ok):
        raise DecodeError(f'camera_info has no valid focal lengths: K fx, fy = {k[0]}, {k[4]};'
                          f' P fx, fy = {p[0]}, {p[5]}')
    if not k_ok:
        k = p.reshape(3, 4)[:, :3].reshape(-1)
    roi = msg.roi
    try:
        return CameraModel.from_camera_info(
            width=int(msg.width), height=int(msg.height),
            distortion_model=str(msg.distortion_model), d=np.asarray(msg.d, dtype=np.float64),
            k=k, r=np.asarray(msg.r, dtype=np.float64), p=p,
            binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
            roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))
    except ValueError as exc:
        raise DecodeError(f'invalid camera_info: {exc}') from exc


# compressed_image_transport's format strings: '<raw encoding>; <codec> compressed <enc>'
# (ROS 2), or the codec alone ('jpeg', 'png'; ROS 1 and many drivers).
_CODECS = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png'}
_MAGIC = {'jpeg': b'\xff\xd8\xff', 'png': b'\x89PNG\r\n\x1a\n'}
DEFAULT_MAX_PIXELS = 8192 * 8192


def compressed_codec(fmt: str) -> str:
    """Return 'jpeg' or 'png' for a sensor_msgs/CompressedImage format string.

    Accepts the codec alone ('jpeg', 'jpg', 'png', any case) and compressed_image_transport's
    '<encoding>; <codec> compressed <encoding>' (e.g. 'rgb8; jpeg compressed bgr8').

    Raises:
        DecodeError: any other format, such as compressedDepth or an empty string.
    """
    text = str(fmt).strip().lower()
    codec_part = text.split(';', 1)[1].strip() if ';' in text else text
    words = codec_part.split()
    if words and words[0] in _CODECS and (len(words) == 1 or words[1] == 'compressed'):
        return _CODECS[words[0]]
    raise DecodeError(f'unsupported CompressedImage format {fmt!r}; supported: jpeg, png '
                      f"and image_transport's '<encoding>; jpeg|png compressed <encoding>'")


def _check_signature(buffer: np.ndarray, codec: str) -> None:
    if bytes(buffer[:len(_MAGIC[codec])]) != _MAGIC[codec]:
        raise DecodeError(f'CompressedImage payload ({buffer.size} bytes) is not a '
                          f'{codec.upper()} stream (bad signature)')


def _open_png(buffer: np.ndarray) -> Any:
    """Open a PNG with Pillow, which reads the header only (no pixel decoded yet)."""
    from PIL import Image as PilImage, UnidentifiedImageError

    try:
        return PilImage.open(io.BytesIO(buffer), formats=['PNG'])
    except PilImage.DecompressionBombError as exc:
        raise DecodeError(f'CompressedImage PNG header claims too many pixels: not decoded '
                          f'(decompression bomb?): {exc}') from exc
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise DecodeError(f'CompressedImage PNG header unreadable: {exc}') from exc


def compressed_size(data: Any, codec: str) -> Tuple[int, int]:
    """Read (width, height) in pixels from a JPEG or PNG header, decoding no pixel.

    Raises:
        DecodeError: the payload does not start like the codec says or its header is
            truncated or invalid.
    """
    buffer = _byte_array(data)
    _check_signature(buffer, codec)
    if codec == 'png':
        with _open_png(buffer) as image:
            return image.size
    import simplejpeg
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(buffer)
    except ValueError as exc:
        raise DecodeError(f'CompressedImage JPEG header unreadable: {exc}') from exc
    return int(width), int(height)


def _check_pixels(codec: str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise DecodeError(f'CompressedImage {codec.upper()} header claims {width}×{height} = '
                          f'{width * height} pixels, outside 1..{max_pixels}: not decoded '
                          f'(decompression bomb?)')


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to RGB.

    The header's width × height is checked against ``max_pixels`` before any pixel is
    decoded (a decompression bomb is refused at the cost of a header parse). JPEG is
    decoded by simplejpeg (libjpeg-turbo; strict: a truncated stream is an error), PNG by
    Pillow. Grey, grey + alpha, palette, RGBA and 16-bit PNGs become 8-bit RGB (16-bit
    grey as round(v/257), like `image_to_rgb`'s mono16). The 'bgr8' in a ROS 2 format
    string names OpenCV's channel order before encoding: decoded colours are RGB as they are.

    Args:
        msg: sensor_msgs/CompressedImage (``format`` and ``data``).
        max_pixels: largest width·height accepted.

    Returns:
        H×W×3 uint8 RGB, a new contiguous array.

    Raises:
        DecodeError: unknown format, payload not of the format, header over the pixel
            limit, truncated or corrupt data.
    """
    codec = compressed_codec(msg.format)
    buffer = _byte_array(msg.data)
    _check_signature(buffer, codec)
    if codec == 'jpeg':
        import simplejpeg
        width, height = compressed_size(buffer, codec)
        _check_pixels(codec, width, height, max_pixels)
        try:
            return simplejpeg.decode_jpeg(buffer, colorspace='RGB')
        except ValueError as exc:
            raise DecodeError(f'CompressedImage JPEG data ({buffer.size} bytes, '
                              f'{width}×{height}) is corrupt or truncated: {exc}') from exc
    with _open_png(buffer) as image:
        width, height = image.size
        _check_pixels(codec, width, height, max_pixels)
        try:
            image.load()
            return _pil_to_rgb(image)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DecodeError(f'CompressedImage PNG data ({buffer.size} bytes, '
                              f'{width}×{height}) is corrupt or truncated: {exc}') from exc


def _pil_to_rgb(image: Any) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to H×W×3 uint8 RGB."""
    if image.mode == 'RGB':
        return np.asarray(image)
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        grey = np.asarray(image).astype(np.uint32)
        grey = ((np.clip(grey, 0, 65535) + 128) // 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == 'L':
        return np.repeat(np.asarray(image)[..., None], 3, axis=-1)
    return np.asarray(image.convert('RGB'))
