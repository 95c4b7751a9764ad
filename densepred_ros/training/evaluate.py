"""Accuracy of a predictor on generated scenes, as the node would use it.

Depth, disparity and log-depth: the prediction is aligned to the frame's simulated lidar
scan (`camera.project_points` of the points moved by T_cam_lidar, then `alignment.align`)
and the metric result is compared with the exact ground-truth depth by
`metrics.depth_metrics` with the far limit `max_depth` (its docstring states the rule for
NaN, +inf and the far limit); a frame whose alignment fails counts as
`metrics.FAILED_FRAME` (AbsRel 1, δ1 0). Normals: `metrics.normal_metrics`. Per frame,
then averaged over frames (`metrics.mean_over_frames`).
"""

import math
from typing import Dict, List, Sequence

from densepred_ros.alignment import align
from densepred_ros.camera import project_points, transform_points
from densepred_ros.metrics import depth_metrics, FAILED_FRAME, mean_over_frames
from densepred_ros.metrics import normal_metrics
from densepred_ros.models.base import NORMALS

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


def evaluate_frame(predictor, frame, max_depth: float = MAX_DEPTH) -> Dict[str, float]:
    """Predict one SyntheticFrame and return its metrics (see the module docstring)."""
    prediction = predictor.predict(frame.rgb)
    if prediction.space == NORMALS:
        return normal_metrics(prediction.values, frame.normals)
    points = transform_points(frame.lidar_points, frame.T_cam_lidar)
    uv, z = project_points(points, frame.camera)
    result = align(prediction.values, prediction.space, uv, z)
    if not result.ok:
        return {**FAILED_FRAME, 'failed': 1.0}
    return {**depth_metrics(result.depth, frame.depth, max_depth), 'failed': 0.0}


def evaluate(predictor, frames: Sequence, max_depth: float = MAX_DEPTH) -> Dict[str, float]:
    """Return the metrics averaged over `frames`, the failure count and the frame count `n`.

    Depth models also get `abs_rel_aligned` and `delta1_aligned`: the means over the frames
    whose alignment succeeded.
    """
    rows = [evaluate_frame(predictor, frame, max_depth) for frame in frames]
    summary = mean_over_frames(rows)
    if 'failed' in summary:
        summary['failed'] = float(sum(row['failed'] for row in rows))
        aligned = mean_over_frames([row for row in rows if not row['failed']])
        for key in ('abs_rel', 'delta1'):
            summary[f'{key}_aligned'] = aligned.get(key, math.nan)
    summary['n'] = float(len(rows))
    return summary


def format_metrics(metrics: Dict[str, float]) -> str:
    """Return a one-line summary of `evaluate`'s metrics."""
    n = int(metrics.get('n', 0))
    if 'normal_deg' in metrics:
        return f'mean angular error {metrics["normal_deg"]:.2f}° over {n} frames'
    text = (f'AbsRel {metrics["abs_rel"]:.4f} δ1 {metrics["delta1"]:.4f} '
            f'RMSE {metrics["rmse"]:.3f} m coverage {metrics["coverage"]:.3f} '
            f'(alignment failed on {int(metrics["failed"])}/{n}, counted as AbsRel 1, δ1 0, '
            f'coverage 0)')
    if metrics.get('failed'):
        text += (f'; over the aligned frames only: AbsRel {metrics["abs_rel_aligned"]:.4f} '
                 f'δ1 {metrics["delta1_aligned"]:.4f}')
    return text
