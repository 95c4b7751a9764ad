"""The ``densepred`` lifecycle node: camera (+ lidar) in, metric depth, normals and points out.

Lifecycle: configure reads the parameters (`params.py`) and loads the model (a bad value
or a failed load is a FAILURE with the reason logged); activate creates the subscriptions
and starts the worker; deactivate stops both; cleanup frees the model. The subscription
callbacks only store the newest image (`holder.LatestHolder`), camera_info and scans; one
worker thread runs `DepthPipeline` (decode → predict → project → align → geometry →
encode) on the newest frame and publishes every output with the input image's header.

Faults (see the README's Reliability section):

- A message that cannot be decoded (`decode.DecodeError`) is skipped with a throttled
  warning and counted ('decode errors'); a bad camera_info or scan only costs that frame
  its metric outputs.
- Without a recent lidar scan the relative outputs go on, metric depth, normals from depth
  and points pause, and /diagnostics says WARN with the time since the last scan.
- Any other error in a frame (the model raising) skips the frame and is counted; after
  ``max_consecutive_failures`` failed frames in a row the node logs an ERROR, reports ERROR
  on /diagnostics (with the reason, kept until the next activate or configure) and
  deactivates itself. It does not go through the lifecycle ErrorProcessing state, which
  would also drop the model and the diagnostics publisher: inactive keeps both, so the
  operator sees why, and `activate` retries.
- Image stamps going backwards (a bag replayed in a loop) clear the scans from the
  future, reset the alignment filter and the latency window, and are logged once per jump.
- SIGINT/SIGTERM (``main``) stop the spin loop within 0.2 s; a worker stuck in a slow
  inference is waited for at most `EXIT_JOIN_TIMEOUT` s before the process exits 0.
"""

from dataclasses import dataclass
import os
import signal
import sys
import threading
from typing import Any, Dict, Optional, Sequence, Set, Tuple

from densepred_ros import decode
from densepred_ros.camera import extrinsic_from_xyz_quat
from densepred_ros.diagnostics import NodeStatistics
from densepred_ros.holder import LatestHolder, StampedBuffer
from densepred_ros.messages import (
    CAMERA_INFO, decode_camera_and_scan, DIAGNOSTICS, encode_outputs, IMAGE, LIDAR,
    OUTPUT_TYPES, stamp_seconds)
from densepred_ros.params import ConfigError, declare_parameters, NodeConfig
from densepred_ros.pipeline import DepthPipeline, Inference, load_pipeline, STAGES, timed
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

try:
    import tf2_ros
except ImportError:  # tf2_ros comes with a ROS distro, not with the PyPI message wheels
    tf2_ros = None

SCAN_BUFFER = 20
WORKER_POLL = 0.1
STOP_JOIN_TIMEOUT = 2.0
EXIT_JOIN_TIMEOUT = 1.0


@dataclass(frozen=True)
class FrameInput:
    """One image with the camera_info that was newest when it arrived."""

    image: Image
    camera_info: Optional[CameraInfo]


@dataclass
class InferredFrame:
    """A frame after inference, waiting for the rest of the pipeline.

    Attributes:
        frame: the input messages.
        inference: what the model(s) produced (with the decode and predict times).
        stamp: the image stamp on the node's clock.
        reset_alignment: the image stamps jumped back just before this frame.
    """

    frame: FrameInput
    inference: Inference
    stamp: Time
    reset_alignment: bool


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """Return a KEEP_LAST, volatile QoS profile with 'reliable' or 'best_effort' delivery."""
    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def diagnostic_array(name: str, hardware_id: str, summary: Any, stamp: Any) -> DiagnosticArray:
    """Build a DiagnosticArray holding one status from a `diagnostics.DiagnosticSummary`."""
    status = DiagnosticStatus(
        level=bytes([summary.level]), name=name, message=summary.message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in summary.values])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg


class DepthNode(Node):
    """Lifecycle node publishing metric depth, normals and points from a camera and lidar.

    Args:
        node_name: the node name (default 'densepred').
        **kwargs: passed to rclpy's Node (namespace, parameter_overrides, ...).
    """

    def __init__(self, node_name: str = 'densepred', **kwargs: Any) -> None:
        """Declare the parameters; nothing is loaded until configure."""
        self.config: Optional[NodeConfig] = None
        self.stats = NodeStatistics()
        self._pipeline: Optional[DepthPipeline] = None
        self._outputs: Dict[str, Any] = {}
        self._inputs: list = []
        self._diag_pub = None
        self._diag_timer = None
        self._holder: LatestHolder[FrameInput] = LatestHolder()
        self._scans: StampedBuffer[PointCloud2] = StampedBuffer(SCAN_BUFFER)
        self._camera_info: Optional[CameraInfo] = None
        self._worker: Optional[threading.Thread] = None
        self._inferred: Optional[InferredFrame] = None
        self._stop = threading.Event()
        self._tf_buffer = None
        self._tf_listener = None
        self._extrinsic: Optional[np.ndarray] = None
        self._state_label = 'unconfigured'
        self._last_image_stamp: Optional[float] = None
        self._last_scan_stamp: Optional[float] = None
        self._time_reset = threading.Event()
        self.last_error = ''
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        # The worker thread asks the executor to run the fault transition.
        self._fault_guard = self.create_guard_condition(self._on_fault)

    @property
    def autostart(self) -> bool:
        """The value of the autostart parameter."""
        return bool(self.get_parameter('autostart').value)

    def start(self) -> bool:
        """Configure and activate; return True when the node ends up active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # Lifecycle transitions ---------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Read the parameters and load the model(s).

        Returns:
            SUCCESS (→ inactive), or FAILURE (→ unconfigured) with the reason logged.
        """
        try:
            config = NodeConfig.from_node(self)
            self._pipeline = load_pipeline(config)
            self._configure(config)
        except Exception as exc:  # any failure is a FAILURE with its reason, not a crash
            if isinstance(exc, ConfigError):
                self.last_error = f'configure failed: {exc}'
            elif self._pipeline is None:
                self.last_error = (f'configure failed: cannot load the model: '
                                   f'{type(exc).__name__}: {exc}')
            else:
                self.last_error = f'configure failed: {type(exc).__name__}: {exc}'
            self.get_logger().error(self.last_error)
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.last_error = ''
        self._state_label = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def _configure(self, config: NodeConfig) -> None:
        """Create the publishers, timer and tf listener, and log what runs the models."""
        self.config = config
        self.stats = NodeStatistics(stages=STAGES)
        self._extrinsic = extrinsic_from_xyz_quat(*config.alignment.extrinsic)
        out_qos = make_qos(config.qos.output_reliability, config.qos.depth)
        self._outputs = {
            topic: self.create_lifecycle_publisher(msg_type, topic, out_qos)
            for topic, msg_type in OUTPUT_TYPES.items()}
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._diag_timer = self.create_timer(config.diagnostics_period, self._publish_diagnostics)
        self._setup_tf(config)
        predictor = self._pipeline.predictor
        logger = self.get_logger()
        logger.info(
            f'configured: {predictor.spec.family} ({predictor.spec.space}) from '
            f'{config.model.path} on {self._device_label()}, {config.model.dtype} '
            f'({getattr(predictor, "dtype", "")}), backend {self._backend_label()}')
        # rclpy fixes a logging call site's severity at its first call: one call site per
        # severity, or a fallback after a normal choice raises ValueError.
        for name, p in (('model.path', predictor),
                        ('model.normals_path', self._pipeline.normals_predictor)):
            for choice in getattr(p, 'backend_choices', {}).values():
                if choice.skipped:
                    logger.warning(f'{name} {choice.describe()}')
                else:
                    logger.info(f'{name} {choice.describe()}')

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe to the inputs and start the inference worker."""
        config = self.config
        in_qos = make_qos(config.qos.input_reliability, config.qos.depth)
        self._holder.reopen()
        if self._pipeline.aligner is not None:
            self._pipeline.aligner.reset()  # the scale history ends with the last activation
        self.stats.set_fault('')
        self._last_image_stamp = self._last_scan_stamp = None
        self._time_reset.clear()
        self._inputs = [
            self.create_subscription(Image, IMAGE, self._on_image, in_qos),
            self.create_subscription(CameraInfo, CAMERA_INFO, self._on_camera_info, in_qos),
        ]
        if config.alignment.enabled:
            self._inputs.append(
                self.create_subscription(PointCloud2, LIDAR, self._on_scan, in_qos))
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name='densepred-worker',
                                        daemon=True)
        self._worker.start()
        self._state_label = 'active'
        self.get_logger().info('active')
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop the worker and remove the subscriptions."""
        self._stop_worker()
        self._destroy_subscriptions()
        self._state_label = 'inactive'
        self.get_logger().info('inactive')
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Free the model(s), publishers and timers."""
        self._release()
        self._state_label = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop everything before the node is finalized."""
        self._stop_worker()
        self._destroy_subscriptions()
        self._release()
        self._state_label = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Recover to unconfigured by dropping everything."""
        self._stop_worker()
        self._destroy_subscriptions()
        self._release()
        self._state_label = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def close(self, timeout: float = STOP_JOIN_TIMEOUT) -> None:
        """Stop the worker and free everything (before destroy_node at process exit).

        Args:
            timeout: seconds to wait for the worker to finish its frame. A worker still
                running after that (a stuck inference) is left to die with the process,
                and its model is not freed under it.
        """
        stopped = self._stop_worker(timeout)
        self._destroy_subscriptions()
        if stopped:
            self._release()

    # Setup and teardown helpers ----------------------------------------------------------

    def _setup_tf(self, config: NodeConfig) -> None:
        if not (config.alignment.enabled and config.alignment.use_tf):
            return
        if tf2_ros is None:
            self.get_logger().info('tf2_ros is not importable: using alignment.extrinsic '
                                   'for the lidar pose')
            return
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

    def _stop_worker(self, timeout: float = STOP_JOIN_TIMEOUT) -> bool:
        """Stop the worker; return False when it is still running after timeout seconds."""
        self._stop.set()
        self._holder.close()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=timeout)
            if worker.is_alive():
                self.get_logger().warning(
                    f'the inference worker did not stop within {timeout:g} s')
                return False
        return True

    def _destroy_subscriptions(self) -> None:
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        self._scans.clear()
        self._camera_info = None

    def _release(self) -> None:
        for pub in self._outputs.values():
            self.destroy_lifecycle_publisher(pub)
        self._outputs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._tf_listener is not None and hasattr(self._tf_listener, 'unregister'):
            self._tf_listener.unregister()
        self._tf_listener = self._tf_buffer = None
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        self.config = None

    def _backend_label(self) -> str:
        """Return what runs each component, e.g. 'vae_encoder=torch/cpu,unet=onnxruntime/cpu'."""
        choices = getattr(self._pipeline.predictor if self._pipeline else None,
                          'backend_choices', None)
        if not choices:
            return self.config.model.backend if self.config else ''
        return ','.join(f'{c.component}={c.backend}/{c.device}' for c in choices.values())

    def _device_label(self) -> str:
        if self._pipeline is None:
            return ''
        return str(getattr(self._pipeline.predictor, 'device', self.config.model.device))

    # Callbacks: keep the newest data only --------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        last, self._last_image_stamp = self._last_image_stamp, stamp
        if last is not None and stamp < last:
            self._on_time_jump(stamp, last)
        replaced = self._holder.put(FrameInput(msg, self._camera_info))
        self.stats.record_input(replaced)

    def _on_time_jump(self, stamp: float, last: float) -> None:
        """Handle image stamps going back in time (a bag replay loop, a clock reset)."""
        offset = self.config.alignment.max_time_offset if self.config is not None else 0.0
        cleared = ''
        if self._last_scan_stamp is not None and self._last_scan_stamp > stamp + offset:
            # The scans still come from before the jump: they must not pair with the
            # images after it, even when a replay loop repeats their stamps.
            self._scans.clear()
            self._last_scan_stamp = None
            cleared = 'cleared the lidar scans, '
        self._time_reset.set()
        self.stats.record_clock_jump()
        self.get_logger().warning(
            f'image stamps jumped back by {last - stamp:.3f} s (bag replay loop or clock '
            f'reset): {cleared}reset the alignment filter and the latency statistics')

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg
        self.stats.record_camera_info()

    def _on_scan(self, msg: PointCloud2) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        if self._last_scan_stamp is not None and stamp < self._last_scan_stamp:
            self._scans.clear()
            self.get_logger().info(
                f'lidar stamps jumped back by {self._last_scan_stamp - stamp:.3f} s: '
                f'cleared the scan buffer')
        self._last_scan_stamp = stamp
        self._scans.add(stamp, msg)
        self.stats.record_scan()

    # Worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self._holder.take(timeout=WORKER_POLL)
            if frame is None or self._stop.is_set():
                continue
            if not self._run_stage(self._infer, frame):
                return
            inferred, self._inferred = self._inferred, None
            if inferred is not None and not self._run_stage(self._finish, inferred):
                return

    def _run_stage(self, stage: Any, item: Any) -> bool:
        """Run one stage on one frame; return False when the worker must stop."""
        try:
            stage(item)
        except Exception as exc:  # keep the worker alive whatever one frame does
            if self._stop.is_set():
                return False
            failures = self.stats.record_processing_error()
            self.get_logger().error(f'frame failed: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=5.0)
            limit = self.config.max_consecutive_failures
            if limit and failures >= limit:
                self.stats.set_fault(
                    f'stopped after {failures} consecutive failed frames, last: '
                    f'{type(exc).__name__}: {exc}')
                self._fault_guard.trigger()
                return False  # the fault transition (executor thread) deactivates the node
        return not self._stop.is_set()

    def _on_fault(self) -> None:
        """Deactivate after the worker reported a fault (runs on the executor thread)."""
        fault = self.stats.fault
        if not fault or self._state_label != 'active':
            return
        self.last_error = fault
        self.get_logger().error(f'{fault}; deactivating (activate again to retry)')
        self.trigger_deactivate()

    def _wanted_outputs(self) -> Set[str]:
        return {topic for topic, pub in self._outputs.items()
                if pub.get_subscription_count() > 0}

    def _infer(self, frame: FrameInput) -> None:
        """Stage 1: decode the image and run the model(s); hand the result to stage 2."""
        wanted = self._wanted_outputs()
        if not wanted:
            self.stats.record_idle_skip()
            if not self.stats.idle_no_subscribers:
                self.stats.idle_no_subscribers = True
                self.get_logger().info('no subscribers to any output: skipping inference '
                                       'until someone subscribes')
            return
        if self.stats.idle_no_subscribers:
            self.stats.idle_no_subscribers = False
            self.get_logger().info('an output has a subscriber: resuming inference')

        config = self.config
        stamp = Time.from_msg(frame.image.header.stamp, clock_type=self.get_clock().clock_type)
        age = (self.get_clock().now() - stamp).nanoseconds * 1e-9
        if config.max_age > 0 and age > config.max_age:
            self.stats.record_stale()
            self.get_logger().warning(
                f'dropping a frame {age:.3f} s old (max_age {config.max_age} s)',
                throttle_duration_sec=5.0)
            return
        timings: Dict[str, float] = {}
        try:
            with timed(timings, 'decode'):
                rgb = decode.image_to_rgb(frame.image)
        except decode.DecodeError as exc:
            self.stats.record_decode_error()
            self.get_logger().warning(f'skipping a frame: {exc}', throttle_duration_sec=5.0)
            return
        inference = self._pipeline.infer(rgb, wanted)
        inference.timings.update(timings)
        reset = self._time_reset.is_set()
        self._time_reset.clear()
        self._inferred = InferredFrame(frame, inference, stamp, reset)

    def _finish(self, inferred: InferredFrame) -> None:
        """Stage 2: pair the lidar, run the rest of the pipeline, encode and publish."""
        pipeline = self._pipeline
        if inferred.reset_alignment and pipeline.aligner is not None:
            pipeline.aligner.reset()
        image = inferred.frame.image
        scan, T_cam_lidar, reason = self._paired_scan(image)
        inputs = decode_camera_and_scan(inferred.frame.camera_info, scan,
                                        pipeline.aligner is not None, reason)
        inferred.inference.timings['decode'] += inputs.seconds
        result = pipeline.finish(inferred.inference, inputs.camera, inputs.lidar_points,
                                 T_cam_lidar, inputs.no_points_reason)
        errors = inputs.errors + result.input_errors
        for error in errors:
            self.stats.record_decode_error()
            self.get_logger().warning(error, throttle_duration_sec=5.0)
        messages = encode_outputs(result, image.header)
        if self._stop.is_set():
            return
        for topic, msg in messages.items():
            self._outputs[topic].publish(msg)
        latency = (self.get_clock().now() - inferred.stamp).nanoseconds * 1e-9
        self.stats.record_output(latency if latency >= 0 else None, result.inference_time,
                                 result.timings)
        alignment = result.alignment
        if alignment is not None:
            self.stats.record_alignment(alignment.ok, alignment.reason, alignment.n_points,
                                        alignment.n_inliers, alignment.median_rel_error,
                                        alignment.scale, alignment.shift)
        else:
            self.stats.record_alignment(False, result.alignment_reason)

    def _paired_scan(self, image: Image
                     ) -> Tuple[Optional[PointCloud2], Optional[np.ndarray], str]:
        """Return (scan, T_cam_lidar, reason): the scan nearest in time to the image."""
        config = self.config
        if not config.alignment.enabled:
            return None, None, 'alignment disabled'
        offset = config.alignment.max_time_offset
        found = self._scans.nearest(stamp_seconds(image.header.stamp), offset)
        if found is None:
            return None, None, f'no lidar scan within {offset} s of the image'
        scan = found[1]
        if self._tf_buffer is None:
            return scan, self._extrinsic, ''
        try:
            tf = self._tf_buffer.lookup_transform(
                image.header.frame_id, scan.header.frame_id, Time.from_msg(scan.header.stamp))
        except tf2_ros.TransformException as exc:
            return None, None, (f'no transform {image.header.frame_id} <- '
                                f'{scan.header.frame_id}: {exc}')
        t, q = tf.transform.translation, tf.transform.rotation
        return scan, extrinsic_from_xyz_quat(t.x, t.y, t.z, q.x, q.y, q.z, q.w), ''

    # Diagnostics ---------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.config is None:
            return
        summary = self.stats.summary(self._state_label, backend=self._backend_label(),
                                     device=self._device_label(),
                                     alignment_wanted=self.config.alignment.enabled)
        self._diag_pub.publish(diagnostic_array(
            f'{self.get_fully_qualified_name()}: depth', self._device_label(), summary,
            self.get_clock().now().to_msg()))


def run(args: Optional[Sequence[str]] = None) -> int:
    """Run the node until SIGINT or SIGTERM; return the process exit code.

    Installs its own SIGINT/SIGTERM handlers (they only set a flag), so call it from the
    main thread of a process of its own; `main` also ends that process.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()  # only a flag: logging from a signal handler could deadlock

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    node = None
    code = 0
    try:
        node = DepthNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not node.autostart:
            node.get_logger().info('unconfigured: waiting for lifecycle transitions')
        elif not node.start():
            node.get_logger().error('autostart failed; the node stays up, unconfigured')
        # Spinning in short slices lets the loop see the stop request promptly.
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.2)
        if stop.is_set():
            node.get_logger().info('signal received: shutting down')
    except ParameterException as exc:
        print(f'densepred: invalid parameter: {exc}', file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close(timeout=EXIT_JOIN_TIMEOUT)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the node (see `run`) and end the process with its exit code.

    The node, its worker and rclpy are shut down by `run`; the interpreter's own
    finalisation is skipped (``os._exit``): with torch loaded it takes seconds, and a
    worker thread still inside a slow inference could hold it up further, while a node
    must be gone within 2 s of SIGINT/SIGTERM.
    """
    code = run(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
    return code  # not reached


if __name__ == '__main__':
    main()
