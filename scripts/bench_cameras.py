#!/usr/bin/env python3
"""Several cameras on one model: memory, throughput and fairness of the depth node.

Each node runs in a process of its own, fed over real rclpy by a feeder process (its
own ROS domain per node), on the CPU unless ``--device`` says otherwise, alignment off
(no lidar: the model and the scheduling are what is measured):

* memory: peak RSS (VmHWM) of one node serving 3 cameras against one serving 1 camera,
  with the bundled demo model, or with a real-size Lotus-G architecture with random
  weights (``--real-size``, as `densepred bench` builds it);
* throughput: total processed frames/s of one node serving 3 cameras (with ``batching``
  auto and off, one after the other) against three single-camera nodes running at the
  same time, every camera at the same input rate, with the node's CPU seconds and model
  seconds per frame (where the time goes);
* fairness: one node, cameras at 30, 5 and 5 Hz: each camera's processed rate against
  its max-min fair share of the node's total processed rate (`scheduler.fair_shares`).

Threads: ``--threads`` sets model.threads of the 3-camera node, ``--single-threads`` that
of each single-camera node (0 = torch's default, one per core: three nodes then run 3×
that many threads on the same cores).

Usage:
    PYTHONPATH=$PWD python scripts/bench_cameras.py [--seconds 20] [--real-size]
    PYTHONPATH=$PWD python scripts/bench_cameras.py --threads 2 --single-threads 1
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


def _parameters(args: argparse.Namespace, names: List[str]) -> Dict:
    params = {'model.path': str(DEMO_MODEL), 'model.device': args.device,
              'alignment.enabled': False, 'qos.input_reliability': 'reliable',
              'max_age': 0.0, 'diagnostics_period': 1.0, 'model.threads': args.threads,
              'batching': args.batching, 'parallel_batches': int(args.parallel_batches)}
    if names:
        params['cameras'] = names
    return params


def node_child(args: argparse.Namespace) -> None:
    """Run one depth node until a line arrives on stdin; print its peak RSS as JSON."""
    import threading
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from densepred_ros.bench import peak_rss_gb
    from densepred_ros.node import DepthNode

    if args.real_size:
        from densepred_ros import models
        from densepred_ros.bench import _prepare
        import tempfile
        _, predictor = _prepare('ours_fp32', False, Path(tempfile.mkdtemp()))
        models.load_predictor = lambda *a, **k: predictor
    rclpy.init(domain_id=args.domain)
    names = [n for n in args.cameras.split(',') if n]
    overlap = {'auto': None, 'on': True, 'off': False}[args.overlap]
    node = DepthNode(namespace='/bench', overlap=overlap, parameter_overrides=[
        Parameter(k, value=v) for k, v in _parameters(args, names).items()])
    assert node.start(), node.last_error
    # Spun as `node_main` spins the node's process: one thread, in short slices.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.2)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    print('READY', flush=True)
    cpu_start = _cpu_seconds()
    sys.stdin.readline()
    cpu = _cpu_seconds() - cpu_start
    peak = peak_rss_gb()
    model = node.model_stats
    usage = {'cpu_s': cpu, 'frames': model.frames, 'batches': model.batches,
             'model_s': model.inference_seconds, 'batching': model.batching,
             'lanes': model.lanes,
             'lane_switches': getattr(node._frames.scheduler.switch, 'switches', None),
             'torch_threads': _torch_threads()}
    node.close(timeout=300.0)   # a real-size model may be mid-batch (seconds)
    spinning.clear()
    thread.join(timeout=5.0)
    executor.shutdown()
    thread.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    print('RESULT ' + json.dumps({'peak_rss_gb': peak, 'usage': usage}), flush=True)


def _cpu_seconds() -> float:
    """Return this process's user + system CPU seconds (every thread)."""
    times = os.times()
    return times.user + times.system


def _torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def feed_child(args: argparse.Namespace) -> None:
    """Feed the node of args.domain: args.cameras at args.rates Hz; print processed rates."""
    import threading
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from densepred_ros.feeder import Feeder, wait_for
    from densepred_ros.synthetic import make_frame

    rclpy.init(domain_id=args.domain)
    names = [n for n in args.cameras.split(',') if n] or ['']
    # One thread spins every camera's feeder, in short slices like the node: a busy
    # executor per camera would take CPU and the interpreter from the publishing loop,
    # which then falls behind and publishes in bursts (frames a camera never sends).
    executor = SingleThreadedExecutor()
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.2)

    feeders = {n: Feeder(f'/bench/{n}' if n else '/bench', node_name=f'feed_{n or "one"}',
                         executor=executor) for n in names}
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    for feeder in feeders.values():
        feeder.subscribe(['depth/relative'], diagnostics=False)
    assert wait_for(lambda: all(f.connected(lidar=False) for f in feeders.values()), 30.0)
    frame = make_frame(5, 'outdoor', width=args.width, height=args.height, beams=0)
    rates = [float(r) for r in args.rates.split(',')]
    for feeder in feeders.values():   # warm-up: one frame through every camera
        feeder.publish(frame.rgb, frame.camera)
    assert wait_for(lambda: all(f.count('depth/relative') > 0 for f in feeders.values()),
                    900.0)
    # The node streams for --settle seconds before counting starts (a node with
    # parallel_batches auto decides its lanes from a few seconds of load).
    begin = time.monotonic()
    start = begin + args.settle
    before = None
    due = {n: begin for n in feeders}
    sent = dict.fromkeys(feeders, 0)
    while time.monotonic() < start + args.seconds:
        now = time.monotonic()
        if before is None and now >= start:
            before = {n: f.count('depth/relative') for n, f in feeders.items()}
            sent = dict.fromkeys(feeders, 0)
        for (name, feeder), rate in zip(feeders.items(), rates):
            if now >= due[name]:
                feeder.publish(frame.rgb, frame.camera)
                sent[name] += 1
                due[name] += 1.0 / rate
                if due[name] <= now:   # a period behind: skip, as a camera would
                    due[name] = now + 1.0 / rate
        time.sleep(max(0.0, min(due.values()) - time.monotonic()))
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    result = {'cameras': names, 'rates': rates, 'seconds': elapsed,
              'processed_hz': {n or 'one': (f.count('depth/relative') - before[n]) / elapsed
                               for n, f in feeders.items()},
              'sent_hz': {n or 'one': c / elapsed for n, c in sent.items()}}
    spinning.clear()
    spinner.join(timeout=5.0)
    for feeder in feeders.values():
        feeder.close()
    executor.shutdown()
    rclpy.try_shutdown()
    print('RESULT ' + json.dumps(result), flush=True)


def _command(role: str, cameras: List[str], rates: List[float], args: argparse.Namespace,
             domain: int) -> List[str]:
    return [sys.executable, __file__, '--child', role, '--cameras', ','.join(cameras),
            '--rates', ','.join(str(r) for r in rates), '--seconds', str(args.seconds),
            '--domain', str(domain), '--width', str(args.width), '--height',
            str(args.height), '--overlap', args.overlap, '--threads', str(args.threads),
            '--batching', args.batching, '--device', args.device,
            '--parallel-batches', str(args.parallel_batches),
            '--settle', str(args.settle)] + (
                ['--real-size'] if args.real_size else [])


class Run:
    """A node process and the process feeding it, on a ROS domain of their own."""

    def __init__(self, cameras: List[str], rates: List[float], args: argparse.Namespace
                 ) -> None:
        """Start the node and wait until it is active."""
        from densepred_ros.domain_ids import reserve_domain_id
        domain = reserve_domain_id()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.node = subprocess.Popen(_command('node', cameras, rates, args, domain),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        line = self.node.stdout.readline()
        if not line.startswith('READY'):
            raise RuntimeError(f'the node process failed: {line}')
        self.feed_command, self.env = _command('feed', cameras, rates, args, domain), env
        self.feed = None

    def start_feeding(self) -> 'Run':
        """Start the feeder process."""
        self.feed = subprocess.Popen(self.feed_command, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=self.env)
        return self

    def result(self) -> Dict:
        """Wait for the feeder, stop the node; return the rates and the node's peak RSS."""
        fed = _result(self.feed.communicate(timeout=3600)[0], self.feed.returncode)
        out = self.node.communicate('stop\n', timeout=120)[0]
        return {**fed, **_result(out, self.node.returncode)}


def _result(out: str, code: int) -> Dict:
    lines = [line for line in out.splitlines() if line.startswith('RESULT ')]
    if code or not lines:
        raise RuntimeError(f'child failed (exit {code}): {out[-2000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def batch_exactness() -> Dict:
    """Return max |batch of 3 − one by one| of the demo model's prediction and metric depth.

    Three 320×240 frames (two indoor, one outdoor up to 80 m) with a 32-beam lidar, in
    fp32 and in dtype auto: the relative prediction, and the metric depth after the same
    alignment (pixels finite in both), in metres.
    """
    import numpy as np
    from densepred_ros.camera_io import camera_pipeline
    from densepred_ros.params import NodeConfig
    from densepred_ros.pipeline import load_pipeline
    from densepred_ros.synthetic import make_frame
    frames = [make_frame(seed, kind, width=320, height=240)
              for seed, kind in ((1, 'indoor'), (2, 'outdoor'), (3, 'indoor'))]
    out = {}
    for dtype in ('fp32', 'auto'):
        shared = load_pipeline(NodeConfig.from_parameters({
            'model.path': str(DEMO_MODEL), 'model.device': 'cpu', 'model.dtype': dtype}))
        single = []
        for frame in frames:
            pipeline = camera_pipeline(shared)
            single.append(pipeline.finish(pipeline.infer(frame.rgb), frame.camera,
                                          frame.lidar_points, frame.T_cam_lidar))
        pipelines = [camera_pipeline(shared) for _ in frames]
        inferred = pipelines[0].infer_batch([f.rgb for f in frames], [None] * len(frames))
        batched = [p.finish(i, f.camera, f.lidar_points, f.T_cam_lidar)
                   for p, i, f in zip(pipelines, inferred, frames)]
        rows = []
        for a, b in zip(single, batched):
            both = np.isfinite(a.metric) & np.isfinite(b.metric)
            rows.append({
                'relative': float(np.abs(a.relative - b.relative).max()),
                'metric_m': float(np.abs(a.metric[both] - b.metric[both]).max()),
                'metric_relative': float((np.abs(a.metric[both] - b.metric[both])
                                          / a.metric[both]).max()),
                'max_depth_m': float(a.metric[both].max())})
        out[f'{dtype} ({shared.predictor.dtype})'] = rows
        shared.close()
    return out


def bare_loop(batch: int, repeat: int = 30) -> Dict:
    """Return ms per batch of the demo model outside the node, by Python and torch threads.

    One Python thread with two or one torch threads, then two Python threads with one
    torch thread each calling the one predictor at once (as two lanes do), 320×240
    images, dtype auto.
    """
    import threading
    import numpy as np
    import torch
    from densepred_ros.models import load_predictor, PredictorOptions
    predictor = load_predictor(str(DEMO_MODEL), PredictorOptions(device='cpu', dtype='auto'))
    rgb = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    out = {}
    for python_threads, torch_threads in ((1, 2), (1, 1), (2, 1)):
        times: List[float] = []

        def loop() -> None:
            torch.set_num_threads(torch_threads)   # per calling thread
            predictor.predict_batch([rgb] * batch)
            start = time.perf_counter()
            for _ in range(repeat):
                predictor.predict_batch([rgb] * batch)
            times.append((time.perf_counter() - start) / repeat * 1e3)

        threads = [threading.Thread(target=loop) for _ in range(python_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out[f'{python_threads} python x {torch_threads} torch threads'] = {
            'ms_per_batch': sum(times) / len(times),
            'frames_per_s': python_threads * batch * 1e3 / (sum(times) / len(times))}
    return out


def main() -> None:
    """Print the three measurements as JSON and a short summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--settle', type=float, default=8.0,
                        help='seconds every node is fed before counting starts')
    parser.add_argument('--rate', type=float, default=10.0,
                        help='input rate of every camera in the throughput run, Hz')
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--real-size', action='store_true',
                        help='memory only, with a real-size random-weight Lotus-G')
    parser.add_argument('--overlap', choices=('auto', 'on', 'off'), default='auto',
                        help='two worker threads (inference overlapped with the rest) in '
                             'every node; auto = the node default (on with CUDA only)')
    parser.add_argument('--device', default='cpu', help='model.device of every node')
    parser.add_argument('--threads', type=int, default=0,
                        help='model.threads of the 3-camera node (0 = torch default)')
    parser.add_argument('--single-threads', type=int, default=None,
                        help='model.threads of each single-camera node (default: --threads)')
    parser.add_argument('--multi-overlap', choices=('auto', 'on', 'off', 'both'),
                        default=None, help='--overlap of the 3-camera node only (default: '
                        '--overlap); both = one run with each')
    parser.add_argument('--batching', choices=('auto', 'off', 'both'), default='both',
                        help='batching of the 3-camera node; both = one run with each')
    parser.add_argument('--parallel-batches', default='0',
                        help='parallel_batches of the 3-camera node (0 = auto); a comma '
                        'list = one run with each')
    parser.add_argument('--bare-loop', type=int, default=0, metavar='BATCH',
                        help='only time batches of BATCH frames outside the node')
    parser.add_argument('--batch-exactness', action='store_true',
                        help='only compare batched with per-frame predictions and metric depth')
    parser.add_argument('--child', choices=('node', 'feed'), help=argparse.SUPPRESS)
    parser.add_argument('--cameras', default='', help=argparse.SUPPRESS)
    parser.add_argument('--rates', default='10', help=argparse.SUPPRESS)
    parser.add_argument('--domain', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (node_child if args.child == 'node' else feed_child)(args)
        return
    if args.batch_exactness:
        print(json.dumps(batch_exactness(), indent=2))
        return
    if args.bare_loop:
        print(json.dumps(bare_loop(args.bare_loop), indent=2))
        return
    from densepred_ros.scheduler import fair_shares
    three = ['front', 'left', 'right']
    batchings = ['auto', 'off'] if args.batching == 'both' else [args.batching]
    overlap = args.multi_overlap or args.overlap
    overlaps = ['off', 'on'] if overlap == 'both' else [overlap]
    lanes = [int(n) for n in str(args.parallel_batches).split(',')]
    modes = [(b, o, n) for b in batchings for o in overlaps for n in lanes]
    single_args = argparse.Namespace(**{**vars(args), 'batching': 'auto', 'threads': (
        args.threads if args.single_threads is None else args.single_threads),
        'parallel_batches': 0})
    report: Dict = {'cpu': _cpu_name(), 'cpu_flags': _cpu_flags(), 'cores': os.cpu_count(),
                    'load_before': os.getloadavg()[0], 'overlap_single_nodes': args.overlap,
                    'seconds': args.seconds, 'image': f'{args.width}x{args.height}',
                    'threads': {'three_camera_node': args.threads,
                                'single_camera_nodes': single_args.threads}}
    one = Run([], [args.rate], single_args).start_feeding().result()
    multi = {}
    for batching, overlap, parallel in modes:
        mode_args = argparse.Namespace(**{**vars(args), 'batching': batching,
                                          'overlap': overlap, 'parallel_batches': parallel})
        multi[f'batching_{batching}_overlap_{overlap}_parallel_{parallel}'] = Run(
            three, [args.rate] * 3, mode_args).start_feeding().result()
    first = next(iter(multi.values()))
    report['memory'] = {'one_camera_gb': one['peak_rss_gb'],
                        'three_cameras_gb': first['peak_rss_gb'],
                        'ratio': first['peak_rss_gb'] / one['peak_rss_gb'],
                        'three_cameras_per_frame': _per_frame([first['usage']])}
    if not args.real_size:
        singles = [Run([], [args.rate], single_args) for _ in three]   # all ready, then fed
        single_results = [run.start_feeding() for run in singles]
        single_results = [run.result() for run in singles]
        three_nodes = sum(sum(r['processed_hz'].values()) for r in single_results)
        report['throughput'] = {
            'input_hz_per_camera': args.rate,
            'one_node_one_camera_hz': sum(one['processed_hz'].values()),
            'three_nodes_hz': three_nodes,
            'three_nodes_sent_hz': sum(sum(r['sent_hz'].values()) for r in single_results),
            'three_nodes_rss_gb_sum': sum(r['peak_rss_gb'] for r in single_results),
            'three_nodes_per_frame': _per_frame([r['usage'] for r in single_results])}
        for mode, result in multi.items():
            total = sum(result['processed_hz'].values())
            report['throughput'][f'one_node_{mode}'] = {
                'hz': total, 'ratio_to_three_nodes': total / three_nodes,
                'per_camera_hz': result['processed_hz'],
                'sent_hz': sum(result['sent_hz'].values()),
                'per_frame': _per_frame([result['usage']]),
                'batching': result['usage']['batching'],
                'parallel_batches': result['usage']['lanes']}
        fair_args = argparse.Namespace(**{**vars(args), 'batching': modes[0][0],
                                          'overlap': modes[0][1],
                                          'parallel_batches': modes[0][2]})
        fair = Run(three, [30.0, 5.0, 5.0], fair_args).start_feeding().result()
        rates = dict(zip(three, fair['rates']))
        total = sum(fair['processed_hz'].values())
        shares = fair_shares(rates, total)
        report['fairness'] = {
            'batching': modes[0][0], 'overlap': modes[0][1], 'parallel_batches': modes[0][2],
            'input_hz': rates, 'processed_hz': fair['processed_hz'], 'fair_share_hz': shares,
            'share_ratio': {n: fair['processed_hz'][n] / shares[n] for n in three}}
    print(json.dumps(report, indent=2))


def _per_frame(usages: List[Dict]) -> Dict:
    """Return CPU ms and model ms per frame, batch size and threads of node process(es)."""
    frames = sum(u['frames'] for u in usages) or 1
    return {'cpu_ms': 1e3 * sum(u['cpu_s'] for u in usages) / frames,
            'model_wall_ms': 1e3 * sum(u['model_s'] for u in usages) / frames,
            'batch_size_mean': frames / max(1, sum(u['batches'] for u in usages)),
            'torch_threads': [u['torch_threads'] for u in usages]}


def _cpu_flags() -> List[str]:
    """Return the SIMD flags that decide the CPU kernels (avx2, avx512*, amx*)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('flags'):
                return sorted(f for f in line.split(':', 1)[1].split()
                              if f == 'avx2' or f.startswith(('avx512_bf16', 'amx')))
    except OSError:
        pass
    return []


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
