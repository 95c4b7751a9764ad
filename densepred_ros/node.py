"""The ``densepred`` lifecycle node: camera (+ lidar) in, metric depth, normals and points out.

Only the ROS side lives here; the per-frame work is `pipeline.DepthPipeline`, the message
conversions are in `messages.py`, one camera's topics and state are a `camera_io.CameraIO`.
With the ``cameras`` parameter one model serves several cameras: `scheduler.FrameScheduler`
hands the worker the newest frame of every camera that has one (round-robin, so no camera
starves and a silent one holds up nobody); the frames of a turn run one after another
(`PER_FRAME_REASON`); alignment prior and statistics stay per camera.

Configure reads the parameters and loads the model (a bad value or a failed load is a
FAILURE with the reason logged); activate subscribes and starts the workers; deactivate
stops both; cleanup frees the model. Callbacks only store the newest image per camera,
camera_info and scans. A turn's frames go through two stages (`holder.TwoStageWorker`):
stage 1 decodes the images and runs the model(s), stage 2 pairs the lidar scan, aligns,
computes the outputs and publishes them with each image's header. On CUDA the stages
overlap (two threads, one turn handed over).

Faults: an undecodable message is skipped and counted ('decode errors'; a bad camera_info
or scan only costs the frame its metric outputs); without a recent scan the relative
outputs go on and /diagnostics warns; any other error skips the frame and is counted, and
after ``max_consecutive_failures`` in a row the node logs an ERROR, reports it on
/diagnostics and deactivates itself (inactive keeps the model and diagnostics; `activate`
retries); image stamps going back (a bag loop) clear the scans from the future and reset
the alignment filter; SIGINT/SIGTERM (``main``) end the process within 2 s, a worker stuck
in inference is waited for at most `EXIT_JOIN_TIMEOUT` s.
"""

import copy
from dataclasses import dataclass
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from densepred_ros import decode, geometry
from densepred_ros.camera import extrinsic_from_xyz_quat
from densepred_ros.camera_io import CameraIO, FrameInput
from densepred_ros.diagnostics import ModelStatistics, NodeStatistics
from densepred_ros.holder import TwoStageWorker
from densepred_ros.messages import (
    decode_camera_and_scan, diagnostic_status, DIAGNOSTICS, encode_outputs, LIDAR, make_qos,
    stamp_seconds)
from densepred_ros.node_params import config_from_node, declare_parameters
from densepred_ros.pairing import ScanPairing
from densepred_ros.params import ConfigError, NodeConfig
from densepred_ros.pipeline import DepthPipeline, Inference, load_pipeline, timed
from densepred_ros.scheduler import FrameScheduler
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, PointCloud2

try:
    import tf2_ros
except ImportError:  # tf2_ros comes with a ROS distro, not with the PyPI message wheels
    tf2_ros = None

SCAN_BUFFER = 20
WORKER_POLL = 0.1
STOP_JOIN_TIMEOUT = 2.0
EXIT_JOIN_TIMEOUT = 1.0
#: Why the frames of one turn run one after another rather than as one batch.
PER_FRAME_REASON = ('per-frame loop: a batch through the torch VAE/UNet is not bit-identical '
                    'to per-frame predict on the CPU (docs/cameras.md)')

__all__ = ['DepthNode', 'FrameInput', 'InferredFrame', 'main', 'run']


class _Fault(Exception):
    """Raised inside a worker stage once the failures in a row reached the limit."""


@dataclass
class InferredFrame:
    """A frame after inference, waiting for the rest of the pipeline.

    Attributes:
        camera: the camera it came from.
        frame: the input messages.
        inference: what the model(s) produced (with the decode and predict times).
        stamp: the image stamp on the node's clock.
        reset_alignment: the image stamps jumped back just before this frame.
    """

    camera: CameraIO
    frame: FrameInput
    inference: Inference
    stamp: Time
    reset_alignment: bool


class DepthNode(Node):
    """Lifecycle node publishing metric depth, normals and points from cameras and a lidar.

    Args:
        node_name: the node name (default 'densepred').
        overlap: run inference of the next frame(s) while the previous ones are finished
            and published (two worker threads), or not (one thread); None (default)
            overlaps when the depth model runs on CUDA (see docs/performance.md).
        **kwargs: passed to rclpy's Node (namespace, parameter_overrides, ...).
    """

    def __init__(self, node_name: str = 'densepred', overlap: Optional[bool] = None,
                 **kwargs: Any) -> None:
        """Declare the parameters; nothing is loaded until configure."""
        self.config: Optional[NodeConfig] = None
        self._idle_stats = NodeStatistics()
        self._pipeline: Optional[DepthPipeline] = None
        self._cameras: List[CameraIO] = []
        self._by_name: Dict[str, CameraIO] = {}
        self._scheduler: FrameScheduler[FrameInput] = FrameScheduler([''], 1)
        self.model_stats = ModelStatistics()
        self._lidar_sub = None
        self._diag_pub = None
        self._diag_timer = None
        self._pairing: Optional[ScanPairing[PointCloud2]] = None
        self._last_scan_time: Optional[float] = None
        # Stage 1 decodes and infers the frames of turn N+1 while stage 2 finishes and
        # publishes those of turn N.
        self._overlap = overlap
        self._worker = TwoStageWorker(self._scheduler, self._infer_batch, self._finish_batch,
                                      self._on_worker_error, poll=WORKER_POLL,
                                      name='densepred-worker')
        self._failures_in_a_row = 0
        self._failure_lock = threading.Lock()
        self._tf_buffer = None
        self._tf_listener = None
        self._state_label = 'unconfigured'
        self._geometry = ''
        self.last_error = ''
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        # The worker thread asks the executor to run the fault transition.
        self._fault_guard = self.create_guard_condition(self._on_fault)

    @property
    def stats(self) -> NodeStatistics:
        """The statistics of the (first) camera."""
        return self._cameras[0].stats if self._cameras else self._idle_stats

    def camera_stats(self, name: str) -> NodeStatistics:
        """Return the statistics of camera `name` ('' for the single camera)."""
        return self._by_name[name].stats

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
            config = config_from_node(self)
            self._pipeline = load_pipeline(config)
            self._configure(config)
        except Exception as exc:  # any failure is a FAILURE with its reason, not a crash
            reason = str(exc) if isinstance(exc, ConfigError) else (
                ('cannot load the model: ' if self._pipeline is None else '')
                + f'{type(exc).__name__}: {exc}')
            self.last_error = f'configure failed: {reason}'
            self.get_logger().error(self.last_error)
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.last_error = ''
        self._state_label = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def _camera_pipeline(self) -> DepthPipeline:
        """Return a pipeline on the shared model(s) with an aligner of its own."""
        shared = self._pipeline
        aligner = copy.deepcopy(shared.aligner) if shared.aligner is not None else None
        return DepthPipeline(shared.predictor, shared.output, aligner,
                             shared.normals_predictor)

    def _configure(self, config: NodeConfig) -> None:
        """Create the cameras, publishers, timer and tf listener; log what runs the models."""
        self.config = config
        self._geometry = geometry.warm_up()  # compile the kernels now, not on the first frame
        default = extrinsic_from_xyz_quat(*config.alignment.extrinsic)
        names = list(config.cameras) or ['']
        self._cameras = []
        for name in names:
            own = config.camera_extrinsics.get(name)
            self._cameras.append(CameraIO(
                name, self._pipeline if len(names) == 1 else self._camera_pipeline(),
                extrinsic_from_xyz_quat(*own) if own is not None else None, default))
        self._by_name = {camera.name: camera for camera in self._cameras}
        out_qos = make_qos(config.qos.output_reliability, config.qos.depth)
        for camera in self._cameras:
            camera.create_publishers(self, out_qos)
        self._scheduler = FrameScheduler(names, max_batch=len(names))
        self._worker.source = self._scheduler
        self.model_stats = ModelStatistics(PER_FRAME_REASON if len(names) > 1 else '')
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._diag_timer = self.create_timer(config.diagnostics_period, self._publish_diagnostics)
        self._setup_tf(config)
        self._pairing = ScanPairing(SCAN_BUFFER, config.alignment.max_time_offset, default)
        predictor = self._pipeline.predictor
        device = self._device_label()
        self._worker.overlap = (device.startswith('cuda') if self._overlap is None
                                else self._overlap)
        logger = self.get_logger()
        logger.info(
            f'configured: {predictor.spec.family} ({predictor.spec.space}) from '
            f'{config.model.path} on {device}, {config.model.dtype} '
            f'({getattr(predictor, "dtype", "")}), backend {self._backend_label()}, '
            f'inference {"overlapped with" if self._worker.overlap else "then"} '
            f'post-processing, geometry kernels: {self._geometry}')
        if len(names) > 1:
            logger.info(f'{len(names)} cameras ({", ".join(names)}) share one model; each '
                        f'turn takes the newest frame of every camera, {PER_FRAME_REASON}')
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
        self._failures_in_a_row = 0
        for camera in self._cameras:
            if camera.pipeline.aligner is not None:
                camera.pipeline.aligner.reset()  # the scale history ends with the activation
            camera.stats.set_fault('')
            camera.subscribe(self, config.image_transport, in_qos, self._on_image)
        if config.alignment.enabled:
            self._lidar_sub = self.create_subscription(PointCloud2, LIDAR, self._on_scan,
                                                       in_qos)
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
        return self._drop_everything('finalized')

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Recover to unconfigured by dropping everything."""
        return self._drop_everything('unconfigured')

    def _drop_everything(self, label: str) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_subscriptions()
        self._release()
        self._state_label = label
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
            self.get_logger().info('tf2_ros is not importable: using camera.N.extrinsic or '
                                   'alignment.extrinsic for the lidar pose')
            return
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

    def _stop_worker(self, timeout: float = STOP_JOIN_TIMEOUT) -> bool:
        """Stop the workers; return False when one still runs after timeout seconds."""
        if self._worker.stop(timeout):
            return True
        self.get_logger().warning(f'the inference worker did not stop within {timeout:g} s')
        return False

    def _destroy_subscriptions(self) -> None:
        for camera in self._cameras:
            camera.unsubscribe(self)
        if self._lidar_sub is not None:
            self.destroy_subscription(self._lidar_sub)
            self._lidar_sub = None
        if self._pairing is not None:
            self._pairing.clear()

    def _release(self) -> None:
        for camera in self._cameras:
            camera.destroy_publishers(self)
        self._cameras, self._by_name = [], {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._tf_listener is not None and hasattr(self._tf_listener, 'unregister'):
            self._tf_listener.unregister()
        self._tf_listener = self._tf_buffer = self._pairing = None
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        self.config = None

    def _backend_label(self) -> str:
        if self._pipeline is None:
            return self.config.model.backend if self.config else ''
        return self._pipeline.backend_label() or self.config.model.backend

    def _device_label(self) -> str:
        if self._pipeline is None:
            return ''
        return self._pipeline.device_label() or self.config.model.device

    # Callbacks: keep the newest data only --------------------------------------------------

    def _on_image(self, camera: CameraIO, msg: Any) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        last, camera.last_image_stamp = camera.last_image_stamp, stamp
        if last is not None and stamp < last:
            self._on_time_jump(camera, stamp, last)
        replaced = self._scheduler.put(camera.name, FrameInput(msg, camera.camera_info))
        camera.stats.record_input(replaced)

    def _on_time_jump(self, camera: CameraIO, stamp: float, last: float) -> None:
        """Handle image stamps going back in time (a bag replay loop, a clock reset)."""
        cleared = self._pairing.image_jumped_back(stamp)
        camera.time_reset.set()
        camera.stats.record_clock_jump()
        self.get_logger().warning(
            f'{camera.label}: image stamps jumped back by {last - stamp:.3f} s (bag replay '
            f'loop or clock reset): {"cleared the lidar scans, " if cleared else ""}reset '
            f'the alignment filter and the latency statistics')

    def _on_scan(self, msg: PointCloud2) -> None:
        jump = self._pairing.add(stamp_seconds(msg.header.stamp), msg)
        if jump is not None:
            self.get_logger().info(
                f'lidar stamps jumped back by {jump:.3f} s: cleared the scan buffer')
        for camera in self._cameras:
            camera.stats.record_scan()

    # Worker --------------------------------------------------------------------------------

    def _on_worker_error(self, exc: Exception) -> bool:
        """Handle an error raised past the per-frame handling; only `_Fault` ends the thread."""
        if isinstance(exc, _Fault):
            return False
        return self._on_frame_error(exc, None)

    def _on_frame_error(self, exc: Exception, camera: Optional[CameraIO]) -> bool:
        """Count a failed frame; return False once the failures in a row reach the limit."""
        component = _non_finite_component(exc)
        stats = camera.stats if camera is not None else self.stats
        stats.record_processing_error(component)
        with self._failure_lock:
            self._failures_in_a_row += 1
            failures = self._failures_in_a_row
        what = (f'{component} produced non-finite values' if component
                else type(exc).__name__)
        label = f'{camera.label}: ' if camera is not None and camera.name else ''
        self.get_logger().error(f'{label}frame failed: {what}: {exc}',
                                throttle_duration_sec=5.0)
        limit = self.config.max_consecutive_failures
        if limit and failures >= limit:
            fault = (f'stopped after {failures} consecutive failed frames, '
                     f'last: {type(exc).__name__}: {exc}')
            for each in self._cameras:
                each.stats.set_fault(fault)
            self._fault_guard.trigger()
            return False  # the fault transition (executor thread) deactivates the node
        return True

    def _on_fault(self) -> None:
        """Deactivate after the worker reported a fault (runs on the executor thread)."""
        fault = self.stats.fault
        if not fault or self._state_label != 'active':
            return
        self.last_error = fault
        self.get_logger().error(f'{fault}; deactivating (activate again to retry)')
        self.trigger_deactivate()

    def _each(self, items: List[Any], stage: Any, camera_of: Any) -> List[Any]:
        """Run stage on every item; a failing item is counted, the others go on."""
        results = []
        for item in items:
            try:
                result = stage(item)
            except Exception as exc:  # one camera's bad frame must not cost the others
                if self._worker.stopping:
                    raise
                if not self._on_frame_error(exc, camera_of(item)):
                    raise _Fault() from exc
                continue
            if result is not None:
                results.append(result)
        return results

    def _infer_batch(self, batch: List[Tuple[str, FrameInput]]) -> Optional[List[InferredFrame]]:
        """Stage 1: decode and run the model on the newest frame of each camera in the turn."""
        started = time.perf_counter()
        inferred = self._each(batch, lambda item: self._infer(self._by_name[item[0]], item[1]),
                              lambda item: self._by_name[item[0]])
        if inferred:
            self.model_stats.record_batch(len(inferred), time.perf_counter() - started)
        return inferred or None

    def _finish_batch(self, inferred: List[InferredFrame]) -> None:
        """Stage 2: finish and publish every frame of the turn."""
        self._each(inferred, self._finish, lambda item: item.camera)

    def _infer(self, camera: CameraIO, frame: FrameInput) -> Optional[InferredFrame]:
        """Decode one camera's image and run the model(s); None when the frame ends here."""
        stats, logger = camera.stats, self.get_logger()
        wanted = camera.wanted()
        if not wanted:
            stats.record_idle_skip()
            if not stats.idle_no_subscribers:
                stats.idle_no_subscribers = True
                logger.info(f'{camera.label}: no subscribers to any output: skipping '
                            f'inference until someone subscribes')
            return None
        if stats.idle_no_subscribers:
            stats.idle_no_subscribers = False
            logger.info(f'{camera.label}: an output has a subscriber: resuming inference')

        config = self.config
        stamp = Time.from_msg(frame.image.header.stamp, clock_type=self.get_clock().clock_type)
        age = (self.get_clock().now() - stamp).nanoseconds * 1e-9
        if config.max_age > 0 and age > config.max_age:
            stats.record_stale()
            logger.warning(f'dropping a frame {age:.3f} s old (max_age {config.max_age} s)',
                           throttle_duration_sec=5.0)
            return None
        timings: Dict[str, float] = {}
        try:
            with timed(timings, 'decode'):
                if isinstance(frame.image, CompressedImage):
                    rgb = decode.compressed_to_rgb(frame.image, config.max_image_pixels)
                else:
                    rgb = decode.image_to_rgb(frame.image)
        except decode.DecodeError as exc:
            stats.record_decode_error()
            logger.warning(f'skipping a frame: {exc}', throttle_duration_sec=5.0)
            return None
        inference = camera.pipeline.infer(rgb, wanted)
        inference.timings.update(timings)
        reset = camera.time_reset.is_set()
        camera.time_reset.clear()
        return InferredFrame(camera, frame, inference, stamp, reset)

    def _finish(self, inferred: InferredFrame) -> None:
        """Pair the lidar, run the rest of the pipeline, encode and publish one frame."""
        camera = inferred.camera
        pipeline, stats = camera.pipeline, camera.stats
        if inferred.reset_alignment and pipeline.aligner is not None:
            pipeline.aligner.reset()
        image = inferred.frame.image
        scan, T_cam_lidar, reason = self._paired_scan(camera, image)
        inputs = decode_camera_and_scan(inferred.frame.camera_info, scan,
                                        pipeline.aligner is not None, reason)
        inferred.inference.timings['decode'] += inputs.seconds
        result = pipeline.finish(inferred.inference, inputs.camera, inputs.lidar_points,
                                 T_cam_lidar, inputs.no_points_reason)
        for error in inputs.errors + result.input_errors:
            stats.record_decode_error()
            self.get_logger().warning(error, throttle_duration_sec=5.0)
        messages = encode_outputs(result, image.header)
        if self._worker.stopping:
            return
        for topic, msg in messages.items():
            camera.outputs[topic].publish(msg)
        with self._failure_lock:
            self._failures_in_a_row = 0
        latency = (self.get_clock().now() - inferred.stamp).nanoseconds * 1e-9
        stats.record_output(latency if latency >= 0 else None, result.inference_time,
                            result.timings)
        fit = result.alignment
        stats.record_alignment(result.aligned, result.alignment_reason, *(
            (fit.n_points, fit.n_inliers, fit.median_rel_error, fit.scale, fit.shift)
            if fit is not None else ()))

    def _paired_scan(self, camera: CameraIO, image: Any
                     ) -> Tuple[Optional[PointCloud2], Optional[np.ndarray], str]:
        """Return (scan, T_cam_lidar, reason): the scan nearest in time to the image."""
        if not self.config.alignment.enabled:
            return None, None, 'alignment disabled'
        scan, _, reason = self._pairing.paired(stamp_seconds(image.header.stamp))
        if scan is None:
            return None, None, reason
        lookup = self._tf_lookup if self._tf_buffer is not None else None
        try:
            return scan, camera.lidar_pose(scan, image.header.frame_id, lookup), ''
        except LookupError as exc:
            return None, None, str(exc)

    def _tf_lookup(self, scan: PointCloud2, image_frame: str) -> np.ndarray:
        """Return T_cam_lidar from tf2 at the scan's stamp; LookupError when unknown."""
        try:
            tf = self._tf_buffer.lookup_transform(
                image_frame, scan.header.frame_id, Time.from_msg(scan.header.stamp))
        except tf2_ros.TransformException as exc:
            raise LookupError(
                f'no transform {image_frame} <- {scan.header.frame_id}: {exc}') from exc
        t, q = tf.transform.translation, tf.transform.rotation
        return extrinsic_from_xyz_quat(t.x, t.y, t.z, q.x, q.y, q.z, q.w)

    # Diagnostics ---------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.config is None:
            return
        name, device = self.get_fully_qualified_name(), self._device_label()
        extra = [('geometry kernels', self._geometry),
                 ('image transport', self.config.image_transport)]
        statuses = []
        for camera in self._cameras:
            summary = camera.stats.summary(
                self._state_label, backend=self._backend_label(), device=device,
                alignment_wanted=self.config.alignment.enabled,
                extra=extra + ([('camera', camera.name)] if camera.name else []))
            statuses.append(diagnostic_status(f'{name}: {camera.name or "depth"}', device,
                                              summary))
        if len(self._cameras) > 1:
            statuses.append(diagnostic_status(f'{name}: model', device, self.model_stats.summary(
                self._state_label, backend=self._backend_label(), device=device)))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def _non_finite_component(exc: Exception) -> str:
    """Return the model component a `models.NonFiniteError` blames, else ''."""
    from densepred_ros.models.backends.guard import NonFiniteError  # torch is loaded by now
    return exc.component if isinstance(exc, NonFiniteError) else ''


def run(args: Optional[Sequence[str]] = None) -> int:
    """Run the node until SIGINT or SIGTERM; return the exit code (see `node_main.run`)."""
    from densepred_ros.node_main import run as run_node
    return run_node(args)


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the node as a process until SIGINT or SIGTERM (see `node_main.main`)."""
    from densepred_ros.node_main import main as run_process
    return run_process(args)


if __name__ == '__main__':
    main()
