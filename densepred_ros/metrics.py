"""Accuracy of metric depth and normals against ground truth, defined once.

Used by `densepred demo`, `densepred evaluate-alignment`, the trainer's validation,
`python -m densepred_ros.training evaluate-model` and `scripts/demo_model_errors.py`.
numpy only (no torch, no ROS).

The rule for special values (REP 118: NaN = unknown, +inf = beyond range, -inf = too
close) and for the far limit, pixel by pixel, with z the ground truth and ẑ the prediction
(both metres):

* A pixel is **evaluated** when z is finite and 0 < z <= `far_limit`. Ground truth that is
  NaN, ±inf (+inf: nothing within range, e.g. sky), <= 0 or beyond `far_limit` is not
  evaluated: nothing is asked of the prediction there.
* At an evaluated pixel, a prediction beyond `far_limit`, **+inf included**, counts as
  `far_limit`: it says "at least far_limit" where the truth is at most far_limit, so the
  smallest error consistent with it is counted (the KITTI protocol's clipping).
* At an evaluated pixel, ẑ NaN, -inf or <= 0 is **no prediction**: left out of AbsRel, δ1
  and RMSE, and counted by `coverage` = predicted / evaluated pixels.
* A frame with no metric depth at all (the lidar alignment failed) counts as
  `FAILED_FRAME`: AbsRel 1, δ1 0, coverage 0 (RMSE left out of the mean).

Per frame: AbsRel = mean |ẑ − z| / z; δ1 = share of pixels with max(ẑ/z, z/ẑ) < 1.25;
RMSE = sqrt(mean (ẑ − z)²) in metres. Normals: the angle between predicted and true
vectors (of any length, atan2(|a × b|, a · b)) in degrees, averaged over the pixels where
both are finite and non-zero, and `normal_coverage` = those pixels / pixels with a known
true normal. Over frames: each metric is the mean of its per-frame values
(`mean_over_frames`; a frame without a value for a metric is left out of that mean).

The oracle fit (`oracle_fit`, `oracle_depth`) is the upper bound of the Marigold/Lotus
evaluations: plain least squares of s·d + t against the exact ground truth in the model's
own space (z, 1/z or ln z, see `alignment.to_model_space`) over the evaluated pixels where
the prediction d is finite.
"""

import math
from typing import Dict, Iterable, Mapping, Optional, Tuple

from densepred_ros.alignment import to_metric, to_model_space
import numpy as np

DELTA1_THRESHOLD = 1.25
ORACLE_NEAR_LIMIT = 1e-3  # metres; oracle depths below it are clamped to it
DEPTH_KEYS = ('abs_rel', 'delta1', 'rmse', 'coverage')
FAILED_FRAME: Mapping[str, float] = {'abs_rel': 1.0, 'delta1': 0.0, 'rmse': math.nan,
                                     'coverage': 0.0}


def _check_far_limit(far_limit: float) -> float:
    far_limit = float(far_limit)
    if not 0.0 < far_limit < math.inf:
        raise ValueError(f'far_limit must be a finite positive number of metres, got '
                         f'{far_limit}')
    return far_limit


def evaluated_mask(truth: np.ndarray, far_limit: float) -> np.ndarray:
    """Return the pixels whose ground truth is evaluated: finite and 0 < z <= far_limit.

    Args:
        truth: ground-truth depth of any shape, metres (NaN/±inf allowed).
        far_limit: metres, finite and > 0.

    Returns:
        bool array of truth's shape.
    """
    far_limit = _check_far_limit(far_limit)
    z = np.asarray(truth)
    with np.errstate(invalid='ignore'):
        return np.isfinite(z) & (z > 0.0) & (z <= far_limit)


def depth_metrics(depth: np.ndarray, truth: np.ndarray, far_limit: float) -> Dict[str, float]:
    """Return AbsRel, δ1, RMSE (m) and coverage of metric `depth` against `truth`.

    Args:
        depth: predicted metric depth, metres, REP 118 values (NaN unknown, +inf beyond
            range); any shape.
        truth: ground-truth depth of the same shape, metres (NaN/±inf: not evaluated).
        far_limit: metres; ground truth beyond it is not evaluated and predictions beyond
            it (+inf included) count as far_limit (see the module docstring).

    Returns:
        {'abs_rel', 'delta1', 'rmse', 'coverage'}: NaN for all when no pixel is evaluated;
        NaN for the first three (coverage 0) when no evaluated pixel has a prediction.

    Raises:
        ValueError: shapes differ or far_limit is not finite and positive.
    """
    d = np.asarray(depth, dtype=np.float64)
    z = np.asarray(truth, dtype=np.float64)
    if d.shape != z.shape:
        raise ValueError(f'depth {d.shape} and ground truth {z.shape} differ in shape')
    evaluated = evaluated_mask(z, far_limit)
    n_evaluated = int(evaluated.sum())
    if n_evaluated == 0:
        return dict.fromkeys(DEPTH_KEYS, math.nan)
    d, z = d[evaluated], z[evaluated]
    with np.errstate(invalid='ignore'):
        predicted = ~np.isnan(d) & (d > 0.0)          # -inf is > 0 False
    if not predicted.any():
        return {'abs_rel': math.nan, 'delta1': math.nan, 'rmse': math.nan, 'coverage': 0.0}
    d = np.minimum(d[predicted], float(far_limit))    # +inf and beyond: far_limit
    z = z[predicted]
    error = d - z
    return {'abs_rel': float(np.mean(np.abs(error) / z)),
            'delta1': float(np.mean(np.maximum(d / z, z / d) < DELTA1_THRESHOLD)),
            'rmse': float(np.sqrt(np.mean(error * error))),
            'coverage': float(predicted.sum() / n_evaluated)}


def abs_rel_map(depth: np.ndarray, truth: np.ndarray, far_limit: float) -> np.ndarray:
    """Return |ẑ − z| / z per pixel under the same rule, NaN where not counted.

    Args:
        depth, truth, far_limit: as for `depth_metrics`.

    Returns:
        float64 array of the inputs' shape; NaN where the pixel is not evaluated or has no
        prediction. Its nanmean over a frame equals `depth_metrics(...)['abs_rel']`.
    """
    d = np.asarray(depth, dtype=np.float64)
    z = np.asarray(truth, dtype=np.float64)
    if d.shape != z.shape:
        raise ValueError(f'depth {d.shape} and ground truth {z.shape} differ in shape')
    with np.errstate(invalid='ignore'):
        counted = evaluated_mask(z, far_limit) & ~np.isnan(d) & (d > 0.0)
    out = np.full(z.shape, np.nan)
    clipped = np.minimum(d[counted], float(far_limit))
    out[counted] = np.abs(clipped - z[counted]) / z[counted]
    return out


def normal_metrics(normals: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Return the mean angle in degrees between predicted and true normals, and coverage.

    Args:
        normals: predicted H×W×3 (any ...×3) normals; NaN where unknown.
        truth: true normals of the same shape; NaN where unknown (e.g. sky).

    Returns:
        {'normal_deg': mean angle in [0, 180] over pixels where both are finite and
        non-zero (NaN if none), 'normal_coverage': those pixels / pixels with a finite
        non-zero true normal (NaN if none)}.

    Raises:
        ValueError: shapes differ or the last axis is not 3.
    """
    a = np.asarray(normals, dtype=np.float64)
    b = np.asarray(truth, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (3,):
        raise ValueError(f'normals {a.shape} and ground truth {b.shape} must be equal ...×3')
    known = np.isfinite(b).all(axis=-1) & np.any(b != 0.0, axis=-1)
    both = known & np.isfinite(a).all(axis=-1) & np.any(a != 0.0, axis=-1)
    if not both.any():
        return {'normal_deg': math.nan,
                'normal_coverage': 0.0 if known.any() else math.nan}
    a, b = a[both], b[both]
    # atan2 of |a × b| and a · b: accurate at small angles, where arccos(a · b) is not.
    angle = np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))
    return {'normal_deg': float(np.degrees(angle).mean()),
            'normal_coverage': float(both.sum() / known.sum())}


def mean_over_frames(rows: Iterable[Mapping[str, float]]) -> Dict[str, float]:
    """Return each metric's mean over the frames that have a finite value for it.

    Args:
        rows: per-frame metric dicts (from `depth_metrics`, `normal_metrics` or
            `FAILED_FRAME`); keys may differ between rows.

    Returns:
        {key: mean}, NaN for a key no frame has a finite value for.
    """
    values: Dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, [])
            if value is not None and math.isfinite(value):
                values[key].append(float(value))
    return {key: float(np.mean(v)) if v else math.nan for key, v in values.items()}


def oracle_fit(relative: np.ndarray, space: str, truth: np.ndarray,
               far_limit: float) -> Optional[Tuple[float, float]]:
    """Return the least-squares (scale, shift) of s·d + t ≈ ground truth in model space.

    Args:
        relative: the model's relative prediction d, any shape.
        space: 'depth', 'disparity' or 'log_depth' (the target is z, 1/z or ln z).
        truth: ground-truth depth of the same shape, metres.
        far_limit: metres; only evaluated pixels (see `evaluated_mask`) with finite d
            enter the fit.

    Returns:
        (s, t), or None with fewer than 2 such pixels or no spread in d.
    """
    d = np.asarray(relative, dtype=np.float64)
    z = np.asarray(truth, dtype=np.float64)
    if d.shape != z.shape:
        raise ValueError(f'prediction {d.shape} and ground truth {z.shape} differ in shape')
    used = evaluated_mask(z, far_limit) & np.isfinite(d)
    if used.sum() < 2 or np.ptp(d[used]) == 0.0:
        return None
    design = np.stack([d[used], np.ones(int(used.sum()))], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, to_model_space(z[used], space), rcond=None)
    return float(scale), float(shift)


def oracle_depth(relative: np.ndarray, space: str, truth: np.ndarray, far_limit: float,
                 near_limit: float = ORACLE_NEAR_LIMIT) -> np.ndarray:
    """Return the metric depth of the oracle fit (`oracle_fit` then `alignment.to_metric`).

    Args:
        relative, space, truth, far_limit: as for `oracle_fit`.
        near_limit: depths below it are clamped to it, metres.

    Returns:
        float64 metric depth of relative's shape (REP 118 values; +inf beyond far_limit);
        all NaN when the fit is impossible.
    """
    fit = oracle_fit(relative, space, truth, far_limit)
    d = np.asarray(relative, dtype=np.float64)
    if fit is None:
        return np.full(d.shape, np.nan)
    return to_metric(d, space, fit[0], fit[1], near_limit, float(far_limit))
