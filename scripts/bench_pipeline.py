#!/usr/bin/env python3
"""Time the node's own per-frame work around inference on a KITTI-sized frame.

A generated outdoor frame (1242×375 image, 64-beam scan of about 115 000 points) is turned
into the messages the node receives; the prediction is cached (ground truth in log-depth
space, smoothly perturbed, as the bundled demo model predicts), so only the work after
inference is timed. The stages call the package's stage functions (decode, camera,
alignment, geometry, encode) in the order the node does, for two subscriptions:

- 'all outputs': every output topic, normals from the metric depth;
- 'depth/image + points': only the metric depth image and the coloured point cloud.

Prints p50 and min per stage over --repeat runs (milliseconds), the sum of the stage
minima (the frame's cost without preemption, for a loaded machine) and the CPU kind.

Usage: python scripts/bench_pipeline.py [--repeat 30] [--stride 1] [--no-numba]
    [--json FILE]
"""

import argparse
import json
import platform
import time
from typing import Callable, Dict, List, Tuple

from densepred_ros import decode, encode, geometry
from densepred_ros.alignment import AlignmentConfig, TemporalAligner
from densepred_ros.camera import project_points, transform_points
import numpy as np

WIDTH, HEIGHT = 1242, 375
STAGES = ('decode', 'project', 'align', 'normals', 'colour maps', 'points', 'encode')
CASES = {'all outputs': True, 'depth/image + points': False}


def cpu_kind() -> str:
    """Return the CPU model name and its widest matrix/vector flags from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name':
                    name = value.strip()
                elif key == 'flags':
                    flags = set(value.split())
                    break
    except OSError:
        pass
    kinds = [k for k in ('amx_bf16', 'avx512_bf16', 'avx512f', 'avx2') if k in flags]
    return f'{name} [{" ".join(kinds) or "no avx2"}]'


def _relative(depth: np.ndarray) -> np.ndarray:
    """Ground truth in log-depth space (far plane 150 m), perturbed, normalised to [0, 1]."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    far = np.minimum(np.where(np.isfinite(depth), depth, np.inf), 150.0)
    y = np.log(far)
    y = (y - y.min()) / (y.max() - y.min()) + 0.005 * np.sin(u / w * 3.0 + v / h * 2.0)
    return ((y - y.min()) / (y.max() - y.min())).astype(np.float32)


def _messages(frame) -> Tuple:
    """Return (Image, CameraInfo, PointCloud2) messages of the frame as the node gets them."""
    from std_msgs.msg import Header
    header = Header(frame_id='camera_optical')
    image = encode.rgb_to_image(frame.rgb, header)
    info = encode.camera_info_for(frame.camera, header, WIDTH, HEIGHT)
    scan = encode.points_to_pointcloud2(frame.lidar_points, Header(frame_id='lidar'))
    return image, info, scan


def make_case(frame, relative: np.ndarray, all_outputs: bool, stride: int,
              correction: str = 'local', edge_filter: bool = True
              ) -> List[Tuple[str, Callable[[dict], None]]]:
    """Return the stages of one frame as (name, function of the frame state) pairs.

    `correction` and `edge_filter` are the node's `alignment.correction` and
    `output.edge_filter` (the edge filter is timed with the alignment, as in the pipeline).
    """
    image, info, scan = _messages(frame)
    aligner = TemporalAligner('log_depth', AlignmentConfig(correction=correction))

    def decode_(s: dict) -> None:
        s['rgb'] = decode.image_to_rgb(image)
        s['camera'] = decode.camera_info_to_model(info).scaled_to(WIDTH, HEIGHT)
        s['scan'] = decode.pointcloud2_to_xyz(scan)

    def project(s: dict) -> None:
        points = transform_points(s['scan'], frame.T_cam_lidar)
        s['uv'], s['z'] = project_points(points, s['camera'])

    def align(s: dict) -> None:
        result = aligner.align(relative, s['uv'], s['z'])
        if not result.ok:
            raise RuntimeError(f'alignment failed: {result.reason}')
        s['metric'] = result.depth
        if edge_filter:
            s['metric'] = result.depth.copy()
            s['metric'][geometry.depth_edge_mask(s['metric'])] = np.nan

    def normals(s: dict) -> None:
        s['normals'] = geometry.normals_from_depth(s['metric'], s['camera'])

    def colour(s: dict) -> None:
        s['depth_color'] = geometry.colorize_depth(s['metric'])
        s['normals_color'] = geometry.colorize_normals(s['normals'])

    def points(s: dict) -> None:
        s['points'] = geometry.depth_to_points(s['metric'], s['camera'], stride=stride,
                                               max_depth=50.0)
        s['colors'] = s['rgb'][::stride, ::stride]

    def encode_(s: dict) -> None:
        header = image.header
        encode.depth_to_image(s['metric'], header)
        encode.points_to_pointcloud2(s['points'], header, s['colors'])
        if all_outputs:
            encode.depth_to_image(relative, header)
            encode.rgb_to_image(s['depth_color'], header)
            encode.camera_info_for(s['camera'], header, WIDTH, HEIGHT)
            encode.normals_to_image(s['normals'], header)
            encode.rgb_to_image(s['normals_color'], header)

    stages = [('decode', decode_), ('project', project), ('align', align)]
    if all_outputs:
        stages += [('normals', normals), ('colour maps', colour)]
    return stages + [('points', points), ('encode', encode_)]


def run(stages, repeat: int) -> Dict[str, List[float]]:
    """Run the chain repeat times (plus one warm-up) and return seconds per stage."""
    times: Dict[str, List[float]] = {name: [] for name, _ in stages}
    times['total'] = []
    for i in range(repeat + 1):
        state: dict = {}
        total = 0.0
        for name, fn in stages:
            start = time.perf_counter()
            fn(state)
            elapsed = time.perf_counter() - start
            total += elapsed
            if i:
                times[name].append(elapsed)
        if i:
            times['total'].append(total)
    return times


def main() -> int:
    """Build the frame, run both cases and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=30)
    parser.add_argument('--stride', type=int, default=1, help='output.points_stride')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-numba', action='store_true',
                        help='use the numpy path of geometry.py even when numba is installed')
    parser.add_argument('--correction', default='local', choices=('none', 'local'),
                        help="alignment.correction (default 'local', the node's default)")
    parser.add_argument('--no-edge-filter', action='store_true',
                        help='output.edge_filter false (default: on, as in the node)')
    parser.add_argument('--json', help='also write the figures (ms) to this file')
    args = parser.parse_args()
    if args.no_numba:
        geometry._kernels = None
    kernels = geometry.warm_up() if hasattr(geometry, 'warm_up') else 'numpy'

    from densepred_ros.synthetic import make_frame
    frame = make_frame(seed=args.seed, kind='outdoor', width=WIDTH, height=HEIGHT, beams=64)
    relative = _relative(frame.depth)
    print(f'CPU: {cpu_kind()}')
    print(f'frame {WIDTH}×{HEIGHT}, scan {len(frame.lidar_points)} points, '
          f'points_stride {args.stride}, geometry kernels: {kernels}, '
          f'correction {args.correction}, edge filter {not args.no_edge_filter}, '
          f'{args.repeat} repeats; ms, p50 (min)')
    report = {'cpu': cpu_kind(), 'points': int(len(frame.lidar_points)), 'kernels': kernels,
              'cases': {}}
    results = {}
    for case, all_outputs in CASES.items():
        results[case] = run(make_case(frame, relative, all_outputs, args.stride,
                                      args.correction, not args.no_edge_filter), args.repeat)
    header = f'{"stage":<12}' + ''.join(f'{case:>26}' for case in CASES)
    print(header)
    for name in STAGES + ('total',):
        row = f'{name:<12}'
        for case in CASES:
            t = results[case].get(name)
            row += (f'{1e3 * np.median(t):>17.2f} ({1e3 * min(t):6.2f})' if t
                    else f'{"-":>26}')
        print(row)
    row = f'{"sum of mins":<12}'
    for case in CASES:
        row += f'{1e3 * sum(min(t) for n, t in results[case].items() if n != "total"):>26.2f}'
    print(row)
    for case in CASES:
        report['cases'][case] = {
            name: {'p50': 1e3 * float(np.median(t)), 'min': 1e3 * float(min(t))}
            for name, t in results[case].items()}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
