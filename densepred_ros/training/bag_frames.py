"""Training frames from rosbag2 recordings: images with their lidar as sparse metric depth.

`read_bag_frames` walks a bag exactly as `densepred bag` does (`bag_cli.BagProcessor`:
topic discovery, the tf of the bag or ``--extrinsic``, the node's scan pairing and window
options) but, instead of running the model, keeps each selected image (resized to a
working size) with its paired scan projected into it by the node's projection
(`camera.transform_points` then `camera.project_points` with the camera scaled to the
stored size). Frames that cannot be used are counted by reason, never kept silently.

`split_held_out` takes the last share of a recording's time span for validation, with a
gap before it so that neighbouring frames do not leak; `score_frames` scores a predictor
on held-out frames against lidar points it was not aligned with; `frame_set` turns the
frames (optionally with generated scenes mixed in) into the trainer's `FrameSet`.
"""

import argparse
from collections import Counter
from dataclasses import dataclass, field
import math
from pathlib import Path
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from densepred_ros import bag, bag_cli, decode
from densepred_ros.bag import BagError
from densepred_ros.training.dataset import FrameSet
import numpy as np

MIN_POINTS = 50
VAL_FRACTION = 0.2
VAL_GAP = 5.0
SCORE_SEED = 7


@dataclass
class BagFrame:
    """One usable image of a recording.

    Attributes:
        rgb: H×W×3 uint8 at the working size.
        uv: N×2 int pixel coordinates (column, row) of the projected lidar points.
        z: N float32 depths along the optical axis, metres.
        stamp: image stamp, seconds.
        bag: the recording's path, as given (frames are split per recording).
    """

    rgb: np.ndarray
    uv: np.ndarray
    z: np.ndarray
    stamp: float
    bag: str

    def sparse_depth(self) -> np.ndarray:
        """Return H×W float32 metres at the lidar pixels, NaN elsewhere."""
        depth = np.full(self.rgb.shape[:2], np.nan, np.float32)
        depth[self.uv[:, 1], self.uv[:, 0]] = self.z
        return depth


@dataclass
class BagReading:
    """What `read_bag_frames` found in one recording."""

    path: str
    topics: Optional[bag.BagTopics] = None
    frames_read: int = 0
    frames_selected: int = 0
    skipped: Counter = field(default_factory=Counter)
    input_problems: Counter = field(default_factory=Counter)
    input_error: str = ''
    frames: List[BagFrame] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        """Return the reading as JSON-ready values (without the frames)."""
        stamps = [f.stamp for f in self.frames]
        return {'bag': Path(self.path).name, 'image_topic': self.topics.image,
                'lidar_topic': self.topics.lidar, 'camera_info_topic': self.topics.camera_info,
                'frames_read': self.frames_read, 'frames_selected': self.frames_selected,
                'frames_used': len(self.frames), 'skipped': dict(self.skipped),
                'first_stamp': min(stamps) if stamps else None,
                'last_stamp': max(stamps) if stamps else None}


@dataclass(frozen=True)
class BagOptions:
    """The `densepred bag` input options that `train --bag` shares.

    Attributes:
        image_topic, camera_info_topic, lidar_topic: topics (None: discovered).
        extrinsic: lidar pose in the camera optical frame (x y z qx qy qz qw) when the
            bag's tf has no chain, or None.
        params: the node's parameter YAML (alignment.max_time_offset, use_tf), or None.
        start, duration: window, seconds after the bag's start (duration None: to the end).
        every: keep every Nth image.
        min_points: frames with fewer projected lidar points are skipped (counted).
        longest_side: the working size: images are resized so their longest side is this
            many pixels (multiples of 8 on both sides).
    """

    image_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    lidar_topic: Optional[str] = None
    extrinsic: Optional[Tuple[float, ...]] = None
    params: Optional[str] = None
    start: float = 0.0
    duration: Optional[float] = None
    every: int = 1
    min_points: int = MIN_POINTS
    longest_side: int = 128


def working_size(width: int, height: int, longest_side: int) -> Tuple[int, int]:
    """Return (height, width) with the longest side ~longest_side, both multiples of 8."""
    scale = longest_side / max(width, height)
    return (max(8, int(round(height * scale / 8)) * 8),
            max(8, int(round(width * scale / 8)) * 8))


class _NoOutput:
    """The output side of `BagProcessor`, unused here (frames are kept, not written)."""

    counts: Dict[str, int] = {}

    def add_topic(self, *args: Any, **kwargs: Any) -> None:
        """Ignore."""

    def queue(self, *args: Any) -> None:
        """Ignore."""

    def queue_message(self, *args: Any) -> None:
        """Ignore."""

    def release(self, until_ns: Optional[int] = None) -> None:
        """Ignore."""

    def flush(self) -> None:
        """Ignore."""


def _reason(text: str) -> str:
    return re.sub(r'\d+(\.\d+)?', '#', text)


class FrameCollector(bag_cli.BagProcessor):
    """`BagProcessor` whose per-frame work keeps the image and its projected scan."""

    def __init__(self, args: argparse.Namespace, config: Any,
                 extrinsic: Optional[Tuple[float, ...]], options: BagOptions,
                 reading: BagReading) -> None:
        """Keep the settings; nothing is read yet."""
        super().__init__(args, None, config, extrinsic)
        self.options = options
        self.reading = reading

    def _skip(self, reason: str, exact: bool = False) -> None:
        self.reading.skipped[reason if exact else _reason(reason)] += 1

    def _process(self, frame: Any) -> None:
        from densepred_ros.camera import project_points, transform_points
        from densepred_ros.training.dataset import _resize_rgb
        self.summary.frames_selected += 1
        try:
            image = bag.to_ros(frame.raw, self.topics.image_type)
        except BagError:
            return self._skip('image unreadable')
        stamp = bag_cli._stamp(image)
        if self.last_stamp is not None and stamp < self.last_stamp:
            self.scans.clear()   # stamps went back: as the node does
        self.last_stamp = stamp
        scan, T_cam_lidar, reason = self._paired_scan(image)
        if scan is None:
            return self._skip(reason)
        if self.camera_info is None:
            return self._skip('no camera_info yet')
        try:
            if self.topics.image_type == bag.COMPRESSED:
                rgb = decode.compressed_to_rgb(image, self.config.max_image_pixels)
            else:
                rgb = decode.image_to_rgb(image)
            height, width = working_size(rgb.shape[1], rgb.shape[0], self.options.longest_side)
            camera = decode.camera_info_to_model(self.camera_info).scaled_to(width, height)
            points = decode.pointcloud2_to_xyz(scan)
        except decode.DecodeError as exc:
            return self._skip(f'undecodable input: {str(exc).split(":")[0]}')
        except ValueError as exc:
            return self._skip(f'camera_info unusable: {str(exc).split(":")[0]}')
        uv, z = project_points(transform_points(points, T_cam_lidar), camera)
        if len(z) < self.options.min_points:
            return self._skip(f'fewer than {self.options.min_points} lidar points in the image',
                              exact=True)
        self.reading.frames.append(BagFrame(
            _resize_rgb(rgb, height, width), np.asarray(uv, np.int64),
            np.asarray(z, np.float32), stamp, self.reading.path))


def _processor_args(options: BagOptions, init: str) -> argparse.Namespace:
    return argparse.Namespace(
        image_topic=options.image_topic, camera_info_topic=options.camera_info_topic,
        lidar_topic=options.lidar_topic, extrinsic=options.extrinsic, params=options.params,
        model=init, normals_model='', device='', start=options.start,
        duration=options.duration, every=options.every, copy=False, no_progress=True,
        verbose=False, namespace='/densepred')


def read_bag_frames(path: Any, options: BagOptions, init: str = 'unused') -> BagReading:
    """Read the usable frames of one recording (see the module docstring).

    Args:
        path: the rosbag2 (folder, .mcap or .db3).
        options: topics, lidar pose, window and working size.
        init: the checkpoint path recorded in the node config (nothing is loaded).

    Raises:
        BagError: the bag cannot be read, has no camera or lidar topic, the lidar pose is
            unknown (no tf chain and no extrinsic), or bad window options.
    """
    if options.every < 1:
        raise BagError(f'--every must be >= 1, got {options.every}')
    if options.start < 0 or (options.duration is not None and options.duration <= 0):
        raise BagError('--start must be >= 0 and --duration > 0 (seconds)')
    args = _processor_args(options, init)
    config, extrinsic = bag_cli.node_config(args)
    if not config.alignment.enabled:
        raise BagError('training needs the lidar: alignment.enabled is false in --params')
    reading = BagReading(str(path))
    reader = bag.open_bag(path)
    try:
        collector = FrameCollector(args, config, extrinsic, options, reading)
        collector.prepare(reader)
        reading.topics = collector.topics
        summary = collector.run(reader, _NoOutput())
    finally:
        reader.close()
    reading.frames_read = summary.frames_read
    reading.frames_selected = summary.frames_selected
    reading.input_problems = summary.input_problems
    reading.input_error = summary.input_error
    return reading


def split_held_out(frames: Sequence[BagFrame], fraction: float = VAL_FRACTION,
                   gap: float = VAL_GAP) -> Tuple[List[BagFrame], List[BagFrame], int]:
    """Split each recording's frames by time: training, then a gap, then held out.

    Per recording (``BagFrame.bag``) the frames stamped in the last ``fraction`` of its
    time span are held out and those within ``gap`` seconds before that part are dropped.

    Returns:
        (training frames, held-out frames, frames dropped in the gaps).

    Raises:
        ValueError: bad fraction or gap, or a recording too short to leave training
            frames before the gap.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f'the held-out fraction must be in (0, 1), got {fraction}')
    if gap < 0:
        raise ValueError(f'--val-gap must be >= 0 seconds, got {gap}')
    train, held, dropped = [], [], 0
    for name in sorted({f.bag for f in frames}):
        own = sorted((f for f in frames if f.bag == name), key=lambda f: f.stamp)
        first, last = own[0].stamp, own[-1].stamp
        cut = last - fraction * (last - first)
        own_train = [f for f in own if f.stamp < cut - gap]
        own_held = [f for f in own if f.stamp >= cut]
        if not own_train or not own_held:
            raise ValueError(
                f'{name}: its usable frames span {last - first:.1f} s, too short for a '
                f'held-out last {fraction:.0%} with a {gap:g} s gap before it; give '
                '--val-bag or a smaller --val-gap')
        dropped += len(own) - len(own_train) - len(own_held)
        train += own_train
        held += own_held
    return train, held, dropped


def score_frames(predictor: Any, frames: Sequence[BagFrame],
                 far_limit: float = 80.0) -> Dict[str, float]:
    """Score a depth predictor on held-out frames against lidar it was not aligned with.

    Per frame the projected points are split at random (fixed seed) into halves: the
    prediction is aligned to one half (`alignment.align`, the node's robust fit) and
    scored on the other by `metrics.depth_metrics`; a failed alignment counts as
    `metrics.FAILED_FRAME`. Returns the mean over frames (`metrics.mean_over_frames`)
    plus 'failed' and 'n'.
    """
    from densepred_ros.alignment import align
    from densepred_ros.metrics import depth_metrics, FAILED_FRAME, mean_over_frames
    rows = []
    for index, frame in enumerate(frames):
        prediction = predictor.predict(frame.rgb)
        order = np.random.default_rng([SCORE_SEED, index]).permutation(len(frame.z))
        fit, check = order[::2], order[1::2]
        result = align(prediction.values, prediction.space, frame.uv[fit], frame.z[fit])
        if not result.ok:
            rows.append({**FAILED_FRAME, 'failed': 1.0})
            continue
        truth = np.full(frame.rgb.shape[:2], np.nan)
        truth[frame.uv[check, 1], frame.uv[check, 0]] = frame.z[check]
        rows.append({**depth_metrics(result.depth, truth, far_limit), 'failed': 0.0})
    summary = mean_over_frames(rows)
    summary['failed'] = float(sum(r['failed'] for r in rows))
    summary['n'] = float(len(rows))
    return summary


def synthetic_frames(count: int, height: int, width: int, first_seed: int = 0) -> FrameSet:
    """Render ``count`` generated scenes (the default style, seeds from ``first_seed``).

    Dense depth (metres, +inf sky) at height×width, indoor and outdoor alternating as in
    the generated training set (`dataset.synthetic_name`).
    """
    from densepred_ros.synthetic import make_frame
    from densepred_ros.training.dataset import synthetic_name
    rgbs, depths, names = [], [], []
    for seed in range(first_seed, first_seed + count):
        kind, name = synthetic_name(seed)
        frame = make_frame(seed, kind=kind, width=width, height=height, beams=0)
        rgbs.append(frame.rgb)
        depths.append(frame.depth)
        names.append(name)
    return FrameSet(np.stack(rgbs), np.stack(depths).astype(np.float32), None, names)


def frame_set(frames: Sequence[BagFrame], mix_synthetic: float = 0.0) -> FrameSet:
    """Return the trainer's FrameSet: the frames' sparse lidar depth, plus generated scenes.

    Args:
        frames: training frames, all of one working size.
        mix_synthetic: share of generated scenes in the result, in [0, 1): round(f / (1 - f)
            · len(frames)) scenes of the default style are added, supervised by their
            exact depth (rehearsal against forgetting).

    Raises:
        ValueError: no frames, frames of different sizes, or a bad share.
    """
    if not frames:
        raise ValueError('no training frames')
    if not 0.0 <= mix_synthetic < 1.0:
        raise ValueError(f'--mix-synthetic must be in [0, 1), got {mix_synthetic}')
    sizes = {f.rgb.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f'the recordings give images of different sizes {sorted(sizes)}; '
                         'train on recordings of one camera')
    rgb = np.stack([f.rgb for f in frames])
    depth = np.stack([f.sparse_depth() for f in frames])
    names = [f'{f.bag}@{f.stamp:.3f}' for f in frames]
    sparse = [True] * len(frames)
    extra = int(round(mix_synthetic / (1.0 - mix_synthetic) * len(frames)))
    if extra:
        height, width = rgb.shape[1:3]
        generated = synthetic_frames(extra, height, width)
        rgb = np.concatenate([rgb, generated.rgb])
        depth = np.concatenate([depth, generated.depth])
        names += generated.names
        sparse += [False] * extra
    return FrameSet(rgb, depth, None, names, np.array(sparse))


def time_range(frames: Sequence[BagFrame]) -> Dict[str, Optional[float]]:
    """Return {'first_stamp', 'last_stamp', 'seconds'} of frames (None when empty)."""
    if not frames:
        return {'first_stamp': None, 'last_stamp': None, 'seconds': None}
    stamps = [f.stamp for f in frames]
    return {'first_stamp': min(stamps), 'last_stamp': max(stamps),
            'seconds': max(stamps) - min(stamps)}


def mean_points(frames: Sequence[BagFrame]) -> float:
    """Return the mean number of projected lidar points per frame (NaN when empty)."""
    return float(np.mean([len(f.z) for f in frames])) if frames else math.nan
