#!/usr/bin/env python3
"""Where a depth model's error on generated scenes comes from.

For held-out generated frames (or training seeds with `--first-seed 0`) it reports, indoor
and outdoor apart: AbsRel and δ1 after the node's lidar alignment; the same after an
oracle fit (least squares against the exact depth in the model's own space), which tells
the model's error from the alignment's; and the lidar-aligned AbsRel per ground-truth
depth band and at depth edges (|∇ log z| > 0.4 px⁻¹, dilated by 2 px) against flat areas.
Metrics, oracle fit and the rule for NaN/+inf/far limit: `densepred_ros.metrics`.

    python scripts/demo_model_errors.py densepred_ros/demo_models/lotus-depth-demo
"""

import argparse
from typing import Dict, List

from densepred_ros.alignment import align
from densepred_ros.camera import project_points, transform_points
from densepred_ros.metrics import abs_rel_map, depth_metrics, evaluated_mask, FAILED_FRAME
from densepred_ros.metrics import mean_over_frames, oracle_depth
from densepred_ros.models import load_predictor, PredictorOptions
from densepred_ros.training.evaluate import held_out_frames, HELD_OUT_SEED, MAX_DEPTH
import numpy as np
from scipy import ndimage

BANDS = (0.0, 5.0, 10.0, 20.0, 40.0, MAX_DEPTH)


def main() -> int:
    """Print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='depth or disparity checkpoint')
    parser.add_argument('--scenes', type=int, default=50)
    parser.add_argument('--first-seed', type=int, default=HELD_OUT_SEED,
                        help='first scene seed (default: the held-out seeds; 0 = training)')
    args = parser.parse_args()
    predictor = load_predictor(args.model, PredictorOptions(device='cpu', dtype='fp32'))
    space = predictor.spec.space
    rows: Dict[str, List[Dict[str, float]]] = {'indoor': [], 'outdoor': []}
    sums = {kind: np.zeros((len(BANDS) + 1, 2)) for kind in rows}
    for i, frame in enumerate(held_out_frames(args.scenes, first_seed=args.first_seed)):
        kind = ('indoor', 'outdoor')[i % 2]
        values = predictor.predict(frame.rgb).values
        uv, z = project_points(transform_points(frame.lidar_points, frame.T_cam_lidar),
                               frame.camera)
        result = align(values, space, uv, z)
        if not result.ok:
            rows[kind].append({**FAILED_FRAME, 'oracle_abs_rel': np.nan,
                               'oracle_delta1': np.nan})
            continue
        gt = frame.depth
        lidar = depth_metrics(result.depth, gt, MAX_DEPTH)
        oracle = depth_metrics(oracle_depth(values, space, gt, MAX_DEPTH), gt, MAX_DEPTH)
        rows[kind].append({**lidar, 'oracle_abs_rel': oracle['abs_rel'],
                           'oracle_delta1': oracle['delta1']})
        rel = abs_rel_map(result.depth, gt, MAX_DEPTH)
        valid = np.isfinite(rel)
        rel = np.nan_to_num(rel)
        log_depth = np.log(np.where(evaluated_mask(gt, MAX_DEPTH), gt, MAX_DEPTH))
        edges = np.hypot(ndimage.sobel(log_depth, 0), ndimage.sobel(log_depth, 1)) > 0.4
        edges = ndimage.binary_dilation(edges, iterations=2)
        for band, (low, high) in enumerate(zip(BANDS[:-1], BANDS[1:])):
            pick = valid & (gt > low) & (gt <= high)
            sums[kind][band] += (rel[pick].sum(), pick.sum())
        sums[kind][-2] += (rel[valid & edges].sum(), (valid & edges).sum())
        sums[kind][-1] += (rel[valid & ~edges].sum(), (valid & ~edges).sum())
    print(f'{args.model} ({space}), {args.scenes} scenes from seed {args.first_seed}')
    for kind, kind_rows in rows.items():
        mean = mean_over_frames(kind_rows)
        print(f'{kind:8s} lidar-aligned AbsRel {mean["abs_rel"]:.4f} δ1 {mean["delta1"]:.3f}; '
              f'oracle fit AbsRel {mean["oracle_abs_rel"]:.4f} δ1 {mean["oracle_delta1"]:.3f}')
        total = sums[kind][:len(BANDS) - 1, 1].sum()
        bands = ', '.join(
            f'{BANDS[b]:g}-{BANDS[b + 1]:g} m {sums[kind][b, 0] / max(sums[kind][b, 1], 1):.3f}'
            f' ({sums[kind][b, 1] / max(total, 1):.0%})' for b in range(len(BANDS) - 1))
        print(f'         AbsRel by depth (share of pixels): {bands}')
        edge, flat = sums[kind][-2], sums[kind][-1]
        print(f'         edges {edge[0] / max(edge[1], 1):.3f} ({edge[1] / max(total, 1):.0%}), '
              f'flat {flat[0] / max(flat[1], 1):.3f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
