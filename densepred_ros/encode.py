"""numpy arrays → ROS messages (Image, PointCloud2, CameraInfo).

Written here rather than with cv_bridge or sensor_msgs_py, which are not installable from
PyPI (see decode.py). Every function copies the given header (stamp and frame_id) onto its
output, so outputs pair with their input under ExactTime synchronisation and are placed
through TF at the input's acquisition time. Multi-byte data is written in this machine's byte
order, stated in ``is_bigendian``.
"""

import array
import sys
from typing import Optional

from builtin_interfaces.msg import Time
from densepred_ros import geometry
from densepred_ros.camera import CameraModel
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

_IS_BIGENDIAN = sys.byteorder == 'big'


def copy_header(header: Header) -> Header:
    """Return a new Header with the same stamp and frame_id."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id)


# Generated message classes copy an array.array given to `data` unless they check their
# fields (ROS_PYTHON_CHECK_FIELDS unset: they do not); with check_fields=True they take the
# array as it is. Every message here is built with it, so its payload is never copied.
_TAKE_PAYLOAD = {'check_fields': True}


def _new_payload(shape: tuple, dtype: np.dtype) -> tuple:
    """Return a zeroed array.array('B') message payload and a writable numpy view of it.

    Filling the view writes straight into the payload, which the message then takes as
    its data without a copy.
    """
    dtype = np.dtype(dtype)
    payload = array.array('B', [0]) * (int(np.prod(shape)) * dtype.itemsize)
    return payload, np.frombuffer(payload, dtype=dtype).reshape(shape)


def _image(arr: np.ndarray, header: Header, encoding: str, dtype: np.dtype) -> Image:
    height, width = arr.shape[:2]
    payload, view = _new_payload(arr.shape, dtype)
    view[...] = arr
    del view  # release the view before the message takes the payload
    itemsize = np.dtype(dtype).itemsize
    msg = Image(**_TAKE_PAYLOAD, header=copy_header(header), height=height, width=width,
                encoding=encoding, is_bigendian=int(_IS_BIGENDIAN and itemsize > 1),
                step=int(np.prod(arr.shape[1:])) * itemsize)
    msg.data = payload
    return msg


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """Encode a H×W×3 uint8 RGB array as an ``rgb8`` Image.

    Raises:
        ValueError: bad shape or dtype.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'rgb must be a H×W×3 uint8 array, got shape {rgb.shape}, '
                         f'dtype {rgb.dtype}')
    return _image(rgb, header, 'rgb8', np.uint8)


def float_to_image(arr: np.ndarray, header: Header) -> Image:
    """Encode a H×W or H×W×C (C = 1..4) float array as a ``32FC<C>`` Image.

    Values (including NaN and ±inf) are kept, converted to float32.

    Raises:
        ValueError: bad shape or a non-numeric dtype.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or not 1 <= arr.shape[-1] <= 4:
        raise ValueError(f'expected a H×W or H×W×C array with C in 1..4, got shape {arr.shape}')
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f'expected a numeric array, got dtype {arr.dtype}')
    return _image(arr, header, f'32FC{arr.shape[-1]}', np.float32)


def depth_to_image(depth: np.ndarray, header: Header) -> Image:
    """Encode H×W metric depth as a REP 118 ``32FC1`` Image (metres; NaN/inf kept).

    Raises:
        ValueError: not a H×W array.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be a H×W array, got shape {depth.shape}')
    return float_to_image(depth, header)


def normals_to_image(normals: np.ndarray, header: Header) -> Image:
    """Encode H×W×3 optical-frame normals as a ``32FC3`` Image (x, y, z per pixel).

    Raises:
        ValueError: not a H×W×3 array.
    """
    normals = np.asarray(normals)
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise ValueError(f'normals must be a H×W×3 array, got shape {normals.shape}')
    return float_to_image(normals, header)


def _point_fields(with_rgb: bool) -> list:
    names = ('x', 'y', 'z', 'rgb') if with_rgb else ('x', 'y', 'z')
    offsets = (0, 4, 8, 16)
    return [PointField(name=name, offset=offset, datatype=PointField.FLOAT32, count=1)
            for name, offset in zip(names, offsets)]


def points_to_pointcloud2(points: np.ndarray, header: Header,
                          rgb: Optional[np.ndarray] = None) -> PointCloud2:
    """Encode points as a PointCloud2 in depth_image_proc's (PCL's) layout.

    Fields x, y, z are FLOAT32 at offsets 0, 4, 8 with point_step 16; with ``rgb`` a packed
    FLOAT32 ``rgb`` field (0x00RRGGBB, see :func:`geometry.pack_rgb`) is added at offset 16
    and point_step is 32. Padding bytes are zero. Points are written as given: NaN points
    stay (organized clouds keep their grid) and ``is_dense`` is True only when every
    coordinate is finite.

    Args:
        points: h×w×3 (organized: height = h, width = w) or N×3 (height = 1, width = N)
            float coordinates in metres in ``header.frame_id``.
        header: copied onto the cloud.
        rgb: optional uint8 colours with shape points.shape[:-1] + (3,).

    Returns:
        The PointCloud2.

    Raises:
        ValueError: bad shapes or dtypes.
    """
    points = np.asarray(points)
    if points.ndim not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f'points must be N×3 or h×w×3, got shape {points.shape}')
    if not (np.issubdtype(points.dtype, np.floating) or np.issubdtype(points.dtype, np.integer)):
        raise ValueError(f'points must be numeric, got dtype {points.dtype}')
    height, width = points.shape[:2] if points.ndim == 3 else (1, points.shape[0])
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != points.shape or rgb.dtype != np.uint8:
            raise ValueError(f'rgb must be uint8 with shape {points.shape}, got shape '
                             f'{rgb.shape}, dtype {rgb.dtype}')
    columns = 8 if rgb is not None else 4
    flat = np.ascontiguousarray(points.reshape(-1, 3), dtype=np.float32)
    count = flat.shape[0]
    point_step = 4 * columns
    payload, buffer = _new_payload((count, columns), np.float32)
    kernels = geometry.numba_kernels()
    if kernels is not None:  # one pass: coordinates, colours and the density check
        colours = (np.ascontiguousarray(rgb.reshape(-1, 3)) if rgb is not None
                   else np.zeros((0, 3), dtype=np.uint8))
        dense = bool(kernels.cloud_records_kernel(flat.view(np.uint32), colours,
                                                  buffer.view(np.uint32)))
    else:
        # x, y, z as one 12-byte item per point: one strided copy instead of three.
        xyz = np.ndarray((count,), dtype='V12', buffer=payload, strides=(point_step,))
        xyz[...] = flat.view('V12').reshape(count)
        del xyz
        if rgb is not None:
            buffer[:, 4] = geometry.pack_rgb(rgb.reshape(-1, 3))
        # min and max are NaN or ±inf exactly when some coordinate is (no temporary mask).
        dense = count == 0 or bool(np.isfinite(flat.min()) and np.isfinite(flat.max()))
    del buffer  # release the view before the message takes the payload
    msg = PointCloud2(**_TAKE_PAYLOAD, header=copy_header(header), height=height,
                      width=width, fields=_point_fields(rgb is not None),
                      is_bigendian=_IS_BIGENDIAN,
                      point_step=point_step, row_step=point_step * width, is_dense=dense)
    msg.data = payload
    return msg


def camera_info_for(camera: CameraModel, header: Header, width: int,
                    height: int) -> CameraInfo:
    """Build the CameraInfo that describes an output image of size width×height.

    The camera's delivered image (ROI and binning folded in) is taken as resized to
    width×height (:meth:`CameraModel.scaled_to`): fx' = fx·sx, cx' = (cx + 0.5)·sx − 0.5,
    and likewise for y, in K and P. D, R and the distortion model are kept; binning and ROI
    are zero (the output is a full, unbinned image).

    Args:
        camera: the input camera.
        header: copied onto the CameraInfo.
        width, height: output size in pixels (> 0).

    Raises:
        ValueError: non-positive sizes.
    """
    scaled = camera.scaled_to(width, height)
    return CameraInfo(
        header=copy_header(header), width=scaled.width, height=scaled.height,
        distortion_model=scaled.distortion_model,
        d=scaled.D.astype(np.float64).tolist(),
        k=scaled.K.astype(np.float64).reshape(-1),
        r=scaled.R.astype(np.float64).reshape(-1),
        p=scaled.P.astype(np.float64).reshape(-1),
        binning_x=0, binning_y=0, roi=RegionOfInterest())
