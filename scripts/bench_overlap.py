#!/usr/bin/env python3
"""Frames per second of the depth node with and without inference overlapped, one run.

Runs the real node in this process (over real rclpy, on a private ROS domain) with the
bundled demo model, feeds it generated camera + lidar frames at --rate Hz with every output
subscribed, and counts the frames it publishes over --seconds after a warm-up. The two
modes alternate (--rounds times each) so that a shared CPU's load hits both alike:

- serial: one worker thread runs inference and post-processing one after the other;
- overlap: stage 1 infers frame N+1 while stage 2 post-processes and publishes frame N
  (`holder.TwoStageWorker`).

It prints frames/s, end-to-end latency (image stamp → depth/relative received here) and
the node's per-stage p50 times, as a Markdown table.

    python scripts/bench_overlap.py --rate 30 --seconds 20 --rounds 2
"""

import argparse
from pathlib import Path
import statistics
import time
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / 'densepred_ros' / 'demo_models' / 'lotus-depth-demo'
NORMALS_MODEL = ROOT / 'densepred_ros' / 'demo_models' / 'lotus-normals-demo'


def run_mode(overlap: bool, frames: list, args: argparse.Namespace) -> Dict[str, float]:
    """Run one mode; return frames/s, latency percentiles and stage p50s (seconds)."""
    from rclpy.parameter import Parameter

    from densepred_ros.camera import xyz_quat_from_extrinsic
    from densepred_ros.domain_ids import reserve_domain_id
    from densepred_ros.feeder import Feeder, seconds_since, wait_for
    from densepred_ros.node import DepthNode
    from densepred_ros.pipeline import DEPTH_RELATIVE, OUTPUTS, STAGES

    latencies: List[float] = []

    def on_output(topic: str, msg) -> None:
        if topic == DEPTH_RELATIVE:
            latencies.append(seconds_since(msg.header))

    params = {
        'model.path': str(args.model), 'model.device': 'cpu', 'model.threads': args.threads,
        'qos.input_reliability': 'reliable', 'alignment.use_tf': False, 'max_age': 0.0,
        'alignment.extrinsic': xyz_quat_from_extrinsic(frames[0].T_cam_lidar),
        'output.points_stride': 2,
    }
    if args.normals_model:
        params['model.normals_path'] = str(args.normals_model)
    feeder = Feeder('/bench', domain_id=reserve_domain_id(), keep=2, on_output=on_output)
    node = DepthNode(namespace='/bench', overlap=overlap, context=feeder.context,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    feeder.add_node(node)
    try:
        if not node.start():
            raise RuntimeError(f'the node did not start: {node.last_error}')
        feeder.subscribe(OUTPUTS, diagnostics=False)
        if not wait_for(lambda: feeder.connected(), 10.0):
            raise RuntimeError('the node and the feeder did not connect')
        period = 1.0 / args.rate
        start = time.monotonic()
        counted_from = start + args.warmup
        count_start = None
        i = 0
        while time.monotonic() < counted_from + args.seconds:
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = frames[i % len(frames)]
            feeder.publish(frame.rgb, frame.camera, frame.lidar_points)
            i += 1
            if count_start is None and time.monotonic() >= counted_from:
                count_start = feeder.count(DEPTH_RELATIVE)
                latencies.clear()
        published = feeder.count(DEPTH_RELATIVE) - (count_start or 0)
        elapsed = time.monotonic() - counted_from
        result = {'fps': published / elapsed, 'input_hz': i / (time.monotonic() - start)}
        if latencies:
            result['latency_p50'], result['latency_p95'] = np.percentile(latencies, [50, 95])
        for stage in STAGES:
            times = node.stats.stage_times.get(stage)
            if times is not None and len(times):
                result[stage] = times.get(50)[0]
        return result
    finally:
        feeder.close()


def main() -> None:
    """Run both modes alternately and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rate', type=float, default=30.0, help='input rate, Hz')
    parser.add_argument('--seconds', type=float, default=20.0, help='measured seconds per run')
    parser.add_argument('--warmup', type=float, default=5.0, help='seconds before counting')
    parser.add_argument('--rounds', type=int, default=2, help='runs of each mode')
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--beams', type=int, default=32)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0 = default)')
    parser.add_argument('--model', default=str(MODEL))
    parser.add_argument('--normals-model', default='',
                        help=f'also run a normals model (e.g. {NORMALS_MODEL})')
    args = parser.parse_args()

    from densepred_ros.pipeline import STAGES
    from densepred_ros.synthetic import make_sequence

    frames = make_sequence(1000, 8, kind='outdoor', width=args.width, height=args.height,
                           beams=args.beams, rate_hz=args.rate)
    runs: Dict[str, List[Dict[str, float]]] = {'serial': [], 'overlap': []}
    for _ in range(args.rounds):
        for mode in ('serial', 'overlap'):
            runs[mode].append(run_mode(mode == 'overlap', frames, args))
            print(f'{mode}: {runs[mode][-1]["fps"]:.2f} frames/s', flush=True)

    def median(mode: str, key: str) -> float:
        values = [r[key] for r in runs[mode] if key in r]
        return statistics.median(values) if values else float('nan')

    print(f'\n{args.width}×{args.height}, input {args.rate:g} Hz, every output subscribed, '
          f'{args.rounds} alternating runs of {args.seconds:g} s per mode (medians)\n')
    columns = ['frames/s', 'latency p50 (ms)', 'latency p95 (ms)'] + [
        f'{s} p50 (ms)' for s in STAGES if not np.isnan(median('serial', s))]
    print('| mode | ' + ' | '.join(columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    for mode in ('serial', 'overlap'):
        cells = [f'{median(mode, "fps"):.2f}', f'{median(mode, "latency_p50") * 1e3:.0f}',
                 f'{median(mode, "latency_p95") * 1e3:.0f}'] + [
            f'{median(mode, s) * 1e3:.1f}' for s in STAGES
            if not np.isnan(median('serial', s))]
        print(f'| {mode} | ' + ' | '.join(cells) + ' |')
    print(f'\noverlap / serial frames/s: '
          f'{median("overlap", "fps") / median("serial", "fps"):.2f}')


if __name__ == '__main__':
    main()
