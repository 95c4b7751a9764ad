"""`densepred demo`: the real node, over real rclpy, on a generated camera + lidar sequence.

A player node publishes each generated frame (image, camera_info, lidar scan) to a
`DepthNode` in the same process, waits for its outputs, and this module writes per frame
a picture (input | metric depth | normals | point cloud seen from above and behind) and
the metrics against the scene's ground truth, then the measured rate and latency.
With `--images DIR` it plays real images instead (no lidar, no ground truth: relative
depth and normals only).
"""

import argparse
import json
from pathlib import Path
import time
from typing import Dict, List, Optional

from densepred_ros import decode, geometry
from densepred_ros.cli_errors import make_folder, user_errors, UserError
from densepred_ros.domain_ids import reserve_domain_id
from densepred_ros.feeder import Feeder, stamp_key, wait_for
from densepred_ros.metrics import depth_metrics, FAILED_FRAME, mean_over_frames
from densepred_ros.metrics import normal_metrics
from densepred_ros.pipeline import (
    DEPTH_IMAGE, depth_order, DEPTH_RELATIVE, NORMALS_IMAGE, POINTS)
import numpy as np

OUTPUT_TOPICS = (DEPTH_IMAGE, DEPTH_RELATIVE, NORMALS_IMAGE, POINTS)
DEMO_MODELS = Path(__file__).resolve().parent / 'demo_models'


def render_points(points: np.ndarray, colors: Optional[np.ndarray], width: int,
                  height: int) -> np.ndarray:
    """Render an organized cloud (optical frame, metres) from above and behind the camera.

    Args:
        points: h×w×3 float32, NaN for invalid points.
        colors: h×w×3 uint8 colours of the points, or None (coloured by depth).
        width, height: size of the picture.

    Returns:
        height×width×3 uint8 picture (black background).
    """
    xyz = points.reshape(-1, 3)
    valid = np.isfinite(xyz).all(axis=1)
    xyz = xyz[valid].astype(np.float64)
    if colors is None:
        rgb = geometry.colorize_depth(points[..., 2]).reshape(-1, 3)[valid]
    else:
        rgb = colors.reshape(-1, 3)[valid]
    picture = np.zeros((height, width, 3), np.uint8)
    if len(xyz) == 0:
        return picture
    extent = float(np.percentile(xyz[:, 2], 95))
    pitch = np.radians(35.0)                        # look down on the scene
    rotation = np.array([[1.0, 0.0, 0.0],
                         [0.0, np.cos(pitch), -np.sin(pitch)],
                         [0.0, np.sin(pitch), np.cos(pitch)]])
    eye = np.array([0.0, -0.45 * extent, -0.35 * extent])
    view = (xyz - eye) @ rotation.T
    front = view[:, 2] > 0.1
    view, rgb = view[front], rgb[front]
    focal = 0.8 * width
    u = np.round(focal * view[:, 0] / view[:, 2] + width / 2).astype(np.int64)
    v = np.round(focal * view[:, 1] / view[:, 2] + height / 2).astype(np.int64)
    inside = (u >= 0) & (u < width - 1) & (v >= 0) & (v < height - 1)
    u, v, z, rgb = u[inside], v[inside], view[inside, 2], rgb[inside]
    order = np.argsort(-z)                          # far first, near points drawn last
    for du in (0, 1):
        for dv in (0, 1):
            picture[v[order] + dv, u[order] + du] = rgb[order]
    return picture


class _Player(Feeder):
    """A DepthNode plus a node that plays frames to it and collects its outputs."""

    def __init__(self, parameters: Dict[str, object]) -> None:
        from rclpy.parameter import Parameter

        from densepred_ros.node import DepthNode

        super().__init__(domain_id=reserve_domain_id(), keep=20,
                         node_name='densepred_demo_player')
        self.node = DepthNode(context=self.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in parameters.items()])
        self.add_node(self.node)
        self.subscribe(OUTPUT_TOPICS, diagnostics=False)

    def start(self) -> bool:
        """Configure and activate the node; True when it is active."""
        return self.node.start()

    @property
    def space(self) -> str:
        """Return the depth model's space: 'depth', 'disparity' or 'log_depth'."""
        return self.node._pipeline.space

    def play(self, rgb, camera, points=None, timeout: float = 60.0) -> Optional[dict]:
        """Publish one frame and wait for its outputs; return them by topic (None if absent).

        The node publishes a frame's outputs together, `depth/relative` always; the
        others (metric depth, normals, points) only when the alignment succeeded.
        """
        # The pause lets camera_info and the scan arrive before the image.
        header = self.publish(rgb, camera, points, settle=0.05)
        sent = time.monotonic()
        key = stamp_key(header)
        if not wait_for(lambda: self.find('depth/relative', key) is not None, timeout, 0.01):
            return None
        time.sleep(0.3)   # the frame's other outputs follow within milliseconds
        outputs = {t: self.find(t, key) for t in OUTPUT_TOPICS}
        outputs['latency'] = self.arrived_at(key) - sent
        return outputs


def _bundled(name: str) -> Optional[Path]:
    candidate = DEMO_MODELS / name
    return candidate if (candidate / 'model_index.json').is_file() else None


def _load_images(folder: Path) -> List[np.ndarray]:
    from PIL import Image
    paths = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in ('.png', '.jpg', '.jpeg', '.bmp'))
    if not paths:
        raise ValueError(f'no .png/.jpg images in {folder}')
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert('RGB'), dtype=np.uint8).copy())
    return images


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the exit code."""
    if getattr(args, 'bag', None):
        from densepred_ros.bag_cli import run_demo_bag
        return run_demo_bag(args)
    from PIL import Image as PILImage

    from densepred_ros.camera import CameraModel, xyz_quat_from_extrinsic
    from densepred_ros.synthetic import make_sequence
    from densepred_ros.testing import write_tiny_lotus

    check_arguments(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else _bundled('lotus-depth-demo')
    normals_model = Path(args.normals_model) if args.normals_model else (
        None if args.model else _bundled('lotus-normals-demo'))
    if model is None:
        model = write_tiny_lotus(output / 'tiny_lotus_g', variant='g')
        print('note: no bundled demo model found, so the node runs a generated random-weight '
              'checkpoint: the pictures show the plumbing, not real depth.')
    frames, images = [], []
    if args.images:
        with user_errors(ValueError, OSError, subject=f'--images {args.images}'):
            images = _load_images(Path(args.images))[:args.frames]
    else:
        frames = make_sequence(args.seed, args.frames, kind=args.kind, width=args.width,
                               height=args.height, beams=args.beams, rate_hz=10.0)
    parameters = {
        'model.path': str(model), 'model.device': args.device,
        'model.processing_resolution': args.processing_resolution,
        'qos.input_reliability': 'reliable', 'alignment.use_tf': False,
        'alignment.enabled': bool(frames), 'max_age': 0.0, 'output.points_stride': 2,
    }
    if normals_model is not None:
        parameters['model.normals_path'] = str(normals_model)
    if frames:
        parameters['alignment.extrinsic'] = xyz_quat_from_extrinsic(frames[0].T_cam_lidar)
    print(f'densepred demo: {len(frames) or len(images)} frames through the depth node, '
          f'model {model}' + (f', normals model {normals_model}' if normals_model else ''))
    player = _Player(parameters)
    results = []
    try:
        if not player.start():
            raise UserError('the node failed to configure (see the log above)',
                            f'--model {model}')
        started = time.monotonic()
        count = len(frames) or len(images)
        for index in range(count):
            if frames:
                frame = frames[index]
                rgb, camera, points = frame.rgb, frame.camera, frame.lidar_points
            else:
                rgb, points = images[index], None
                h, w = rgb.shape[:2]
                camera = CameraModel.pinhole(0.8 * w, 0.8 * w, (w - 1) / 2, (h - 1) / 2, w, h)
            outputs = player.play(rgb, camera, points)
            if outputs is None:
                print(f'frame {index}: no output within the time limit')
                results.append({'frame': index, 'ok': False})
                continue
            results.append(_save_frame(output, index, rgb, outputs,
                                       frames[index] if frames else None, PILImage,
                                       player.space))
            print(_frame_line(results[-1]))
        elapsed = time.monotonic() - started
    finally:
        player.close()
    return _summary(output, results, elapsed, count)


def _node_far_limit() -> float:
    """Return the node's `alignment.far_limit` default (the demo does not change it), m."""
    from densepred_ros.params import PARAMETERS
    return next(float(p.default) for p in PARAMETERS if p.name == 'alignment.far_limit')


def _save_frame(output: Path, index: int, rgb: np.ndarray, outputs: dict, frame,
                pil, space: str) -> dict:
    height, width = rgb.shape[:2]
    result = {'frame': index, 'ok': True, 'latency_s': outputs['latency']}
    depth_msg = outputs.get('depth/image')
    if depth_msg is not None:
        depth = decode.image_to_depth(depth_msg)
        depth_picture = geometry.colorize_depth(depth)
    else:
        depth = None
        relative = decode.image_to_depth(outputs['depth/relative'])
        depth_picture = geometry.colorize_depth(depth_order(relative, space))
    normals = None
    normals_picture = np.zeros_like(rgb)
    if outputs.get('normals/image') is not None:
        normals = decode.image_to_float(outputs['normals/image'])
        normals_picture = geometry.colorize_normals(normals)
    cloud = np.zeros_like(rgb)
    if outputs.get('points') is not None:
        msg = outputs['points']
        xyz = decode.pointcloud2_to_xyz(msg)
        # Our own cloud: native float32 x, y, z at 0/4/8 and packed rgb at 16, organized.
        raw = np.frombuffer(bytes(msg.data), np.float32).reshape(-1, msg.point_step // 4)
        organized = raw[:, :3]
        colors = None
        if msg.point_step >= 20:
            colors = geometry.unpack_rgb(raw[:, 4].copy()).reshape(msg.height, msg.width, 3)
        cloud = render_points(organized.reshape(msg.height, msg.width, 3), colors, width,
                              height)
        result['points'] = int(len(xyz))
    picture = np.concatenate([rgb, depth_picture, normals_picture, cloud], axis=1)
    pil.fromarray(picture).save(output / f'frame_{index:03d}.png')
    if frame is not None:
        # Against the scene's ground truth, up to the node's far limit (the rule of
        # densepred_ros.metrics); a frame the node could not align counts as FAILED_FRAME.
        result.update(FAILED_FRAME if depth is None else
                      depth_metrics(depth, frame.depth, _node_far_limit()))
    if frame is not None and normals is not None:
        result.update(normal_metrics(normals, frame.normals))
    if depth is None:
        result['aligned'] = False
    return result


def _frame_line(result: dict) -> str:
    parts = [f"frame {result['frame']:3d}: latency {result['latency_s'] * 1000:.0f} ms"]
    if 'abs_rel' in result:
        parts.append(f"AbsRel {result['abs_rel']:.3f}  δ1 {result['delta1']:.3f}  "
                     f"coverage {result['coverage']:.2f}")
    if result.get('aligned') is False:
        parts.append('not aligned: relative depth only')
    if 'normal_deg' in result:
        parts.append(f"normals {result['normal_deg']:.1f}°")
    return '  '.join(parts)


def _summary(output: Path, results: List[dict], elapsed: float, count: int) -> int:
    done = [r for r in results if r.get('ok')]
    latencies = np.array([r['latency_s'] for r in done]) if done else np.zeros(0)
    summary = {
        'frames': count, 'frames_with_output': len(done),
        'rate_hz': len(done) / elapsed if elapsed > 0 else 0.0,
        'latency_p50_s': float(np.percentile(latencies, 50)) if len(latencies) else None,
        'latency_p95_s': float(np.percentile(latencies, 95)) if len(latencies) else None,
    }
    keys = ('abs_rel', 'delta1', 'rmse', 'coverage', 'normal_deg', 'normal_coverage')
    means = mean_over_frames({key: r[key] for key in keys if key in r} for r in done)
    summary.update({key: value for key, value in means.items() if np.isfinite(value)})
    (output / 'metrics.json').write_text(json.dumps(
        {'summary': summary, 'frames': results}, indent=2) + '\n')
    print(f"\n{summary['frames_with_output']}/{count} frames processed, "
          f"{summary['rate_hz']:.2f} Hz (played one frame at a time), latency p50 "
          f"{(summary['latency_p50_s'] or 0) * 1000:.0f} ms, p95 "
          f"{(summary['latency_p95_s'] or 0) * 1000:.0f} ms")
    if 'abs_rel' in summary:
        print(f"metric depth vs ground truth: AbsRel {summary['abs_rel']:.3f}, "
              f"δ1 {summary['delta1']:.3f}, RMSE {summary.get('rmse', np.nan):.2f} m, "
              f"coverage {summary['coverage']:.2f} (unaligned frames count as AbsRel 1, "
              'δ1 0, coverage 0)')
    if 'normal_deg' in summary:
        print(f"normals vs ground truth: mean angular error {summary['normal_deg']:.1f}°")
    print(f'pictures (input | metric depth | normals | point cloud): {output}/frame_*.png; '
          f'metrics: {output}/metrics.json')
    return 0 if len(done) == count else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to an argparse parser."""
    parser.add_argument('--output', default='demo_output')
    parser.add_argument('--model', default=None,
                        help='checkpoint (default: the bundled demo model)')
    parser.add_argument('--normals-model', default=None,
                        help='normals checkpoint (default: the bundled one with the bundled '
                             'depth model; else normals come from the metric depth)')
    parser.add_argument('--images', default=None,
                        help='a folder of real images to play instead of generated frames')
    parser.add_argument('--frames', type=int, default=12)
    parser.add_argument('--kind', default='outdoor', choices=['indoor', 'outdoor'])
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--beams', type=int, default=32)
    parser.add_argument('--seed', type=int, default=1000)
    parser.add_argument('--device', default='auto',
                        help="model device: 'auto' (CUDA when available, as the node), "
                             "'cpu' or 'cuda[:N]'")
    parser.add_argument('--bag', default=None, metavar='PATH',
                        help='instead of running the node, write the generated sequence as '
                             'a rosbag2 (JPEG camera, camera_info, lidar, /tf_static, exact '
                             'depth) for `densepred bag` and `densepred evaluate-bag`')
    parser.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'],
                        help='storage of the --bag recording')
    parser.add_argument('--processing-resolution', type=int, default=-1,
                        help="model processing resolution; -1 = the model's default")


def check_arguments(args: argparse.Namespace) -> None:
    """Raise a UserError for a bad option, checkpoint or folder before the node starts."""
    from densepred_ros.models import CheckpointError
    from densepred_ros.models.loading import check_layout, resolve_checkpoint
    for flag, value, least in (('--frames', args.frames, 1), ('--width', args.width, 8),
                               ('--height', args.height, 8), ('--beams', args.beams, 1),
                               ('--processing-resolution', args.processing_resolution, -1)):
        if value < least:
            raise UserError(f'{flag} must be >= {least}', value)
    for flag, model in (('--model', args.model), ('--normals-model', args.normals_model)):
        if model:
            with user_errors(CheckpointError, subject=f'{flag} {model}'):
                check_layout(resolve_checkpoint(model))
    if args.images and not Path(args.images).is_dir():
        raise UserError('--images: not a folder', args.images)
    make_folder(args.output)
