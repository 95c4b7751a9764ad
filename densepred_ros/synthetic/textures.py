"""Procedural solid textures: checker, tiles, stripes, noise, wood, bricks, windows, street.

Textures are functions of 3-D texture coordinates in metres (each primitive supplies
coordinates fixed to itself), so they need no uv unwrapping and stay put as the camera
moves. Colours are RGB floats in [0, 1] (display space).
"""

from dataclasses import dataclass, field

import numpy as np

PATTERNS = ('plain', 'checker', 'tiles', 'stripes', 'noise', 'wood', 'bricks', 'windows',
            'street')

_HASH_X = np.uint64(0x9E3779B185EBCA87)
_HASH_Y = np.uint64(0xC2B2AE3D27D4EB4F)
_HASH_Z = np.uint64(0x165667B19E3779F9)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_MARKING = np.array([0.92, 0.92, 0.88])
_LIT_WINDOW = np.array([0.95, 0.85, 0.55])
_LATTICE = np.random.default_rng(7).random(1 << 12).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Material:
    """How a surface looks.

    Attributes:
        pattern: one of PATTERNS.
        color_a: (3,) main RGB colour in [0, 1].
        color_b: (3,) second RGB colour in [0, 1] (checker squares, grout, mortar, glass,
            stripes, wood rings, off-road ground).
        scale: pattern period in metres (> 0): checker square, tile, stripe period, noise
            feature size, ring spacing, brick length, storey height, or road width for
            'street'.
        axis: texture axis 0, 1 or 2: stripe direction, wood grain, the normal of a tiled
            surface, or the vertical of bricks and windows.
        detail: amplitude of a fine multiplicative noise added to every pattern (>= 0).
        offset: (3,) metres added to texture coordinates, so that faces do not sit on
            pattern boundaries and equal objects look different.
        seed: seed of the hashed noise lattice.
    """

    pattern: str = 'plain'
    color_a: np.ndarray = field(default_factory=lambda: np.array([0.7, 0.7, 0.7]))
    color_b: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.3, 0.3]))
    scale: float = 1.0
    axis: int = 2
    detail: float = 0.1
    offset: np.ndarray = field(default_factory=lambda: np.array([0.137, 0.271, 0.419]))
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate the fields."""
        if self.pattern not in PATTERNS:
            raise ValueError(f'Material.pattern must be one of {PATTERNS}, got {self.pattern!r}')
        for name in ('color_a', 'color_b'):
            color = np.asarray(getattr(self, name), dtype=np.float64)
            if color.shape != (3,) or np.any(~(color >= 0)) or np.any(color > 1):
                raise ValueError(f'Material.{name} must be 3 values in [0, 1], got {color!r}')
            object.__setattr__(self, name, color)
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f'Material.scale must be positive, got {self.scale!r}')
        if self.axis not in (0, 1, 2):
            raise ValueError(f'Material.axis must be 0, 1 or 2, got {self.axis!r}')
        if not self.detail >= 0:
            raise ValueError(f'Material.detail must be >= 0, got {self.detail!r}')
        offset = np.asarray(self.offset, dtype=np.float64)
        if offset.shape != (3,):
            raise ValueError(f'Material.offset must be 3 numbers, got {self.offset!r}')
        object.__setattr__(self, 'offset', offset)


def hash_cells(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed=0) -> np.ndarray:
    """Hash integer lattice cells to reproducible floats in [0, 1).

    Args:
        ix, iy, iz: int64 arrays (or scalars) that broadcast together (cell indices).
        seed: int or int64 array; selects an independent hash.

    Returns:
        float64 array of the broadcast shape.
    """
    salt = np.asarray(seed, np.int64).view(np.uint64) * _MIX_2
    h = (np.asarray(ix, np.int64).view(np.uint64) * _HASH_X
         ^ np.asarray(iy, np.int64).view(np.uint64) * _HASH_Y
         ^ np.asarray(iz, np.int64).view(np.uint64) * _HASH_Z
         ^ salt)
    h ^= h >> np.uint64(31)
    h *= _MIX_1
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0 ** 53)


def value_noise(q: np.ndarray, seed=0) -> np.ndarray:
    """Smooth lattice value noise in [0, 1] at N×3 points q (lattice spacing 1).

    Args:
        q: N×3 float coordinates.
        seed: int or N int64 array; selects an independent noise field.

    Returns:
        N float64 values.
    """
    q = np.asarray(q, dtype=np.float32)
    cell = np.floor(q)
    frac = q - cell
    cell = cell.astype(np.int32)
    w = frac * frac * (np.float32(3.0) - np.float32(2.0) * frac)
    salt = ((np.asarray(seed, np.int64) * 0x2545F491) & 0x7FFFFFF).astype(np.int32)
    # Lattice values: a table lookup of a multiplicative hash of the cell index (int32
    # arithmetic wraps around, which is what a hash wants); (c + 1) * k = c * k + k.
    px, py, pz = np.int32(0x1E3779B1), np.int32(0x05EBCA77), np.int32(0x42B2AE3D)
    hx0 = cell[:, 0] * px ^ salt
    hy0 = cell[:, 1] * py
    hz0 = cell[:, 2] * pz
    hx = (hx0, (cell[:, 0] + np.int32(1)) * px ^ salt)
    hy = (hy0, hy0 + py)
    hz = (hz0, hz0 + pz)
    mask = np.int32(_LATTICE.size - 1)
    shift = np.int32(13)
    wx, wy, wz = w[:, 0], w[:, 1], w[:, 2]
    along_y = []
    for k in (0, 1):
        along_x = []
        for j in (0, 1):
            h = hy[j] ^ hz[k]
            low = _LATTICE[((hx[0] ^ h) >> shift) & mask]
            high = _LATTICE[((hx[1] ^ h) >> shift) & mask]
            along_x.append(low + wx * (high - low))
        along_y.append(along_x[0] + wy * (along_x[1] - along_x[0]))
    return (along_y[0] + wz * (along_y[1] - along_y[0])).astype(np.float64)


def fractal_noise(q: np.ndarray, octaves: int = 3, seed=0) -> np.ndarray:
    """Sum ``octaves`` octaves of value noise at N×3 points; N values in [0, 1]."""
    total = np.zeros(len(q))
    norm = 0.0
    for octave in range(octaves):
        amplitude = 0.5 ** octave
        total += amplitude * value_noise(q * 2.0 ** octave, np.asarray(seed) + 7919 * octave)
        norm += amplitude
    return total / norm


class _Run:
    """Per-point material parameters of a run of points sharing one pattern."""

    def __init__(self, table: dict, ids: np.ndarray) -> None:
        uniform = bool(np.all(ids == ids[0]))
        for name, values in table.items():
            value = values[ids[0]] if uniform else values[ids]
            setattr(self, name, value)
        self.uniform = uniform
        self.count = len(ids)

    def column(self, values: np.ndarray) -> np.ndarray:
        """Reshape a per-point parameter to N×1 (scalars, for a uniform run, pass through)."""
        return values if self.uniform else values[:, None]

    def pick(self, q: np.ndarray, shift: int) -> np.ndarray:
        """Return the coordinate along axis (axis + shift) % 3 of each point."""
        axis = (self.axis + shift) % 3
        if self.uniform:
            return q[:, int(axis)]
        return q[np.arange(len(q)), axis]

    def mix(self, t: np.ndarray) -> np.ndarray:
        """Blend colour a (t = 0) and colour b (t = 1): N×3."""
        t = t[:, None]
        return self.color_a * (1.0 - t) + self.color_b * t


def _tint(rgb: np.ndarray, cell_hash: np.ndarray, amount: float) -> np.ndarray:
    return rgb * (1.0 + amount * (2.0 * cell_hash - 1.0))[:, None]


def _plain(q: np.ndarray, r: _Run) -> np.ndarray:
    return r.mix(np.zeros(len(q)))


def _checker(q: np.ndarray, r: _Run) -> np.ndarray:
    cell = np.floor(q / r.column(r.scale)).astype(np.int64)
    parity = (cell.sum(axis=1) % 2).astype(np.float64)
    return _tint(r.mix(parity), hash_cells(cell[:, 0], cell[:, 1], cell[:, 2], r.seed), 0.08)


def _tiles(q: np.ndarray, r: _Run) -> np.ndarray:
    ua, ub = r.pick(q, 1) / r.scale, r.pick(q, 2) / r.scale
    cell_a, cell_b = np.floor(ua), np.floor(ub)
    grout = ((ua - cell_a) < 0.05) | ((ub - cell_b) < 0.05)
    tile_hash = hash_cells(cell_a.astype(np.int64), cell_b.astype(np.int64), 0, r.seed)
    return _tint(r.mix(grout.astype(np.float64)), tile_hash, 0.15)


def _stripes(q: np.ndarray, r: _Run) -> np.ndarray:
    wave = np.sin((2.0 * np.pi) * r.pick(q, 0) / r.scale)
    return r.mix(np.clip(0.5 + 1.5 * wave, 0.0, 1.0))


def _noise(q: np.ndarray, r: _Run) -> np.ndarray:
    n = fractal_noise(q / r.column(r.scale), 2, r.seed)
    return r.mix(np.clip(2.0 * n - 0.5, 0.0, 1.0))


def _wood(q: np.ndarray, r: _Run) -> np.ndarray:
    warp_coordinates = q / r.column(r.scale)
    if r.uniform:
        warp_coordinates[:, int(r.axis)] *= 0.15
    else:
        warp_coordinates[np.arange(len(q)), r.axis] *= 0.15
    warp = value_noise(warp_coordinates, r.seed)
    radius = np.hypot(r.pick(q, 1), r.pick(q, 2)) / r.scale + 1.5 * warp
    return r.mix((radius - np.floor(radius)) ** 2)


def _facade(q: np.ndarray, r: _Run):
    return r.pick(q, 1) + r.pick(q, 2), r.pick(q, 0)


def _bricks(q: np.ndarray, r: _Run) -> np.ndarray:
    along, up = _facade(q, r)
    height = r.scale / 3.0
    row = np.floor(up / height)
    x = along / r.scale + 0.5 * row
    column = np.floor(x)
    mortar = ((x - column) < 0.04) | ((up / height - row) < 0.1)
    brick_hash = hash_cells(column.astype(np.int64), row.astype(np.int64), 0, r.seed)
    return _tint(r.mix(mortar.astype(np.float64)), brick_hash, 0.12)


def _windows(q: np.ndarray, r: _Run) -> np.ndarray:
    along, up = _facade(q, r)
    storey = up / r.scale
    bay = along / (0.8 * r.scale)
    fs, fb = storey - np.floor(storey), bay - np.floor(bay)
    window = (fs > 0.3) & (fs < 0.8) & (fb > 0.2) & (fb < 0.8) & (storey > 0.5)
    rgb = r.mix(window.astype(np.float64))
    glass_hash = hash_cells(np.floor(bay).astype(np.int64), np.floor(storey).astype(np.int64),
                            1, r.seed)
    lit = window & (glass_hash > 0.85)
    rgb[lit] = 0.4 * rgb[lit] + 0.6 * _LIT_WINDOW
    return rgb


def _street(q: np.ndarray, r: _Run) -> np.ndarray:
    """Asphalt road along x, ``scale`` wide, centred on y = 0, with lane markings."""
    x, y = q[:, 0], np.abs(q[:, 1])
    half = 0.5 * r.scale
    rgb = r.mix((y >= half).astype(np.float64))
    grain = fractal_noise(q / 0.35, 2, r.seed)
    rgb *= (0.8 + 0.4 * grain)[:, None]
    dash = (y < 0.07) & ((x / 6.0 - np.floor(x / 6.0)) < 0.5)
    edge = np.abs(y - (half - 0.3)) < 0.07
    rgb[dash | edge] = _MARKING
    return rgb


_PATTERN_FUNCTIONS = {
    'plain': _plain,
    'checker': _checker,
    'tiles': _tiles,
    'stripes': _stripes,
    'noise': _noise,
    'wood': _wood,
    'bricks': _bricks,
    'windows': _windows,
    'street': _street,
}


def material_table(materials) -> dict:
    """Stack materials' parameters into arrays indexed by material number (for albedo)."""
    return {
        'pattern': np.array([PATTERNS.index(m.pattern) for m in materials], dtype=np.int16),
        'color_a': np.array([m.color_a for m in materials]).reshape(-1, 3),
        'color_b': np.array([m.color_b for m in materials]).reshape(-1, 3),
        'scale': np.array([m.scale for m in materials], dtype=np.float64),
        'axis': np.array([m.axis for m in materials], dtype=np.int64),
        'detail': np.array([m.detail for m in materials], dtype=np.float64),
        'offset': np.array([m.offset for m in materials]).reshape(-1, 3),
        'seed': np.array([m.seed for m in materials], dtype=np.int64),
    }


def albedo(material: Material, coordinates: np.ndarray) -> np.ndarray:
    """Evaluate one material's colour at N×3 texture coordinates (metres); N×3 RGB in [0, 1]."""
    return albedo_many([material], np.zeros(len(coordinates), dtype=np.int64), coordinates)


def albedo_many(materials, ids: np.ndarray, coordinates: np.ndarray,
                table: dict = None) -> np.ndarray:
    """Evaluate many materials at once: point i gets ``materials[ids[i]]``.

    Points are processed in one batch per pattern, so the cost hardly depends on the
    number of materials. Fastest when ``ids`` is already grouped by pattern.

    Args:
        materials: sequence of Material.
        ids: N int material indices.
        coordinates: N×3 float64 texture coordinates in metres (``Primitive.local``).
        table: ``material_table(materials)``, if already built.

    Returns:
        N×3 float64 RGB albedo in [0, 1].
    """
    table = material_table(materials) if table is None else table
    if len(coordinates) == 0:
        return np.zeros((0, 3))
    patterns = table['pattern'][ids]
    order = None
    if np.any(patterns[1:] < patterns[:-1]):
        order = np.argsort(patterns, kind='stable')
        patterns, ids, coordinates = patterns[order], ids[order], coordinates[order]
    bounds = np.searchsorted(patterns, np.arange(len(PATTERNS) + 1))
    rgb = np.empty_like(coordinates)
    for pattern in np.flatnonzero(np.diff(bounds)):
        rows = slice(bounds[pattern], bounds[pattern + 1])
        run = _Run(table, ids[rows])
        q = coordinates[rows] + run.offset
        colour = _PATTERN_FUNCTIONS[PATTERNS[pattern]](q, run)
        if np.any(run.detail > 0):
            fine = value_noise(q / run.column(np.minimum(0.12, 0.2 * run.scale)), run.seed + 1)
            colour *= 1.0 + run.column(run.detail) * (2.0 * fine[:, None] - 1.0)
        rgb[rows] = colour
    np.clip(rgb, 0.0, 1.0, out=rgb)
    if order is None:
        return rgb
    result = np.empty_like(rgb)
    result[order] = rgb
    return result
