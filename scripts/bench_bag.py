"""Frames per second of `densepred bag` against the node's per-frame work, side by side.

Usage: PYTHONPATH=. python scripts/bench_bag.py [--frames 6] [--rounds 2] [--normals]

One process loads the bundled demo model(s) once, writes the generated street sequence as
a bag (`densepred demo --bag`'s writer), then alternates: (a) the node's path: the
per-frame pipeline (`bag_cli.process_frame`: decode, model, alignment, encode) on each
frame's raw Image, camera_info and scan, then `publish` of every output on rclpy
publishers, as the node's worker does (no subscriber, so no delivery: the node's side is
if anything flattered), and (b) the whole bag tool over the bag (read, JPEG decode,
pairing, pipeline, serialize, write, close). The issue's target: (b) within 10 % of (a).
"""

import argparse
from pathlib import Path
import tempfile
import time

from densepred_ros import bag, bag_cli, encode
from densepred_ros.demo import DEMO_MODELS
from densepred_ros.domain_ids import reserve_domain_id
from densepred_ros.messages import make_qos, OUTPUT_TYPES
from densepred_ros.pipeline import DEPTH_IMAGE
from densepred_ros.synthetic import make_sequence
import numpy as np
import rclpy

MAX_PIXELS = 8192 * 8192


def _publishers(node, namespace: str = '/densepred') -> dict:
    qos = make_qos('reliable', 1)
    return {name: node.create_publisher(OUTPUT_TYPES[name], f'{namespace}/{name}', qos)
            for name in bag_cli.BAG_OUTPUTS}


def _node_path(pipeline, frames, publishers) -> float:
    header = bag._header
    start = time.perf_counter()
    for frame in frames:
        image = encode.rgb_to_image(frame.rgb, header(frame.stamp, 'camera_optical_frame'))
        info = encode.camera_info_for(frame.camera, image.header, frame.rgb.shape[1],
                                      frame.rgb.shape[0])
        scan = encode.points_to_pointcloud2(frame.lidar_points,
                                            header(frame.stamp, 'lidar'))
        out = bag_cli.process_frame(pipeline, image, bag.IMAGE, info, scan, frame.T_cam_lidar,
                                    'no lidar scan', MAX_PIXELS)
        assert DEPTH_IMAGE in out.messages, out.result.alignment_reason
        for name, msg in out.messages.items():
            publishers[name].publish(msg)
    return len(frames) / (time.perf_counter() - start)


def _bag_path(pipeline, config, source: Path, output: Path, args) -> float:
    options = argparse.Namespace(
        image_topic=None, camera_info_topic=None, lidar_topic=None, namespace='/densepred',
        start=0.0, duration=None, every=1, copy=True, no_progress=True, verbose=False)
    processor = bag_cli.BagProcessor(options, pipeline, config, None)
    reader = bag.open_bag(source)
    try:
        processor.prepare(reader)
        start = time.perf_counter()
        with bag_cli.open_output(output, 'mcap', pipeline) as out:
            summary = processor.run(reader, out)
            out.commit()
        elapsed = time.perf_counter() - start
    finally:
        reader.close()
    assert summary.aligned == len(args.frames_list), summary.as_dict()
    outside = (elapsed - summary.pipeline_seconds) / summary.processed
    return summary.processed / elapsed, outside


def main() -> None:
    """Print frames/s of both paths per round and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=6)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--normals', action='store_true', help='also run the normals model')
    args = parser.parse_args()
    from densepred_ros.params import NodeConfig
    values = {'model.path': str(DEMO_MODELS / 'lotus-depth-demo'), 'model.device': 'cpu'}
    if args.normals:
        values['model.normals_path'] = str(DEMO_MODELS / 'lotus-normals-demo')
    config = NodeConfig.from_parameters(values)
    frames = make_sequence(1000, args.frames, width=args.width, height=args.height,
                           start_stamp=bag_cli.DEMO_START_STAMP)
    args.frames_list = frames
    pipeline = bag_cli.build_pipeline(config)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=reserve_domain_id())
    node = rclpy.create_node('bench_bag', context=context)
    publishers = _publishers(node)
    with tempfile.TemporaryDirectory() as folder:
        source = bag.write_sequence_bag(Path(folder) / 'street', frames)
        warm_up = encode.rgb_to_image(frames[0].rgb, bag._header(0.0, 'c'))
        bag_cli.process_frame(pipeline, warm_up, bag.IMAGE, None, None, None, 'warm-up',
                              MAX_PIXELS)
        node_fps, bag_fps = [], []
        for index in range(args.rounds):
            pipeline.aligner.reset()
            node_fps.append(_node_path(pipeline, frames, publishers))
            pipeline.aligner.reset()
            fps, outside = _bag_path(pipeline, config, source, Path(folder) / f'out{index}',
                                     args)
            bag_fps.append(fps)
            print(f'round {index}: node path {node_fps[-1]:.3f} frames/s, bag '
                  f'{bag_fps[-1]:.3f} frames/s (ratio {bag_fps[-1] / node_fps[-1]:.3f}; '
                  f'{outside * 1e3:.1f} ms a frame outside the pipeline call)')
    node.destroy_node()
    rclpy.shutdown(context=context)
    ratio = float(np.sum(bag_fps) / np.sum(node_fps))
    print(f'{args.frames} frames {args.width}×{args.height}, '
          f'{"depth + normals" if args.normals else "depth"} models: bag / node = '
          f'{ratio:.3f} ({"within" if ratio >= 0.9 else "NOT within"} 10 %; per round, '
          f'median {np.median(np.divide(bag_fps, node_fps)):.3f})')


if __name__ == '__main__':
    main()
