"""densepred_ros.metrics against hand-computed values and its NaN/inf/far-limit rule."""

import math
import os
from pathlib import Path
import subprocess
import sys

from densepred_ros.alignment import to_model_space
from densepred_ros.metrics import (
    abs_rel_map, depth_metrics, evaluated_mask, FAILED_FRAME, mean_over_frames,
    normal_metrics, oracle_depth, oracle_fit)
import numpy as np
import pytest

FAR = 80.0
ROOT = Path(__file__).resolve().parents[1]


def test_depth_metrics_hand_computed():
    # Only the finite ones count (the old demo test: no far limit reached).
    truth = np.array([[1.0, 2.0], [4.0, np.inf]])
    depth = np.array([[1.1, 2.0], [np.nan, 3.0]])
    m = depth_metrics(depth, truth, FAR)
    assert m['abs_rel'] == pytest.approx(0.05)            # (0.1 + 0) / 2
    assert m['delta1'] == 1.0
    assert m['rmse'] == pytest.approx(math.sqrt(0.01 / 2))
    assert m['coverage'] == pytest.approx(2 / 3)


def test_the_rule_for_nan_inf_and_the_far_limit():
    truth = np.array([1.0, 2.0, 4.0, np.inf, np.nan, 100.0, 10.0, 5.0, 70.0, 0.0, -np.inf])
    depth = np.array([1.1, 2.0, np.nan, 3.0, 1.0, 50.0, np.inf, -np.inf, 90.0, 1.0, 1.0])
    # Evaluated (0 < z <= 80, finite): 1, 2, 4, 10, 5, 70. No prediction at 4 (NaN) and
    # 5 (-inf). +inf at 10 and 90 at 70 count as the far limit 80.
    m = depth_metrics(depth, truth, FAR)
    assert m['coverage'] == pytest.approx(4 / 6)
    assert m['abs_rel'] == pytest.approx((0.1 + 0.0 + 70.0 / 10.0 + 10.0 / 70.0) / 4)
    assert m['delta1'] == pytest.approx(3 / 4)             # 1.1, 1, 8, 8/7
    assert m['rmse'] == pytest.approx(math.sqrt((0.01 + 0.0 + 70.0**2 + 10.0**2) / 4))
    assert evaluated_mask(truth, FAR).tolist() == [
        True, True, True, False, False, False, True, True, True, False, False]
    per_pixel = abs_rel_map(depth, truth, FAR)
    assert np.nanmean(per_pixel) == pytest.approx(m['abs_rel'])
    assert np.isfinite(per_pixel).sum() == 4


def test_far_limit_moves_what_is_evaluated():
    truth = np.array([50.0, 100.0])
    depth = np.array([60.0, 100.0])
    near = depth_metrics(depth, truth, 55.0)   # only z = 50 evaluated, 60 counts as 55
    assert near['abs_rel'] == pytest.approx(0.1) and near['coverage'] == 1.0
    far = depth_metrics(depth, truth, 200.0)
    assert far['abs_rel'] == pytest.approx(0.1)            # (0.2 + 0) / 2
    assert far['delta1'] == 1.0


def test_nothing_evaluated_or_nothing_predicted():
    nothing = depth_metrics(np.ones(3), np.array([np.nan, np.inf, 90.0]), FAR)
    assert all(math.isnan(v) for v in nothing.values())
    blind = depth_metrics(np.full(2, np.nan), np.array([1.0, 2.0]), FAR)
    assert blind['coverage'] == 0.0 and math.isnan(blind['abs_rel'])
    assert math.isnan(blind['delta1']) and math.isnan(blind['rmse'])


def test_matches_a_pixel_by_pixel_reference():
    """The vectorised rule against a plain loop that states it, on random special values."""
    rng = np.random.default_rng(0)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 120.0])
    truth = rng.uniform(0.5, 100.0, 500)
    depth = truth * rng.uniform(0.6, 1.6, 500)
    for values, share in ((truth, 0.1), (depth, 0.2)):
        pick = rng.random(500) < share
        values[pick] = rng.choice(special, int(pick.sum()))
    rel, hits, sq, counted, evaluated = [], 0, [], 0, 0
    for d, z in zip(depth, truth):
        if not (math.isfinite(z) and 0.0 < z <= FAR):
            continue
        evaluated += 1
        if math.isnan(d) or d <= 0.0:
            continue
        d = min(d, FAR)
        counted += 1
        rel.append(abs(d - z) / z)
        hits += max(d / z, z / d) < 1.25
        sq.append((d - z) ** 2)
    m = depth_metrics(depth, truth, FAR)
    assert m['abs_rel'] == pytest.approx(sum(rel) / counted, rel=1e-12)
    assert m['delta1'] == pytest.approx(hits / counted, rel=1e-12)
    assert m['rmse'] == pytest.approx(math.sqrt(sum(sq) / counted), rel=1e-12)
    assert m['coverage'] == pytest.approx(counted / evaluated, rel=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='shape'):
        depth_metrics(np.ones(3), np.ones(4), FAR)
    for far in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match='far_limit'):
            depth_metrics(np.ones(3), np.ones(3), far)
    with pytest.raises(ValueError, match='3'):
        normal_metrics(np.ones((2, 2)), np.ones((2, 2)))


def test_normal_angles():
    a = np.zeros((1, 3, 3))
    a[..., 2] = -1.0
    b = a.copy()
    b[0, 1] = [0.0, -1.0, 0.0]                             # 90°
    b[0, 2] = [0.0, 0.0, 1.0]                              # 180°
    m = normal_metrics(a, b)
    assert m['normal_deg'] == pytest.approx(90.0) and m['normal_coverage'] == 1.0
    assert normal_metrics(3.0 * a, b)['normal_deg'] == pytest.approx(90.0)  # length-free
    # Unknown (NaN) or zero predictions are left out and counted by coverage.
    c = a.copy()
    c[0, 1] = np.nan
    c[0, 2] = 0.0
    m = normal_metrics(c, b)
    assert m['normal_deg'] == pytest.approx(0.0) and m['normal_coverage'] == pytest.approx(1 / 3)
    # Unknown truth (sky) is not evaluated.
    b[0, 0] = np.nan
    assert normal_metrics(a, b)['normal_coverage'] == 1.0
    assert math.isnan(normal_metrics(a, np.full_like(a, np.nan))['normal_coverage'])


def test_small_normal_angles_are_accurate():
    theta = 1e-6
    a = np.array([[0.0, 0.0, 1.0]])
    b = np.array([[np.sin(theta), 0.0, np.cos(theta)]])
    assert normal_metrics(a, b)['normal_deg'] == pytest.approx(np.degrees(theta), rel=1e-6)


def test_mean_over_frames_skips_missing_values():
    rows = [{'abs_rel': 0.1, 'rmse': math.nan}, {'abs_rel': 0.3, 'rmse': 2.0}, FAILED_FRAME]
    mean = mean_over_frames(rows)
    assert mean['abs_rel'] == pytest.approx((0.1 + 0.3 + 1.0) / 3)
    assert mean['rmse'] == 2.0 and mean['coverage'] == 0.0 and mean['delta1'] == 0.0
    assert math.isnan(mean_over_frames([{'x': math.nan}])['x'])


@pytest.mark.parametrize('space', ['depth', 'disparity', 'log_depth'])
def test_oracle_recovers_an_exact_affine_prediction(space):
    rng = np.random.default_rng(1)
    truth = rng.uniform(1.0, 60.0, (20, 30))
    relative = (to_model_space(truth, space) - 0.3) / 2.5  # y = 2.5·d + 0.3
    truth[0, :5] = [np.nan, np.inf, 0.0, 200.0, 150.0]       # not evaluated ...
    relative[0, :5] = 1e3                                    # ... so garbage there is ignored
    scale, shift = oracle_fit(relative, space, truth, FAR)
    assert scale == pytest.approx(2.5) and shift == pytest.approx(0.3, abs=1e-9)
    depth = oracle_depth(relative, space, truth, FAR)
    good = evaluated_mask(truth, FAR)
    np.testing.assert_allclose(depth[good], truth[good], rtol=1e-9)


def test_oracle_is_least_squares_against_numpy_polyfit():
    rng = np.random.default_rng(2)
    truth = rng.uniform(2.0, 70.0, 400)
    relative = 1.0 / truth + rng.normal(0.0, 0.01, 400)
    relative[:10] = np.nan                                   # no prediction: not fitted
    ok = np.isfinite(relative)
    reference = np.polyfit(relative[ok], 1.0 / truth[ok], 1)
    assert oracle_fit(relative, 'disparity', truth, FAR) == pytest.approx(tuple(reference))


def test_oracle_without_a_fit():
    assert oracle_fit(np.full(5, 0.5), 'depth', np.arange(1.0, 6.0), FAR) is None
    assert oracle_fit(np.ones(1), 'depth', np.ones(1), FAR) is None
    assert np.isnan(oracle_depth(np.full(5, 0.5), 'depth', np.arange(1.0, 6.0), FAR)).all()


def test_imports_neither_torch_nor_ros():
    code = ('import sys, densepred_ros.metrics; '
            'print(sorted({m.split(".")[0] for m in sys.modules} & '
            '{"torch", "rclpy", "sensor_msgs", "std_msgs", "diffusers"}))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, env={**os.environ, 'PYTHONPATH': str(ROOT)}).stdout
    assert out.strip() == '[]', out
