"""Scenes: primitives, light and sky, and a rig trajectory; indoor rooms and outdoor streets.

World frame: metres, z up, ground/floor at z = 0. Rooms are centred on the origin; streets
run along world +x with the road centred on y = 0 and traffic on the right (ego lane at
y < 0). Everything is drawn from ``numpy.random.default_rng`` seeded by the caller, so a
seed gives the same scene on every machine.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

from densepred_ros.synthetic.poses import body_pose
from densepred_ros.synthetic.primitives import (
    Box, Cylinder, Plane, PRIMITIVE_TYPES, Sphere, yaw_rotation)
from densepred_ros.synthetic.textures import Material
import numpy as np

KINDS = ('indoor', 'outdoor')
DEFAULT_STREET_LENGTH = 150.0


@dataclass(frozen=True)
class RigTrajectory:
    """Smooth motion of the sensor rig (body frame: x forward, y left, z up).

    'drive': forward at ``speed`` along ``heading`` with a gentle lateral sway of
    ``sway`` metres (period ``period``), the rig yawing along its path.
    'walk': back and forth along ``heading`` over ``path_length`` metres (peak speed
    ``speed``), panning by ±``pan`` radians with period ``period``.

    Attributes:
        mode: 'drive' or 'walk'.
        start: (x, y, z) rig position at t = 0, metres.
        heading: direction of travel, radians from world +x (counter-clockwise).
        speed: metres per second (> 0).
        pitch: constant rig pitch, radians (> 0 looks down).
        pan: pan amplitude, radians ('walk').
        sway: lateral sway amplitude, metres ('drive').
        period: pan/sway period, seconds (> 0).
        path_length: length of the walked segment, metres ('walk').
    """

    mode: str
    start: Tuple[float, float, float]
    heading: float = 0.0
    speed: float = 1.0
    pitch: float = 0.0
    pan: float = 0.0
    sway: float = 0.0
    period: float = 8.0
    path_length: float = 1.0

    def __post_init__(self) -> None:
        """Validate the fields."""
        if self.mode not in ('drive', 'walk'):
            raise ValueError(f"RigTrajectory.mode must be 'drive' or 'walk', got {self.mode!r}")
        for name in ('speed', 'period', 'path_length'):
            if not getattr(self, name) > 0:
                raise ValueError(f'RigTrajectory.{name} must be positive, '
                                 f'got {getattr(self, name)!r}')

    def pose(self, t: float) -> np.ndarray:
        """Return T_world_rig (4×4 float64) at time ``t`` seconds."""
        forward = np.array([np.cos(self.heading), np.sin(self.heading), 0.0])
        left = np.array([-forward[1], forward[0], 0.0])
        omega = 2.0 * np.pi / self.period
        if self.mode == 'drive':
            lateral = self.sway * np.sin(omega * t)
            lateral_rate = self.sway * omega * np.cos(omega * t)
            position = np.asarray(self.start) + self.speed * t * forward + lateral * left
            yaw = self.heading + np.arctan2(lateral_rate, self.speed)
        else:
            rate = 2.0 * self.speed / self.path_length
            travelled = 0.5 * self.path_length * (1.0 - np.cos(rate * t))
            position = np.asarray(self.start) + travelled * forward
            yaw = self.heading + self.pan * np.sin(omega * t)
        return body_pose(position, yaw, self.pitch)


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything needed to render a scene.

    Attributes:
        primitives: tuple of Plane, Box, Sphere and Cylinder.
        light_direction: (3,) unit vector towards the directional light (world frame).
        ambient: ambient light fraction in [0, 1].
        sky_horizon, sky_zenith: (3,) RGB in [0, 1] of the sky gradient (rays hitting nothing).
        fog_distance: metres; colours fade towards the horizon colour as exp(-d / fog);
            +inf for none.
        shadows: whether the directional light casts shadows.
        trajectory: the rig's motion for sequences (None: static scene only).
        kind: 'indoor', 'outdoor' or 'custom'.
        seed: the seed it was generated from (None for hand-built scenes).
    """

    primitives: tuple
    light_direction: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.2, 0.9]))
    ambient: float = 0.35
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([0.80, 0.86, 0.93]))
    sky_zenith: np.ndarray = field(default_factory=lambda: np.array([0.33, 0.52, 0.82]))
    fog_distance: float = np.inf
    shadows: bool = True
    trajectory: Optional[RigTrajectory] = None
    kind: str = 'custom'
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        """Validate and normalise the fields."""
        primitives = tuple(self.primitives)
        for p in primitives:
            if not isinstance(p, PRIMITIVE_TYPES):
                raise ValueError(f'Scene.primitives must hold Plane, Box, Sphere or Cylinder, '
                                 f'got {type(p).__name__}')
        object.__setattr__(self, 'primitives', primitives)
        light = np.asarray(self.light_direction, dtype=np.float64)
        if light.shape != (3,) or not np.linalg.norm(light) > 0:
            raise ValueError(f'Scene.light_direction must be a non-zero 3-vector, '
                             f'got {self.light_direction!r}')
        object.__setattr__(self, 'light_direction', light / np.linalg.norm(light))
        if not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f'Scene.ambient must be in [0, 1], got {self.ambient!r}')
        if not self.fog_distance > 0:
            raise ValueError(f'Scene.fog_distance must be positive, got {self.fog_distance!r}')
        for name in ('sky_horizon', 'sky_zenith'):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))


def make_scene(seed: int, kind: str = 'indoor', length: Optional[float] = None) -> Scene:
    """Generate a random scene reproducibly.

    Args:
        seed: non-negative integer seed; the same seed gives the same scene.
        kind: 'indoor' (a furnished room, no sky) or 'outdoor' (a street with sky).
        length: outdoor only: how far the street extends ahead of the start along +x,
            metres (default 150). Longer streets extend the same street: the first
            stretch is identical for every length.

    Returns:
        the Scene, including a rig trajectory ('walk' indoors, 'drive' outdoors).
    """
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    if kind == 'indoor':
        if length is not None:
            raise ValueError(f'length applies to outdoor scenes only, got {length!r}')
        return _indoor_scene(int(seed))
    length = DEFAULT_STREET_LENGTH if length is None else float(length)
    if not 10.0 <= length <= 5000.0:
        raise ValueError(f'length must be in [10, 5000] metres, got {length!r}')
    return _outdoor_scene(int(seed), length)


def _stream(seed: int, name: str) -> np.random.Generator:
    """Return an independent generator per scene part, so parts do not shift each other."""
    return np.random.default_rng([seed, sum(ord(c) * 31 ** i for i, c in enumerate(name))])


def _color(rng: np.random.Generator, base: Tuple[float, float, float],
           spread: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(base) + rng.uniform(-spread, spread, 3), 0.0, 1.0)


def _material(rng: np.random.Generator, patterns: Tuple[str, ...], palette: Tuple,
              scale: Tuple[float, float], axis: Optional[int] = None) -> Material:
    """Draw a material: a pattern, two colours from a palette, a scale and an offset."""
    a, b = rng.choice(len(palette), 2, replace=len(palette) < 2)
    return Material(pattern=str(rng.choice(patterns)), color_a=_color(rng, palette[a]),
                    color_b=_color(rng, palette[b]), scale=float(rng.uniform(*scale)),
                    axis=int(rng.integers(3)) if axis is None else axis,
                    offset=rng.uniform(0.0, 10.0, 3), seed=int(rng.integers(2 ** 31)))


_WOODS = ((0.55, 0.36, 0.20), (0.72, 0.52, 0.32), (0.40, 0.25, 0.14), (0.80, 0.65, 0.45))
_WALLS = ((0.86, 0.83, 0.76), (0.70, 0.78, 0.82), (0.82, 0.72, 0.62), (0.62, 0.70, 0.58),
          (0.90, 0.90, 0.88))
_FURNITURE = ((0.75, 0.20, 0.18), (0.20, 0.35, 0.70), (0.25, 0.55, 0.30), (0.85, 0.75, 0.25),
              (0.35, 0.32, 0.30), (0.85, 0.85, 0.82), (0.55, 0.36, 0.20), (0.50, 0.30, 0.55))
# Footprint and height ranges (metres): (min x, min y, min z), (max x, max y, max z).
_FURNITURE_SIZES = {'table': ((0.8, 0.6, 0.7), (1.6, 1.0, 0.8)),
                    'cabinet': ((0.4, 0.4, 1.0), (1.0, 0.6, 2.0)),
                    'sofa': ((1.4, 0.8, 0.4), (2.0, 1.0, 0.7)),
                    'crate': ((0.3, 0.3, 0.3), (0.7, 0.7, 0.7))}
_FACADES = ((0.72, 0.42, 0.30), (0.80, 0.76, 0.66), (0.55, 0.55, 0.58), (0.85, 0.80, 0.60),
            (0.60, 0.48, 0.40), (0.90, 0.88, 0.84))
_GLASS = ((0.18, 0.24, 0.32), (0.30, 0.38, 0.45), (0.12, 0.14, 0.18))
_CARS = ((0.70, 0.10, 0.10), (0.10, 0.20, 0.55), (0.85, 0.85, 0.85), (0.15, 0.15, 0.15),
         (0.55, 0.58, 0.60), (0.90, 0.75, 0.15), (0.20, 0.45, 0.30))


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in the xy plane from N×2 points to the segment a-b."""
    ab = b - a
    s = np.clip((points - a) @ ab / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + s[:, None] * ab), axis=1)


class _Placer:
    """Rejection sampling of object footprints (circles in xy) inside a room."""

    def __init__(self, half_x: float, half_y: float,
                 keep_out: Tuple[np.ndarray, np.ndarray, float]) -> None:
        self.half = np.array([half_x, half_y])
        self.keep_out = keep_out
        self.taken = []

    def place(self, rng: np.random.Generator, radius: float,
              x_range: Optional[Tuple[float, float]] = None) -> Optional[np.ndarray]:
        limit = self.half - radius - 0.05
        if np.any(limit <= 0):
            return None
        a, b, clearance = self.keep_out
        for _ in range(60):
            xy = rng.uniform(-limit, limit)
            if x_range is not None:
                xy[0] = rng.uniform(max(x_range[0], -limit[0]), min(x_range[1], limit[0]))
            if _segment_distance(xy[None], a, b)[0] < radius + clearance:
                continue
            if any(np.linalg.norm(xy - c) < radius + r + 0.1 for c, r in self.taken):
                continue
            self.taken.append((xy, radius))
            return xy
        return None


def _indoor_scene(seed: int) -> Scene:
    rng = _stream(seed, 'room')
    size_x, size_y, height = rng.uniform(5.5, 8.5), rng.uniform(4.5, 7.0), rng.uniform(2.5, 3.1)
    hx, hy = 0.5 * size_x, 0.5 * size_y
    floor = _material(rng, ('wood', 'tiles', 'checker'), _WOODS + _WALLS, (0.3, 0.8), axis=2)
    if floor.pattern == 'wood':
        floor = Material('wood', floor.color_a, floor.color_b, floor.scale, axis=0,
                         offset=floor.offset, seed=floor.seed)
    ceiling = _material(rng, ('noise',), _WALLS, (0.3, 0.8))
    primitives = [Plane((0, 0, 0), (0, 0, 1), floor), Plane((0, 0, height), (0, 0, -1), ceiling)]
    for point, normal in (((hx, 0, 0), (-1, 0, 0)), ((-hx, 0, 0), (1, 0, 0)),
                          ((0, hy, 0), (0, -1, 0)), ((0, -hy, 0), (0, 1, 0))):
        wall = _material(rng, ('stripes', 'noise', 'bricks', 'checker'), _WALLS, (0.3, 1.2),
                         axis=int(rng.choice([2, 0 if normal[0] == 0 else 1])))
        primitives.append(Plane(point, normal, wall))

    # The rig walks from near the -x wall towards +x; furniture keeps clear of that path.
    cam_height = rng.uniform(1.2, 1.6)
    start = np.array([-hx + 0.9, rng.uniform(-0.3, 0.3) * hy, cam_height])
    heading = rng.uniform(-0.25, 0.25)
    path_length = rng.uniform(1.2, 1.8)
    trajectory = RigTrajectory('walk', tuple(start), heading=heading,
                               speed=rng.uniform(0.25, 0.45), pitch=rng.uniform(0.05, 0.2),
                               pan=rng.uniform(0.2, 0.4), period=rng.uniform(6.0, 10.0),
                               path_length=path_length)
    forward = np.array([np.cos(heading), np.sin(heading)])
    keep_out = (start[:2] - 0.5 * forward, start[:2] + (path_length + 0.5) * forward, 0.7)
    placer = _Placer(hx, hy, keep_out)
    front = (start[0] + 1.5, hx)

    rng = _stream(seed, 'furniture')
    tables = []
    for i in range(int(rng.integers(5, 9))):
        kind = str(rng.choice(list(_FURNITURE_SIZES)))
        low, high = _FURNITURE_SIZES[kind]
        sx, sy, sz = rng.uniform(low, high)
        xy = placer.place(rng, 0.5 * np.hypot(sx, sy), front if i < 4 else None)
        if xy is None:
            continue
        rotation = yaw_rotation(rng.uniform(-np.pi, np.pi)) if rng.random() < 0.5 else np.eye(3)
        material = _material(rng, ('wood', 'checker', 'stripes', 'noise'), _FURNITURE + _WOODS,
                             (0.1, 0.5))
        primitives.append(Box((xy[0], xy[1], 0.5 * sz), (sx, sy, sz), rotation, material))
        if kind == 'table':
            tables.append((xy, sz, min(sx, sy)))
    for i in range(int(rng.integers(2, 5))):
        material = _material(rng, ('checker', 'stripes', 'noise'), _FURNITURE, (0.08, 0.3))
        if tables and rng.random() < 0.4:
            xy, top, width = tables.pop()
            radius = rng.uniform(0.08, 0.25 * width)
            primitives.append(Sphere((xy[0], xy[1], top + radius), radius, material))
            continue
        radius = rng.uniform(0.15, 0.45)
        xy = placer.place(rng, radius, front if i == 0 else None)
        if xy is not None:
            primitives.append(Sphere((xy[0], xy[1], radius), radius, material))
    for i in range(int(rng.integers(2, 5))):
        radius = rng.uniform(0.06, 0.3)
        xy = placer.place(rng, radius, front if i == 0 else None)
        if xy is None:
            continue
        material = _material(rng, ('wood', 'stripes', 'noise', 'checker'), _FURNITURE + _WOODS,
                             (0.05, 0.3))
        primitives.append(Cylinder((xy[0], xy[1], 0.0), radius,
                                   rng.uniform(0.5, height - 0.3), material))
    # Pictures and doors: thin boxes on the walls.
    for _ in range(int(rng.integers(2, 5))):
        w, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 1.0)
        side = rng.integers(4)
        along = rng.uniform(-0.6, 0.6)
        z = rng.uniform(1.0, height - 0.4 - 0.5 * h)
        center, size = {0: ((hx - 0.02, along * hy, z), (0.04, w, h)),
                        1: ((-hx + 0.02, along * hy, z), (0.04, w, h)),
                        2: ((along * hx, hy - 0.02, z), (w, 0.04, h)),
                        3: ((along * hx, -hy + 0.02, z), (w, 0.04, h))}[int(side)]
        material = _material(rng, ('stripes', 'checker', 'noise', 'wood'), _FURNITURE,
                             (0.05, 0.25))
        primitives.append(Box(center, size, material=material, casts_shadow=False))

    rng = _stream(seed, 'light')
    azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 1.1)
    light = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
             np.sin(elevation))
    return Scene(tuple(primitives), light_direction=light, ambient=rng.uniform(0.35, 0.5),
                 trajectory=trajectory, kind='indoor', seed=seed)


def _car(rng: np.random.Generator, x: float, y: float, yaw: float) -> list:
    """Build a car: a body box and a cabin box, heading ``yaw``, raised on (unseen) wheels."""
    length, width = rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9)
    body_bottom, body_top = 0.3, rng.uniform(0.9, 1.1)
    cabin_top = body_top + rng.uniform(0.4, 0.6)
    rotation = yaw_rotation(yaw)
    paint = Material('noise', _color(rng, _CARS[rng.integers(len(_CARS))], 0.05),
                     _color(rng, _CARS[rng.integers(len(_CARS))], 0.05), scale=2.0,
                     detail=0.1, offset=rng.uniform(0, 10, 3), seed=int(rng.integers(2 ** 31)))
    glass = Material('stripes', _color(rng, _GLASS[0], 0.03), _color(rng, _GLASS[1], 0.03),
                     scale=0.3, axis=2, offset=rng.uniform(0, 10, 3))
    cabin_length = length * rng.uniform(0.45, 0.6)
    cabin_shift = rotation @ np.array([-rng.uniform(0.0, 0.3), 0.0, 0.0])
    return [Box((x, y, 0.5 * (body_bottom + body_top)), (length, width, body_top - body_bottom),
                rotation, paint),
            Box((x + cabin_shift[0], y + cabin_shift[1], 0.5 * (body_top + cabin_top)),
                (cabin_length, width - 0.1, cabin_top - body_top), rotation, glass)]


def _outdoor_scene(seed: int, length: float) -> Scene:
    rng = _stream(seed, 'street')
    road_width = rng.uniform(9.5, 12.0)
    sidewalk = rng.uniform(2.0, 3.5)
    x_min, x_max = -40.0, float(length)
    half_road = 0.5 * road_width
    street = Material('street', _color(rng, (0.33, 0.33, 0.35), 0.04),
                      _color(rng, (0.35, 0.45, 0.25), 0.05), scale=road_width, detail=0.15,
                      offset=np.zeros(3), seed=int(rng.integers(2 ** 31)))
    primitives = [Plane((0, 0, 0), (0, 0, 1), street)]
    paving = Material('tiles', _color(rng, (0.68, 0.66, 0.62), 0.05),
                      _color(rng, (0.45, 0.44, 0.42), 0.03), scale=rng.uniform(0.3, 0.6),
                      axis=2, offset=rng.uniform(0, 10, 3))
    # Sidewalks in 10 m slabs: long thin boxes would defeat the bounding-sphere culling.
    for x in np.arange(x_min, x_max, 10.0):
        for side in (-1, 1):
            primitives.append(Box((x + 5.0, side * (half_road + 0.5 * sidewalk), 0.06),
                                  (10.0, sidewalk, 0.12), material=paving, casts_shadow=False))

    facade_y = half_road + sidewalk
    for side in (-1, 1):
        rng = _stream(seed, f'buildings{side}')
        x = x_min
        while x < x_max:
            width, depth = rng.uniform(8.0, 25.0), rng.uniform(8.0, 15.0)
            height, setback = rng.uniform(5.0, 25.0), rng.uniform(0.0, 2.5)
            rotation = yaw_rotation(rng.uniform(-0.08, 0.08)) if rng.random() < 0.3 else np.eye(3)
            material = _material(rng, ('windows', 'windows', 'bricks'), _FACADES, (2.8, 3.6),
                                 axis=2)
            if material.pattern == 'windows':
                material = Material('windows', material.color_a,
                                    _color(rng, _GLASS[rng.integers(len(_GLASS))], 0.03),
                                    material.scale, 2, offset=material.offset, seed=material.seed)
            else:
                material = Material('bricks', material.color_a, (0.75, 0.73, 0.70),
                                    rng.uniform(0.25, 0.4), 2, offset=material.offset,
                                    seed=material.seed)
            center_y = side * (facade_y + setback + 0.5 * depth + 0.5)
            primitives.append(Box((x + 0.5 * width, center_y, 0.5 * height),
                                  (width, depth, height), rotation, material))
            x += width + (rng.uniform(2.0, 8.0) if rng.random() < 0.4 else 0.2)

    rng_cars = _stream(seed, 'parked')
    for side in (-1, 1):
        x = x_min + rng_cars.uniform(0.0, 10.0)
        while x < x_max:
            yaw = (0.0 if side < 0 else np.pi) + rng_cars.uniform(-0.08, 0.08)
            primitives += _car(rng_cars, x, side * (half_road - 1.05), yaw)
            x += rng_cars.uniform(5.5, 7.0) + (rng_cars.uniform(3, 20) if rng_cars.random() < 0.4
                                               else 0.0)
    # Two 3 m lanes between 2.2 m parking strips; the rig drives in the right lane.
    lane = half_road - 3.7
    rng_cars = _stream(seed, 'traffic')
    x = x_min + rng_cars.uniform(5.0, 20.0)
    while x < x_max:
        primitives += _car(rng_cars, x, lane, np.pi + rng_cars.uniform(-0.03, 0.03))
        x += rng_cars.uniform(15.0, 40.0)

    rng = _stream(seed, 'poles')
    for side in (-1, 1):
        x = x_min + rng.uniform(0.0, 15.0)
        while x < x_max:
            metal = _material(rng, ('noise', 'stripes'), ((0.45, 0.47, 0.5), (0.3, 0.3, 0.32)),
                              (0.3, 1.0), axis=2)
            primitives.append(Cylinder((x, side * (half_road + 0.4), 0.0),
                                       rng.uniform(0.07, 0.15), rng.uniform(4.0, 8.0), metal))
            x += rng.uniform(15.0, 30.0)
    rng = _stream(seed, 'trees')
    for side in (-1, 1):
        x = x_min + rng.uniform(0.0, 12.0)
        while x < x_max:
            trunk_height, crown = rng.uniform(2.2, 3.5), rng.uniform(1.0, 1.8)
            y = side * (half_road + sidewalk - min(0.9, 0.5 * sidewalk))
            bark = Material('wood', _color(rng, (0.35, 0.25, 0.17), 0.05),
                            _color(rng, (0.22, 0.15, 0.10), 0.03), scale=0.05, axis=2,
                            offset=rng.uniform(0, 10, 3))
            leaves = Material('noise', _color(rng, (0.20, 0.45, 0.15), 0.06),
                              _color(rng, (0.40, 0.60, 0.20), 0.06), scale=0.4,
                              offset=rng.uniform(0, 10, 3), seed=int(rng.integers(2 ** 31)))
            primitives.append(Cylinder((x, y, 0.0), rng.uniform(0.15, 0.3),
                                       trunk_height + 0.5 * crown, bark))
            primitives.append(Sphere((x, y, trunk_height + 0.8 * crown), crown, leaves))
            x += rng.uniform(8.0, 20.0)

    rng = _stream(seed, 'sky')
    trajectory = RigTrajectory('drive', (0.0, -lane, rng.uniform(1.5, 1.75)),
                               heading=0.0, speed=rng.uniform(6.0, 12.0),
                               pitch=rng.uniform(0.0, 0.06), sway=rng.uniform(0.1, 0.35),
                               period=rng.uniform(6.0, 12.0))
    azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(0.45, 1.05)
    light = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
             np.sin(elevation))
    return Scene(tuple(primitives), light_direction=light, ambient=rng.uniform(0.3, 0.4),
                 sky_horizon=_color(rng, (0.80, 0.86, 0.93), 0.04),
                 sky_zenith=_color(rng, (0.33, 0.52, 0.82), 0.05),
                 fog_distance=rng.uniform(250.0, 400.0), trajectory=trajectory,
                 kind='outdoor', seed=seed)


def max_speed(kind: str) -> float:
    """Return the highest rig speed (m/s) that ``make_scene`` draws for ``kind``."""
    return 12.0 if kind == 'outdoor' else 0.45
