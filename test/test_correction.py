"""Local lidar correction after the global fit, the depth-edge filter and their parameters."""

from densepred_ros.alignment import (_footprint, _node_noise, _solve_grid, align,
                                     AlignmentConfig, TemporalAligner)
from densepred_ros.geometry import depth_edge_mask
from densepred_ros.params import ConfigError, NodeConfig
import numpy as np
import pytest
from scipy import ndimage
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

SPACES = ('depth', 'disparity', 'log_depth')
MODEL_SPACE = {'depth': lambda z: z, 'disparity': lambda z: 1.0 / z, 'log_depth': np.log}
LOCAL = AlignmentConfig(correction='local')
# The local field without the held-out check (always applied), to test the field itself.
FORCED = AlignmentConfig(correction='local', correction_holdout=-np.inf)
GLOBAL = AlignmentConfig(correction='none')


def _scene(height=120, width=160):
    """Depth in metres: a floor rising to a 30 m backdrop and a 6 m box in front."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    z = np.minimum(np.where(v > 40, 900.0 / np.maximum(v - 40, 1e-3), 30.0), 30.0)
    box = (u > 50) & (u < 100) & (v > 25) & (v < 80)
    z[box] = 6.0
    return z


def _relative(z, space, factor=None):
    """Return the model's view of z (times an optional error factor), scaled to [0, 1]."""
    y = MODEL_SPACE[space](z * (1.0 if factor is None else factor))
    return ((y - y.min()) / (y.max() - y.min())).astype(np.float32)


def _smooth(shape, amplitude=0.15, seed=0):
    """1 + a smooth field of at most `amplitude` (two sinusoids across the image)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:shape[0], 0:shape[1]]
    f = np.sin(2 * np.pi * (u / shape[1] * rng.uniform(0.5, 1.0) + rng.uniform(0, 1)))
    f += np.cos(2 * np.pi * (v / shape[0] * rng.uniform(0.5, 1.0) + rng.uniform(0, 1)))
    return 1.0 + amplitude * f / np.abs(f).max()


def _points(z, n, seed=0, rows=None):
    """Return n random pixels (optionally only in rows[0] <= v < rows[1]) and depths."""
    rng = np.random.default_rng(seed)
    h, w = z.shape
    lo, hi = rows if rows is not None else (0, h)
    v = rng.integers(lo, hi, n)
    u = rng.integers(0, w, n)
    return np.stack([u, v], 1), z[v, u].astype(np.float32)


def _abs_rel(depth, z):
    return float(np.mean(np.abs(depth - z) / z))


# --- local correction ----------------------------------------------------------------------

@pytest.mark.parametrize('space', SPACES)
def test_a_smooth_error_field_is_recovered(space):
    z = _scene()
    relative = _relative(z, space, _smooth(z.shape))
    uv, zs = _points(z, 1500)
    flat = align(relative, space, uv, zs, config=GLOBAL)
    local = align(relative, space, uv, zs, config=LOCAL)
    assert flat.ok and local.ok and local.correction == 'local'
    assert _abs_rel(local.depth, z) < 0.35 * _abs_rel(flat.depth, z), \
        (_abs_rel(local.depth, z), _abs_rel(flat.depth, z))
    assert local.correction_spread > 0.03 and local.support_fraction > 0.9
    # The global fit and its diagnostics are the same with and without the correction.
    assert (local.scale, local.shift, local.n_inliers) == (flat.scale, flat.shift,
                                                           flat.n_inliers)


def test_correction_does_not_bleed_across_a_depth_edge():
    h, w = 80, 160
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    left = u < 76  # the edge falls between two grid nodes (columns 72 and 80)
    z = np.where(left, 10.0 + 0.05 * v, 30.0 + 0.2 * v)
    relative = _relative(z, 'log_depth', np.where(left, 1.25, 1.0))  # the left side is off
    uv, zs = _points(z, 3000)
    near = (u >= 76) & (u < 80)  # right of the edge, in the cell that holds it
    bleed = {}
    for edge in (0.1, 100.0):  # edge-aware, and edges ignored
        cfg = AlignmentConfig(correction='local', correction_edge=edge)
        res = align(relative, 'log_depth', uv, zs, config=cfg)
        assert res.ok
        error = np.abs(res.depth / z - 1.0)
        # Error right of the edge beyond that of the right side far from it.
        bleed[edge] = error[near].max() - error[u >= 100].max()
        assert error[u < 70].mean() < 0.02, (edge, error[u < 70].mean())  # corrected
    assert bleed[0.1] < 0.003, bleed
    assert bleed[100.0] > 0.006, bleed  # without edge awareness it would bleed


def test_correction_fades_to_the_global_fit_without_support():
    z = _scene(160, 160)
    relative = _relative(z, 'disparity', _smooth(z.shape, seed=3))
    uv, zs = _points(z, 1500, rows=(100, 160))  # points in the lower part only
    flat = align(relative, 'disparity', uv, zs, config=GLOBAL)
    cfg = AlignmentConfig(correction='local', correction_reach=12.0)
    local = align(relative, 'disparity', uv, zs, config=cfg)
    assert local.ok
    top = slice(0, 40)  # 60 px (5 reaches) above the highest point
    np.testing.assert_allclose(local.depth[top], flat.depth[top], rtol=2e-3)
    below = slice(110, 160)
    improved = _abs_rel(local.depth[below], z[below])
    assert improved < 0.5 * _abs_rel(flat.depth[below], z[below])
    assert 0.2 < local.support_fraction < 0.6, local.support_fraction


@pytest.mark.parametrize('space', SPACES)
def test_isolated_gross_outliers_do_not_pull_the_correction(space):
    z = _scene()
    relative = _relative(z, space)
    uv, zs = _points(z, 1500, seed=1)
    rng = np.random.default_rng(2)
    bad = rng.choice(zs.size, 75, replace=False)  # 5 % of the points 25-45 % off
    zs[bad] *= rng.choice([0.6, 0.75, 1.3, 1.45], bad.size)
    local = align(relative, space, uv, zs, config=LOCAL)
    assert local.ok
    error = np.abs(local.depth / z - 1.0)
    assert error.mean() < 0.003 and np.percentile(error, 99) < 0.03, \
        (error.mean(), np.percentile(error, 99))


@pytest.mark.parametrize('space', SPACES)
def test_correction_is_a_no_op_when_the_prediction_is_affine(space):
    z = _scene()
    relative = _relative(z, space)
    uv, zs = _points(z, 800)
    flat = align(relative, space, uv, zs, config=GLOBAL)
    forced = align(relative, space, uv, zs, config=FORCED)
    assert forced.correction == 'local' and forced.correction_spread < 1e-4
    np.testing.assert_allclose(forced.depth, flat.depth, rtol=1e-4)
    # With the held-out check the correction is declined: exactly the global fit.
    local = align(relative, space, uv, zs, config=LOCAL)
    assert local.correction == 'declined' and local.correction_spread == 0.0
    np.testing.assert_array_equal(local.depth, flat.depth)


def test_result_reports_no_correction_when_off_or_gated():
    z = _scene()
    relative = _relative(z, 'log_depth', _smooth(z.shape))
    uv, zs = _points(z, 600)
    off = align(relative, 'log_depth', uv, zs, config=GLOBAL)
    assert off.correction == 'none' and np.isnan(off.correction_spread)
    assert np.isnan(off.support_fraction) and off.correction_points == 0
    aligner = TemporalAligner('log_depth', AlignmentConfig(correction='local',
                                                           max_rejections=5))
    assert aligner.align(relative, uv, zs).correction == 'local'
    gated = aligner.align(relative, uv, zs * 3.0)  # the lidar jumped: frame gated
    assert gated.temporal == 'gated' and gated.correction == 'skipped'


@pytest.mark.parametrize('name, value', [
    ('correction', 'bilateral'), ('correction_cell', 0), ('correction_smoothness', 0.0),
    ('correction_reach', -1.0), ('correction_edge', 0.0), ('correction_outlier', 0.0),
    ('correction_max', 0.0), ('correction_deadband', -0.5),
    ('correction_holdout', float('nan')), ('correction_holdout', float('inf'))])
def test_bad_correction_parameters_raise(name, value):
    with pytest.raises(ValueError, match=name):
        AlignmentConfig(**{name: value})


# --- depth-edge filter ---------------------------------------------------------------------

def test_edge_filter_removes_mid_air_pixels_and_keeps_both_surfaces():
    h, w = 40, 80
    z = np.where(np.arange(w) < 40, 5.0, 20.0) * np.ones((h, 1))
    ramp = z.copy()
    ramp[:, 38:42] = np.linspace(5.0, 20.0, 6)[1:-1]  # interpolated across the edge
    mask = depth_edge_mask(ramp.astype(np.float32))
    assert mask[:, 38:42].all()
    assert not mask[:, :37].any() and not mask[:, 43:].any()
    # A sharp edge has no mid-air pixels: the last pixel of each side is kept.
    assert not depth_edge_mask(z.astype(np.float32)).any()


def test_edge_filter_keeps_planes_at_grazing_angles():
    v = np.arange(300, dtype=np.float64)[:, None] * np.ones((1, 50))
    floor = 1.5 * 500.0 / (v + 1.0)  # a floor seen from 1.5 m: 750 m … 2.5 m
    tilted = 1.0 / (0.01 + 0.002 * np.arange(50)[None, :] + 0.001 * v)
    for plane in (floor, tilted):
        assert not depth_edge_mask(plane.astype(np.float32)).any()


def test_edge_filter_handles_unknown_and_far_pixels_and_bad_input():
    z = np.full((20, 20), 4.0, np.float32)
    z[:, 10:] = np.inf  # sky
    z[5, 5] = np.nan
    mask = depth_edge_mask(z)
    assert not mask.any()
    with pytest.raises(ValueError, match='threshold'):
        depth_edge_mask(z, threshold=0.0)
    with pytest.raises(ValueError, match='step'):
        depth_edge_mask(z, step=0)
    with pytest.raises(ValueError, match='H×W'):
        depth_edge_mask(np.zeros(5, np.float32))


# --- parameters ----------------------------------------------------------------------------

def test_correction_and_edge_filter_parameters_flow_into_the_configs():
    config = NodeConfig.from_parameters({'model.path': '/m'})
    assert config.alignment.correction == 'local'
    assert config.output.edge_filter and config.output.edge_threshold == 0.05
    assert config.alignment.alignment_config() == AlignmentConfig(
        far_limit=config.alignment.far_limit, smoothing=config.alignment.smoothing)
    config = NodeConfig.from_parameters({
        'model.path': '/m', 'alignment.correction': 'none', 'alignment.correction_cell': 12,
        'alignment.correction_reach': 30, 'output.edge_filter': False,
        'output.edge_threshold': 0.2})
    cfg = config.alignment.alignment_config()
    assert (cfg.correction, cfg.correction_cell, cfg.correction_reach) == ('none', 12, 30.0)
    assert not config.output.edge_filter and config.output.edge_threshold == 0.2


@pytest.mark.parametrize('name, value', [
    ('alignment.correction', 'bilateral'), ('alignment.correction_cell', 0),
    ('alignment.correction_smoothness', -1.0), ('alignment.correction_reach', 0.0),
    ('alignment.correction_edge', 50.0), ('output.edge_filter', 'yes'),
    ('output.edge_threshold', 0.0)])
def test_bad_correction_and_edge_parameters_name_themselves(name, value):
    with pytest.raises(ConfigError, match=name.replace('.', r'\.')):
        NodeConfig.from_parameters({'model.path': '/m', name: value})


def test_grid_solver_matches_scipy_sparse_direct_solve():
    rng = np.random.default_rng(0)
    gh, gw = 9, 13
    alpha = np.where(rng.random((gh, gw)) < 0.4, rng.random((gh, gw)), 0.0)
    rhs = alpha * rng.normal(size=(gh, gw))
    w_rows, w_cols = rng.random((gh - 1, gw)), rng.random((gh, gw - 1))
    smooth, pull = 0.3, 0.01
    index = np.arange(gh * gw).reshape(gh, gw)
    pairs = [(index[1:].ravel(), index[:-1].ravel(), w_rows.ravel()),
             (index[:, 1:].ravel(), index[:, :-1].ravel(), w_cols.ravel())]
    matrix = sp.diags(alpha.ravel() + pull).tolil()
    for a, b, w in pairs:
        for i, j, wij in zip(a, b, w):
            matrix[i, i] += smooth * wij
            matrix[j, j] += smooth * wij
            matrix[i, j] -= smooth * wij
            matrix[j, i] -= smooth * wij
    expected = spsolve(matrix.tocsr(), rhs.ravel()).reshape(gh, gw)
    got = _solve_grid(alpha, rhs[None], w_rows, w_cols, smooth, pull, tol=1e-10)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
    # A batch of systems with their own data weights (K×gh×gw α) solves each one.
    other = np.zeros_like(alpha)
    batch = _solve_grid(np.stack([other, alpha]), np.stack([other, rhs]), w_rows, w_cols,
                        smooth, pull, tol=np.array([1e-3, 1e-10]))
    np.testing.assert_allclose(batch[1], expected, rtol=1e-6,
                               atol=1e-9 * np.abs(expected).max())
    assert not batch[0].any()


def _continuous_scene(u, v):
    """Depth (m) of `_scene` at continuous pixel positions (floor, backdrop, box)."""
    z = np.minimum(np.where(v > 40, 900.0 / np.maximum(v - 40, 1e-3), 30.0), 30.0)
    box = (u > 50) & (u < 100) & (v > 25) & (v < 80)
    return np.where(box, 6.0, z)


def _scan(noise, seed=0, height=120, width=160):
    """Beam-like points: rows of returns at sub-pixel positions, rounded to pixels.

    Returns pixels (N×2) and depths with relative Gaussian range noise `noise`: their
    error against the pixel centres is correlated along each row (the rounding).
    """
    rng = np.random.default_rng(seed)
    uu, vv = [], []
    for row in np.arange(3.3, height - 5, 7.7):
        u = np.arange(0.2, width - 1, 1.3) + rng.uniform(0, 0.5)
        v = row + 0.02 * u  # a slightly tilted beam
        uu.append(u)
        vv.append(v)
    u, v = np.concatenate(uu), np.concatenate(vv)
    z = _continuous_scene(u, v) * (1.0 + noise * rng.standard_normal(u.size))
    uv = np.stack([np.rint(u), np.rint(v)], 1).astype(np.int32)
    return uv, z.astype(np.float32)


@pytest.mark.parametrize('space', SPACES)
def test_no_harm_from_pixel_rounding_and_range_noise(space):
    # An exact relative map and a beam-like scan whose only errors are the rounding of each
    # return to a pixel (correlated along a beam) and 0.3 % range noise: the correction
    # must not follow them (within 5 % of the global fit's AbsRel).
    z = _scene()
    relative = _relative(z, space)
    uv, zs = _scan(0.003)
    flat = align(relative, space, uv, zs, config=GLOBAL)
    for config, applied in ((FORCED, 'local'), (LOCAL, 'declined')):
        local = align(relative, space, uv, zs, config=config)
        assert flat.ok and local.ok and local.correction == applied
        assert _abs_rel(local.depth, z) <= 1.05 * _abs_rel(flat.depth, z), \
            (applied, _abs_rel(local.depth, z), _abs_rel(flat.depth, z))


@pytest.mark.parametrize('space', SPACES)
def test_a_smooth_error_is_still_recovered_from_a_rounded_noisy_scan(space):
    z = _scene()
    relative = _relative(z, space, _smooth(z.shape))
    uv, zs = _scan(0.003)
    flat = align(relative, space, uv, zs, config=GLOBAL)
    local = align(relative, space, uv, zs, config=LOCAL)
    assert local.correction == 'local' and local.correction_gain > 0.5, local.correction_gain
    assert _abs_rel(local.depth, z) < 0.5 * _abs_rel(flat.depth, z), \
        (_abs_rel(local.depth, z), _abs_rel(flat.depth, z))


@pytest.mark.parametrize('space', SPACES)
def test_held_out_check_declines_a_disagreement_confined_to_one_spot(space):
    # Exact relative map; the lidar disagrees with it by 10 % in one 28×28 px spot (e.g.
    # mixed returns along an edge). The field alone follows that spot, but it does not
    # predict held-out points across the image better than the global fit: declined.
    z = _scene()
    relative = _relative(z, space)
    uv, zs = _scan(0.003)
    spot = (np.abs(uv[:, 0] - 130) < 14) & (np.abs(uv[:, 1] - 100) < 14)
    zs = np.where(spot, zs * 1.1, zs).astype(np.float32)
    flat = align(relative, space, uv, zs, config=GLOBAL)
    forced = align(relative, space, uv, zs, config=FORCED)
    local = align(relative, space, uv, zs, config=LOCAL)
    assert _abs_rel(forced.depth, z) > 2.0 * _abs_rel(flat.depth, z)  # the field follows it
    assert local.correction == 'declined' and local.correction_gain < 0.1
    np.testing.assert_array_equal(local.depth, flat.depth)


def test_node_noise_estimates_the_noise_and_ignores_a_smooth_field():
    rng = np.random.default_rng(4)
    width, nodes = 200, 4
    u = np.tile(np.arange(0, width, 2), 20)
    v = np.repeat(np.arange(0, 100, 5), width // 2)
    sigma = 0.01
    smooth = 0.1 * np.sin(u / 100.0) + 0.1 * v / 100.0  # much larger than the noise
    e = smooth + sigma * rng.standard_normal(u.size)
    corners = np.zeros((u.size, 4), np.intp)  # every point feeds node 0 only
    link = np.zeros((u.size, 4))
    link[:, 0] = 1.0
    est = _node_noise(np.stack([u, v], 1), e, np.ones(u.size), corners, link, nodes, width,
                      fallback=lambda: 1.0)
    assert est.shape == (nodes,)
    assert 0.8 * sigma < est[0] < 1.2 * sigma, est  # the smooth part cancels
    assert np.std(e) > 4 * sigma  # a plain spread would be far off
    # Nodes without points fall back to the frame's estimate, not to `fallback`.
    assert 0.8 * sigma < est[1] < 1.2 * sigma
    # Scattered points with no neighbours on a row: the fallback.
    lone = _node_noise(np.stack([np.arange(5) * 20, np.arange(5)], 1), e[:5], np.ones(5),
                       corners[:5], link[:5], nodes, width, fallback=lambda: 0.3)
    np.testing.assert_array_equal(lone, np.full(nodes, 0.3))


def test_footprint_half_width_on_a_plane_and_at_an_edge():
    h, w = 20, 40
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    q = 0.1 + 0.002 * u + 0.003 * v  # inverse depth of a plane: affine in the pixels
    q[:, 25:] += 0.2  # a nearer surface right of column 25
    uv = np.array([[10, 10], [24, 10], [25, 10], [24, 10]])
    r = np.array([0.0, 0.0, 0.0, 0.05])
    own, usable = _footprint(r, q.astype(np.float32), uv, 'disparity', 1.0, 0.0)
    # Half a pixel's change on each axis; next to the edge the surface's own slope.
    np.testing.assert_allclose(own, 0.5 * (0.002 + 0.003), rtol=1e-4)
    # A residual explained only by the surface beyond the edge: the point is not used.
    assert usable.tolist() == [True, True, True, False]


@pytest.mark.parametrize('space', ['disparity', 'log_depth'])
def test_a_gross_error_on_one_object_is_corrected(space):
    # The model puts the box at 0.55× its depth (the lidar is 82 % beyond the global fit
    # there, within the factor-2 `correction_outlier`); the rest of the scene is exact.
    # (In depth space the affine fit itself takes up much of this error.)
    z = _scene()
    box = np.abs(z - 6.0) < 1e-9
    relative = _relative(z, space, np.where(box, 0.55, 1.0))
    uv, zs = _scan(0.003)
    flat = align(relative, space, uv, zs, config=GLOBAL)
    local = align(relative, space, uv, zs, config=LOCAL)
    assert local.correction == 'local'
    inner = ndimage.binary_erosion(box, iterations=8)  # away from the box's rim
    assert np.median(np.abs(flat.depth[box] / z[box] - 1.0)) > 0.15
    error = np.abs(local.depth / z - 1.0)
    assert np.median(error[inner]) < 0.03, np.median(error[inner])
    # With the earlier ±50 % limit the box's points were not used and it stayed wrong.
    narrow = AlignmentConfig(correction='local', correction_outlier=0.5, correction_max=0.5)
    capped = align(relative, space, uv, zs, config=narrow)
    assert np.median(np.abs(capped.depth[inner] / z[inner] - 1.0)) > 0.15


def test_held_out_check_works_with_unknown_pixels_in_the_prediction():
    # A semi-dense prediction (NaN above row 30 and in a hole): nodes there have no
    # significance band; the held-out check must still see the smooth error elsewhere.
    z = _scene()
    relative = _relative(z, 'disparity', _smooth(z.shape))
    relative[:30] = np.nan
    relative[60:80, 20:40] = np.nan
    uv, zs = _scan(0.003)
    flat = align(relative, 'disparity', uv, zs, config=GLOBAL)
    local = align(relative, 'disparity', uv, zs, config=LOCAL)
    assert local.correction == 'local' and local.correction_gain > 0.5, local.correction_gain
    known = np.isfinite(relative)
    assert np.isnan(local.depth[~known]).all()
    assert _abs_rel(local.depth[known], z[known]) < 0.5 * _abs_rel(flat.depth[known], z[known])
