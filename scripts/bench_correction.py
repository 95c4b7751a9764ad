#!/usr/bin/env python3
"""Local lidar correction and the depth-edge filter, measured on generated scenes (issue 15).

Sections (each prints a table; all scores on every pixel with exact depth in (0, 80] m):
  model     the bundled log-depth demo model on generated frames, simulated 16- and
            32-beam lidar: AbsRel / δ1 of the global fit ('none'), the local correction
            ('local'), alternatives, and the no-model baseline (linear interpolation of the
            lidar points alone, nearest value outside their hull).
  field     relative maps made from exact depth with a smooth ±15 % multiplicative error
            and gross-error blobs on 8 % of the image, against the best possible global
            fit (least squares on the exact depth outside the blobs).
  affine    no harm: a prediction exactly affine to the truth.
  temporal  flicker on a generated sequence: mean |Δ_t log(ẑ/z)| between consecutive
            frames, none vs local.
  edges     flying pixels: share of points off the true surface near depth edges, and of
            good points kept, without and with `geometry.depth_edge_mask`.
  time      extra time of the correction on a 1242×375 frame with a 64-beam scan.

Usage: python scripts/bench_correction.py [--scenes 10] [--sections model,field,...]
"""

import argparse
import time
from typing import Callable, Dict, List

from densepred_ros.alignment import align, AlignmentConfig, to_metric, to_model_space
from densepred_ros.camera import project_points, transform_points
from densepred_ros.geometry import depth_edge_mask
from densepred_ros.synthetic import make_frame, make_sequence
from densepred_ros.training.evaluate import depth_metrics, HELD_OUT_SEED, MAX_DEPTH
import numpy as np
from scipy import interpolate, ndimage

SECTIONS = ('model', 'field', 'affine', 'temporal', 'edges', 'time')


def lidar(frame):
    """Projected lidar pixels (N×2) and depths (N) of a generated frame."""
    return project_points(transform_points(frame.lidar_points, frame.T_cam_lidar),
                          frame.camera)


def baseline(uv: np.ndarray, z: np.ndarray, shape) -> np.ndarray:
    """No model: linear interpolation of the lidar depths, nearest value outside the hull."""
    h, w = shape
    grid_v, grid_u = np.mgrid[0:h, 0:w]
    lin = interpolate.griddata(uv[:, ::-1], z, (grid_v, grid_u), method='linear')
    near = interpolate.griddata(uv[:, ::-1], z, (grid_v, grid_u), method='nearest')
    return np.where(np.isfinite(lin), lin, near).astype(np.float32)


def _global_residuals(rel, space, uv, z):
    """Return (global fit, its model-space map, valid-point mask, their residuals)."""
    g = align(rel, space, uv, z, config=AlignmentConfig(correction='none'))
    if not g.ok:
        return g, None, None, None
    y_hat = g.scale * rel.astype(np.float64) + g.shift
    d = rel[uv[:, 1], uv[:, 0]].astype(np.float64)
    ok = np.isfinite(d) & (z > 0)
    r = to_model_space(z[ok].astype(np.float64), space) - (g.scale * d[ok] + g.shift)
    return g, y_hat, ok, r


def alt_gaussian(rel, space, uv, z, cfg, sigma_px=24.0):
    """Alternative: normalised Gaussian convolution of the inlier residuals (not edge-aware)."""
    g, y_hat, ok, r = _global_residuals(rel, space, uv, z)
    if not g.ok:
        return g.depth
    keep = np.abs(r) < np.percentile(np.abs(r), 90) * 3
    num = np.zeros(rel.shape)
    den = np.zeros(rel.shape)
    np.add.at(num, (uv[ok, 1][keep], uv[ok, 0][keep]), r[keep])
    np.add.at(den, (uv[ok, 1][keep], uv[ok, 0][keep]), 1.0)
    num = ndimage.gaussian_filter(num, sigma_px)
    den = ndimage.gaussian_filter(den, sigma_px)
    mass = ndimage.gaussian_filter(np.ones(rel.shape), sigma_px)
    conf = den / (den + 0.2 * mass / sigma_px ** 2)
    corr = num / np.maximum(den, 1e-12) * conf
    return to_metric(y_hat + corr, space, 1.0, 0.0, cfg.near_limit, cfg.far_limit)


def alt_scale_map(rel, space, uv, z, cfg):
    """Alternative (VI-Depth style): linearly interpolated residuals, 0 outside the hull."""
    g, y_hat, ok, r = _global_residuals(rel, space, uv, z)
    if not g.ok:
        return g.depth
    keep = np.abs(r) < 3.0 * 1.4826 * np.median(np.abs(r)) + 1e-6
    h, w = rel.shape
    grid_v, grid_u = np.mgrid[0:h, 0:w]
    corr = interpolate.griddata(uv[ok][keep][:, ::-1], r[keep], (grid_v, grid_u),
                                method='linear', fill_value=0.0)
    return to_metric(y_hat + corr, space, 1.0, 0.0, cfg.near_limit, cfg.far_limit)


def methods(alternatives: bool) -> Dict[str, Callable]:
    """Name → f(rel, space, uv, z) returning metric depth (None when the fit failed)."""
    def ours(correction):
        cfg = AlignmentConfig(correction=correction)
        return lambda rel, space, uv, z: align(rel, space, uv, z, config=cfg).depth
    out = {'none': ours('none'), 'local': ours('local')}
    if alternatives:
        out['gauss'] = lambda *a: alt_gaussian(*a, AlignmentConfig())
        out['griddata'] = lambda *a: alt_scale_map(*a, AlignmentConfig())
    return out


def score(depth, gt) -> Dict[str, float]:
    """Return AbsRel and δ1 (a failed fit counts as AbsRel 1, δ1 0)."""
    if depth is None:
        return {'abs_rel': 1.0, 'delta1': 0.0}
    return depth_metrics(depth, gt, MAX_DEPTH)


def table(title: str, rows: Dict[str, List[Dict[str, float]]]) -> None:
    """Print mean AbsRel and δ1 per method, and AbsRel relative to the first row."""
    print(f'\n{title}')
    print(f'{"method":<12} {"AbsRel":>8} {"delta1":>8} {"ratio":>7}')
    ref = np.mean([s['abs_rel'] for s in next(iter(rows.values()))])
    for name, scores in rows.items():
        abs_rel = np.mean([s['abs_rel'] for s in scores])
        ratio = abs_rel / ref if ref > 0 else float('nan')
        print(f'{name:<12} {abs_rel:>8.5f} {np.mean([s["delta1"] for s in scores]):>8.4f} '
              f'{ratio:>7.3f}')


def section_model(args) -> None:
    """Demo model on generated frames, 16 and 32 beams."""
    from densepred_ros.models import load_predictor, PredictorOptions
    predictor = load_predictor(args.model, PredictorOptions(device='cpu'))
    space = predictor.spec.space
    for beams in (16, 32):
        rows: Dict[str, List] = {}
        for i in range(args.scenes):
            frame = make_frame(args.first_seed + i, kind=('indoor', 'outdoor')[i % 2],
                               width=args.width, height=args.height, beams=beams)
            rel = predictor.predict(frame.rgb).values.astype(np.float32)
            uv, z = lidar(frame)
            for name, fn in methods(True).items():
                rows.setdefault(name, []).append(score(fn(rel, space, uv, z), frame.depth))
            rows.setdefault('lidar only', []).append(
                score(baseline(uv, z, rel.shape), frame.depth))
        table(f'model: {args.model} ({space}), {beams}-beam lidar, {args.scenes} generated '
              f'frames {args.width}x{args.height}', rows)


def _blobs(shape, rng, share=0.08):
    """Boolean mask of round blobs covering about `share` of the image."""
    h, w = shape
    mask = np.zeros(shape, bool)
    v, u = np.mgrid[0:h, 0:w]
    while mask.mean() < share:
        cv, cu = rng.uniform(0, h), rng.uniform(0, w)
        rad = rng.uniform(0.04, 0.1) * min(h, w) + 4
        mask |= (v - cv) ** 2 + (u - cu) ** 2 < rad ** 2
    return mask


def _smooth_field(shape, rng):
    """Smooth field (three sinusoids, at most 2 cycles per image) with max |.| = 1."""
    h, w = shape
    v, u = np.mgrid[0:h, 0:w]
    f = np.zeros(shape)
    for _ in range(3):
        fu, fv = rng.uniform(0.2, 2.0, 2)
        f += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * (fu * u / w + fv * v / h)
                                            + rng.uniform(0, 2 * np.pi))
    return f / np.abs(f).max()


def _relative_from(depth, space, factor):
    """Exact depth times a multiplicative error, in the model's space, scaled to [0, 1]."""
    far = np.where(np.isfinite(depth), depth, 150.0)
    y = to_model_space(np.minimum(far * factor, 150.0), space)
    return ((y - y.min()) / (y.max() - y.min())).astype(np.float32)


def _best_global(rel, space, gt, mask):
    """Least squares on exact depth (pixels in mask) in the model's space."""
    ok = mask & np.isfinite(gt) & (gt > 0) & (gt <= MAX_DEPTH)
    A = np.stack([rel[ok], np.ones(ok.sum())], 1).astype(np.float64)
    s, t = np.linalg.lstsq(A, to_model_space(gt[ok].astype(np.float64), space), rcond=None)[0]
    return to_metric(rel.astype(np.float64), space, s, t, 0.05, MAX_DEPTH)


def section_field(args, blobs=True) -> None:
    """Smooth multiplicative error (+ gross blobs) or exactly affine predictions."""
    for space in ('log_depth', 'disparity', 'depth'):
        for beams in (16, 32):
            rows: Dict[str, List] = {}
            for i in range(args.scenes):
                rng = np.random.default_rng(i)
                frame = make_frame(args.first_seed + i, kind=('indoor', 'outdoor')[i % 2],
                                   width=args.width, height=args.height, beams=beams)
                gt = frame.depth
                if blobs:
                    blob = _blobs(gt.shape, rng)
                    factor = (1 + 0.15 * _smooth_field(gt.shape, rng)) * np.where(
                        blob, rng.choice([0.6, 1.6]), 1.0)
                else:
                    blob = np.zeros(gt.shape, bool)
                    factor = np.ones(gt.shape)
                rel = _relative_from(gt, space, factor)
                uv, z = lidar(frame)
                if blobs:
                    rows.setdefault('best global', []).append(
                        score(_best_global(rel, space, gt, ~blob), gt))
                for name, fn in methods(blobs).items():
                    rows.setdefault(name, []).append(score(fn(rel, space, uv, z), gt))
                rows.setdefault('lidar only', []).append(score(baseline(uv, z, gt.shape), gt))
            what = ('smooth ±15 % error + 8 % gross blobs (x0.6 or x1.6)' if blobs
                    else 'prediction exactly affine to the truth')
            table(f'{"field" if blobs else "affine"}: {what}, {space}, {beams}-beam lidar, '
                  f'{args.scenes} frames', rows)


def section_temporal(args) -> None:
    """Frame-to-frame change of the log error along a generated sequence."""
    frames = make_sequence(seed=5, n_frames=args.frames, kind='outdoor', width=args.width,
                           height=args.height, beams=32)
    rng = np.random.default_rng(0)
    field = args.amplitude * _smooth_field(frames[0].depth.shape, rng)
    for space in ('log_depth', 'disparity'):
        flicker = {}
        for correction in ('none', 'local'):
            cfg = AlignmentConfig(correction=correction)
            prev, changes, errors, states = None, [], [], []
            from densepred_ros.alignment import TemporalAligner
            aligner = TemporalAligner(space, cfg)
            for k, frame in enumerate(frames):
                # The model's error drifts slowly and its normalisation changes each frame.
                factor = 1 + field * np.cos(0.2 * k) + 0.02 * rng.standard_normal()
                rel = _relative_from(frame.depth, space, factor)
                rel = rel * rng.uniform(0.8, 1.0) + rng.uniform(0.0, 0.1)
                uv, z = lidar(frame)
                res = aligner.align(rel, uv, z)
                gt = frame.depth
                ok = np.isfinite(gt) & (gt <= MAX_DEPTH) & np.isfinite(res.depth)
                err = np.where(ok, np.log(np.where(ok, np.minimum(res.depth, MAX_DEPTH), 1))
                               - np.log(np.where(ok, gt, 1)), np.nan)
                errors.append(score(res.depth, gt)['abs_rel'])
                states.append(res.correction[0])
                if prev is not None:
                    changes.append(float(np.nanmean(np.abs(err - prev))))
                prev = err
            flicker[correction] = (np.mean(changes), np.mean(errors), ''.join(states))
        print(f'\ntemporal: {space}, {len(frames)}-frame outdoor sequence, 32 beams, smooth '
              f'error ±{args.amplitude:.0%}: '
              f'mean |Δ log error| per frame none {flicker["none"][0]:.4f} '
              f'local {flicker["local"][0]:.4f}; AbsRel none {flicker["none"][1]:.4f} '
              f'local {flicker["local"][1]:.4f}; correction per frame (l = applied, d = '
              f'declined) {flicker["local"][2]}')


def section_edges(args) -> None:
    """Flying pixels of a predicted depth that blurs depth edges, with and without the filter."""
    totals = np.zeros(4)
    for i in range(args.scenes):
        frame = make_frame(args.first_seed + i, kind=('indoor', 'outdoor')[i % 2],
                           width=args.width, height=args.height, beams=0)
        gt = frame.depth.astype(np.float64)
        far = np.where(np.isfinite(gt), gt, 150.0)
        # Interpolated prediction: the truth blurred over a few pixels (as a network's
        # upsampled output is), which puts points in mid-air across every depth edge.
        pred = np.exp(ndimage.gaussian_filter(np.log(far), 1.5)).astype(np.float32)
        pred[~np.isfinite(gt)] = np.inf
        log_gt = np.log(far)
        edge = np.hypot(ndimage.sobel(log_gt, 0), ndimage.sobel(log_gt, 1)) > 0.5
        near_edge = ndimage.binary_dilation(edge, iterations=3)
        ok = np.isfinite(gt) & (gt <= MAX_DEPTH) & np.isfinite(pred)
        with np.errstate(invalid='ignore'):
            err = np.abs(pred - gt)
        flying = ok & near_edge & (err > np.maximum(0.3, 0.1 * gt))
        good = ok & (err <= 0.1 * gt)
        keep = ~depth_edge_mask(pred)
        totals += (flying.sum(), (flying & keep).sum(), good.sum(), (good & keep).sum())
    print(f'\nedges: {args.scenes} generated frames {args.width}x{args.height}, prediction = '
          f'truth blurred (σ 1.5 px in log depth): flying points {int(totals[0])} → '
          f'{int(totals[1])} ({1 - totals[1] / max(totals[0], 1):.1%} removed); good points '
          f'kept {totals[3] / max(totals[2], 1):.2%}')


def section_time(args) -> None:
    """Extra time of the correction on a KITTI-sized frame (wall and thread CPU time).

    Runs alternate between 'none' and 'local'. On a shared machine the wall time includes
    waiting for a core; the thread's CPU time (time.thread_time) does not, so it is the
    steadier figure there (the correction runs on one thread: numpy, no BLAS calls).
    """
    frame = make_frame(seed=0, kind='outdoor', width=1242, height=375, beams=64)
    uv, z = lidar(frame)
    rel = _relative_from(frame.depth, 'disparity', 1 + 0.1 * _smooth_field(
        frame.depth.shape, np.random.default_rng(0)))
    configs = {c: AlignmentConfig(correction=c) for c in ('none', 'local')}
    wall: Dict[str, List[float]] = {'none': [], 'local': []}
    cpu: Dict[str, List[float]] = {'none': [], 'local': []}
    for _ in range(args.repeat):
        for name, cfg in configs.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            align(rel, 'disparity', uv, z, config=cfg)
            cpu[name].append((time.thread_time() - c0) * 1e3)
            wall[name].append((time.perf_counter() - t0) * 1e3)
    print(f'\ntime: {len(frame.lidar_points)}-point 64-beam scan, {len(z)} points in a '
          f'1242x375 disparity image, {args.repeat} alternating runs (ms)')
    print(f'{"":<14} {"wall median":>12} {"wall min":>9} {"CPU median":>11} {"CPU min":>8}')
    for name in ('none', 'local'):
        print(f'{"align " + name:<14} {np.median(wall[name]):>12.1f} {np.min(wall[name]):>9.1f} '
              f'{np.median(cpu[name]):>11.1f} {np.min(cpu[name]):>8.1f}')
    extra = [np.median(wall['local']) - np.median(wall['none']),
             np.min(wall['local']) - np.min(wall['none']),
             np.median(cpu['local']) - np.median(cpu['none']),
             np.min(cpu['local']) - np.min(cpu['none'])]
    print(f'{"extra (local)":<14} {extra[0]:>12.1f} {extra[1]:>9.1f} {extra[2]:>11.1f} '
          f'{extra[3]:>8.1f}   target <= 15 ms')


def main() -> int:
    """Run the chosen sections."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--scenes', type=int, default=10)
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--repeat', type=int, default=15)
    parser.add_argument('--amplitude', type=float, default=0.15,
                        help="amplitude of the sequence's smooth error (section temporal)")
    parser.add_argument('--first-seed', type=int, default=HELD_OUT_SEED,
                        help='seed of the first generated frame (default: the held-out seeds)')
    parser.add_argument('--model', default='densepred_ros/demo_models/lotus-depth-demo')
    parser.add_argument('--sections', default=','.join(SECTIONS))
    args = parser.parse_args()
    for name in args.sections.split(','):
        if name not in SECTIONS:
            parser.error(f'unknown section {name!r}; choose from {SECTIONS}')
        {'model': section_model, 'field': section_field,
         'affine': lambda a: section_field(a, blobs=False), 'temporal': section_temporal,
         'edges': section_edges, 'time': section_time}[name](args)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
