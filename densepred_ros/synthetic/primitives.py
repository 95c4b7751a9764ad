"""Ray-traceable primitives: planes, boxes, spheres and vertical cylinders (numpy only).

Every primitive works in the world frame (metres, z up) and offers the same four
operations, each vectorised over rays or points:

- ``intersect(origins, directions)``: distance along unit rays to the nearest hit in
  front of the origin (float64, +inf where the ray misses). ``origins`` and
  ``directions`` broadcast against each other: either may be a single (3,) vector or an
  (..., 3) array.
- ``normals(points)``: unit outward surface normals (float64, N×3) at points on the surface.
- ``local(points)``: texture coordinates (float64, N×3) in metres, fixed to the object.
- ``bounding_sphere()``: (centre (3,), radius); radius +inf for unbounded primitives.
"""

from dataclasses import dataclass, field
from typing import Tuple

from densepred_ros.synthetic.textures import Material
import numpy as np

# Hits closer than this (metres) are ignored, so rays leaving a surface do not re-hit it.
T_EPS = 1e-6


def _vec3(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ValueError(f'{name} must be 3 finite numbers, got {value!r}')
    return array


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product over the last axis, with either side possibly a single (3,) vector."""
    if a.ndim == 1:
        return b @ a
    if b.ndim == 1:
        return a @ b
    return np.einsum('...i,...i->...', a, b)


def rotate(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Return ``vectors @ rotation.T`` (each (..., 3) vector rotated by a 3×3 matrix).

    Three matrix-vector products: much faster than OpenBLAS's N×3 by 3×3 product.
    """
    if vectors.ndim == 1:
        return rotation @ vectors
    return np.stack([vectors @ row for row in rotation], axis=-1)


def yaw_rotation(yaw: float) -> np.ndarray:
    """Return the 3×3 rotation about the world z axis by ``yaw`` radians (counter-clockwise)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _nearest_positive(*candidates: np.ndarray) -> np.ndarray:
    """Element-wise smallest candidate distance above T_EPS; +inf where there is none."""
    best = None
    for t in candidates:
        t = np.where(t > T_EPS, t, np.inf)  # also maps NaN to +inf
        best = t if best is None else np.minimum(best, t)
    return best


@dataclass(frozen=True, eq=False)
class Plane:
    """An infinite plane through ``point`` with unit normal ``normal`` (world frame).

    Attributes:
        point: (3,) a point on the plane, metres.
        normal: (3,) normal (normalised on construction; either side is visible).
        material: surface appearance.
        casts_shadow: whether it blocks the directional light.
    """

    point: np.ndarray
    normal: np.ndarray
    material: Material = field(default_factory=Material)
    casts_shadow: bool = False

    def __post_init__(self) -> None:
        """Validate and normalise the fields."""
        object.__setattr__(self, 'point', _vec3(self.point, 'Plane.point'))
        normal = _vec3(self.normal, 'Plane.normal')
        length = np.linalg.norm(normal)
        if length < 1e-12:
            raise ValueError(f'Plane.normal must be non-zero, got {self.normal!r}')
        object.__setattr__(self, 'normal', normal / length)

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Return distances along the unit rays to the plane (+inf for misses)."""
        with np.errstate(divide='ignore', invalid='ignore'):
            t = _dot(self.point - origins, self.normal) / _dot(directions, self.normal)
        return _nearest_positive(np.asarray(t, dtype=np.float64))

    def normals(self, points: np.ndarray) -> np.ndarray:
        """Return the plane normal for each of the N×3 points."""
        return np.broadcast_to(self.normal, points.shape).copy()

    def local(self, points: np.ndarray) -> np.ndarray:
        """Return texture coordinates: world coordinates (so patterns are continuous)."""
        return points

    def bounding_sphere(self) -> Tuple[np.ndarray, float]:
        """Return an unbounded sphere (radius +inf)."""
        return self.point, np.inf


@dataclass(frozen=True, eq=False)
class Box:
    """A solid box, axis-aligned or rotated.

    Attributes:
        center: (3,) centre in the world, metres.
        size: (3,) full edge lengths along the box's own x, y, z axes, metres (> 0).
        rotation: 3×3 rotation taking box axes to world axes (identity = axis-aligned).
        material: surface appearance; texture coordinates start at the box's min corner.
        casts_shadow: whether it blocks the directional light.
    """

    center: np.ndarray
    size: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    material: Material = field(default_factory=Material)
    casts_shadow: bool = True
    half: np.ndarray = field(init=False, repr=False)  # half edge lengths (3,), metres

    def __post_init__(self) -> None:
        """Validate the fields."""
        object.__setattr__(self, 'center', _vec3(self.center, 'Box.center'))
        size = _vec3(self.size, 'Box.size')
        if np.any(size <= 0):
            raise ValueError(f'Box.size must be positive, got {self.size!r}')
        object.__setattr__(self, 'size', size)
        rotation = np.asarray(self.rotation, dtype=np.float64)
        if (rotation.shape != (3, 3)
                or not np.abs(rotation.T @ rotation - np.eye(3)).max() < 1e-9
                or np.linalg.det(rotation) < 0):
            raise ValueError(f'Box.rotation must be a 3×3 rotation matrix, got {self.rotation!r}')
        object.__setattr__(self, 'rotation', rotation)
        object.__setattr__(self, 'half', 0.5 * size)

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Return distances along the unit rays to the box surface (slab test; +inf misses)."""
        relative = origins - self.center
        t_near, t_far = -np.inf, np.inf
        with np.errstate(divide='ignore', invalid='ignore'):
            for axis in range(3):
                o_axis = relative @ self.rotation[:, axis]
                inverse = 1.0 / (directions @ self.rotation[:, axis])
                t1 = (-self.half[axis] - o_axis) * inverse
                t2 = (self.half[axis] - o_axis) * inverse
                # fmin/fmax skip the NaN of a ray lying exactly in a slab's plane.
                t_near = np.fmax(t_near, np.fmin(t1, t2))
                t_far = np.fmin(t_far, np.fmax(t1, t2))
        t = np.where(t_near > T_EPS, t_near, t_far)
        return np.where((t_near <= t_far) & (t > T_EPS), t, np.inf)

    def normals(self, points: np.ndarray) -> np.ndarray:
        """Return outward face normals at N×3 points on the box surface."""
        p_box = rotate(points - self.center, self.rotation.T)
        axis = np.argmax(np.abs(p_box) / self.half, axis=-1)
        rows = np.arange(len(points))
        n_box = np.zeros_like(p_box)
        n_box[rows, axis] = np.where(p_box[rows, axis] >= 0, 1.0, -1.0)
        return rotate(n_box, self.rotation)

    def local(self, points: np.ndarray) -> np.ndarray:
        """Return box-frame coordinates measured from the min corner, metres."""
        return rotate(points - self.center, self.rotation.T) + self.half

    def bounding_sphere(self) -> Tuple[np.ndarray, float]:
        """Return the circumscribed sphere."""
        return self.center, float(np.linalg.norm(self.half))


@dataclass(frozen=True, eq=False)
class Sphere:
    """A solid sphere.

    Attributes:
        center: (3,) centre in the world, metres.
        radius: radius in metres (> 0).
        material: surface appearance; texture coordinates are relative to the centre.
        casts_shadow: whether it blocks the directional light.
    """

    center: np.ndarray
    radius: float
    material: Material = field(default_factory=Material)
    casts_shadow: bool = True

    def __post_init__(self) -> None:
        """Validate the fields."""
        object.__setattr__(self, 'center', _vec3(self.center, 'Sphere.center'))
        if not np.isfinite(self.radius) or self.radius <= 0:
            raise ValueError(f'Sphere.radius must be positive and finite, got {self.radius!r}')
        object.__setattr__(self, 'radius', float(self.radius))

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Return distances along the unit rays to the sphere (+inf for misses)."""
        oc = origins - self.center
        b = _dot(directions, oc)
        c = _dot(oc, oc) - self.radius ** 2
        disc = b * b - c
        root = np.sqrt(np.maximum(disc, 0.0))
        # Numerically stable roots of t² + 2bt + c = 0: q and c / q.
        q = -b - np.copysign(root, b)
        with np.errstate(divide='ignore', invalid='ignore'):
            other = c / q
        t = _nearest_positive(np.minimum(q, other), np.maximum(q, other))
        return np.where(disc >= 0.0, t, np.inf)

    def normals(self, points: np.ndarray) -> np.ndarray:
        """Return outward unit normals at N×3 points on the sphere."""
        n = points - self.center
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def local(self, points: np.ndarray) -> np.ndarray:
        """Return coordinates relative to the centre, metres."""
        return points - self.center

    def bounding_sphere(self) -> Tuple[np.ndarray, float]:
        """Return the sphere itself."""
        return self.center, self.radius


@dataclass(frozen=True, eq=False)
class Cylinder:
    """A solid vertical (world z) cylinder with flat caps.

    Attributes:
        base: (3,) centre of the bottom cap in the world, metres.
        radius: radius in metres (> 0).
        height: height in metres (> 0); the top cap is at ``base[2] + height``.
        material: surface appearance; texture coordinates are relative to ``base``.
        casts_shadow: whether it blocks the directional light.
    """

    base: np.ndarray
    radius: float
    height: float
    material: Material = field(default_factory=Material)
    casts_shadow: bool = True

    def __post_init__(self) -> None:
        """Validate the fields."""
        object.__setattr__(self, 'base', _vec3(self.base, 'Cylinder.base'))
        for name in ('radius', 'height'):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f'Cylinder.{name} must be positive and finite, got {value!r}')
            object.__setattr__(self, name, float(value))

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Return distances along the unit rays to the cylinder surface (+inf for misses)."""
        ox = origins[..., 0] - self.base[0]
        oy = origins[..., 1] - self.base[1]
        oz = origins[..., 2] - self.base[2]
        dx, dy, dz = directions[..., 0], directions[..., 1], directions[..., 2]
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - self.radius ** 2
        disc = b * b - a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        candidates = []
        with np.errstate(divide='ignore', invalid='ignore'):
            for sign in (-1.0, 1.0):
                t = (-b + sign * root) / a
                z = oz + t * dz
                candidates.append(np.where((disc >= 0) & (z >= 0) & (z <= self.height), t,
                                           np.inf))
            for cap in (0.0, self.height):
                t = (cap - oz) / dz
                x, y = ox + t * dx, oy + t * dy
                candidates.append(np.where(x * x + y * y <= self.radius ** 2, t, np.inf))
        return _nearest_positive(*candidates)

    def normals(self, points: np.ndarray) -> np.ndarray:
        """Return outward unit normals at N×3 points on the cylinder (side or caps)."""
        rel = points - self.base
        radial = np.hypot(rel[:, 0], rel[:, 1])
        to_side = np.abs(radial - self.radius)
        to_bottom = np.abs(rel[:, 2])
        to_top = np.abs(rel[:, 2] - self.height)
        n = np.zeros_like(rel)
        side = (to_side <= to_bottom) & (to_side <= to_top)
        n[side, 0] = rel[side, 0] / np.maximum(radial[side], 1e-12)
        n[side, 1] = rel[side, 1] / np.maximum(radial[side], 1e-12)
        n[~side, 2] = np.where(to_top[~side] < to_bottom[~side], 1.0, -1.0)
        return n

    def local(self, points: np.ndarray) -> np.ndarray:
        """Return coordinates relative to the base centre, metres."""
        return points - self.base

    def bounding_sphere(self) -> Tuple[np.ndarray, float]:
        """Return the circumscribed sphere."""
        center = self.base + np.array([0.0, 0.0, 0.5 * self.height])
        return center, float(np.hypot(self.radius, 0.5 * self.height))


PRIMITIVE_TYPES = (Plane, Box, Sphere, Cylinder)
