"""Robust metric alignment: accuracy, gates, failure modes and temporal behaviour."""

import math

from densepred_ros.alignment import align
from densepred_ros.alignment import AlignmentConfig
from densepred_ros.alignment import AlignmentPrior
from densepred_ros.alignment import TemporalAligner
from densepred_ros.alignment import to_metric
from densepred_ros.alignment import to_model_space
from densepred_ros.camera import project_points
from densepred_ros.camera import transform_points
from densepred_ros.synthetic import make_frame
import numpy as np
import pytest

SPACES = ('depth', 'disparity', 'log_depth')
MODEL_SPACE = {'depth': lambda z: z, 'disparity': lambda z: 1.0 / z, 'log_depth': np.log}


def _scene(height=96, width=128):
    """Street-like depth (m): ground plane below a horizon, a 40 m backdrop, two boxes."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = 0.35 * height
    z = np.minimum(np.where(v > horizon, 150.0 / np.maximum(v - horizon, 1e-3), 40.0), 40.0)
    box = (u > 30) & (u < 60) & (v > 20) & (v < 70)
    z[box] = np.minimum(z[box], 8.0)
    box = (u > 80) & (u < 110) & (v > 30) & (v < 60)
    z[box] = np.minimum(z[box], 15.0)
    return z


def _smooth(height, width, rng):
    """Low-frequency field (three sinusoids of at most 2 cycles per image), max |.| = 1."""
    v, u = np.mgrid[0:height, 0:width]
    f = np.zeros((height, width))
    for _ in range(3):
        fu, fv = rng.uniform(0.2, 2.0, 2)
        phase = 2 * np.pi * (fu * u / width + fv * v / height) + rng.uniform(0, 2 * np.pi)
        f += rng.uniform(0.5, 1.0) * np.sin(phase)
    return f / np.abs(f).max()


def _relative(z, space, noise=0.0, rng=None, lo=0.0, hi=1.0):
    """Return the model's view of z: its space, optional smooth error, scaled to [lo, hi]."""
    y = MODEL_SPACE[space](z)
    y = (y - y.min()) / (y.max() - y.min())
    if noise:
        y = y + noise * _smooth(*z.shape, rng)
        y = (y - y.min()) / (y.max() - y.min())
    return (lo + (hi - lo) * y).astype(np.float32)


def _sample(z, n, rng):
    h, w = z.shape
    idx = rng.choice(h * w, n, replace=False)
    return np.stack([idx % w, idx // w], axis=1), z.ravel()[idx].astype(np.float32)


def _abs_rel(pred, gt):
    ok = np.isfinite(gt) & (gt > 0)
    return float(np.mean(np.abs(np.minimum(pred[ok], 80.0) - gt[ok]) / gt[ok]))


def _ls_depth(relative, space, pick, z_target, weights=None):
    """Plain (optionally weighted) least squares in the model's space → depth image."""
    d = relative.ravel()[pick].astype(np.float64)
    y = MODEL_SPACE[space](z_target)
    w = np.ones_like(y) if weights is None else weights
    A = np.stack([d, np.ones_like(d)], axis=1) * np.sqrt(w)[:, None]
    (s, t), *_ = np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)
    return to_metric(relative.astype(np.float64), space, s, t, 0.05, 80.0)


# --- accuracy ------------------------------------------------------------------------------

@pytest.mark.parametrize('space', SPACES)
@pytest.mark.parametrize('residual', ['prediction', 'relative'])
def test_noise_free_affine_input_is_recovered(space, residual):
    z = _scene()
    rng = np.random.default_rng(0)
    relative = _relative(z, space, lo=0.13, hi=0.91)
    uv, zs = _sample(z, 200, rng)
    result = align(relative, space, uv, zs, config=AlignmentConfig(residual=residual))
    assert result.ok, result.reason
    assert result.depth.dtype == np.float32 and result.depth.shape == z.shape
    np.testing.assert_allclose(result.depth, z, rtol=1e-4)
    assert result.n_inliers == result.n_points == 200
    assert result.median_rel_error < 1e-4 and not result.scale_only
    assert result.temporal == 'init' and result.prior is not None


@pytest.mark.parametrize('space', SPACES)
def test_gross_outliers_and_smooth_error_stay_close_to_the_oracle(space):
    z = _scene()
    ratios, naive_ratios = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        relative = _relative(z, space, noise=0.02, rng=rng)
        uv, zs = _sample(z, 200, rng)
        zs[:20] *= rng.choice([0.4, 0.5, 1.8, 2.5], 20)  # 10 % gross outliers
        result = align(relative, space, uv, zs)
        assert result.ok, result.reason
        oracle = _abs_rel(_ls_depth(relative, space, np.arange(z.size), z.ravel()), z)
        naive = _abs_rel(_ls_depth(relative, space, uv[:, 1] * z.shape[1] + uv[:, 0], zs), z)
        ratios.append(_abs_rel(result.depth, z) / oracle)
        naive_ratios.append(naive / oracle)
    assert np.mean(ratios) <= 1.10 and max(ratios) <= 1.25, ratios
    # The outliers matter: a plain least-squares fit to the same points is far off.
    assert np.mean(naive_ratios) > 1.2, naive_ratios


def test_synthetic_frame_chain_close_to_oracle():
    frame = make_frame(seed=3, kind='outdoor', width=320, height=240, beams=32)
    uv, zs = project_points(transform_points(frame.lidar_points, frame.T_cam_lidar),
                            frame.camera)
    gt = frame.depth.astype(np.float64)
    known = np.isfinite(gt)
    y = np.where(known, 1.0 / np.where(known, gt, 1.0), 0.0)  # sky: disparity 0
    rng = np.random.default_rng(0)
    relative = _relative(1.0 / np.maximum(y, 1e-9), 'disparity', 0.01, rng)
    result = align(relative, 'disparity', uv, zs)
    assert result.ok, result.reason
    pick = np.flatnonzero(known.ravel() & (gt.ravel() < 80.0))
    oracle = _ls_depth(relative, 'disparity', pick, gt.ravel()[pick])
    mask = known & (gt < 80.0)
    ours = _abs_rel(np.where(mask, result.depth, np.nan)[mask], gt[mask])
    assert ours <= 1.10 * _abs_rel(oracle[mask], gt[mask])
    # Sky (disparity 0 in the prediction) is beyond range.
    assert np.isposinf(result.depth[~known]).mean() > 0.95


# --- gates and failure modes -------------------------------------------------------------------

def test_too_few_points_fail_cleanly():
    z = _scene()
    uv, zs = _sample(z, 29, np.random.default_rng(1))
    result = align(_relative(z, 'depth'), 'depth', uv, zs)
    assert not result.ok and 'too few' in result.reason and '29' in result.reason
    assert result.depth is None and result.prior is None and math.isnan(result.scale)


def test_invalid_points_are_ignored_before_the_gate():
    z = _scene()
    uv, zs = _sample(z, 40, np.random.default_rng(1))
    zs[:15] = [np.nan, 0.0, -1.0] * 5
    result = align(_relative(z, 'depth'), 'depth', uv, zs)
    assert not result.ok and result.n_points == 25


def _wall_points(z, value):
    v, u = np.nonzero(np.isclose(z, value))
    rng = np.random.default_rng(2)
    pick = rng.choice(v.size, 60, replace=False)
    return np.stack([u[pick], v[pick]], axis=1), z[v[pick], u[pick]].astype(np.float32)


@pytest.mark.parametrize('space', SPACES)
def test_points_at_one_depth_fail_without_prior_and_use_its_shift_with_one(space):
    z = _scene()
    uv, zs = _wall_points(z, 8.0)  # all on the near box
    first = _relative(z, space, lo=0.1, hi=0.9)
    result = align(first, space, uv, zs)
    assert not result.ok and 'degenerate' in result.reason and 'prior' in result.reason
    # A good earlier frame (different normalisation) supplies the shift.
    uv_all, z_all = _sample(z, 200, np.random.default_rng(3))
    prior = align(_relative(z, space, lo=0.0, hi=1.0), space, uv_all, z_all).prior
    result = align(first, space, uv, zs, prior=prior)
    assert result.ok and result.scale_only, result.reason
    np.testing.assert_allclose(result.depth, z, rtol=1e-3)


@pytest.mark.parametrize('space', SPACES)
def test_all_outliers_fail(space):
    z = _scene()
    rng = np.random.default_rng(4)
    uv, _ = _sample(z, 300, rng)
    zs = rng.uniform(1.0, 60.0, 300).astype(np.float32)  # unrelated to the scene
    result = align(_relative(z, space), space, uv, zs)
    assert not result.ok and ('inlier' in result.reason or 'implausible' in result.reason), \
        result.reason
    assert result.depth is None


def test_inverted_relation_has_no_positive_scale():
    z = _scene()
    uv, zs = _sample(z, 100, np.random.default_rng(5))
    # A depth map fed as if it were disparity: larger d means farther, never s > 0.
    result = align(_relative(z, 'depth'), 'disparity', uv, zs)
    assert not result.ok, (result.scale, result.shift)


def test_fit_that_makes_most_of_the_image_negative_is_implausible():
    rng = np.random.default_rng(6)
    relative = np.full((60, 80), 0.2, dtype=np.float32)
    relative[:, 60:] = np.linspace(0.8, 1.0, 60, dtype=np.float32)[:, None]
    v, u = np.nonzero(relative > 0.5)
    pick = rng.choice(v.size, 100, replace=False)
    uv = np.stack([u[pick], v[pick]], axis=1)
    zs = (50.0 * (relative[v[pick], u[pick]] - 0.75)).astype(np.float32)  # t = -37.5
    result = align(relative, 'depth', uv, zs)
    assert not result.ok and 'implausible' in result.reason, result.reason


def test_output_conventions_for_sky_far_and_unknown_pixels():
    z = _scene()
    rng = np.random.default_rng(7)
    relative = _relative(z, 'disparity', lo=0.1, hi=1.0)
    relative[0, :10] = 0.0  # disparity below the 80 m limit: sky
    relative[1, :10] = np.nan
    uv, zs = _sample(z[2:], 200, rng)
    uv[:, 1] += 2
    result = align(relative, 'disparity', uv, zs)
    assert result.ok
    assert np.isposinf(result.depth[0, :10]).all()
    assert np.isnan(result.depth[1, :10]).all()
    assert np.isfinite(result.depth[2:]).all()
    # Depth space: beyond the far limit → +inf, non-positive → NaN, near → clamped.
    out = to_metric(np.array([-1.0, 0.001, 0.5, 2.0]), 'depth', 50.0, 0.0, 0.1, 80.0)
    assert np.isnan(out[0]) and out[1] == 0.1 and out[2] == 25.0 and np.isposinf(out[3])
    # Log-depth space: z = exp(s·d + t); overflow and beyond the far limit → +inf.
    d = np.array([np.nan, -10.0, 0.0, 1.0, 2.0, 1e6], np.float32)
    out = to_metric(d, 'log_depth', 2.0, math.log(3.0), 0.1, 80.0)
    assert out.dtype == np.float32 and np.isnan(out[0]) and out[1] == np.float32(0.1)
    np.testing.assert_allclose(out[2:4], [3.0, 3.0 * math.e ** 2], rtol=1e-6)
    assert np.isposinf(out[4:]).all()


def test_model_spaces_round_trip_metric_depth():
    z = np.array([0.5, 1.0, 7.0, 80.0, np.inf])
    assert to_model_space(z, 'disparity')[-1] == 0.0
    assert np.isposinf(to_model_space(z, 'log_depth')[-1])
    for space in SPACES:
        y = to_model_space(z[:-1], space)
        np.testing.assert_allclose(y, MODEL_SPACE[space](z[:-1]))
        np.testing.assert_allclose(to_metric(y, space, 1.0, 0.0, 0.01, 100.0), z[:-1])
    with pytest.raises(ValueError, match='unknown prediction space'):
        to_model_space(z, 'normals')


def test_result_is_deterministic():
    z = _scene()
    rng = np.random.default_rng(8)
    relative = _relative(z, 'disparity', 0.03, rng)
    uv, zs = _sample(z, 300, rng)
    zs[:40] *= 2.0
    a = align(relative, 'disparity', uv, zs)
    b = align(relative, 'disparity', uv, zs)
    assert (a.scale, a.shift, a.n_inliers) == (b.scale, b.shift, b.n_inliers)


def test_bad_inputs_raise():
    z = _scene()
    relative = _relative(z, 'depth')
    uv, zs = _sample(z, 50, np.random.default_rng(9))
    with pytest.raises(ValueError, match='inverse'):
        align(relative, 'inverse', uv, zs)
    with pytest.raises(ValueError, match='outside'):
        align(relative, 'depth', uv + [z.shape[1], 0], zs)
    with pytest.raises(ValueError, match='z must have shape'):
        align(relative, 'depth', uv, zs[:-1])
    with pytest.raises(ValueError, match='integer'):
        align(relative, 'depth', uv.astype(float), zs)
    with pytest.raises(ValueError, match='H×W'):
        align(relative[None], 'depth', uv, zs)
    prior = AlignmentPrior('disparity', (5.0, 95.0), (0.01, 0.5))
    with pytest.raises(ValueError, match='prior'):
        align(relative, 'depth', uv, zs, prior=prior)
    with pytest.raises(ValueError, match='inlier_threshold'):
        AlignmentConfig(inlier_threshold=0.0)
    with pytest.raises(ValueError, match='residual'):
        AlignmentConfig(residual='l1')


# --- temporal behaviour -------------------------------------------------------------------------

def _frame(z, space, k, rng, noise=0.01):
    """Frame k: the same scene, a different normalisation range every frame, noisy lidar."""
    lo, hi = rng.uniform(0.0, 0.25), rng.uniform(0.7, 1.0)
    relative = _relative(z, space, lo=lo, hi=hi)
    uv, zs = _sample(z, 150, rng)
    return relative, uv, (zs * (1.0 + noise * rng.standard_normal(zs.size))).astype(np.float32)


@pytest.mark.parametrize('space', SPACES)
def test_changing_normalisation_gives_stable_metric_depth(space):
    z = _scene()
    rng = np.random.default_rng(10)
    aligner = TemporalAligner(space)
    scales, medians = [], []
    for k in range(8):
        result = aligner.align(*_frame(z, space, k, rng))
        assert result.ok, result.reason
        assert result.temporal == ('init' if k == 0 else 'blended')
        assert _abs_rel(result.depth, z) < 0.01
        scales.append(result.scale)
        medians.append(float(np.median(result.depth)))
    # The raw scale moves with the normalisation; the metric output does not.
    assert np.std(scales) / np.mean(scales) > 0.1
    assert np.ptp(medians) / np.mean(medians) < 0.01
    assert aligner.prior.frames == 8


@pytest.mark.parametrize('space', SPACES)
def test_sudden_bad_frame_is_gated_and_persistent_change_resets(space):
    z = _scene()
    rng = np.random.default_rng(11)
    aligner = TemporalAligner(space, AlignmentConfig(max_rejections=3))
    for k in range(3):
        assert aligner.align(*_frame(z, space, k, rng)).ok
    # A frame whose lidar depths are 1.6× too large (e.g. a stale or mismatched scan).
    relative, uv, zs = _frame(z, space, 3, rng)
    alone = align(relative, space, uv, zs * 1.6)
    assert alone.ok and _abs_rel(alone.depth, z) > 0.3
    gated = aligner.align(relative, uv, zs * 1.6)
    assert gated.ok and gated.temporal == 'gated'
    assert _abs_rel(gated.depth, z) < 0.01
    assert aligner.prior.rejections == 1
    assert aligner.align(*_frame(z, space, 4, rng)).temporal == 'blended'
    assert aligner.prior.rejections == 0
    # The same jump three frames in a row is a real change: the third one resets.
    states = []
    for k in range(3):
        relative, uv, zs = _frame(z, space, 5 + k, rng)
        states.append(aligner.align(relative, uv, zs * 1.6))
    assert [r.temporal for r in states] == ['gated', 'gated', 'reset']
    assert _abs_rel(states[-1].depth, z * 1.6) < 0.01


def test_failure_resets_the_prior():
    z = _scene()
    rng = np.random.default_rng(12)
    aligner = TemporalAligner('depth')
    assert aligner.align(*_frame(z, 'depth', 0, rng)).ok
    relative, uv, zs = _frame(z, 'depth', 1, rng)
    failed = aligner.align(relative, uv[:5], zs[:5])
    assert not failed.ok and aligner.prior is None
    assert aligner.align(*_frame(z, 'depth', 2, rng)).temporal == 'init'
