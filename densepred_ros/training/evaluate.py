"""Accuracy of a predictor on generated scenes, as the node would use it.

Depth and disparity: the prediction is aligned to the frame's simulated lidar scan
(`camera.project_points` of the points moved by T_cam_lidar, then `alignment.align`),
and the metric result is compared with the exact ground-truth depth over the pixels
with ground truth up to `max_depth`: AbsRel = mean |ẑ − z| / z and δ1 = share of pixels
with max(ẑ/z, z/ẑ) < 1.25, averaged per frame and then over frames. A frame whose
alignment fails counts with AbsRel 1 and δ1 0. Normals: the mean angle in degrees
between predicted and true normals over the pixels with ground truth, per frame, then
averaged over frames.
"""

import math
from typing import Dict, List, Sequence

from densepred_ros.alignment import align
from densepred_ros.camera import project_points, transform_points
from densepred_ros.models.base import NORMALS
import numpy as np

VALIDATION_SEED = 1_000_000
HELD_OUT_SEED = 2_000_000
MAX_DEPTH = 80.0


def held_out_frames(count: int, first_seed: int = HELD_OUT_SEED, height: int = 240,
                    width: int = 320, beams: int = 32) -> List:
    """Render `count` generated frames (alternating indoor/outdoor) with a lidar scan.

    The default seeds (2,000,000 on) are disjoint from the training seeds (0 on) and the
    trainer's validation seeds (1,000,000 on).
    """
    from densepred_ros.synthetic import make_frame
    return [make_frame(first_seed + i, kind=('indoor', 'outdoor')[i % 2], width=width,
                       height=height, beams=beams) for i in range(int(count))]


def depth_metrics(depth: np.ndarray, gt: np.ndarray,
                  max_depth: float = MAX_DEPTH) -> Dict[str, float]:
    """Return AbsRel and δ1 of metric `depth` against `gt` (pixels with 0 < gt <= max).

    Non-finite predictions there count as max_depth (inf) or as a miss (NaN).
    """
    mask = np.isfinite(gt) & (gt > 0.0) & (gt <= max_depth)
    if not mask.any():
        return {'abs_rel': math.nan, 'delta1': math.nan}
    p = np.minimum(np.asarray(depth, np.float64)[mask], max_depth)
    g = gt[mask].astype(np.float64)
    known = np.isfinite(p) & (p > 0.0)
    rel = np.where(known, np.abs(p - g) / g, 1.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.where(known, np.maximum(p / g, g / p), np.inf)
    return {'abs_rel': float(rel.mean()), 'delta1': float(np.mean(ratio < 1.25))}


def normal_error_deg(normals: np.ndarray, gt: np.ndarray) -> float:
    """Mean angle in degrees between two H×W×3 unit-normal images where both are finite."""
    mask = np.isfinite(gt).all(axis=-1) & np.isfinite(normals).all(axis=-1)
    if not mask.any():
        return math.nan
    cos = np.clip(np.sum(normals[mask] * gt[mask], axis=-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def evaluate_frame(predictor, frame, max_depth: float = MAX_DEPTH) -> Dict[str, float]:
    """Predict one SyntheticFrame and return its metrics (see the module docstring)."""
    prediction = predictor.predict(frame.rgb)
    if prediction.space == NORMALS:
        return {'normal_deg': normal_error_deg(prediction.values, frame.normals)}
    points = transform_points(frame.lidar_points, frame.T_cam_lidar)
    uv, z = project_points(points, frame.camera)
    result = align(prediction.values, prediction.space, uv, z)
    if not result.ok:
        return {'abs_rel': 1.0, 'delta1': 0.0, 'failed': 1.0}
    metrics = depth_metrics(result.depth, frame.depth, max_depth)
    metrics['failed'] = 0.0
    return metrics


def evaluate(predictor, frames: Sequence, max_depth: float = MAX_DEPTH) -> Dict[str, float]:
    """Return the metrics averaged over `frames` and the frame count `n`."""
    rows = [evaluate_frame(predictor, frame, max_depth) for frame in frames]
    summary = {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}
    if 'failed' in summary:
        summary['failed'] = float(sum(row['failed'] for row in rows))
        aligned = [row for row in rows if not row['failed']]
        for key in ('abs_rel', 'delta1'):
            summary[f'{key}_aligned'] = (float(np.mean([row[key] for row in aligned]))
                                         if aligned else math.nan)
    summary['n'] = float(len(rows))
    return summary


def format_metrics(metrics: Dict[str, float]) -> str:
    """Return a one-line summary of `evaluate`'s metrics."""
    n = int(metrics.get('n', 0))
    if 'normal_deg' in metrics:
        return f'mean angular error {metrics["normal_deg"]:.2f}° over {n} frames'
    text = (f'AbsRel {metrics["abs_rel"]:.4f} δ1 {metrics["delta1"]:.4f} '
            f'(alignment failed on {int(metrics["failed"])}/{n}, counted as AbsRel 1, δ1 0)')
    if metrics.get('failed'):
        text += (f'; over the aligned frames only: AbsRel {metrics["abs_rel_aligned"]:.4f} '
                 f'δ1 {metrics["delta1_aligned"]:.4f}')
    return text
