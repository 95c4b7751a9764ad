"""`densepred bag INPUT OUTPUT --model CKPT`: the depth node's work over a rosbag2.

Reads the camera (raw or compressed), its camera_info and the lidar from the input bag,
runs the node's per-frame pipeline on each selected image with the node's scan pairing
(the scan nearest in stamp within ``alignment.max_time_offset``, `pairing.ScanPairing`)
and temporal alignment filter, and writes the node's output topics under a namespace,
stamped like the input image and logged at its log time, plus (by default) a copy of
every input message. Images wait until the bag's log time is ``max_time_offset`` past
them, so a scan recorded just after its image still pairs with it.
"""

import argparse
from collections import Counter, deque
from dataclasses import dataclass, field
import json
from pathlib import Path
import re
import sys
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from densepred_ros import bag, decode
from densepred_ros.bag import BagError
import numpy as np

# The node's outputs the bag tool writes (node.py's relative topic names).
BAG_OUTPUTS = ('depth/image', 'depth/camera_info', 'depth/relative', 'normals/image', 'points')


@dataclass
class BagSummary:
    """What a `densepred bag` run did.

    Attributes:
        frames_read: images in the selected time window.
        frames_selected: of those, the ones processed or attempted (every Nth).
        processed: frames that produced outputs.
        aligned: frames with metric depth.
        declined: not aligned, by reason.
        failed: frames without output, by reason.
        input_problems: camera_info or scans that could not be used, by reason.
        output_counts: messages written per output topic.
        seconds: wall time of the processing loop.
        pipeline_seconds: of that, time inside the per-frame pipeline (decode to encode);
            the rest is the bag tool's own reading, pairing, serializing and writing.
        input_error: why reading the input stopped early ('' when it did not).
    """

    frames_read: int = 0
    frames_selected: int = 0
    processed: int = 0
    aligned: int = 0
    declined: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    input_problems: Counter = field(default_factory=Counter)
    output_counts: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    pipeline_seconds: float = 0.0
    input_error: str = ''

    @property
    def frames_per_second(self) -> float:
        """Processed (or attempted) frames per second of wall time."""
        return self.frames_selected / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> Dict[str, Any]:
        """Return the summary as JSON-ready values."""
        return {'frames_read': self.frames_read, 'frames_selected': self.frames_selected,
                'processed': self.processed, 'aligned': self.aligned,
                'declined': dict(self.declined), 'failed': dict(self.failed),
                'input_problems': dict(self.input_problems),
                'output_counts': self.output_counts, 'seconds': self.seconds,
                'pipeline_seconds': self.pipeline_seconds,
                'frames_per_second': self.frames_per_second, 'input_error': self.input_error}


# Configuration ----------------------------------------------------------------------------

def _flatten(values: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in values.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def read_params_file(path: Path) -> Dict[str, Any]:
    """Read the node's parameter YAML (``/**:`` or node-name key, ``ros__parameters``).

    Returns:
        Dotted parameter name → value.

    Raises:
        BagError: unreadable file or no ros__parameters section.
    """
    from ruamel.yaml import YAML
    try:
        data = YAML(typ='safe').load(Path(path).read_text())
    except Exception as exc:
        raise BagError(f'cannot read --params {path}: {exc}') from exc
    sections = [v['ros__parameters'] for v in (data or {}).values()
                if isinstance(v, dict) and isinstance(v.get('ros__parameters'), dict)]
    if not sections:
        raise BagError(f'--params {path} has no "<node>: ros__parameters:" section')
    values: Dict[str, Any] = {}
    for section in sections:
        values.update(_flatten(section))
    return values


def node_config(args: argparse.Namespace) -> Tuple[Any, Optional[Tuple[float, ...]]]:
    """Return (NodeConfig, explicit extrinsic or None) from --params and the options."""
    from densepred_ros.params import ConfigError, NodeConfig
    values = read_params_file(Path(args.params)) if args.params else {}
    explicit = values.get('alignment.extrinsic')
    values['model.path'] = args.model
    if args.normals_model:
        values['model.normals_path'] = args.normals_model
    if args.device:
        values['model.device'] = args.device
    if args.extrinsic is not None:
        values['alignment.extrinsic'] = explicit = list(args.extrinsic)
    try:
        config = NodeConfig.from_parameters(values)
    except ConfigError as exc:
        raise BagError(f'invalid parameters: {exc}') from exc
    return config, (config.alignment.extrinsic if explicit is not None else None)


# The per-frame work: the node's pipeline and message helpers ---------------------------

@dataclass
class FrameOutput:
    """One frame through the pipeline: its result and the output messages.

    Attributes:
        result: what `pipeline.DepthPipeline` computed.
        messages: output name (`BAG_OUTPUTS`) → rclpy message, stamped like the image.
        input_errors: why the camera_info or the scan could not be used.
    """

    result: Any
    messages: Dict[str, Any]
    input_errors: List[str]

    @property
    def aligned(self) -> bool:
        """True when the frame has metric depth."""
        return self.result.aligned

    @property
    def alignment_reason(self) -> str:
        """Why the frame has no metric depth ('' when aligned)."""
        return self.result.alignment_reason


def build_pipeline(config: Any) -> Any:
    """Load the models of a NodeConfig into a `pipeline.DepthPipeline`, as the node does."""
    from densepred_ros.pipeline import load_pipeline
    return load_pipeline(config)


def process_frame(pipeline: Any, image: Any, image_type: str, camera_info: Any, scan: Any,
                  T_cam_lidar: Optional[np.ndarray], reason: str,
                  max_pixels: int) -> FrameOutput:
    """Run the node's pipeline on one frame of rclpy messages.

    Args:
        pipeline: a `pipeline.DepthPipeline`.
        image: sensor_msgs Image or CompressedImage (per image_type).
        camera_info, scan: the frame's CameraInfo and paired PointCloud2, or None.
        T_cam_lidar: 4×4 lidar → camera optical frame, or None.
        reason: the alignment status without a scan.
        max_pixels: pixel limit of a compressed image's header.

    Raises:
        decode.DecodeError: the image cannot be decoded.
    """
    from densepred_ros.messages import decode_camera_and_scan, encode_outputs
    started = time.perf_counter()
    if image_type == bag.COMPRESSED:
        rgb = decode.compressed_to_rgb(image, max_pixels)
    else:
        rgb = decode.image_to_rgb(image)
    decode_seconds = time.perf_counter() - started
    inference = pipeline.infer(rgb, set(BAG_OUTPUTS))
    inputs = decode_camera_and_scan(camera_info, scan, pipeline.aligner is not None, reason)
    inference.timings['decode'] = decode_seconds + inputs.seconds
    result = pipeline.finish(inference, inputs.camera, inputs.lidar_points, T_cam_lidar,
                             inputs.no_points_reason)
    messages = encode_outputs(result, image.header)
    return FrameOutput(result, messages, inputs.errors + result.input_errors)


# The run --------------------------------------------------------------------------------

def _stamp(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _out_topic(namespace: str, name: str) -> str:
    return f'{namespace.rstrip("/")}/{name}' if namespace.strip('/') else f'/{name}'


@dataclass
class _Pending:
    log_ns: int
    raw: bytes


class BagProcessor:
    """One `densepred bag` run: input reader, pipeline, pairing state and output bag."""

    def __init__(self, args: argparse.Namespace, pipeline: Any, config: Any,
                 extrinsic: Optional[Tuple[float, ...]]) -> None:
        """Keep the settings; nothing is read yet."""
        from densepred_ros.camera import extrinsic_from_xyz_quat
        from densepred_ros.node import SCAN_BUFFER
        from densepred_ros.pairing import ScanPairing
        self.args = args
        self.pipeline = pipeline
        self.config = config
        self.extrinsic = extrinsic
        self.summary = BagSummary()
        fixed = extrinsic if extrinsic is not None else config.alignment.extrinsic
        self.pairing = ScanPairing(
            SCAN_BUFFER, config.alignment.max_time_offset, extrinsic_from_xyz_quat(*fixed),
            self._lidar_pose if config.alignment.use_tf else None)
        self.camera_info = None
        self.pending: Deque[_Pending] = deque()
        self.last_stamp: Optional[float] = None
        self.tf = bag.TfTree()
        self.topics: Optional[bag.BagTopics] = None
        self.output: Optional[bag.OutputBag] = None
        self.progress = None

    # Set-up -------------------------------------------------------------------------------

    def prepare(self, reader: Any) -> None:
        """Discover the topics, read the tf and check that the lidar pose is known."""
        types = bag.topic_types(reader)
        alignment = self.config.alignment.enabled
        self.topics = bag.discover_topics(
            types, self.args.image_topic, self.args.camera_info_topic, self.args.lidar_topic,
            need_lidar=alignment)
        if not alignment or self.topics.lidar is None:
            return
        if self.config.alignment.use_tf:
            self.tf = bag.read_tf(reader)
        first = bag.first_messages(reader, [self.topics.image, self.topics.lidar])
        if self.topics.image not in first:
            raise BagError(f'the image topic {self.topics.image} has no messages')
        if self.topics.lidar not in first:
            raise BagError(f'the lidar topic {self.topics.lidar} has no messages')
        image_frame = first[self.topics.image][1].header.frame_id
        scan = first[self.topics.lidar][1]
        try:
            self.tf.lookup(image_frame, scan.header.frame_id, _stamp(scan))
        except LookupError as exc:
            if self.extrinsic is None:
                raise BagError(
                    f'the lidar pose is unknown: {exc}; record /tf_static with the chain '
                    f'{scan.header.frame_id} -> {image_frame}, or give --extrinsic x y z qx '
                    f'qy qz qw (lidar in the camera optical frame)') from exc

    def _lidar_pose(self, scan: Any, image_frame: str) -> np.ndarray:
        """Return T_cam_lidar from the bag's tf, else the explicit extrinsic (`ScanPairing`).

        Raises:
            LookupError: no transform and no explicit extrinsic.
        """
        try:
            return self.tf.lookup(image_frame, scan.header.frame_id, _stamp(scan))
        except LookupError as exc:
            if self.extrinsic is None:
                raise LookupError(f'no transform: {exc}') from exc
        return self.pairing.extrinsic

    # Per message ----------------------------------------------------------------------------

    def _on_image(self, log_ns: int, raw: bytes) -> None:
        self.summary.frames_read += 1
        every = self.args.every
        if (self.summary.frames_read - 1) % every == 0:
            self.pending.append(_Pending(log_ns, raw))

    def _on_scan(self, raw: bytes) -> None:
        try:
            scan = bag.to_ros(raw, bag.POINTCLOUD2)
        except BagError as exc:
            self.summary.input_problems[f'lidar scan unreadable: {exc}'] += 1
            return
        self.pairing.add(_stamp(scan), scan)

    def _on_camera_info(self, raw: bytes) -> None:
        try:
            self.camera_info = bag.to_ros(raw, bag.CAMERA_INFO)
        except BagError as exc:
            self.summary.input_problems[f'camera_info unreadable: {exc}'] += 1

    def _run_pending(self, now_ns: Optional[int]) -> None:
        """Process the waiting images whose pairing window has passed (all when now is None)."""
        window = int(self.config.alignment.max_time_offset * 1e9)
        while self.pending and (now_ns is None or self.pending[0].log_ns + window < now_ns):
            frame = self.pending.popleft()
            self.output.release(frame.log_ns)
            self._process(frame)
            if self.progress is not None:
                self.progress.update(1)
        if not self.pending:
            self.output.release(now_ns)

    def _paired_scan(self, image: Any) -> Tuple[Any, Optional[np.ndarray], str]:
        """Return (scan, T_cam_lidar, reason) as the node pairs them (`pairing.ScanPairing`)."""
        if not self.config.alignment.enabled:
            return None, None, 'alignment disabled'
        return self.pairing.paired(_stamp(image), image.header.frame_id)

    def _process(self, frame: _Pending) -> None:
        summary = self.summary
        summary.frames_selected += 1
        try:
            image = bag.to_ros(frame.raw, self.topics.image_type)
        except BagError as exc:
            summary.failed['image unreadable'] += 1
            self._warn(str(exc))
            return
        stamp = _stamp(image)
        if self.last_stamp is not None and stamp < self.last_stamp:
            if self.pipeline.aligner is not None:
                self.pipeline.aligner.reset()   # stamps went back: as the node does
            self.pairing.image_jumped_back(stamp)
        self.last_stamp = stamp
        scan, T_cam_lidar, reason = self._paired_scan(image)
        started = time.perf_counter()
        try:
            out = process_frame(self.pipeline, image, self.topics.image_type, self.camera_info,
                                scan, T_cam_lidar, reason, self.config.max_image_pixels)
        except decode.DecodeError as exc:
            summary.failed['image cannot be decoded'] += 1
            self._warn(f'skipping a frame: {exc}')
            return
        except Exception as exc:  # one bad frame must not end the run
            summary.failed[f'{type(exc).__name__}'] += 1
            self._warn(f'frame failed: {type(exc).__name__}: {exc}')
            return
        finally:
            summary.pipeline_seconds += time.perf_counter() - started
        for problem in out.input_errors:
            summary.input_problems[problem.split(':')[0]] += 1
        summary.processed += 1
        if out.aligned:
            summary.aligned += 1
        else:
            # Counted by kind: 'inlier ratio # < min_inlier_ratio=#'.
            summary.declined[re.sub(r'\d+(\.\d+)?', '#', out.alignment_reason or 'unknown')] += 1
        for name, msg in out.messages.items():
            self.output.queue_message(_out_topic(self.args.namespace, name), frame.log_ns, msg)

    def _warn(self, text: str) -> None:
        if self.args.verbose or sum(self.summary.failed.values()) <= 3:
            print(f'warning: {text}', file=sys.stderr)

    # Main loop ----------------------------------------------------------------------------

    def run(self, reader: Any, output: 'bag.OutputBag') -> BagSummary:
        """Read the selected window of the bag, process it and fill the output bag."""
        from densepred_ros.messages import OUTPUT_TYPES
        self.output = output
        start_ns = reader.start_time + int(self.args.start * 1e9)
        stop_ns = (start_ns + int(self.args.duration * 1e9)) if self.args.duration else None
        topics = self.topics
        inputs = {topics.image, topics.camera_info}
        if topics.lidar is not None and self.config.alignment.enabled:
            inputs.add(topics.lidar)
        for name in BAG_OUTPUTS:
            msgtype = f'sensor_msgs/msg/{OUTPUT_TYPES[name].__name__}'
            output.add_topic(_out_topic(self.args.namespace, name), msgtype)
        copied = set()
        if self.args.copy:
            for conn in reader.connections:
                if conn.topic not in copied:
                    output.add_topic(conn.topic, conn.msgtype, like=conn)
                    copied.add(conn.topic)
            self._copy_tf_static(reader, start_ns)
        wanted = [c for c in reader.connections if c.topic in inputs or c.topic in copied]
        total = self._count_images(reader, start_ns, stop_ns)
        self.progress = self._progress_bar(total)
        started = time.perf_counter()
        try:
            for conn, log_ns, raw in reader.messages(connections=wanted, start=start_ns,
                                                     stop=stop_ns):
                self._run_pending(log_ns)
                if conn.topic in copied and conn.topic != '/tf_static':
                    output.queue(conn.topic, log_ns, raw)
                if conn.topic == topics.image:
                    self._on_image(log_ns, raw)
                elif conn.topic == topics.camera_info:
                    self._on_camera_info(raw)
                elif conn.topic == topics.lidar:
                    self._on_scan(raw)
        except bag.OutputError:
            raise
        except Exception as exc:  # truncated or corrupt input: keep what was read
            self.summary.input_error = f'{type(exc).__name__}: {exc}'
        self._run_pending(None)
        output.flush()
        self.summary.seconds = time.perf_counter() - started
        if self.progress is not None:
            self.progress.close()
        return self.summary

    def _copy_tf_static(self, reader: Any, start_ns: int) -> None:
        """Copy every /tf_static message, logged no later than the window's start."""
        connections = [c for c in reader.connections if c.topic == '/tf_static']
        if connections:
            for _, log_ns, raw in reader.messages(connections=connections):
                self.output.queue('/tf_static', min(log_ns, start_ns), raw)

    def _count_images(self, reader: Any, start_ns: int, stop_ns: Optional[int]) -> int:
        connections = [c for c in reader.connections if c.topic == self.topics.image]
        if self.args.start == 0 and not self.args.duration:
            total = sum(c.msgcount for c in connections)
        else:
            try:
                total = sum(1 for _ in reader.messages(connections=connections, start=start_ns,
                                                       stop=stop_ns))
            except Exception:  # noqa: B902 (the main loop reports a corrupt input)
                total = 0
        return (total + self.args.every - 1) // self.args.every

    def _progress_bar(self, total: int) -> Any:
        if self.args.no_progress:
            return None
        from tqdm import tqdm
        return tqdm(total=total, unit='frame', file=sys.stderr, dynamic_ncols=True,
                    desc='densepred bag')


def print_summary(summary: BagSummary, output: Path, file: Any = None) -> None:
    """Print the run's summary in a few lines (to stdout by default)."""
    file = sys.stdout if file is None else file

    def counts(counter: Counter) -> str:
        return ', '.join(f'{reason}: {n}' for reason, n in counter.most_common()) or 'none'

    print(f'frames read {summary.frames_read}, processed {summary.processed} of '
          f'{summary.frames_selected} selected, aligned {summary.aligned}, declined '
          f'{sum(summary.declined.values())}, failed {sum(summary.failed.values())} '
          f'({summary.frames_per_second:.2f} frames/s, {summary.pipeline_seconds:.1f} of '
          f'{summary.seconds:.1f} s in the pipeline)', file=file)
    if summary.declined:
        print(f'  declined: {counts(summary.declined)}', file=file)
    if summary.failed:
        print(f'  failed: {counts(summary.failed)}', file=file)
    if summary.input_problems:
        print(f'  input problems: {counts(summary.input_problems)}', file=file)
    if summary.input_error:
        print(f'  the input ended early (corrupt or truncated): {summary.input_error}',
              file=file)
    print(f'wrote {output}', file=file)


def open_output(path: Path, storage: str, pipeline: Any) -> 'bag.OutputBag':
    """Open the output bag as `densepred bag` writes it.

    With the model on CUDA the serializing and writing of one frame's outputs run in a
    writer thread, overlapping the model's work on the next (as the node overlaps its two
    stages on CUDA only): on the CPU torch's threads already use every core, and a writer
    thread beside them made the tool slower (docs/recordings.md).
    """
    return bag.OutputBag(path, storage, background=pipeline.device_label().startswith('cuda'))


def process_bag(args: argparse.Namespace) -> BagSummary:
    """Run `densepred bag` with parsed arguments; return the summary.

    Raises:
        BagError: bad input, options or parameters (a one-line message).
    """
    if args.every < 1:
        raise BagError(f'--every must be >= 1, got {args.every}')
    if args.start < 0 or (args.duration is not None and args.duration <= 0):
        raise BagError('--start must be >= 0 and --duration > 0 (seconds)')
    config, extrinsic = node_config(args)
    reader = bag.open_bag(args.input)
    try:
        processor = BagProcessor(args, None, config, extrinsic)
        processor.prepare(reader)
        output_path = Path(args.output)
        if output_path.exists():
            raise BagError(f'output {output_path} exists already; choose a new name')
        processor.pipeline = build_pipeline(config)
        try:
            with open_output(output_path, args.storage, processor.pipeline) as output:
                summary = processor.run(reader, output)
                output.commit()
                summary.output_counts = dict(output.counts)
        finally:
            processor.pipeline.predictor.close()
            if processor.pipeline.normals_predictor is not None:
                processor.pipeline.normals_predictor.close()
    finally:
        reader.close()
    return summary


def add_input_arguments(parser: Any) -> None:
    """Add the options that choose the frames of a bag (`densepred bag`, `train --bag`)."""
    parser.add_argument('--image-topic', default=None,
                        help="Image or CompressedImage topic (default: the bag's only one)")
    parser.add_argument('--camera-info-topic', default=None,
                        help='CameraInfo topic (default: the one beside the image topic)')
    parser.add_argument('--lidar-topic', default=None,
                        help="PointCloud2 topic (default: the bag's only one)")
    parser.add_argument('--extrinsic', type=float, nargs=7, default=None,
                        metavar=('X', 'Y', 'Z', 'QX', 'QY', 'QZ', 'QW'),
                        help='lidar pose in the camera optical frame, when the bag has no tf '
                             'chain between them')
    parser.add_argument('--params', default=None,
                        help="the node's parameter YAML, so that bag and node run alike")
    parser.add_argument('--start', type=float, default=0.0,
                        help='seconds after the bag start to begin at')
    parser.add_argument('--duration', type=float, default=None, help='seconds to use')
    parser.add_argument('--every', type=int, default=1, help='use every Nth image')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `densepred bag`."""
    parser.add_argument('input', help='input rosbag2 (folder, .mcap or .db3)')
    parser.add_argument('output', help='output rosbag2 folder (must not exist)')
    parser.add_argument('--model', required=True, help='depth checkpoint (diffusers folder)')
    parser.add_argument('--normals-model', default='', help='optional normals checkpoint')
    add_input_arguments(parser)
    parser.add_argument('--namespace', default='/densepred',
                        help='namespace of the output topics (default /densepred)')
    parser.add_argument('--storage', default='mcap', choices=bag.STORAGES)
    parser.add_argument('--no-copy', dest='copy', action='store_false',
                        help='write only the outputs, not a copy of the input messages')
    parser.add_argument('--device', default='', help="model device (default: the params')")
    parser.add_argument('--json', default=None, help='also write the summary to this file')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--verbose', action='store_true', help='print every skipped frame')


def run(args: argparse.Namespace) -> int:
    """Run `densepred bag`; exit code 1 when no frame could be processed."""
    summary = process_bag(args)
    print_summary(summary, Path(args.output))
    if args.json:
        Path(args.json).write_text(json.dumps(summary.as_dict(), indent=2) + '\n')
    return 0 if summary.processed > 0 else 1


def register(subparsers: Any) -> None:
    """Add `bag` and `evaluate-bag` to the `densepred` subcommands."""
    from densepred_ros import bag_eval
    parser = subparsers.add_parser(
        'bag', help='run the depth pipeline over a rosbag2 and write a new rosbag2')
    add_arguments(parser)
    parser.set_defaults(func=run)
    evaluate = subparsers.add_parser(
        'evaluate-bag', help='score a depth topic against a ground-truth topic of a bag')
    bag_eval.add_arguments(evaluate)
    evaluate.set_defaults(func=bag_eval.run)


DEMO_START_STAMP = 1_700_000_000.0


def run_demo_bag(args: argparse.Namespace) -> int:
    """`densepred demo --bag PATH`: write the generated street sequence as a rosbag2."""
    from densepred_ros.synthetic import make_sequence
    frames = make_sequence(args.seed, args.frames, kind=args.kind, width=args.width,
                           height=args.height, beams=args.beams, rate_hz=10.0,
                           start_stamp=DEMO_START_STAMP)
    topics = bag.DemoTopics()
    path = bag.write_sequence_bag(args.bag, frames, storage=args.storage, topics=topics)
    print(f'wrote {path}: {len(frames)} frames {args.width}×{args.height} ({args.kind}, seed '
          f'{args.seed}), {args.beams}-beam lidar, truth depth on {topics.truth}')
    print('next:\n'
          f'  densepred bag {path} {path}_depth --model <checkpoint>\n'
          f'  densepred evaluate-bag {path}_depth --depth-topic /densepred/depth/image '
          f'--truth-topic {topics.truth}')
    return 0
