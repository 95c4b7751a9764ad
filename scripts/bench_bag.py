"""Frames per second of `densepred bag` against the node's per-frame work, side by side.

Usage: PYTHONPATH=. python scripts/bench_bag.py [--frames 6] [--rounds 2] [--normals]

One process loads the bundled demo model(s) once, writes the generated street sequence as
a bag (`densepred demo --bag`'s writer), then alternates: (a) the node's path, the
pipeline's `process` on each frame's raw Image, camera_info and scan (what the node's
worker runs, without DDS), and (b) the whole bag tool over the bag (read, JPEG decode,
pairing, pipeline, serialize, write). The issue's target: (b) within 10 % of (a).
"""

import argparse
from pathlib import Path
import tempfile
import time

from densepred_ros import bag, bag_cli, encode
from densepred_ros.demo import DEMO_MODELS
from densepred_ros.pipeline import DEPTH_IMAGE
from densepred_ros.synthetic import make_sequence
import numpy as np

MAX_PIXELS = 8192 * 8192


def _node_path(pipeline, frames) -> float:
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
        with bag.OutputBag(output, 'mcap') as out:
            summary = processor.run(reader, out)
            out.commit()
        elapsed = time.perf_counter() - start
    finally:
        reader.close()
    assert summary.aligned == len(args.frames_list), summary.as_dict()
    return summary.processed / elapsed


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
    with tempfile.TemporaryDirectory() as folder:
        source = bag.write_sequence_bag(Path(folder) / 'street', frames)
        warm_up = encode.rgb_to_image(frames[0].rgb, bag._header(0.0, 'c'))
        bag_cli.process_frame(pipeline, warm_up, bag.IMAGE, None, None, None, 'warm-up',
                              MAX_PIXELS)
        node_fps, bag_fps = [], []
        for index in range(args.rounds):
            pipeline.aligner.reset()
            node_fps.append(_node_path(pipeline, frames))
            pipeline.aligner.reset()
            bag_fps.append(_bag_path(pipeline, config, source,
                                     Path(folder) / f'out{index}', args))
            print(f'round {index}: node path {node_fps[-1]:.3f} frames/s, bag '
                  f'{bag_fps[-1]:.3f} frames/s')
    ratio = float(np.sum(bag_fps) / np.sum(node_fps))
    print(f'{args.frames} frames {args.width}×{args.height}, '
          f'{"depth + normals" if args.normals else "depth"} models: bag / node = '
          f'{ratio:.3f} ({"within" if ratio >= 0.9 else "NOT within"} 10 %)')


if __name__ == '__main__':
    main()
