"""`densepred evaluate-bag BAG --depth-topic T --truth-topic T`: score depth in a rosbag2.

The depth topic is a metric depth Image (REP 118: 32FC1 metres or 16UC1 mm). The truth is
a depth Image of the same size, or a PointCloud2 projected into the depth image with the
bag's tf and the CameraInfo beside the depth topic (a second lidar, held-back beams).
Frames are paired by header stamp (exactly, or within ``--max-time-offset``). Per frame and
overall (mean over frames, as `densepred demo` reports): AbsRel, δ1, RMSE and coverage
(the share of truth pixels with a finite positive prediction).
"""

import argparse
import json
import math
from pathlib import Path
import sys
from typing import Any, Dict, List, Optional

from densepred_ros import bag, decode
from densepred_ros.bag import BagError
import numpy as np

METRICS = ('abs_rel', 'delta1', 'rmse', 'coverage')


def node_far_limit() -> float:
    """Return the node's `alignment.far_limit` default, metres."""
    from densepred_ros.params import PARAMETERS
    return next(float(p.default) for p in PARAMETERS if p.name == 'alignment.far_limit')


def frame_metrics(depth: np.ndarray, truth: np.ndarray,
                  far_limit: Optional[float] = None) -> Dict[str, float]:
    """Return AbsRel, δ1, RMSE (m) and coverage of H×W depth against H×W truth.

    The package's one definition (`metrics.depth_metrics`, what `make demo` reports):
    truth beyond far_limit (default: the node's `alignment.far_limit`) is not evaluated.
    """
    from densepred_ros.metrics import depth_metrics
    return depth_metrics(depth, truth, node_far_limit() if far_limit is None else far_limit)


def _key(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _truth_from_cloud(cloud: Any, info: Any, frame_id: str, tf: bag.TfTree,
                      shape: tuple) -> np.ndarray:
    """Project a truth cloud into the depth image: H×W metres, NaN where no point falls."""
    from densepred_ros.camera import project_points, transform_points
    if info is None:
        raise BagError('no CameraInfo beside the depth topic to project the truth cloud')
    camera = decode.camera_info_to_model(info).scaled_to(shape[1], shape[0])
    stamp = cloud.header.stamp.sec + cloud.header.stamp.nanosec * 1e-9
    try:
        T = tf.lookup(frame_id, cloud.header.frame_id, stamp)
    except LookupError as exc:
        raise BagError(f'cannot place the truth cloud in {frame_id!r}: {exc}') from exc
    points = transform_points(decode.pointcloud2_to_xyz(cloud), T)
    uv, z = project_points(points, camera)
    truth = np.full(shape, np.nan, np.float32)
    truth[uv[:, 1], uv[:, 0]] = z
    return truth


def evaluate_bag(path: Any, depth_topic: str, truth_topic: str,
                 max_time_offset: float = 0.0) -> Dict[str, Any]:
    """Score every depth frame of a bag that has a truth frame; return per-frame and overall.

    Raises:
        BagError: missing topics, wrong types, or no frame could be scored.
    """
    reader = bag.open_bag(path)
    try:
        types = bag.topic_types(reader)
        bag.check_topic_type(types, depth_topic, (bag.IMAGE,), '--depth-topic')
        bag.check_topic_type(types, truth_topic, (bag.IMAGE, bag.POINTCLOUD2), '--truth-topic')
        info_topic = bag.camera_info_topic_for(depth_topic)
        cloud_truth = types[truth_topic] == bag.POINTCLOUD2
        tf = bag.read_tf(reader) if cloud_truth else bag.TfTree()
        depths: Dict[int, Any] = {}
        truths: Dict[int, Any] = {}
        infos: Dict[int, Any] = {}
        topics = {depth_topic, truth_topic, info_topic}
        connections = [c for c in reader.connections if c.topic in topics]
        for conn, _, raw in reader.messages(connections=connections):
            msg = bag.to_ros(raw, conn.msgtype)
            target = {depth_topic: depths, truth_topic: truths, info_topic: infos}[conn.topic]
            target[_key(msg)] = msg
    finally:
        reader.close()
    frames: List[Dict[str, Any]] = []
    skipped: Dict[str, int] = {}
    truth_keys = np.array(sorted(truths), dtype=np.int64)
    for key in sorted(depths):
        msg = depths[key]
        truth_msg = _nearest(truths, truth_keys, key, max_time_offset)
        if truth_msg is None:
            skipped['no truth frame'] = skipped.get('no truth frame', 0) + 1
            continue
        try:
            depth = decode.image_to_depth(msg)
            if cloud_truth:
                truth = _truth_from_cloud(truth_msg, infos.get(key), msg.header.frame_id, tf,
                                          depth.shape)
            else:
                truth = decode.image_to_depth(truth_msg)
            if truth.shape != depth.shape:
                raise BagError(f'truth is {truth.shape[1]}×{truth.shape[0]}, depth '
                               f'{depth.shape[1]}×{depth.shape[0]}')
        except (decode.DecodeError, BagError) as exc:
            reason = str(exc).split(':')[0]
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        frames.append({'stamp': key * 1e-9, **frame_metrics(depth, truth)})
    if not frames:
        raise BagError(f'no frame of {depth_topic} could be scored against {truth_topic} '
                       f'({len(depths)} depth and {len(truths)} truth messages; skipped: '
                       f'{skipped or "none"})')
    from densepred_ros.metrics import mean_over_frames
    means = mean_over_frames({k: f[k] for k in METRICS} for f in frames)
    overall = {name: means.get(name, math.nan) for name in METRICS}
    return {'depth_topic': depth_topic, 'truth_topic': truth_topic, 'frames': frames,
            'overall': overall, 'scored': len(frames), 'depth_frames': len(depths),
            'skipped': skipped}


def _nearest(truths: Dict[int, Any], keys: np.ndarray, key: int,
             max_time_offset: float) -> Optional[Any]:
    if key in truths:
        return truths[key]
    if not len(keys) or max_time_offset <= 0:
        return None
    index = int(np.argmin(np.abs(keys - key)))
    return truths[int(keys[index])] if abs(int(keys[index]) - key) <= max_time_offset * 1e9 \
        else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `densepred evaluate-bag`."""
    parser.add_argument('bag', help='rosbag2 with the depth and truth topics')
    parser.add_argument('--depth-topic', required=True,
                        help='metric depth Image, e.g. /densepred/depth/image')
    parser.add_argument('--truth-topic', required=True,
                        help='ground truth: depth Image or PointCloud2')
    parser.add_argument('--max-time-offset', type=float, default=0.0,
                        help='pair frames whose stamps differ by up to this many seconds '
                             '(default 0: equal stamps)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of text')


def run(args: argparse.Namespace) -> int:
    """Run `densepred evaluate-bag`; print per-frame and overall metrics."""
    result = evaluate_bag(Path(args.bag), args.depth_topic, args.truth_topic,
                          args.max_time_offset)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    for frame in result['frames']:
        print(f"{frame['stamp']:.3f}  AbsRel {frame['abs_rel']:.3f}  δ1 {frame['delta1']:.3f}"
              f"  RMSE {frame['rmse']:.2f} m  coverage {frame['coverage']:.2f}")
    o = result['overall']
    print(f"overall ({result['scored']} of {result['depth_frames']} frames): AbsRel "
          f"{o['abs_rel']:.3f}  δ1 {o['delta1']:.3f}  RMSE {o['rmse']:.2f} m  coverage "
          f"{o['coverage']:.2f}")
    if result['skipped']:
        print(f"skipped: {result['skipped']}")
    return 0
