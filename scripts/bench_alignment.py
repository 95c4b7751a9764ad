#!/usr/bin/env python3
"""Time lidar projection, see-through filtering and the metric fit on a KITTI-sized frame.

A 64-beam scan (about 115 000 points, from the synthetic scene generator; a random scan of
the same size if it is unavailable) is projected into a 1242×375 image and a relative
disparity map (ground truth perturbed by a smooth error) is aligned to it. Prints the
median (and minimum) time per stage over --repeat runs; the target for the whole chain is
30 ms on 2 CPU cores. On a shared machine the minimum shows the cost without contention.

The fit runs without the local correction (`correction='none'`, the chain before issue
15) and with it ('local'); the row 'local correction (extra)' is their difference, target
at most 15 ms.

Usage: python scripts/bench_alignment.py [--repeat 30] [--space disparity] [--kind outdoor]
"""

import argparse
import time

from densepred_ros.alignment import align, AlignmentConfig
from densepred_ros.camera import CameraModel, project_points, transform_points
import numpy as np

WIDTH, HEIGHT = 1242, 375


def _synthetic(kind: str):
    """Return (points_lidar, T_cam_lidar, camera, gt_depth, label)."""
    try:
        from densepred_ros.synthetic import make_frame
    except ImportError:
        make_frame = None
    if make_frame is not None:
        frame = make_frame(seed=0, kind=kind, width=WIDTH, height=HEIGHT, beams=64)
        return (frame.lidar_points, frame.T_cam_lidar, frame.camera, frame.depth,
                f'synthetic {kind} frame')
    rng = np.random.default_rng(0)
    n = 120_000
    az = rng.uniform(-np.pi, np.pi, n)
    el = np.deg2rad(rng.uniform(-24.8, 2.0, n))
    r = rng.uniform(2.0, 80.0, n)
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az),
                    r * np.sin(el)], axis=1).astype(np.float32)
    T = np.array([[0.0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27], [0, 0, 0, 1]])
    camera = CameraModel.pinhole(721.5, 721.5, 609.6, 172.9, WIDTH, HEIGHT)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    depth = (5.0 + 60.0 * (1.0 - v / HEIGHT) + 2.0 * np.sin(u / 50.0)).astype(np.float32)
    return pts, T, camera, depth, 'random scan (synthetic package unavailable)'


def _relative(depth: np.ndarray, space: str) -> np.ndarray:
    """Ground truth in the model's space, smoothly perturbed, normalised to [0, 1].

    Depth beyond 150 m (and the sky) is put on a far plane at 150 m, as a depth model's
    normalisation would; otherwise a ground plane reaching the horizon (kilometres)
    would squeeze the whole lidar range into a sliver of the depth model's [0, 1].
    """
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    far = np.minimum(np.where(np.isfinite(depth), depth, np.inf), 150.0)
    y = far if space == 'depth' else 1.0 / far
    y = (y - y.min()) / (y.max() - y.min()) + 0.005 * np.sin(u / w * 3.0 + v / h * 2.0)
    return ((y - y.min()) / (y.max() - y.min())).astype(np.float32)


def _time_ms(fn, repeat: int):
    """Return ((median, min) wall time in ms over `repeat` calls, last result)."""
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return (float(np.median(times) * 1e3), float(np.min(times) * 1e3)), out


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=30)
    parser.add_argument('--space', choices=['depth', 'disparity'], default='disparity')
    parser.add_argument('--kind', choices=['outdoor', 'indoor'], default='outdoor')
    args = parser.parse_args()

    points, T, camera, depth, label = _synthetic(args.kind)
    relative = _relative(depth, args.space)
    plain = AlignmentConfig(correction='none')
    local = AlignmentConfig(correction='local')
    for _ in range(3):  # warm-up
        uv, z = project_points(transform_points(points, T), camera)
        align(relative, args.space, uv, z, config=local)

    t_tf, cam_points = _time_ms(lambda: transform_points(points, T), args.repeat)
    t_proj, (uv, z) = _time_ms(lambda: project_points(cam_points, camera), args.repeat)
    t_fit, result = _time_ms(lambda: align(relative, args.space, uv, z, config=plain),
                             args.repeat)
    t_local, _ = _time_ms(lambda: align(relative, args.space, uv, z, config=local),
                          args.repeat)
    t_all, _ = _time_ms(
        lambda: align(relative, args.space,
                      *project_points(transform_points(points, T), camera), config=plain),
        args.repeat)

    gt = depth[uv[:, 1], uv[:, 0]]
    pred = result.depth[uv[:, 1], uv[:, 0]]
    both = np.isfinite(gt) & np.isfinite(pred)
    abs_rel = float(np.mean(np.abs(pred[both] - gt[both]) / gt[both]))
    print(f'input: {label}: {len(points)} points, {WIDTH}x{HEIGHT} image, '
          f'{args.space} space, median of {args.repeat} runs')
    print(f'{"stage":<34} {"median ms":>10} {"min ms":>8}')
    rows = [('transform_points (lidar → camera)', t_tf),
            ('project_points (z-buffer, filter)', t_proj),
            ('align (RANSAC, IRLS, depth image)', t_fit),
            ('sum of the stages', tuple(a + b + c for a, b, c in zip(t_tf, t_proj, t_fit))),
            ('whole chain in one go', t_all),
            ('align with local correction', t_local),
            ('local correction (extra)', tuple(a - b for a, b in zip(t_local, t_fit)))]
    for name, (median, best) in rows:
        print(f'{name:<34} {median:>10.2f} {best:>8.2f}')
    print('target: whole chain <= 30 ms (median) on 2 CPU cores; '
          'local correction <= 15 ms extra')
    print(f'kept {len(z)} points, {result.n_inliers} inliers, ok={result.ok}, '
          f'AbsRel at the points (both finite) {abs_rel:.4f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
