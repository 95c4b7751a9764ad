#!/usr/bin/env python3
"""Several cameras on one model: memory, throughput and fairness of the depth node.

Each measurement runs nodes in child processes of their own (own ROS domain), fed by
feeders in the same process over real rclpy, CPU only, alignment off (no lidar: the
model and the scheduling are what is measured):

* memory: peak RSS (VmHWM) of one node serving 3 cameras against one serving 1 camera,
  with the bundled demo model, or with a real-size Lotus-G architecture with random
  weights (``--real-size``, as `densepred bench` builds it);
* throughput: total processed frames/s of one node serving 3 cameras against three
  single-camera nodes running at the same time, every camera at the same input rate;
* fairness: one node, cameras at 30, 5 and 5 Hz: each camera's processed rate against
  its max-min fair share of the node's total processed rate (`scheduler.fair_shares`).

Usage:
    PYTHONPATH=$PWD python scripts/bench_cameras.py [--seconds 20] [--real-size]
"""

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / 'densepred_ros' / 'demo_models' / 'lotus-depth-demo'


def child(args: argparse.Namespace) -> None:
    """Run one node serving args.cameras at args.rates Hz for args.seconds; print JSON."""
    import rclpy
    from rclpy.parameter import Parameter
    from densepred_ros.bench import peak_rss_gb
    from densepred_ros.feeder import Feeder, wait_for
    from densepred_ros.node import DepthNode
    from densepred_ros.synthetic import make_frame

    if args.real_size:
        from densepred_ros import models
        from densepred_ros.bench import _prepare
        import tempfile
        _, predictor = _prepare('ours_fp32', False, Path(tempfile.mkdtemp()))
        models.load_predictor = lambda *a, **k: predictor
    rclpy.init(domain_id=args.domain)
    names = [n for n in args.cameras.split(',') if n]
    params = {'model.path': str(DEMO_MODEL), 'model.device': 'cpu',
              'alignment.enabled': False, 'qos.input_reliability': 'reliable',
              'max_age': 0.0, 'diagnostics_period': 1.0}
    if names:
        params['cameras'] = names
    node = DepthNode(namespace='/bench', parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    feeders = {n: Feeder(f'/bench/{n}' if n else '/bench', node_name=f'feed_{n or "one"}')
               for n in (names or [''])}
    first = next(iter(feeders.values()))
    first.add_node(node)
    assert node.start(), node.last_error
    for feeder in feeders.values():
        feeder.subscribe(['depth/relative'], diagnostics=False)
    assert wait_for(lambda: all(f.connected(lidar=False) for f in feeders.values()), 10.0)
    frame = make_frame(5, 'outdoor', width=args.width, height=args.height, beams=0)
    rates = [float(r) for r in args.rates.split(',')]
    # warm-up: one frame through every camera
    for feeder in feeders.values():
        feeder.publish(frame.rgb, frame.camera)
    wait_for(lambda: all(f.count('depth/relative') > 0 for f in feeders.values()), 600.0)
    before = {n: f.count('depth/relative') for n, f in feeders.items()}
    start = time.monotonic()
    due = {n: start for n in feeders}
    sent = dict.fromkeys(feeders, 0)
    while time.monotonic() < start + args.seconds:
        now = time.monotonic()
        for (name, feeder), rate in zip(feeders.items(), rates):
            if now >= due[name]:
                feeder.publish(frame.rgb, frame.camera)
                sent[name] += 1
                due[name] += 1.0 / rate
        time.sleep(max(0.0, min(due.values()) - time.monotonic()))
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    processed = {n or 'one': (f.count('depth/relative') - before[n]) / elapsed
                 for n, f in feeders.items()}
    result = {'cameras': names or [''], 'rates': rates, 'seconds': elapsed,
              'processed_hz': processed,
              'sent_hz': {n or 'one': c / elapsed for n, c in sent.items()},
              'peak_rss_gb': peak_rss_gb()}
    for feeder in feeders.values():
        feeder.close()
    rclpy.try_shutdown()
    print('RESULT ' + json.dumps(result), flush=True)


def spawn(cameras: List[str], rates: List[float], args: argparse.Namespace,
          domain: int) -> subprocess.Popen:
    """Start a child measuring one node."""
    command = [sys.executable, __file__, '--child', '--cameras', ','.join(cameras),
               '--rates', ','.join(str(r) for r in rates), '--seconds', str(args.seconds),
               '--domain', str(domain), '--width', str(args.width),
               '--height', str(args.height)] + (['--real-size'] if args.real_size else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)


def collect(process: subprocess.Popen) -> Dict:
    """Wait for a child and return its JSON result."""
    out, _ = process.communicate(timeout=3600)
    lines = [line for line in out.splitlines() if line.startswith('RESULT ')]
    if process.returncode or not lines:
        raise RuntimeError(f'child failed (exit {process.returncode}): {out[-2000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def main() -> None:
    """Print the three measurements as JSON and a short summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--rate', type=float, default=10.0,
                        help='input rate of every camera in the throughput run, Hz')
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--real-size', action='store_true',
                        help='memory only, with a real-size random-weight Lotus-G')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--cameras', default='', help=argparse.SUPPRESS)
    parser.add_argument('--rates', default='10', help=argparse.SUPPRESS)
    parser.add_argument('--domain', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from densepred_ros.domain_ids import reserve_domain_id
    from densepred_ros.scheduler import fair_shares
    three = ['front', 'left', 'right']
    report: Dict = {'cpu': _cpu_name(), 'loaded_machine_note': 'shared by other agents'}
    one = collect(spawn([], [args.rate], args, reserve_domain_id()))
    multi = collect(spawn(three, [args.rate] * 3, args, reserve_domain_id()))
    report['memory'] = {'one_camera_gb': one['peak_rss_gb'],
                        'three_cameras_gb': multi['peak_rss_gb'],
                        'ratio': multi['peak_rss_gb'] / one['peak_rss_gb']}
    if not args.real_size:
        singles = [spawn([], [args.rate], args, reserve_domain_id()) for _ in three]
        single_results = [collect(p) for p in singles]
        report['throughput'] = {
            'input_hz_per_camera': args.rate,
            'one_node_three_cameras_hz': sum(multi['processed_hz'].values()),
            'three_nodes_hz': sum(sum(r['processed_hz'].values()) for r in single_results),
            'one_node_per_camera_hz': multi['processed_hz'],
            'three_nodes_rss_gb_sum': sum(r['peak_rss_gb'] for r in single_results)}
        fair = collect(spawn(three, [30.0, 5.0, 5.0], args, reserve_domain_id()))
        rates = dict(zip(three, fair['rates']))
        total = sum(fair['processed_hz'].values())
        shares = fair_shares(rates, total)
        report['fairness'] = {
            'input_hz': rates, 'processed_hz': fair['processed_hz'], 'fair_share_hz': shares,
            'share_ratio': {n: fair['processed_hz'][n] / shares[n] for n in three}}
    print(json.dumps(report, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


if __name__ == '__main__':
    main()
