"""Metric alignment of affine-invariant depth or disparity to sparse lidar depths (numpy only).

A relative prediction `d` (H×W, the model's [0, 1] space) is related to metric depth z by an
unknown affine map in the model's own space:

    depth models      z   ≈ s·d + t
    disparity models  1/z ≈ s·d + t
    log-depth models  ln z ≈ s·d + t       (s > 0 in all three)

`align` fits (s, t) to projected lidar points robustly (2-point RANSAC with a fixed seed,
all hypotheses drawn at once, then a weighted least-squares refit on the inliers with a few
Huber reweighting passes), checks the fit against quality gates and returns the metric
depth image (REP 117/118: float32 metres, NaN unknown, +inf beyond range). Nothing below
the gates is returned as depth. Residuals are measured in the prediction's own normalised
units by default (`AlignmentConfig.residual='prediction'`); relative-error weighting
(`'relative'`) is available.

Local correction (`AlignmentConfig.correction='local'`): a monocular prediction's error is
not one affine map, so after the global fit the residuals of the lidar points in the
model's space are spread over the image by a regularised least-squares problem on a coarse
grid of nodes (one per `correction_cell` pixels): a data term at nodes near the points, a
smoothness term between neighbouring nodes that is cut where the prediction itself has a
depth edge, and a weak pull towards zero so that the correction fades back to the global
fit away from the points (outside the lidar's field of view). Points are weighted robustly
(Tukey biweight against the local field); the field is kept only where it exceeds its
uncertainty (the lidar noise, estimated from neighbouring returns along a beam, and the
rounding of each return to a pixel); the grid is interpolated to pixels with weights that
again respect the prediction's edges. A frame keeps the global fit when the field does not
predict held-out lidar points (two folds of alternating row bands) significantly better
than the global fit. Measurements: docs/local-correction.md.

Temporal stability: the model renormalises every frame, so (s, t) are not comparable
between frames. What is stable is the metric value of fixed percentiles of the prediction
(the "anchors", e.g. the 5th and 95th percentile of d mapped through the fit). The prior
carries smoothed anchors; each frame maps them back to an (s, t) for its own percentiles.
`align(..., prior=...)` is pure; `TemporalAligner` keeps the prior between frames.
"""

from dataclasses import dataclass, replace
import functools
import math
from typing import Callable, Optional, Tuple

from densepred_ros.spaces import DEPTH, DEPTH_SPACES as SPACES, DISPARITY, LOG_DEPTH
import numpy as np

#: AlignmentResult.temporal values.
TEMPORAL_NONE = 'none'        # failed frame: no temporal step, prior reset
TEMPORAL_INIT = 'init'        # no usable prior: this frame's fit starts a new prior
TEMPORAL_BLENDED = 'blended'  # anchors blended into the prior
TEMPORAL_GATED = 'gated'      # anchors jumped: the prior's anchors were used, frame ignored
TEMPORAL_RESET = 'reset'      # too many consecutive jumps: this frame's fit replaced the prior

_IRLS_POINTS = 4096  # points per early reweighting pass (see _irls)

CORRECTIONS = ('none', 'local')
_REFERENCE = 5.0  # smoothness of the outlier pass relative to correction_smoothness
_SATURATION = 1.0  # point weight at which a node's data term reaches half its full weight


@dataclass(frozen=True)
class AlignmentConfig:
    """Parameters of `align`; the defaults suit 10 Hz lidar with 100–100 000 points.

    Attributes:
        min_points: fewest valid points (finite prediction and depth) to attempt a fit.
        min_inliers: fewest inliers of an accepted fit.
        min_inlier_ratio: smallest inliers / valid points of an accepted fit.
        residual: how a point's misfit is measured, with y = z, 1/z or ln z (see
            `to_model_space`) and ŷ = s·d + t. 'prediction' (default): (ŷ − y) / s in
            units of the prediction's anchor spread (d at the high minus the low anchor
            percentile), unweighted least squares, i.e. errors homoscedastic in the
            model's normalised space. 'relative': ŷ / y − 1, least squares on relative
            errors (weights 1/y²), i.e. errors proportional to y; for log-depth models
            ŷ − y, which is already the relative error of the depth.
        inlier_threshold: a point is an inlier if |residual| < this.
        ransac_iterations: 2-point hypotheses drawn (all at once).
        ransac_max_points: points scored per hypothesis (random subset beyond this).
        seed: seed of the random draws; a fixed seed makes `align` deterministic.
        huber_iterations: reweighted refits after RANSAC.
        huber_k: Huber constant in units of the robust residual σ (1.4826·MAD).
        min_spread: degenerate if the inliers' spread of d (10th–90th percentile) is
            below this fraction of the image's anchor spread: the shift is not identifiable
            and a scale-only fit with the prior's shift is used (failure without a prior).
        near_limit: depths below this are clamped to it, metres.
        far_limit: depths beyond this (and disparities <= 1/far_limit) become +inf, metres.
        min_positive_fraction: depth models only: smallest fraction of the image with
            s·d + t > 0 for a plausible fit.
        min_finite_fraction: smallest fraction of the image with finite aligned depth
            (not beyond far_limit) for a plausible fit.
        anchor_percentiles: percentiles of d (0–100) whose metric values are the anchors.
        smoothing: weight of the new frame when blending anchors (1 = no smoothing).
        max_anchor_jump: a frame whose anchors differ from the prior's by more than this
            relative amount is not blended in (gated).
        max_rejections: after this many consecutive gated frames the prior is replaced by
            the current frame's fit (the scene really changed).
        stats_stride: pixel stride of the subsample used for image percentiles.
        correction: 'none' (the global fit only) or 'local' (the global fit plus a smooth,
            edge-aware correction from the lidar residuals; see the module doc).
        correction_cell: pixels between the nodes of the correction grid; the correction
            cannot vary faster than this, and its cost falls with the square of it.
        correction_smoothness: weight of the smoothness term between neighbouring nodes
            relative to the data term of a node with points (larger = smoother).
        correction_reach: distance in pixels over which the correction fades back to the
            global fit away from lidar points (e-folding length).
        correction_edge: relative depth step between a pixel and a node (or two nodes),
            e.g. 0.1 = 10 %, at which their coupling falls to 1/e; larger steps are
            treated as depth edges that the correction does not cross.
        correction_outlier: points whose depth differs from the global fit's by more
            than a factor 1 + this (either way; 1.0: outside [z/2, 2·z]) are not used by
            the correction; of the others, those whose misfit to a 5× smoother first-pass
            field exceeds 4.685 robust σ (Tukey biweight) get no weight.
        correction_max: largest change of depth the correction may apply at a pixel, as
            a factor 1 + this (1.0: the corrected depth is within [z/2, 2·z] of the
            global z).
        correction_deadband: significance of the correction: at each node it is shrunk
            (non-negative garrote) by this many standard errors of the local lidar noise
            (estimated from neighbouring points along a beam), so noise alone corrects
            nothing.
        correction_holdout: the correction is applied only when it predicts held-out
            lidar points (two folds of alternating row bands, each fitted without the
            other) better than the global fit by more than this many standard errors of
            that gain (from blocks of 2×2 cells); otherwise the frame keeps the global fit
            (`AlignmentResult.correction` 'declined'). -inf applies it always.
    """

    min_points: int = 30
    min_inliers: int = 20
    min_inlier_ratio: float = 0.5
    residual: str = 'prediction'
    inlier_threshold: float = 0.12
    ransac_iterations: int = 256
    ransac_max_points: int = 1000
    seed: int = 0
    huber_iterations: int = 3
    huber_k: float = 1.345
    min_spread: float = 0.05
    near_limit: float = 0.05
    far_limit: float = 80.0
    min_positive_fraction: float = 0.9
    min_finite_fraction: float = 0.2
    anchor_percentiles: Tuple[float, float] = (5.0, 95.0)
    smoothing: float = 0.5
    max_anchor_jump: float = 0.3
    max_rejections: int = 3
    stats_stride: int = 4
    correction: str = 'local'
    correction_cell: int = 8
    correction_smoothness: float = 0.05
    correction_reach: float = 48.0
    correction_edge: float = 0.1
    correction_outlier: float = 1.0
    correction_max: float = 1.0
    correction_deadband: float = 2.0
    correction_holdout: float = 2.0

    def __post_init__(self) -> None:
        """Check every parameter's range (ValueError naming the parameter)."""
        checks = {
            'min_points': self.min_points >= 2,
            'min_inliers': self.min_inliers >= 2,
            'min_inlier_ratio': 0.0 <= self.min_inlier_ratio <= 1.0,
            'residual': self.residual in ('prediction', 'relative'),
            'inlier_threshold': self.inlier_threshold > 0.0,
            'ransac_iterations': self.ransac_iterations >= 1,
            'ransac_max_points': self.ransac_max_points >= 2,
            'huber_iterations': self.huber_iterations >= 0,
            'huber_k': self.huber_k > 0.0,
            'min_spread': 0.0 <= self.min_spread < 1.0,
            'near_limit': 0.0 < self.near_limit < self.far_limit,
            'far_limit': self.far_limit > 0.0,
            'min_positive_fraction': 0.0 <= self.min_positive_fraction <= 1.0,
            'min_finite_fraction': 0.0 <= self.min_finite_fraction <= 1.0,
            'anchor_percentiles': (len(self.anchor_percentiles) == 2
                                   and 0.0 <= self.anchor_percentiles[0]
                                   < self.anchor_percentiles[1] <= 100.0),
            'smoothing': 0.0 < self.smoothing <= 1.0,
            'max_anchor_jump': self.max_anchor_jump > 0.0,
            'max_rejections': self.max_rejections >= 1,
            'stats_stride': self.stats_stride >= 1,
            'correction': self.correction in CORRECTIONS,
            'correction_cell': self.correction_cell >= 1,
            'correction_smoothness': self.correction_smoothness > 0.0,
            'correction_reach': self.correction_reach > 0.0,
            'correction_edge': self.correction_edge > 0.0,
            'correction_outlier': self.correction_outlier > 0.0,
            'correction_max': self.correction_max > 0.0,
            'correction_deadband': self.correction_deadband >= 0.0,
            'correction_holdout': -math.inf <= self.correction_holdout < math.inf,
        }
        for name, good in checks.items():
            if not good:
                raise ValueError(f'invalid alignment parameter {name}={getattr(self, name)!r}')


@dataclass(frozen=True)
class AlignmentPrior:
    """Temporal state passed from one frame to the next.

    Attributes:
        space: 'depth', 'disparity' or 'log_depth' (the model's space; a prior is only
            valid for it).
        percentiles: the percentiles of d (0–100) the anchors belong to.
        anchors: model-space values (metres, 1/metres or ln metres: `to_model_space`) of the
            prediction at those percentiles, smoothed over frames; anchors[1] > anchors[0].
        rejections: consecutive frames gated so far.
        frames: frames blended into the anchors since the last (re)start.
    """

    space: str
    percentiles: Tuple[float, float]
    anchors: Tuple[float, float]
    rejections: int = 0
    frames: int = 1

    def affine_for(self, d_lo: float, d_hi: float) -> Tuple[float, float]:
        """Return (s, t) mapping a frame's percentile values d_lo < d_hi onto the anchors."""
        s = (self.anchors[1] - self.anchors[0]) / (d_hi - d_lo)
        return s, self.anchors[0] - s * d_lo

    @property
    def anchor_depths(self) -> Tuple[float, float]:
        """Metric depths of the anchors in metres (+inf for a non-positive disparity)."""
        if self.space == DEPTH:
            return float(self.anchors[0]), float(self.anchors[1])
        if self.space == LOG_DEPTH:
            return tuple(_exp(a) for a in self.anchors)
        return tuple(1.0 / a if a > 0.0 else math.inf for a in self.anchors)


@dataclass(frozen=True)
class AlignmentResult:
    """Outcome of `align` for one frame.

    Attributes:
        ok: True when `depth` holds a metric depth image.
        reason: why not ok ('' when ok).
        depth: H×W float32 metres along the optical axis; NaN unknown (NaN prediction or a
            non-positive depth), +inf beyond `far_limit` or sky; None when not ok.
        space: the model space the fit was made in.
        scale, shift: (s, t) applied to the prediction (after temporal smoothing), model
            space: z, 1/z or ln z = s·d + t; NaN when not ok.
        n_points: valid lidar points used (finite prediction and positive depth).
        n_inliers: inliers of this frame's fit.
        median_rel_error, p90_rel_error: median / 90th percentile of |ẑ − z| / z over the
            inliers with the applied (s, t); NaN when not ok.
        scale_only: True when the shift came from the prior (degenerate spread of d).
        temporal: 'none', 'init', 'blended', 'gated' or 'reset' (see module constants).
        prior: the state to pass to the next frame (None after a failure: reset).
        correction: what was applied after the global fit: 'none', 'local', 'declined'
            (computed but not applied: it did not predict held-out lidar points
            significantly better than the global fit, `correction_holdout`), or 'skipped'
            (configured but not applied: the frame was gated by the temporal filter, so its
            lidar is not trusted, or the image is smaller than 2×2 pixels).
        correction_spread: 95th percentile over the image of the relative depth change
            applied by the correction, |z_local / z_global − 1| (first order); NaN
            without a correction.
        support_fraction: share of the image (0–1) where the correction is carried mostly
            by lidar points (its confidence > 0.5); where it is not, it fades to the global
            fit. NaN without a correction.
        correction_points: points that carried weight in the correction's last pass.
        correction_gain: share of the held-out points' squared misfit to the global fit
            that the correction removed (1 = all, ≤ 0 = none; relative depth, two folds);
            NaN without a correction.
    """

    ok: bool
    reason: str
    depth: Optional[np.ndarray]
    space: str
    scale: float = math.nan
    shift: float = math.nan
    n_points: int = 0
    n_inliers: int = 0
    median_rel_error: float = math.nan
    p90_rel_error: float = math.nan
    scale_only: bool = False
    temporal: str = TEMPORAL_NONE
    prior: Optional[AlignmentPrior] = None
    correction: str = 'none'
    correction_spread: float = math.nan
    support_fraction: float = math.nan
    correction_points: int = 0
    correction_gain: float = math.nan

    @property
    def inlier_ratio(self) -> float:
        """n_inliers / n_points (0 without points)."""
        return self.n_inliers / self.n_points if self.n_points else 0.0


@dataclass(frozen=True)
class _Fit:
    s: float
    t: float
    inliers: np.ndarray
    scale_only: bool


def align(relative: np.ndarray, space: str, uv: np.ndarray, z: np.ndarray,
          prior: Optional[AlignmentPrior] = None,
          config: Optional[AlignmentConfig] = None) -> AlignmentResult:
    """Fit a relative prediction to sparse metric depths and return metric depth.

    Args:
        relative: H×W float prediction in the model's space (affine-invariant, typically
            [0, 1]); NaN marks unknown pixels.
        space: 'depth' (z ≈ s·d + t), 'disparity' (1/z ≈ s·d + t) or 'log_depth'
            (ln z ≈ s·d + t).
        uv: N×2 integer pixel coordinates (column u, row v) of the lidar points in this
            prediction's resolution (see `camera.project_points`).
        z: N depths of those points along the optical axis, metres (non-finite or
            non-positive values are ignored).
        prior: the previous frame's `AlignmentResult.prior`, or None.
        config: parameters; None uses `AlignmentConfig()`.

    Returns:
        An AlignmentResult; `ok` is False (with `reason`, no depth, prior reset) when the
        points are too few, degenerate without a prior, inconsistent (too few inliers) or
        the fit is implausible.

    Raises:
        ValueError: for malformed inputs (shapes, unknown space, pixels outside the image,
            a prior of another space or percentiles).
    """
    cfg = config if config is not None else AlignmentConfig()
    rel = _check_relative(relative)
    if space not in SPACES:
        raise ValueError(f'unknown prediction space {space!r}; expected one of {SPACES}')
    uv, z = _check_points(uv, z, rel.shape)
    if prior is not None and (prior.space != space
                              or tuple(prior.percentiles) != tuple(cfg.anchor_percentiles)):
        raise ValueError(f'prior for space {prior.space!r} at percentiles {prior.percentiles} '
                         f'does not match space {space!r} at {cfg.anchor_percentiles}')

    def fail(reason: str, n_points: int = 0, n_inliers: int = 0) -> AlignmentResult:
        return AlignmentResult(ok=False, reason=reason, depth=None, space=space,
                               n_points=n_points, n_inliers=n_inliers)

    # 1. Image statistics: the anchor percentiles of the prediction.
    sample = rel[::cfg.stats_stride, ::cfg.stats_stride]
    sample = sample[np.isfinite(sample)].astype(np.float64)
    if sample.size < 2:
        return fail('prediction has no finite values')
    d_lo, d_hi = np.percentile(sample, cfg.anchor_percentiles)
    if not d_hi > d_lo:
        return fail(f'prediction is constant between its anchor percentiles ({d_lo:.6g})')

    # 2. Samples: prediction at the lidar pixels and the target in the model's space.
    d = rel[uv[:, 1], uv[:, 0]].astype(np.float64)
    valid = np.isfinite(d) & np.isfinite(z) & (z > 0.0)
    d, zv = d[valid], z[valid].astype(np.float64)
    y = to_model_space(zv, space)
    n = int(d.size)
    if n < cfg.min_points:
        return fail(f'too few valid lidar points: {n} < min_points={cfg.min_points}', n)

    # 3. Robust fit (or scale-only with the prior's shift when d has no spread).
    rng = np.random.default_rng(cfg.seed)
    min_spread = cfg.min_spread * (d_hi - d_lo)
    res = _Residual(cfg.residual, y, d_hi - d_lo, space == LOG_DEPTH)
    fit = None
    if _spread(d) >= min_spread:
        fit = _fit_affine(d, y, res, cfg, rng)
        if fit is None:
            return fail('no consistent affine fit (no hypothesis with scale > 0)', n)
        gate = _gate(fit, n, cfg)
        if gate:
            return fail(gate, n, int(fit.inliers.sum()))
        if _spread(d[fit.inliers]) < min_spread:
            fit = None
    if fit is None:
        if prior is None:
            return fail(f'degenerate points: the spread of the prediction at the points is '
                        f"below min_spread={cfg.min_spread} of the image's, and there is "
                        f'no prior to take the shift from', n)
        _, t_prior = prior.affine_for(d_lo, d_hi)
        fit = _fit_scale_only(d, y, t_prior, res, cfg, rng)
        if fit is None:
            return fail('degenerate points and no positive scale-only fit', n)
        gate = _gate(fit, n, cfg)
        if gate:
            return fail(gate, n, int(fit.inliers.sum()))
    n_inl = int(fit.inliers.sum())

    # 4. Temporal step on the metric anchors.
    frame_anchors = (fit.s * d_lo + fit.t, fit.s * d_hi + fit.t)
    s, t, state, new_prior = _temporal(prior, frame_anchors, fit, d_lo, d_hi, space, cfg)

    # 5. Plausibility of the applied (s, t) over the image, then the depth image.
    ys = s * sample + t
    if space == DEPTH:
        positive = float(np.mean(ys > 0.0))
        finite = float(np.mean((ys > 0.0) & (ys <= cfg.far_limit)))
        if positive < cfg.min_positive_fraction:
            return fail(f'implausible fit: depth positive on only {positive:.0%} of the '
                        f'image (< min_positive_fraction={cfg.min_positive_fraction})',
                        n, n_inl)
    elif space == LOG_DEPTH:
        finite = float(np.mean(ys <= math.log(cfg.far_limit)))
    else:
        finite = float(np.mean(ys > 1.0 / cfg.far_limit))
    if finite < cfg.min_finite_fraction:
        return fail(f'implausible fit: depth finite on only {finite:.0%} of the image '
                    f'(< min_finite_fraction={cfg.min_finite_fraction})', n, n_inl)
    rel32 = rel.astype(np.float32, copy=False)
    local = None
    applied = 'none'
    if cfg.correction == 'local':
        applied = 'skipped'
        if state != TEMPORAL_GATED and min(rel.shape) >= 2:
            local = _local_correction(rel32, space, s, t, uv[valid], d, y, cfg)
            applied = 'local' if local.y is not None else 'declined'
    if local is None or local.y is None:
        depth = to_metric(rel32, space, s, t, cfg.near_limit, cfg.far_limit)
    else:
        depth = _metric_in_place(local.y, space, cfg.near_limit, cfg.far_limit)
    z_hat = to_metric(d[fit.inliers], space, s, t, cfg.near_limit, cfg.far_limit)
    err = np.abs(z_hat - zv[fit.inliers]) / zv[fit.inliers]
    err = np.where(np.isnan(err), np.inf, err)
    extra = {} if local is None else {
        'correction_spread': local.spread, 'support_fraction': local.support,
        'correction_points': local.points, 'correction_gain': local.gain}
    return AlignmentResult(
        ok=True, reason='', depth=depth, space=space, scale=float(s), shift=float(t),
        n_points=n, n_inliers=n_inl, median_rel_error=float(np.median(err)),
        p90_rel_error=float(np.percentile(err, 90)), scale_only=fit.scale_only,
        temporal=state, prior=new_prior, correction=applied, **extra)


def to_model_space(depth: np.ndarray, space: str) -> np.ndarray:
    """Return metric depth (metres, > 0; +inf allowed) in a model's space.

    'depth': z; 'disparity': 1/z (+inf → 0); 'log_depth': ln z (+inf → +inf).
    """
    if space not in SPACES:
        raise ValueError(f'unknown prediction space {space!r}; expected one of {SPACES}')
    z = np.asarray(depth)
    if space == DEPTH:
        return z
    with np.errstate(divide='ignore', invalid='ignore'):
        return 1.0 / z if space == DISPARITY else np.log(z)


def to_metric(relative: np.ndarray, space: str, scale: float, shift: float,
              near_limit: float, far_limit: float) -> np.ndarray:
    """Apply (s, t) in the model's space and return metric depth (REP 117/118 values).

    Depth space: z = s·d + t; z <= 0 → NaN (unknown). Disparity space: z = 1 / (s·d + t);
    a disparity <= 1/far_limit (including negative ones) → +inf. Log-depth space:
    z = exp(s·d + t). In all, z > far_limit → +inf, 0 < z < near_limit → near_limit,
    NaN input → NaN.

    Args:
        relative: prediction array of any shape (float32 output for float32 input).
        space: 'depth', 'disparity' or 'log_depth'.
        scale, shift: (s, t).
        near_limit, far_limit: metres.
    """
    rel = np.asarray(relative)
    dtype = np.float32 if rel.dtype == np.float32 else np.float64
    y = rel * dtype(scale)
    y += dtype(shift)
    return _metric_in_place(y, space, near_limit, far_limit)


def _metric_in_place(y: np.ndarray, space: str, near_limit: float,
                     far_limit: float) -> np.ndarray:
    """`to_metric` of model-space values y (float32 or float64), overwriting y."""
    dtype = y.dtype.type
    with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
        if space == DEPTH:
            z = y
            z[z <= 0.0] = np.nan
        elif space == LOG_DEPTH:
            z = np.exp(y, out=y)
        else:
            z = np.reciprocal(y)
            z[y <= dtype(1.0 / far_limit)] = np.inf
        z[z > far_limit] = np.inf
        np.maximum(z, dtype(near_limit), out=z)
    return z


def _exp(value: float) -> float:
    """exp(value), +inf on overflow."""
    return math.exp(value) if value < 709.0 else math.inf


def _gate(fit: _Fit, n: int, cfg: AlignmentConfig) -> str:
    """Return why the fit's inliers are insufficient ('' when they pass)."""
    n_inl = int(fit.inliers.sum())
    if n_inl < cfg.min_inliers:
        return f'too few inliers: {n_inl} < min_inliers={cfg.min_inliers}'
    if n_inl < cfg.min_inlier_ratio * n:
        return f'inlier ratio {n_inl / n:.2f} < min_inlier_ratio={cfg.min_inlier_ratio}'
    return ''


def _check_relative(relative: np.ndarray) -> np.ndarray:
    rel = np.asarray(relative)
    if rel.ndim != 2 or rel.shape[0] < 1 or rel.shape[1] < 1:
        raise ValueError(f'relative must be an H×W array, got shape {rel.shape}')
    if not np.issubdtype(rel.dtype, np.floating):
        raise ValueError(f'relative must be a float array, got dtype {rel.dtype}')
    return rel


def _check_points(uv: np.ndarray, z: np.ndarray,
                  shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    uv = np.asarray(uv)
    z = np.asarray(z)
    if uv.ndim != 2 or uv.shape[1] != 2 or not np.issubdtype(uv.dtype, np.integer):
        raise ValueError(f'uv must be an N×2 integer array, got shape {uv.shape} '
                         f'dtype {uv.dtype}')
    if z.shape != (uv.shape[0],):
        raise ValueError(f'z must have shape ({uv.shape[0]},) to match uv, got {z.shape}')
    if uv.size:
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        if lo.min() < 0 or hi[0] >= shape[1] or hi[1] >= shape[0]:
            raise ValueError(f'uv has pixels outside the {shape[1]}x{shape[0]} prediction: '
                             f'u in [{lo[0]}, {hi[0]}], v in [{lo[1]}, {hi[1]}]')
    return uv, z


def _spread(d: np.ndarray) -> float:
    """10th–90th percentile range of d (0 for fewer than 2 values)."""
    if d.size < 2:
        return 0.0
    lo, hi = np.percentile(d, (10.0, 90.0))
    return float(hi - lo)


def _wls(d: np.ndarray, y: np.ndarray, w: np.ndarray) -> Optional[Tuple[float, float]]:
    """Weighted least squares y ≈ s·d + t (centred closed form); None if d has no spread."""
    sw = w.sum()
    if not sw > 0.0:
        return None
    md = (w * d).sum() / sw
    my = (w * y).sum() / sw
    dc = d - md
    var = (w * dc * dc).sum()
    if not var > 1e-18 * sw:
        return None
    s = (w * dc * (y - my)).sum() / var
    return float(s), float(my - s * md)


def _huber_weights(r: np.ndarray, k: float) -> np.ndarray:
    """Huber weights min(1, c/|r|) with c = k·1.4826·MAD(r) (MAD from ≤ 2048 residuals)."""
    a = np.abs(r)
    step = -(-a.size // 2048)
    c = k * 1.4826 * float(np.median(a[::step]))
    if not c > 0.0:
        return np.ones_like(a)
    return np.minimum(1.0, c / np.maximum(a, 1e-300))


class _Residual:
    """Residual and base weight of one point under (s, t), by `AlignmentConfig.residual`.

    'prediction': r = (s·d + t − y) / (s·span), the error in units of the prediction's
    anchor spread, base weight 1 (the errors of an affine-invariant model are about
    homoscedastic in its own normalised space; this is the oracle's least squares).
    'relative': r = (s·d + t) / y − 1, base weight 1/y² (least squares on relative error);
    in log space r = s·d + t − y, base weight 1 (the relative error of exp(y)).
    """

    def __init__(self, mode: str, y: np.ndarray, span: float, log_space: bool = False) -> None:
        self.mode = 'log' if mode == 'relative' and log_space else mode
        self.y = y
        self.inv_y = 1.0 / y
        self.span = span
        relative = self.mode == 'relative'
        self.weights = self.inv_y * self.inv_y if relative else np.ones_like(y)

    def __call__(self, s, t, d: np.ndarray, index=slice(None)) -> np.ndarray:
        """Residuals for scalar or column-vector (s, t) of the points `index` (values d)."""
        if self.mode == 'relative':
            return (s * d + t) * self.inv_y[index] - 1.0
        if self.mode == 'log':
            return s * d + t - self.y[index]
        return (s * d + t - self.y[index]) / (s * self.span)

    def matrix(self, s: np.ndarray, t: np.ndarray, index: np.ndarray,
               d: np.ndarray) -> np.ndarray:
        """M×K float32 residuals of M hypotheses at the K points `index` (values d)."""
        s32 = s.astype(np.float32)[:, None]
        t32 = t.astype(np.float32)[:, None]
        d32 = d.astype(np.float32)[None, :]
        if self.mode != 'prediction':
            r = s32 * d32
            r += t32
            if self.mode == 'relative':
                r *= self.inv_y[index].astype(np.float32)[None, :]
                r -= np.float32(1.0)
            else:
                r -= self.y[index].astype(np.float32)[None, :]
            return r
        r = self.y[index].astype(np.float32)[None, :] - t32
        r /= s32
        np.subtract(d32, r, out=r)
        r /= np.float32(self.span)
        return r


def _msac_best(residuals: np.ndarray, tau: float) -> int:
    """Index of the hypothesis (row) with the lowest truncated squared residual sum."""
    r2 = residuals * residuals
    return int(np.argmin(np.minimum(r2, np.asarray(tau * tau, r2.dtype)).sum(axis=1)))


def _fit_affine(d: np.ndarray, y: np.ndarray, res: _Residual, cfg: AlignmentConfig,
                rng: np.random.Generator) -> Optional[_Fit]:
    """RANSAC (2-point, MSAC score, vectorised) then Huber-IRLS refit on the inliers."""
    n = d.size
    sub = rng.choice(n, cfg.ransac_max_points, replace=False) if n > cfg.ransac_max_points \
        else np.arange(n)
    ds, ys = d[sub], y[sub]
    m = cfg.ransac_iterations
    i = rng.integers(0, ds.size, m)
    j = rng.integers(0, ds.size - 1, m)
    j += j >= i
    dd = ds[i] - ds[j]
    with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
        s = (ys[i] - ys[j]) / dd
        t = ys[i] - s * ds[i]
    good = np.isfinite(s) & np.isfinite(t) & (s > 0.0) & (np.abs(dd) > 1e-12)
    if not good.any():
        return None
    s, t = s[good], t[good]
    best = _msac_best(res.matrix(s, t, sub, ds), cfg.inlier_threshold)
    return _irls(d, res, float(s[best]), float(t[best]), False, cfg)


def _fit_scale_only(d: np.ndarray, y: np.ndarray, t: float, res: _Residual,
                    cfg: AlignmentConfig, rng: np.random.Generator) -> Optional[_Fit]:
    """1-point RANSAC for s with the shift fixed to t, then Huber-IRLS refit."""
    with np.errstate(invalid='ignore', divide='ignore'):
        s_all = (y - t) / d
    cand = np.flatnonzero(np.isfinite(s_all) & (s_all > 0.0))
    if cand.size == 0:
        return None
    s = s_all[rng.choice(cand, min(cand.size, cfg.ransac_iterations), replace=False)]
    sub = rng.choice(d.size, cfg.ransac_max_points, replace=False) \
        if d.size > cfg.ransac_max_points else np.arange(d.size)
    best = _msac_best(res.matrix(s, np.full_like(s, t), sub, d[sub]), cfg.inlier_threshold)
    return _irls(d, res, float(s[best]), t, True, cfg)


def _irls(d: np.ndarray, res: _Residual, s: float, t: float, fixed_t: bool,
          cfg: AlignmentConfig) -> Optional[_Fit]:
    """Weighted least squares on the inliers, Huber-reweighted; inliers re-selected each pass.

    Weights are the residual's base weights times Huber weights of the current residuals.
    With fixed_t only the scale is refitted. Beyond _IRLS_POINTS points the early passes
    use an evenly strided subset; the last pass always uses every point.
    """
    step = -(-d.size // _IRLS_POINTS)
    subset = np.arange(0, d.size, step) if step > 1 else slice(None)
    passes = [subset] * cfg.huber_iterations + [slice(None)]
    tau = cfg.inlier_threshold
    for index in passes:
        ds, ys = d[index], res.y[index]
        r = res(s, t, ds, index)
        inl = np.abs(r) < tau
        if inl.sum() < 2:
            break
        w = res.weights[index][inl] * _huber_weights(r[inl], cfg.huber_k)
        ds, ys = ds[inl], ys[inl]
        if not fixed_t:
            st = _wls(ds, ys, w)
            if st is None or not st[0] > 0.0:
                break
            s, t = st
        else:
            den = (w * ds * ds).sum()
            s_new = (w * ds * (ys - t)).sum() / den if den > 0.0 else math.nan
            if not s_new > 0.0:
                break
            s = float(s_new)
    if not s > 0.0:
        return None
    return _Fit(s=s, t=t, inliers=np.abs(res(s, t, d)) < tau, scale_only=fixed_t)


@dataclass(frozen=True)
class _Local:
    """Outcome of `_local_correction`: corrected model-space image and what it did."""

    y: Optional[np.ndarray]  # None: declined by the held-out check
    spread: float
    support: float
    points: int
    gain: float


@dataclass(frozen=True)
class _Grid:
    """Correction grid of gh×gw nodes spread evenly over an H×W image (corners included).

    Pixel row v lies between node rows i0[v] and i0[v] + 1 at fraction fy[v] (columns alike);
    node (i, j) sits at pixel (rows[i], cols[j]).
    """

    gh: int
    gw: int
    rows: np.ndarray
    cols: np.ndarray
    i0: np.ndarray
    fy: np.ndarray
    j0: np.ndarray
    fx: np.ndarray


def _axis(size: int, nodes: int):
    pos = np.arange(size) * ((nodes - 1) / max(size - 1, 1))
    lo = np.minimum(pos.astype(np.intp), nodes - 2)
    frac = (pos - lo).astype(np.float32)
    at = np.rint(np.arange(nodes) * ((size - 1) / (nodes - 1))).astype(np.intp)
    return at, lo, frac


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int, cell: int) -> _Grid:
    gh = max(2, -(-(height - 1) // cell) + 1)
    gw = max(2, -(-(width - 1) // cell) + 1)
    rows, i0, fy = _axis(height, gh)
    cols, j0, fx = _axis(width, gw)
    return _Grid(gh, gw, rows, cols, i0, fy, j0, fx)


def _inverse_depth(space: str, y: np.ndarray) -> np.ndarray:
    """Inverse depth (1/m, ≥ 0, NaN unknown) of model-space values: the edge guide.

    Inverse depth is affine in the pixel coordinates on every plane, so a steady slope
    (a floor at a grazing angle) is told apart from a step (a depth edge).
    """
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        if space == LOG_DEPTH:
            return np.exp(-y)
        if space == DEPTH:
            return np.where(y > 0.0, 1.0 / y, np.nan)
        return np.maximum(y, 0.0)


def _similarity(qa: np.ndarray, qb: np.ndarray, floor: float, edge: float) -> np.ndarray:
    """exp(−(relative step between inverse depths qa, qb / edge)²); 0 where either is NaN."""
    step = (qa - qb) / (np.maximum(np.maximum(qa, qb), floor) * edge)
    w = np.exp(-step * step)
    return np.where(np.isnan(w), 0.0, w)


def _node_coupling(q: np.ndarray, axis: int, floor: float, edge: float) -> np.ndarray:
    """Coupling of neighbouring nodes along `axis` from the guide's excess step.

    A step between two nodes is compared with the steps just before and after it; the
    part that neither explains (the excess, as a relative depth step) is the depth edge.
    On a plane the steps are equal and the coupling is 1.
    """
    step = np.diff(q, axis=axis)
    pad = np.full_like(np.take(step, [0], axis=axis), np.nan)
    before = np.concatenate([pad, step], axis=axis)
    after = np.concatenate([step, pad], axis=axis)
    n = step.shape[axis]
    prev = np.take(before, range(n), axis=axis)
    nxt = np.take(after, range(1, n + 1), axis=axis)
    with np.errstate(invalid='ignore'):
        excess = np.fmin(np.abs(step - prev), np.abs(step - nxt))
        excess = np.where(np.isnan(excess), np.abs(step), excess)
        top = np.maximum(np.take(q, range(n), axis=axis), np.take(q, range(1, n + 1), axis=axis))
        rel = excess / (np.maximum(top, floor) * edge)
    w = np.exp(-rel * rel)
    return np.where(np.isnan(w), 0.0, w)


def _solve_grid(alpha: np.ndarray, rhs: np.ndarray, w_rows: np.ndarray, w_cols: np.ndarray,
                smooth: float, pull: float, tol: float | np.ndarray = 1e-3,
                max_iter: int = 300) -> np.ndarray:
    """Minimise Σ α(c − r)² + smooth·Σ w (c_k − c_j)² + pull·Σ c² over a gh×gw grid.

    alpha: gh×gw data weights, or K×gh×gw (one system per right-hand side); rhs: K×gh×gw
    right-hand sides (α·r); w_rows: (gh−1)×gw couplings between vertical neighbours,
    w_cols: gh×(gw−1) between horizontal ones; tol: relative residual (preconditioned norm)
    at which a system stops, one value or K.
    The normal equations are symmetric positive definite and well conditioned (the pull
    bounds the condition number by about 1 + 8·smooth/pull), so Jacobi-preconditioned
    conjugate gradients on the 5-point stencil converge in tens of iterations. Written
    with numpy slicing rather than a LAPACK banded or SuperLU solve: those were measured
    to stall for up to seconds on a loaded machine in OpenBLAS threads (see
    docs/local-correction.md).
    """
    diag = np.array(alpha, np.float64, ndmin=3) + pull
    diag[:, 1:] += smooth * w_rows
    diag[:, :-1] += smooth * w_rows
    diag[:, :, 1:] += smooth * w_cols
    diag[:, :, :-1] += smooth * w_cols
    sw_rows, sw_cols = smooth * w_rows, smooth * w_cols

    def apply(x: np.ndarray) -> np.ndarray:
        out = diag * x
        out[:, 1:] -= sw_rows * x[:, :-1]
        out[:, :-1] -= sw_rows * x[:, 1:]
        out[:, :, 1:] -= sw_cols * x[:, :, :-1]
        out[:, :, :-1] -= sw_cols * x[:, :, 1:]
        return out

    inv = 1.0 / diag
    x = rhs * inv
    r = rhs - apply(x)
    z = r * inv
    p = z.copy()
    rz = (r * z).sum(axis=(1, 2))
    stop = np.square(tol) * np.maximum((rhs * rhs * inv).sum(axis=(1, 2)), 1e-300)
    for _ in range(max_iter):
        if np.all(rz <= stop):
            break
        q = apply(p)
        step = rz / np.maximum((p * q).sum(axis=(1, 2)), 1e-300)
        x += step[:, None, None] * p
        r -= step[:, None, None] * q
        z = r * inv
        rz_new = (r * z).sum(axis=(1, 2))
        p *= (rz_new / np.maximum(rz, 1e-300))[:, None, None]
        p += z
        rz = rz_new
    return x


def _node_noise(uv: np.ndarray, e: np.ndarray, weight: np.ndarray, corners: np.ndarray,
                link: np.ndarray, nodes: int, width: int,
                fallback: Callable[[], float], gap: int = 8) -> np.ndarray:
    """Noise σ of the points near each node (relative depth), from neighbours along a beam.

    uv: N×2 pixels, e: N relative residuals, weight: N robust weights (0 = outlier);
    corners, link: N×4 nodes of each point and their weights. Consecutive points on one
    image row at most `gap` pixels apart are neighbours on a scan line; half the squared
    difference of their residuals estimates the noise variance there (a smooth error
    cancels in the difference). A node averages the estimates of its linked points, shrunk
    towards the frame's robust estimate (or the σ `fallback()` returns when fewer than 8
    pairs exist, e.g. scattered points) with the weight of one point. Returns `nodes` values ≥ 0.
    """
    order = np.argsort(uv[:, 1].astype(np.int64) * width + uv[:, 0], kind='stable')
    uo, vo, eo, wo = uv[order, 0], uv[order, 1], e[order], weight[order]
    pair = (vo[1:] == vo[:-1]) & (uo[1:] - uo[:-1] <= gap) & (wo[1:] > 0.0) & (wo[:-1] > 0.0)
    diff = (eo[1:] - eo[:-1])[pair]
    if diff.size < 8:
        return np.full(nodes, fallback())
    frame = (1.4826 * float(np.median(np.abs(diff)))) ** 2 / 2.0 + 1e-12
    half = np.minimum(diff * diff / 2.0, 25.0 * frame)
    idx = np.nonzero(pair)[0]
    ends = np.concatenate([order[idx], order[idx + 1]])
    var = np.bincount(ends, np.concatenate([half, half]), e.size)
    cnt = np.bincount(ends, None, e.size)
    lw = link * (cnt > 0)[:, None]
    num = np.bincount(corners.ravel(), (lw * (var / np.maximum(cnt, 1.0))[:, None]).ravel(),
                      nodes)
    den = np.bincount(corners.ravel(), lw.ravel(), nodes)
    return np.sqrt((num + frame) / (den + 1.0))


def _footprint(r: np.ndarray, rel: np.ndarray, uv: np.ndarray, space: str, s: float,
               t: float) -> Tuple[np.ndarray, np.ndarray]:
    """Return what each point's sub-pixel position can explain of its model-space residual.

    A point was rounded to the nearest pixel centre, so its true position is known only to
    ±½ pixel. On each axis the global fit's inverse depth q (affine in the pixels on every
    plane) changes over that footprint by half the smaller one-pixel step to either side
    (the surface's own slope) or by half the larger one (next to a depth edge: the other
    surface's). Returns, per point, the half-width of the first interval in the model's
    space (the residual rounding alone can cause; it does not average out along a beam,
    where neighbouring points share it) and whether the point is usable: a residual
    explained only by the second interval may come from the surface beyond the edge.
    NaN slopes count as 0.
    """
    h, w = rel.shape
    u, v = uv[:, 0], uv[:, 1]

    def q_at(vv, uu):
        return _inverse_depth(space, s * rel[vv, uu].astype(np.float64) + t)
    q = q_at(v, u)
    own = np.zeros(r.shape, np.float64)
    other = np.zeros(r.shape, np.float64)
    with np.errstate(invalid='ignore'):
        for du, dv in ((1, 0), (0, 1)):
            fwd = np.abs(q_at(np.minimum(v + dv, h - 1), np.minimum(u + du, w - 1)) - q)
            back = np.abs(q - q_at(np.maximum(v - dv, 0), np.maximum(u - du, 0)))
            for total, step in ((own, np.fmin(fwd, back)), (other, np.fmax(fwd, back))):
                total += 0.5 * np.where(np.isfinite(step), step, 0.0)

    def half_width(delta):
        with np.errstate(divide='ignore', invalid='ignore'):
            lo = np.maximum(q - delta, 1e-12)
            if space == LOG_DEPTH:
                half = 0.5 * np.log((q + delta) / lo)
            elif space == DEPTH:
                half = 0.5 * (1.0 / lo - 1.0 / (q + delta))
            else:
                half = delta
        return np.where(np.isfinite(half), half, 0.0)
    own, other = half_width(own), half_width(other)
    size = np.abs(r)
    return own, (size <= own) | (size > other)


def _local_correction(rel: np.ndarray, space: str, s: float, t: float, uv: np.ndarray,
                      d: np.ndarray, y: np.ndarray, cfg: AlignmentConfig) -> _Local:
    """Spread the points' model-space residuals y − (s·d + t) over the image (module doc).

    rel: H×W float32 prediction; uv: N×2 pixels of the valid points, d their predictions
    and y their targets in the model's space. Returns the corrected H×W model-space image
    s·rel + t + c (float32).
    """
    h, w = rel.shape
    cell = min(cfg.correction_cell, max(1, min(h, w) - 1))
    g = _grid(h, w, cell)
    y_hat = s * d + t
    r = y - y_hat
    own, clear = _footprint(r, rel, uv, space, s, t)
    if space == LOG_DEPTH:
        per_unit = np.ones_like(r)  # relative depth error per model-space unit
    else:
        floor = cfg.near_limit if space == DEPTH else 1.0 / cfg.far_limit
        per_unit = 1.0 / np.maximum(np.abs(y_hat), floor)
    with np.errstate(divide='ignore', invalid='ignore'):
        factor = np.abs(np.log(_inverse_depth(space, y_hat) / _inverse_depth(space, y)))
    use = np.isfinite(r * per_unit) & (factor < math.log1p(cfg.correction_outlier)) & clear

    # Guide: inverse depth of the global fit at the nodes; couplings between nodes.
    floor, edge = 1.0 / cfg.far_limit, cfg.correction_edge
    node_y = s * rel[g.rows[:, None], g.cols[None, :]].astype(np.float64) + t
    node_q = _inverse_depth(space, node_y)
    w_rows = _node_coupling(node_q, 0, floor, edge)
    w_cols = _node_coupling(node_q, 1, floor, edge)

    split = np.minimum(np.minimum(w_rows[:, :-1], w_rows[:, 1:]),
                       np.minimum(w_cols[:-1], w_cols[1:])) < 0.3

    # Each point feeds its four surrounding nodes: bilinear weight × similarity.
    u, v = uv[use, 0], uv[use, 1]
    r, y_hat, per_unit, own = r[use], y_hat[use], per_unit[use], own[use]
    i0, j0, fy, fx = g.i0[v], g.j0[u], g.fy[v].astype(np.float64), g.fx[u].astype(np.float64)
    corners = np.stack([i0 * g.gw + j0, i0 * g.gw + j0 + 1,
                        (i0 + 1) * g.gw + j0, (i0 + 1) * g.gw + j0 + 1], axis=1)
    bil = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
    link = bil * _similarity(_inverse_depth(space, y_hat)[:, None],
                             node_q.ravel()[corners], floor, edge)
    link_sum = link.sum(axis=1)

    nodes = g.gh * g.gw

    def data(weight: np.ndarray, group: Optional[np.ndarray] = None):
        """Point mass a and weighted residual sum b at the nodes (K×gh×gw, K groups)."""
        k = 1 if group is None else 2
        at = corners if group is None else corners + (group * nodes)[:, None]
        a = np.bincount(at.ravel(), (link * weight[:, None]).ravel(), k * nodes)
        b = np.bincount(at.ravel(), (link * (weight * r)[:, None]).ravel(), k * nodes)
        return a.reshape(k, g.gh, g.gw), b.reshape(k, g.gh, g.gw)

    def system(a: np.ndarray, b: np.ndarray):
        """Return data weights α (saturating with the mass) and right-hand sides α·(b / a)."""
        alpha = a / (a + _SATURATION)
        return alpha, alpha * (b / np.maximum(a, 1e-12))

    def misfit(field: np.ndarray) -> np.ndarray:
        """Relative depth misfit of each point to a node field."""
        at = (link * field.ravel()[corners]).sum(axis=1) / np.maximum(link_sum, 1e-3)
        return (r - at) * per_unit

    def robust_sigma(miss: np.ndarray) -> float:
        return max(1.4826 * float(np.median(np.abs(miss))), 1e-4) if miss.size else 1.0

    # Pass 1: a smoother reference field; points far from it (Tukey biweight, 4.685
    # robust σ) are isolated outliers and get no weight in pass 2.
    smooth = cfg.correction_smoothness
    pull = smooth * (cell / cfg.correction_reach) ** 2
    alpha, rhs = system(*data(np.ones_like(r)))
    miss = misfit(_solve_grid(alpha, rhs, w_rows, w_cols, _REFERENCE * smooth,
                              _REFERENCE * pull, tol=1e-2)[0])
    q = miss / (4.685 * robust_sigma(miss))
    weight = np.where(np.abs(q) < 1.0, (1.0 - q * q) ** 2, 0.0)
    # Pass 2, batched: the field, its confidence (the same system with α as right-hand
    # side), and for the held-out check below the fields of each of two folds of points
    # (alternating bands of `cell` image rows, about alternate beams, so that neighbours
    # along one beam do not leak), each fitted without the other fold.
    fold = (v // cell) % 2
    mass2, b2 = data(weight, fold)
    mass2, b2 = mass2[::-1], b2[::-1]  # system k: fitted to the fold that k is not
    mass = mass2.sum(axis=0)
    alpha, rhs = system(mass, b2.sum(axis=0))
    alpha2, rhs2 = system(mass2, b2)
    sol = _solve_grid(np.concatenate([np.stack([alpha, alpha]), alpha2]),
                      np.concatenate([np.stack([rhs, alpha]), rhs2]), w_rows, w_cols, smooth,
                      pull, tol=np.array([1e-3, 1e-2, 1e-2, 1e-2]))
    c, conf = sol[0], sol[1]
    # Significance: the field is shrunk where it is not clearly larger than its
    # uncertainty at the node: the standard error of the lidar noise (its local σ, from
    # neighbours along a beam, / √(point weight near the node)) combined with the points'
    # rounding to pixels (their mean footprint half-width, which does not average out).
    # A non-negative garrote, c·(1 − (band/c)²) for |c| > band, else 0: noise and
    # rounding alone correct nothing, a large correction keeps nearly all of its size.
    sigma = _node_noise(uv[use], r * per_unit, weight, corners, link, nodes, w,
                        lambda: robust_sigma(misfit(c)[weight > 0.0]))
    lw = link * weight[:, None]
    rounding = np.bincount(corners.ravel(), (lw * (own * per_unit)[:, None]).ravel(), nodes) \
        / np.maximum(np.bincount(corners.ravel(), lw.ravel(), nodes), 1e-12)
    sigma, rounding = sigma.reshape(mass.shape), rounding.reshape(mass.shape)
    y_unit = 1.0 if space == LOG_DEPTH else np.maximum(
        np.abs(node_y), 1.0 / cfg.far_limit if space == DISPARITY else cfg.near_limit)

    def shrink(field: np.ndarray, node_mass: np.ndarray) -> np.ndarray:
        band = cfg.correction_deadband * y_unit * np.hypot(
            sigma / np.sqrt(1.0 + node_mass), rounding)
        keep = np.abs(field) > band  # False where the band is NaN (unknown pixels)
        ratio = band / np.where(keep, np.abs(field), 1.0)
        return np.where(keep, field * (1.0 - ratio * ratio), 0.0)

    # Held-out check: does the field predict lidar points it was not fitted to better than
    # the global fit does? Each fold's field is scored on the other fold's points.
    folds = shrink(sol[2:], mass2).reshape(2, nodes)
    pred = (link * folds[fold[:, None], corners]).sum(axis=1) / np.maximum(link_sum, 1e-3)
    e = r * per_unit
    gain = weight * (e * e - (e - pred * per_unit) ** 2)
    # Standard error from blocks of 2×2 cells (the smallest that hold both folds).
    block = (v // (2 * cell)) * (w // (2 * cell) + 1) + u // (2 * cell)
    per_block = np.bincount(block, gain)[np.bincount(block) > 0]
    total = float(per_block.sum())
    se = math.sqrt(per_block.size / max(per_block.size - 1, 1)
                   * float(((per_block - total / max(per_block.size, 1)) ** 2).sum()))
    held_out = total / max(float((weight * e * e).sum()), 1e-300)
    c = shrink(c, mass)
    if cfg.correction_holdout > -math.inf and not total > cfg.correction_holdout * se:
        return _Local(y=None, spread=0.0, support=float(np.mean(conf > 0.5)),
                      points=int(np.count_nonzero(weight)), gain=held_out)

    # Bound the change of depth at the nodes; nodes on unknown pixels get none.
    m = cfg.correction_max
    if space == LOG_DEPTH:
        lo, hi = -math.log1p(m), math.log1p(m)
    else:
        pos = np.where(node_y > 0.0, node_y, 0.0)
        lo, hi = pos * (1.0 / (1.0 + m) - 1.0), pos * m
    c = np.where(np.isfinite(node_q), np.clip(c, lo, hi), 0.0)

    # Pixels: bilinear interpolation, made edge-aware in the cells that hold an edge.
    c32 = c.astype(np.float32)
    rows = c32[g.i0] * (1.0 - g.fy)[:, None] + c32[g.i0 + 1] * g.fy[:, None]
    field = rows[:, g.j0]
    field *= 1.0 - g.fx
    field += rows[:, g.j0 + 1] * g.fx
    if split.any():
        pv, pu = np.nonzero(split[g.i0][:, g.j0])
        base = g.i0[pv] * g.gw + g.j0[pu]
        fy, fx = g.fy[pv], g.fx[pu]
        pq = _inverse_depth(space, rel[pv, pu] * np.float32(s) + np.float32(t))
        inv = 1.0 / (np.maximum(pq, np.float32(floor)) * np.float32(edge))
        nq = np.where(np.isnan(node_q), 1e6, node_q).astype(np.float32).ravel()
        cf = c32.ravel()
        num = np.zeros(pv.size, np.float32)
        den = np.full(pv.size, 1e-3, np.float32)
        with np.errstate(over='ignore', invalid='ignore'):
            for off, wt in ((0, (1 - fy) * (1 - fx)), (1, (1 - fy) * fx),
                            (g.gw, fy * (1 - fx)), (g.gw + 1, fy * fx)):
                k = (nq.take(base + off) - pq) * inv
                k *= k
                k = np.exp(-k, out=k)
                k *= wt
                num += k * cf.take(base + off)
                den += k
        known = np.isfinite(den)
        field[pv[known], pu[known]] = num[known] / den[known]
    field += np.float32(t)
    field += rel * np.float32(s)

    if space == LOG_DEPTH:
        change = np.abs(np.expm1(c))
    elif space == DEPTH:
        change = np.abs(c) / np.maximum(np.abs(node_y), cfg.near_limit)
    else:
        change = np.abs(c) / np.maximum(np.abs(node_y + c), 1.0 / cfg.far_limit)
    change = change[np.isfinite(node_q)]
    return _Local(y=field, spread=float(np.percentile(change, 95)) if change.size else 0.0,
                  support=float(np.mean(conf > 0.5)), points=int(np.count_nonzero(weight)),
                  gain=held_out)


def _temporal(prior: Optional[AlignmentPrior], anchors: Tuple[float, float], fit: _Fit,
              d_lo: float, d_hi: float, space: str, cfg: AlignmentConfig):
    """Gate and blend the frame's anchors with the prior; return (s, t, state, new prior)."""
    pct = tuple(float(p) for p in cfg.anchor_percentiles)
    fresh = AlignmentPrior(space=space, percentiles=pct,
                           anchors=(float(anchors[0]), float(anchors[1])))
    if prior is None:
        return fit.s, fit.t, TEMPORAL_INIT, fresh
    if space == LOG_DEPTH:
        jump = math.expm1(max(abs(a - p) for a, p in zip(anchors, prior.anchors)))
    else:
        floor = cfg.near_limit if space == DEPTH else 1.0 / cfg.far_limit
        jump = max(abs(a - p) / max(abs(p), floor) for a, p in zip(anchors, prior.anchors))
    if jump > cfg.max_anchor_jump:
        if prior.rejections + 1 >= cfg.max_rejections:
            return fit.s, fit.t, TEMPORAL_RESET, fresh
        s, t = prior.affine_for(d_lo, d_hi)
        return s, t, TEMPORAL_GATED, replace(prior, rejections=prior.rejections + 1)
    a = cfg.smoothing
    blended = tuple(float((1.0 - a) * p + a * q) for p, q in zip(prior.anchors, anchors))
    new = replace(prior, anchors=blended, rejections=0, frames=prior.frames + 1)
    s, t = new.affine_for(d_lo, d_hi)
    return s, t, TEMPORAL_BLENDED, new


class TemporalAligner:
    """Stateful wrapper of `align` that carries the prior from frame to frame."""

    def __init__(self, space: str, config: Optional[AlignmentConfig] = None) -> None:
        """Create an aligner for one model space ('depth', 'disparity' or 'log_depth')."""
        if space not in SPACES:
            raise ValueError(f'unknown prediction space {space!r}; expected one of {SPACES}')
        self.space = space
        self.config = config if config is not None else AlignmentConfig()
        self._prior: Optional[AlignmentPrior] = None

    @property
    def prior(self) -> Optional[AlignmentPrior]:
        """The state that the next frame starts from (None: no history)."""
        return self._prior

    def reset(self) -> None:
        """Forget the history (e.g. after a scene change or a model switch)."""
        self._prior = None

    def align(self, relative: np.ndarray, uv: np.ndarray, z: np.ndarray) -> AlignmentResult:
        """Align one frame with the carried prior and keep the result's prior."""
        result = align(relative, self.space, uv, z, prior=self._prior, config=self.config)
        self._prior = result.prior
        return result
