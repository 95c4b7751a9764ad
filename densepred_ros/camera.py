"""Camera models from CameraInfo fields, and lidar projection (numpy only, no ROS imports).

Conventions: pixel (u, v) with u to the right and v down, pixel centres at integer
coordinates (pixel i covers [i - 0.5, i + 0.5)); 3-D points in the camera optical frame
(REP 103: x right, y down, z forward), metres.

Public API:
    CameraModel                 intrinsics, distortion, binning and ROI of one camera.
    transform_points            apply a 4×4 homogeneous transform to N×3 points.
    extrinsic_from_xyz_quat     4×4 transform from a translation and a unit quaternion.
    project_points              lidar points → (uv, z) with z-buffer and see-through filter.
"""

from dataclasses import dataclass, field
from functools import cached_property
import math
from typing import Optional, Sequence, Tuple

import numpy as np

PLUMB_BOB = 'plumb_bob'
RATIONAL_POLYNOMIAL = 'rational_polynomial'
EQUIDISTANT = 'equidistant'
#: Distortion models understood here; '' and 'none' mean "no distortion" (D must be zero).
DISTORTION_MODELS = ('', 'none', PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT)
_MAX_COEFFS = {PLUMB_BOB: 5, RATIONAL_POLYNOMIAL: 8, EQUIDISTANT: 4}


def _matrix(value, shape: Tuple[int, int], name: str) -> np.ndarray:
    """Return `value` as a finite float64 array of `shape` (row-major flat input accepted)."""
    a = np.array(value, dtype=np.float64)
    if a.size != shape[0] * shape[1]:
        raise ValueError(f'{name} must have {shape[0]}x{shape[1]} elements, got shape {a.shape}')
    a = a.reshape(shape)
    if not np.all(np.isfinite(a)):
        raise ValueError(f'{name} has non-finite entries: {a.tolist()}')
    return a


def _as_points(points, name: str) -> np.ndarray:
    """Return `points` as an N×3 float32/float64 array (other dtypes become float64)."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f'{name} must be N×3, got shape {pts.shape}')
    if pts.dtype not in (np.float32, np.float64):
        pts = pts.astype(np.float64)
    return pts


def _check_focal(fx: float, fy: float, name: str) -> None:
    if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0.0 and fy > 0.0):
        raise ValueError(
            f'{name} has invalid focal lengths fx={fx}, fy={fy} (uncalibrated camera?)')


def _rescale_rows(m: np.ndarray, sx: float, ox: float, sy: float, oy: float) -> np.ndarray:
    """Map pixel coordinates of a projection matrix: u' = sx·u + ox, v' = sy·v + oy.

    The rows of `m` (3×3 K or 3×4 P) produce homogeneous (u·w, v·w, w); the affine pixel
    map becomes a row operation, exact for any matrix (skew, Tx, Ty included).
    """
    out = m.copy()
    out[0] = sx * m[0] + ox * m[2]
    out[1] = sy * m[1] + oy * m[2]
    return out


@dataclass(frozen=True)
class CameraModel:
    """A camera as sensor_msgs/CameraInfo describes it, in plain numpy.

    The constructor validates and normalises its inputs (ValueError naming the bad value):
    focal lengths finite and positive, a known distortion model with at most its number of
    coefficients, a ROI inside the image.

    Attributes:
        width, height: image size in pixels with which the camera was calibrated (CameraInfo
            semantics: the full, unbinned sensor resolution when binning/ROI are used).
        K: 3×3 intrinsic matrix of the raw (distorted) image, float64.
        D: distortion coefficients, float64, at most 5 (plumb_bob: k1 k2 p1 p2 k3),
            8 (rational_polynomial: k1 k2 p1 p2 k3 k4 k5 k6) or 4 (equidistant: k1..k4);
            shorter vectors are zero-padded.
        distortion_model: 'plumb_bob', 'rational_polynomial', 'equidistant', or '' / 'none'
            (no distortion).
        R: 3×3 rectification rotation, float64. Stored only: points are expected in the
            frame the chosen projection applies to (R is the identity for monocular cameras).
        P: 3×4 projection matrix of the rectified image, float64 (None: [K | 0]).
        binning_x, binning_y: CameraInfo binning (0 and 1 both mean none).
        roi: (x_offset, y_offset, width, height) of CameraInfo's ROI in full-resolution
            pixels; zeros (or the full image) mean no ROI.
        p_valid: False when P does not describe this image (set by `effective` for a ROI
            of a distorted camera, whose rectified ROI is not the raw ROI); projecting with
            P is then refused.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = ''
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray = None
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple = (0, 0, 0, 0)
    p_valid: bool = True

    def __post_init__(self) -> None:
        """Validate the fields and store them as float64 arrays / plain ints."""
        set_ = object.__setattr__
        width, height = int(self.width), int(self.height)
        if width <= 0 or height <= 0 or width != self.width or height != self.height:
            raise ValueError(
                f'image size must be positive integers, got {self.width}x{self.height}')
        set_(self, 'width', width)
        set_(self, 'height', height)
        K = _matrix(self.K, (3, 3), 'K')
        _check_focal(K[0, 0], K[1, 1], 'K')
        set_(self, 'K', K)
        P = np.hstack([K, np.zeros((3, 1))]) if self.P is None else _matrix(self.P, (3, 4), 'P')
        _check_focal(P[0, 0], P[1, 1], 'P')
        set_(self, 'P', P)
        set_(self, 'R', _matrix(self.R, (3, 3), 'R'))
        model = (self.distortion_model or '').strip()
        if model not in DISTORTION_MODELS:
            raise ValueError(f'unknown distortion model {self.distortion_model!r}; '
                             f'expected one of {DISTORTION_MODELS}')
        D = np.array(self.D if self.D is not None else [], dtype=np.float64).ravel()
        if not np.all(np.isfinite(D)):
            raise ValueError(f'D has non-finite entries: {D.tolist()}')
        if model in ('', 'none'):
            if np.any(D != 0.0):
                raise ValueError(f'distortion model {model!r} with non-zero D {D.tolist()}')
            D = np.zeros(0)
        else:
            n = _MAX_COEFFS[model]
            if D.size > n and np.any(D[n:] != 0.0):
                raise ValueError(f'{model} takes at most {n} coefficients, got D={D.tolist()}')
            D = np.pad(D[:n], (0, n - min(D.size, n)))
        set_(self, 'distortion_model', model)
        set_(self, 'D', D)
        for name in ('binning_x', 'binning_y'):
            b = int(getattr(self, name))
            if b < 0:
                raise ValueError(f'{name} must be >= 0, got {b}')
            set_(self, name, b)
        roi = tuple(int(x) for x in self.roi)
        if len(roi) != 4 or min(roi) < 0:
            raise ValueError(f'roi must be (x_offset, y_offset, width, height) >= 0, got {roi}')
        x0, y0, rw, rh = roi
        if (rw == 0) != (rh == 0) or (rw and (x0 + rw > width or y0 + rh > height)):
            raise ValueError(f'roi {roi} does not fit the {width}x{height} image')
        set_(self, 'roi', roi)

    @staticmethod
    def pinhole(fx: float, fy: float, cx: float, cy: float,
                width: int, height: int) -> 'CameraModel':
        """Build an undistorted, rectified pinhole camera (P = [K | 0]).

        Args:
            fx, fy: focal lengths in pixels.
            cx, cy: principal point in pixels (pixel-centre convention).
            width, height: image size in pixels.
        """
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        P = np.hstack([K, np.zeros((3, 1))])
        return CameraModel(width=int(width), height=int(height), K=K, P=P,
                           D=np.zeros(5), distortion_model='plumb_bob')

    @staticmethod
    def from_camera_info(width: int, height: int, distortion_model: str, d: Sequence[float],
                         k: Sequence[float], r: Sequence[float], p: Sequence[float],
                         binning_x: int = 0, binning_y: int = 0,
                         roi: Optional[Sequence[int]] = None) -> 'CameraModel':
        """Build a model from the fields of a sensor_msgs/CameraInfo message.

        Args:
            width, height: `msg.width`, `msg.height` (pixels).
            distortion_model: `msg.distortion_model`.
            d: `msg.d` (any length the model accepts).
            k: `msg.k`, 9 values row-major.
            r: `msg.r`, 9 values row-major (all zeros is read as the identity).
            p: `msg.p`, 12 values row-major (all zeros is read as [K | 0]).
            binning_x, binning_y: `msg.binning_x`, `msg.binning_y`.
            roi: (x_offset, y_offset, width, height) of `msg.roi`, or None.

        Raises:
            ValueError: for an uncalibrated (zero K) camera or any invalid field.
        """
        R = np.array(r, dtype=np.float64)
        P = np.array(p, dtype=np.float64)
        return CameraModel(
            width=width, height=height, K=k, D=np.asarray(d, dtype=np.float64),
            distortion_model=distortion_model,
            R=np.eye(3) if R.size == 9 and not np.any(R) else R,
            P=None if P.size == 12 and not np.any(P) else P,
            binning_x=binning_x, binning_y=binning_y,
            roi=tuple(roi) if roi is not None else (0, 0, 0, 0))

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return bool(np.any(self.D != 0.0))

    @property
    def has_roi(self) -> bool:
        """True when the ROI is a proper sub-window of the image."""
        x0, y0, rw, rh = self.roi
        return rw != 0 and (x0, y0, rw, rh) != (0, 0, self.width, self.height)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(width, height) in pixels of the image actually delivered (after ROI and binning)."""
        rw, rh = (self.roi[2], self.roi[3]) if self.roi[2] else (self.width, self.height)
        return rw // max(self.binning_x, 1), rh // max(self.binning_y, 1)

    def intrinsics(self, rectified: bool = True) -> Tuple[float, float, float, float]:
        """Return (fx, fy, cx, cy) in pixels of P (rectified) or K (raw image)."""
        m = self.P if rectified else self.K
        return float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2])

    def effective(self) -> 'CameraModel':
        """Return the model of the delivered image, with ROI and binning folded in.

        The ROI offset is subtracted from the principal point of K and P, then binning by
        b maps pixel centres u → (u + 0.5) / b − 0.5 (b full pixels per binned pixel). The
        result has binning 0 and no ROI. For a ROI on a distorted camera the rectified
        image's ROI differs from the raw one: the result has p_valid=False and projecting
        it with P is refused.
        """
        if not self.has_roi and self.binning_x <= 1 and self.binning_y <= 1:
            return self
        x0, y0 = (self.roi[0], self.roi[1]) if self.has_roi else (0, 0)
        bx, by = max(self.binning_x, 1), max(self.binning_y, 1)
        sx, sy = 1.0 / bx, 1.0 / by
        ox, oy = -x0 * sx + 0.5 * sx - 0.5, -y0 * sy + 0.5 * sy - 0.5
        width, height = self.image_size
        return CameraModel(
            width=width, height=height, K=_rescale_rows(self.K, sx, ox, sy, oy), D=self.D,
            distortion_model=self.distortion_model, R=self.R,
            P=_rescale_rows(self.P, sx, ox, sy, oy),
            p_valid=self.p_valid and not (self.has_roi and self.has_distortion))

    def scaled_to(self, width: int, height: int) -> 'CameraModel':
        """Return the model for the delivered image resized to width×height pixels.

        Exact for a resize that maps the image borders onto each other: with
        sx = width / W and sy = height / H (W×H the delivered size, after ROI/binning),
        fx' = sx·fx, cx' = (cx + 0.5)·sx − 0.5, and likewise for y, in both K and P
        (P's Tx/Ty scale with their rows). Distortion coefficients are unchanged (they act
        on normalised coordinates).

        Raises:
            ValueError: for a non-positive target size.
        """
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f'target size must be positive, got {width}x{height}')
        base = self.effective()
        if (width, height) == (base.width, base.height):
            return base
        sx, sy = width / base.width, height / base.height
        ox, oy = 0.5 * sx - 0.5, 0.5 * sy - 0.5
        return CameraModel(
            width=width, height=height, K=_rescale_rows(base.K, sx, ox, sy, oy), D=base.D,
            distortion_model=base.distortion_model, R=base.R,
            P=_rescale_rows(base.P, sx, ox, sy, oy), p_valid=base.p_valid)

    @cached_property
    def _max_radius(self) -> float:
        """Largest normalised radius (raw projection) where the distortion stays monotonic.

        Beyond it the distortion polynomial folds back, and points far outside the field
        of view would land inside the image; they are dropped instead.
        """
        if not self.has_distortion:
            return math.inf
        if self.distortion_model == EQUIDISTANT:
            theta = np.linspace(0.0, math.pi / 2, 4001)[1:]
            radius = np.tan(np.minimum(theta, math.pi / 2 - 1e-6))
        else:
            radius = np.linspace(0.0, 20.0, 8001)[1:]
        mapped = radius * self._radial_factor(radius * radius)
        increasing = np.diff(mapped) > 0.0
        bad = np.flatnonzero(~increasing)
        return float(radius[bad[0]]) if bad.size else math.inf

    def _radial_factor(self, r2: np.ndarray) -> np.ndarray:
        """Radial scale applied to normalised (x, y) at squared radius r2."""
        d = self.D
        if self.distortion_model == EQUIDISTANT:
            r = np.sqrt(r2)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1.0 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3]))))
            with np.errstate(invalid='ignore', divide='ignore'):
                return np.where(r > 1e-12, theta_d / r, 1.0)
        num = 1.0 + r2 * (d[0] + r2 * (d[1] + r2 * d[4]))
        if self.distortion_model == RATIONAL_POLYNOMIAL:
            return num / (1.0 + r2 * (d[5] + r2 * (d[6] + r2 * d[7])))
        return num

    def project(self, points_cam: np.ndarray,
                rectified: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project points into the delivered image (ROI and binning applied), no z-buffer.

        Args:
            points_cam: N×3 float points in the camera optical frame, metres.
            rectified: True projects with P into the rectified image (the points are taken
                in the rectified frame; depth is P's third output, i.e. z plus P's Tz);
                False projects with K and D into the raw, distorted image (depth = z).

        Returns:
            uv: N×2 float64 continuous pixel coordinates (NaN where invalid).
            depth: N float64 depth along the optical axis, metres.
            valid: N bool, True for points in front of the camera (depth > 0) inside the
                distortion model's valid radius. Image bounds are not checked here.

        Raises:
            ValueError: for a bad points array, or a ROI on a distorted camera projected
                with P (its rectified ROI is not the raw ROI).
        """
        pts = _as_points(points_cam, 'points_cam')
        cam = self.effective()
        if rectified and not cam.p_valid:
            raise ValueError('a ROI on a distorted camera cannot be projected with P (the '
                             'rectified ROI differs from the raw ROI); use rectified=False')
        if rectified:
            M = cam.P
            hom = pts @ M[:, :3].T.astype(pts.dtype, copy=False) + M[:, 3]
            depth = hom[:, 2].astype(np.float64)
            with np.errstate(invalid='ignore', divide='ignore'):
                uv = hom[:, :2] / hom[:, 2:3]
            valid = (depth > 0.0) & (pts[:, 2] > 0.0)
            valid &= np.isfinite(uv).all(axis=1)
            uv[~valid] = np.nan
            return uv.astype(np.float64, copy=False), depth, valid
        z = pts[:, 2].astype(np.float64)
        valid = z > 0.0
        with np.errstate(invalid='ignore', divide='ignore'):
            x = pts[:, 0] / z
            y = pts[:, 1] / z
        valid &= np.isfinite(x) & np.isfinite(y)
        x = np.where(valid, x, 0.0)
        y = np.where(valid, y, 0.0)
        if cam.has_distortion:
            r2 = x * x + y * y
            valid &= r2 < cam._max_radius ** 2
            radial = cam._radial_factor(r2)
            if cam.distortion_model == EQUIDISTANT:
                xd, yd = x * radial, y * radial
            else:
                p1, p2 = cam.D[2], cam.D[3]
                xy = x * y
                xd = x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x)
                yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy
        else:
            xd, yd = x, y
        K = cam.K
        uv = np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=1)
        uv[~valid] = np.nan
        return uv, z, valid


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a homogeneous transform: p' = R @ p + t for every row.

    Args:
        points: N×3 points (float32 or float64), metres.
        T: 4×4 homogeneous transform (e.g. T_cam_lidar), last row [0, 0, 0, 1].

    Returns:
        N×3 transformed points, float32 for float32 input, else float64.
    """
    pts = _as_points(points, 'points')
    T = _matrix(T, (4, 4), 'T')
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f'T must be homogeneous (last row 0 0 0 1), got {T[3].tolist()}')
    dtype = np.float32 if pts.dtype == np.float32 else np.float64
    cols = [pts[:, i] for i in range(3)]
    return np.stack(_affine_columns(cols, T[:3].astype(dtype)), axis=1)


def _affine_columns(cols, M: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Return the rows of M @ [x; y; z; 1] as separate 1-D arrays (one per row of M).

    Element-wise multiply-adds on contiguous columns: for N×3 @ 3×3 this beats a BLAS
    matmul, which spends its time on threading and strided access.
    """
    x, y, z = (np.ascontiguousarray(c) for c in cols)
    out = []
    for row in M:
        o = x * row[0]
        o += y * row[1]
        o += z * row[2]
        o += row[3]
        out.append(o)
    return tuple(out)


def extrinsic_from_xyz_quat(x: float, y: float, z: float,
                            qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Build a 4×4 float64 transform from a translation (metres) and a quaternion.

    The quaternion (ROS order x, y, z, w) is normalised; it must have a finite,
    non-zero norm. With the tf convention, a transform from frame A (child) to frame B
    (parent) gives T_B_A, mapping points in A into B.
    """
    q = np.array([qx, qy, qz, qw], dtype=np.float64)
    t = np.array([x, y, z], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or norm < 1e-9:
        raise ValueError(f'invalid pose xyz={t.tolist()} quaternion xyzw={q.tolist()}')
    qx, qy, qz, qw = q / norm
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ]
    T[:3, 3] = t
    return T


def xyz_quat_from_extrinsic(T: np.ndarray) -> list:
    """Return [x, y, z, qx, qy, qz, qw] of a 4×4 rigid transform (inverse of the above).

    This is the form of the node's `alignment.extrinsic` parameter. The quaternion is
    computed with Shepperd's method (pivot on the largest of w², x², y², z²).
    """
    m = np.asarray(T, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f'expected a finite 4×4 transform, got shape {m.shape}')
    r = m[:3, :3]
    squares = np.array([1 + r[0, 0] + r[1, 1] + r[2, 2], 1 + r[0, 0] - r[1, 1] - r[2, 2],
                        1 - r[0, 0] + r[1, 1] - r[2, 2], 1 - r[0, 0] - r[1, 1] + r[2, 2]])
    i = int(np.argmax(squares))
    s = 2.0 * math.sqrt(squares[i])
    if i == 0:
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif i == 1:
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif i == 2:
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    return [float(v) for v in m[:3, 3]] + [float(v) for v in q]


def project_points(points_cam: np.ndarray, camera: CameraModel, *, rectified: bool = True,
                   z_min: float = 0.1, z_max: float = math.inf, window: int = 7,
                   min_gap: float = 1.5, rel_gap: float = 0.15
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Project points into the image, keep the nearest per pixel, drop see-through points.

    Steps: points with depth outside (z_min, z_max) or behind the camera are dropped;
    the rest are projected (with P when `rectified`, else K and D) and rounded to the
    nearest pixel centre; points outside the image are dropped; a z-buffer keeps the
    nearest point of each pixel; finally a point is dropped as "seen through" a nearer
    object (lidar/camera parallax) when its depth exceeds the nearest depth within the
    window×window pixels around it by more than max(min_gap, rel_gap · z).

    Args:
        points_cam: N×3 float32/float64 points in the camera optical frame, metres (use
            `transform_points(points_lidar, T_cam_lidar)` first).
        camera: the camera model of the target image; binning/ROI are applied. For a
            prediction at another resolution pass `camera.scaled_to(w, h)`.
        rectified: project with P into the rectified image (True) or with K + D into the
            raw image (False).
        z_min, z_max: accepted depth range, metres.
        window: odd side of the see-through window in pixels of the target image;
            1 or 0 disables the filter.
        min_gap, rel_gap: a point at depth z is dropped when
            z - (nearest depth in its window) > max(min_gap, rel_gap · z); metres and a
            fraction of z.

    Returns:
        uv: M×2 int32 pixel coordinates (column u, row v) of the kept points, one per pixel,
            sorted by row-major pixel index.
        z: M float32 depths of those points along the optical axis, metres.
    """
    if window not in (0, 1) and (window < 1 or window % 2 == 0):
        raise ValueError(f'window must be an odd integer >= 1 (or 0), got {window}')
    if not (min_gap >= 0.0 and rel_gap >= 0.0 and 0.0 <= z_min < z_max):
        raise ValueError(f'invalid filter parameters min_gap={min_gap}, rel_gap={rel_gap}, '
                         f'z_min={z_min}, z_max={z_max}')
    pts = _as_points(points_cam, 'points_cam')
    cam = camera.effective()
    if rectified and not cam.p_valid:
        raise ValueError('a ROI on a distorted camera cannot be projected with P (the '
                         'rectified ROI differs from the raw ROI); use rectified=False')
    width, height = cam.width, cam.height
    kernels = _numba_kernels() if rectified else None
    if kernels is not None:
        dtype = pts.dtype.type
        lin, d = np.empty(len(pts), dtype=np.int64), np.empty(len(pts), dtype=np.float32)
        count = kernels.pixel_candidates_kernel(
            pts, cam.P.astype(pts.dtype), dtype(z_min), dtype(z_max), dtype(0.5), width,
            height, lin, d)
        lin, d = lin[:count], d[:count]
    else:
        u, v, depth = _pixel_candidates(cam, pts, rectified, z_min, z_max)
        inside = (u >= 0.0) & (u < width) & (v >= 0.0) & (v < height)
        lin = (np.compress(inside, v).astype(np.int64) * width
               + np.compress(inside, u).astype(np.int64))
        d = np.compress(inside, depth).astype(np.float32)
    # One sort of a combined key orders by pixel, then depth: positive float32 bit
    # patterns sort like the floats, so the first entry of each pixel is its nearest point.
    key = (lin << 31) | d.view(np.int32).astype(np.int64)
    key.sort()
    lin = key >> 31
    d = (key & 0x7FFFFFFF).astype(np.int32).view(np.float32)
    first = np.ones(lin.size, dtype=bool)
    first[1:] = lin[1:] != lin[:-1]
    lin, d = lin[first], d[first]
    if window > 1 and lin.size:
        keep = _not_seen_through(lin, d, width, height, window // 2,
                                 np.float32(min_gap), np.float32(rel_gap))
        lin, d = lin[keep], d[keep]
    uv_out = np.empty((lin.size, 2), dtype=np.int32)
    uv_out[:, 1], uv_out[:, 0] = np.divmod(lin, width)
    return uv_out, d


def _numba_kernels():
    """Return geometry's numba kernels or None (imported here late: geometry imports us)."""
    from densepred_ros.geometry import numba_kernels
    return numba_kernels()


def _box_min(padded: np.ndarray, side: int) -> np.ndarray:
    """Minimum over side×side windows of an image padded by side // 2 on every edge.

    Returns the unpadded-size result; separable, O(log side) passes per axis.
    """
    out = padded
    for axis in (1, 0):
        n = out.shape[axis] - side + 1
        span = 1
        while 2 * span <= side:
            out = np.minimum(_take(out, 0, out.shape[axis] - span, axis),
                             _take(out, span, out.shape[axis], axis))
            span *= 2
        if span < side:
            rest = side - span
            out = np.minimum(_take(out, 0, n, axis), _take(out, rest, rest + n, axis))
    return out


def _take(a: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    """Slice a[start:stop] along axis 0 or 1."""
    return a[start:stop] if axis == 0 else a[:, start:stop]


def _pixel_candidates(cam: CameraModel, pts: np.ndarray, rectified: bool, z_min: float,
                      z_max: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return u + 0.5, v + 0.5 and depth of the points with depth in (z_min, z_max).

    Image bounds are not applied; floor(u + 0.5) is the pixel column. The rectified path
    stays in the points' dtype (float32 for lidar clouds) for speed.
    """
    zc = pts[:, 2]
    front = (zc > z_min) & (zc < z_max)
    if rectified:
        cols = [np.compress(front, pts[:, i]) for i in range(3)]
        hu, hv, w = _affine_columns(cols, cam.P.astype(pts.dtype))
        with np.errstate(invalid='ignore', divide='ignore'):
            ok = (w > z_min) & (w < z_max)
            hu, hv, w = (np.compress(ok, a) for a in (hu, hv, w))
            hu /= w
            hv /= w
        hu += 0.5
        hv += 0.5
        return hu, hv, w
    pts = np.compress(front, pts, axis=0)
    uv, depth, valid = cam.project(pts, rectified=False)
    return (np.compress(valid, uv[:, 0]) + 0.5, np.compress(valid, uv[:, 1]) + 0.5,
            np.compress(valid, depth))


def _not_seen_through(lin: np.ndarray, d: np.ndarray, width: int, height: int, r: int,
                      min_gap: np.float32, rel_gap: np.float32) -> np.ndarray:
    """Return a keep mask: False for points far behind the nearest point of their window.

    The window is (2r+1)×(2r+1) pixels centred on each point. A coarse pass (minimum over
    the 3×3 blocks of r×r cells around the point's cell, a superset of the window) clears
    most points cheaply, since a smaller minimum can only make the gap larger; the few
    suspects are checked exactly against a dense z-buffer.
    """
    v, u = np.divmod(lin, width)
    threshold = np.maximum(min_gap, rel_gap * d)
    c = r
    hc, wc = -(-height // c) + 2, -(-width // c) + 2
    coarse = np.full(hc * wc, np.inf, dtype=np.float32)
    cell_v, cell_u = v // c + 1, u // c + 1
    np.minimum.at(coarse, cell_v * wc + cell_u, d)
    grid = coarse.reshape(hc, wc)
    grid = np.minimum(np.minimum(grid[:, :-2], grid[:, 1:-1]), grid[:, 2:])
    grid = np.minimum(np.minimum(grid[:-2], grid[1:-1]), grid[2:])
    near = grid.ravel()[(cell_v - 1) * (wc - 2) + cell_u - 1]
    keep = d - near <= threshold
    suspect = np.flatnonzero(~keep)
    if suspect.size:
        wp = width + 2 * r
        dense = np.full((height + 2 * r, wp), np.inf, dtype=np.float32)
        dense.ravel()[(v + r) * wp + u + r] = d
        side = 2 * r + 1
        if suspect.size * side * side > dense.size:
            near_exact = _box_min(dense, side)[v[suspect], u[suspect]]
        else:
            dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
            centre = (v[suspect] + r) * wp + u[suspect] + r
            near_exact = dense.ravel()[centre[:, None] + (dy * wp + dx).ravel()].min(axis=1)
        keep[suspect] = d[suspect] - near_exact <= threshold[suspect]
    return keep
