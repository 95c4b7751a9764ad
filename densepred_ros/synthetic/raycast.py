"""Vectorised nearest-hit ray casting over a grid of rays, with tile culling.

The ray grid (an image's pixels, or a lidar's beams × azimuths) is cut into tiles. Each
tile gets a bounding cone of its ray directions; a primitive is intersected only with
the rays of the tiles whose cone meets its bounding sphere. Every primitive is then
tested against all of its candidate rays in one numpy call, and the nearest hit is kept.
"""

from typing import Sequence, Tuple

from densepred_ros.synthetic.primitives import Plane
import numpy as np


class Tiling:
    """Reshape an H×W grid into T tiles of S = th×tw cells, padding by edge replication.

    Attributes:
        shape: (H, W) of the grid.
        tile: (th, tw) tile size in cells.
    """

    def __init__(self, shape: Tuple[int, int], tile: Tuple[int, int]) -> None:
        """Plan the tiling of an H×W grid into th×tw tiles."""
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile = (max(1, min(int(tile[0]), self.shape[0])),
                     max(1, min(int(tile[1]), self.shape[1])))
        self._blocks = (-(-self.shape[0] // self.tile[0]), -(-self.shape[1] // self.tile[1]))

    def split(self, grid: np.ndarray) -> np.ndarray:
        """Return an H×W×... array as T×S×... tiles (a copy)."""
        (h, w), (th, tw), (bh, bw) = self.shape, self.tile, self._blocks
        pad = [(0, bh * th - h), (0, bw * tw - w)] + [(0, 0)] * (grid.ndim - 2)
        padded = np.pad(grid, pad, mode='edge') if any(p[1] for p in pad[:2]) else grid
        extra = grid.shape[2:]
        blocks = padded.reshape((bh, th, bw, tw) + extra).swapaxes(1, 2)
        return np.ascontiguousarray(blocks).reshape((bh * bw, th * tw) + extra)

    def merge(self, tiles: np.ndarray) -> np.ndarray:
        """Invert ``split``: T×S×... tiles back to an H×W×... grid."""
        (h, w), (th, tw), (bh, bw) = self.shape, self.tile, self._blocks
        extra = tiles.shape[2:]
        grid = tiles.reshape((bh, bw, th, tw) + extra).swapaxes(1, 2)
        return grid.reshape((bh * th, bw * tw) + extra)[:h, :w]


def bounding_spheres(primitives: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Return the P×3 centres and P radii (+inf for unbounded) of the primitives."""
    centers = np.zeros((len(primitives), 3))
    radii = np.zeros(len(primitives))
    for k, primitive in enumerate(primitives):
        centers[k], radii[k] = primitive.bounding_sphere()
    return centers, radii


def _cone_candidates(origin: np.ndarray, tiles: np.ndarray, centers: np.ndarray,
                     radii: np.ndarray, max_distance: float, plane_normals: dict) -> np.ndarray:
    """Return a T×P mask, True where a ray of tile t may hit primitive p."""
    axes = tiles.sum(axis=1)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    cos_half = np.einsum('tsi,ti->ts', tiles, axes).min(axis=1)
    half_angle = np.arccos(np.clip(cos_half, -1.0, 1.0))
    to_center = centers - origin
    distance = np.linalg.norm(to_center, axis=1)
    inside = ~np.isfinite(radii) | (distance <= radii * (1.0 + 1e-9))
    with np.errstate(divide='ignore', invalid='ignore'):
        direction = to_center / distance[:, None]
        alpha = np.arcsin(np.clip(radii / distance, 0.0, 1.0))
    direction[inside] = 0.0
    gamma = np.arccos(np.clip(axes @ direction.T, -1.0, 1.0))
    mask = gamma <= half_angle[:, None] + alpha[None, :] + 1e-6
    mask[:, inside] = True
    mask[:, np.isfinite(radii) & (distance - radii > max_distance)] = False
    for k, normal in plane_normals.items():
        # A plane is hit only by rays heading towards it: the cone must reach its side.
        towards = -np.sign(normal @ (origin - centers[k])) * normal
        mask[:, k] &= axes @ towards > -np.sin(np.minimum(half_angle, 0.5 * np.pi)) - 1e-9
    return mask


def _nearest_possible(primitive, origin: np.ndarray) -> float:
    """Lower bound of the distance from ``origin`` to any point of the primitive."""
    center, radius = primitive.bounding_sphere()
    if np.isfinite(radius):
        return max(0.0, float(np.linalg.norm(center - origin)) - radius)
    normal = getattr(primitive, 'normal', None)
    if normal is None:
        return 0.0
    return abs(float(normal @ (origin - center)))


def cast(primitives: Sequence, origin: np.ndarray, directions: np.ndarray,
         tile: Tuple[int, int] = (16, 16),
         max_distance: float = np.inf) -> Tuple[np.ndarray, np.ndarray]:
    """Find the nearest hit of every ray of a grid sharing one origin.

    Args:
        primitives: the scene's primitives (see ``primitives.py``).
        origin: (3,) ray origin in the world, metres.
        directions: H×W×3 unit ray directions in the world.
        tile: tile size in grid cells used for culling.
        max_distance: primitives entirely farther than this (metres) are skipped; rays
            may still report hits beyond it.

    Returns:
        (distance, index): H×W float64 distances along the rays (+inf where nothing is
        hit) and H×W int32 indices into ``primitives`` (-1 where nothing is hit).
    """
    tiling = Tiling(directions.shape[:2], tile)
    tiles = tiling.split(directions)
    best = np.full(tiles.shape[:2], np.inf)
    index = np.full(tiles.shape[:2], -1, dtype=np.int32)
    if not len(primitives):
        return tiling.merge(best), tiling.merge(index)
    centers, radii = bounding_spheres(primitives)
    plane_normals = {k: p.normal for k, p in enumerate(primitives) if isinstance(p, Plane)}
    candidates = _cone_candidates(origin, tiles, centers, radii, max_distance, plane_normals)
    # Nearest first, so that tiles already closer than a primitive's bound can skip it.
    nearest = np.array([_nearest_possible(p, origin) for p in primitives])
    farthest = np.full(len(tiles), np.inf)
    for k in np.argsort(nearest, kind='stable'):
        selected = candidates[:, k] & (farthest > nearest[k])
        if selected.all():
            rows = slice(None)
        else:
            rows = np.flatnonzero(selected)
            if not len(rows):
                continue
        t = primitives[k].intersect(origin, tiles[rows])
        current = best[rows]
        closer = t < current
        if closer.any():
            current = np.where(closer, t, current)
            best[rows] = current
            index[rows] = np.where(closer, k, index[rows])
            farthest[rows] = current.max(axis=1)
    return tiling.merge(best), tiling.merge(index)


def cast_shadows(primitives: Sequence, points: np.ndarray, valid: np.ndarray,
                 direction: np.ndarray, tile: Tuple[int, int] = (8, 8)) -> np.ndarray:
    """Test which points of a grid see a directional light.

    All shadow rays are parallel, so culling works in the plane perpendicular to the light:
    an occluder can only block a tile whose points' projections come within its bounding
    radius, and only if it is not entirely below (away from the light) all of them.

    Args:
        primitives: the occluders (only those with ``casts_shadow`` are used).
        points: H×W×3 ray origins in the world (surface points nudged off the surface).
        valid: H×W bool, which points to test.
        direction: (3,) unit vector towards the light.
        tile: tile size in grid cells used for culling.

    Returns:
        H×W bool, True where a valid point's light ray is blocked.
    """
    occluders = [p for p in primitives if p.casts_shadow]
    tiling = Tiling(points.shape[:2], tile)
    origins = tiling.split(points)
    mask = tiling.split(valid)
    blocked = np.zeros(mask.shape, dtype=bool)
    if not occluders or not mask.any():
        return tiling.merge(blocked)
    # An orthonormal basis (e1, e2, light).
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(direction, e1)
    basis = (e1, e2, direction)
    low, high = [], []
    for axis in basis:
        coordinate = origins @ axis
        low.append(np.where(mask, coordinate, np.inf).min(axis=1))
        high.append(np.where(mask, coordinate, -np.inf).max(axis=1))
    centers, radii = bounding_spheres(occluders)
    projected = [centers @ axis for axis in basis]
    candidates = ((projected[0] + radii >= low[0][:, None])
                  & (projected[0] - radii <= high[0][:, None])
                  & (projected[1] + radii >= low[1][:, None])
                  & (projected[1] - radii <= high[1][:, None])
                  & (projected[2] + radii >= low[2][:, None]))
    # Large occluders first: they settle whole tiles, which later ones then skip.
    open_tiles = mask.any(axis=1)
    for k in sorted(np.flatnonzero(candidates.any(axis=0)), key=lambda k: -radii[k]):
        rows = np.flatnonzero(candidates[:, k] & open_tiles)
        if not len(rows):
            continue
        t = occluders[k].intersect(origins[rows], direction)
        now = blocked[rows] | (np.isfinite(t) & mask[rows])
        blocked[rows] = now
        open_tiles[rows] = (mask[rows] & ~now).any(axis=1)
    return tiling.merge(blocked)
