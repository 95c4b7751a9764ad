"""The ``densepred`` lifecycle node: camera (+ lidar) in, metric depth, normals and points out.

Only the ROS side lives here; the per-frame work is `pipeline.DepthPipeline`, the message
conversions are in `messages.py`, one camera's topics and state are a `camera_io.CameraIO`.
With the ``cameras`` parameter one model serves several cameras: `scheduler.FrameScheduler`
hands the worker the newest frame of every camera that has one (round-robin, so no camera
starves and a silent one holds up nobody); the frames of a turn run through the model as
one batch where it allows it (``batching``, `batching_label`), else one after another;
alignment prior and statistics stay per camera.

Configure reads the parameters and loads the model (a bad value or a failed load is a
FAILURE with the reason logged); activate subscribes and starts the workers; deactivate
stops both; cleanup frees the model. Callbacks only store the newest image per camera,
camera_info and scans. A turn's frames go through `worker.FrameWorker`'s two stages:
stage 1 decodes the images and runs the model(s), stage 2 pairs the lidar scan (pose from
`lidar_pose`), aligns, computes the outputs and publishes them with each image's header.
On CUDA the stages overlap (two threads, one turn handed over).

Faults: an undecodable message is skipped and counted ('decode errors'; a bad camera_info
or scan only costs the frame its metric outputs); without a recent scan the relative
outputs go on and /diagnostics warns; any other error skips the frame and is counted, and
after ``max_consecutive_failures`` in a row the node logs an ERROR, reports it on
/diagnostics and deactivates itself (inactive keeps the model and diagnostics; `activate`
retries); image stamps going back (a bag loop) clear the scans from the future and reset
the alignment filter; SIGINT/SIGTERM (``main``) end the process within 2 s, a worker stuck
in inference is waited for at most `EXIT_JOIN_TIMEOUT` s.
"""

from typing import Any, Dict, List, Optional, Sequence

from densepred_ros import geometry
from densepred_ros.camera import extrinsic_from_xyz_quat
from densepred_ros.camera_io import camera_pipeline, CameraIO, FrameInput
from densepred_ros.diagnostics import ModelStatistics, NodeStatistics
from densepred_ros.lidar_pose import TfLidarPose
from densepred_ros.messages import DIAGNOSTICS, LIDAR, make_qos, node_diagnostics, stamp_seconds
from densepred_ros.node_params import config_from_node, declare_parameters
from densepred_ros.pairing import ScanPairing
from densepred_ros.params import ConfigError, NodeConfig
from densepred_ros.pipeline import DepthPipeline, load_pipeline
from densepred_ros.scheduler import parallel_lanes, usable_cores
from densepred_ros.worker import FrameWorker, InferredFrame
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidHandle
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from sensor_msgs.msg import PointCloud2

SCAN_BUFFER = 20
STOP_JOIN_TIMEOUT = 2.0
EXIT_JOIN_TIMEOUT = 1.0
#: Why the frames of one turn run one after another with ``batching: off``.
BATCHING_OFF_REASON = ("batching: off: a camera's result never depends on the frames that "
                       'shared its turn (docs/cameras.md)')

__all__ = ['DepthNode', 'FrameInput', 'InferredFrame', 'main', 'run']


class DepthNode(Node):
    """Lifecycle node publishing metric depth, normals and points from cameras and a lidar.

    Args:
        node_name: the node name (default 'densepred').
        overlap: run inference of the next frame(s) while the previous ones are finished
            and published (two worker threads), or not; None (default) overlaps when
            the depth model runs on CUDA (see docs/performance.md). With several
            cameras overlap is one lane: True keeps ``parallel_batches: 0`` (auto) to
            one; a number > 1 runs that many lanes without overlap.
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
        self._lidar_sub = None
        self._diag_pub = None
        self._diag_timer = None
        self._pairing: Optional[ScanPairing[PointCloud2]] = None
        self._overlap = overlap
        self._frames = FrameWorker(self, lambda: self._fault_guard.trigger())
        self._worker = self._frames.threads
        self._tf: Optional[TfLidarPose] = None
        self._state_label = 'unconfigured'
        self._geometry = ''
        self.last_error = ''
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        # The worker thread asks the executor to run the fault transition.
        self._fault_guard = self.create_guard_condition(self._on_fault)

    @property
    def model_stats(self) -> ModelStatistics:
        """The statistics of the shared model."""
        return self._frames.model_stats

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
                name, self._pipeline if len(names) == 1 else camera_pipeline(self._pipeline),
                extrinsic_from_xyz_quat(*own) if own is not None else None, default))
        self._by_name = {camera.name: camera for camera in self._cameras}
        out_qos = make_qos(config.qos.output_reliability, config.qos.depth)
        for camera in self._cameras:
            camera.create_publishers(self, out_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._diag_timer = self.create_timer(config.diagnostics_period, self._publish_diagnostics)
        self._tf = TfLidarPose(self, config)
        self._pairing = ScanPairing(SCAN_BUFFER, config.alignment.max_time_offset, default)
        batching = batching_label(config.batching, self._pipeline) if len(names) > 1 else ''
        device = self._device_label()
        lanes, adaptive, lanes_why = parallel_lanes(
            1 if self._overlap and not config.parallel_batches else config.parallel_batches,
            len(names),
            device.split(':')[0], config.batching, self._pipeline.concurrency_reason(),
            usable_cores())
        torch_threads = self._pipeline.share_cpu(1 if adaptive else lanes)
        self._frames.configure(config, self._cameras, self._pairing, self._tf,
                               ModelStatistics(batching), batching == 'one batch',
                               lanes, adaptive, self._pipeline.share_cpu)
        predictor = self._pipeline.predictor
        self._worker.overlap = lanes == 1 and (device.startswith('cuda') if self._overlap is None
                                               else self._overlap)
        logger = self.get_logger()
        logger.info(
            f'configured: {predictor.spec.family} ({predictor.spec.space}) from '
            f'{config.model.path} on {device}, {config.model.dtype} '
            f'({getattr(predictor, "dtype", "")}), backend {self._backend_label()}, '
            f'inference {"overlapped with" if self._worker.overlap else "then"} '
            f'post-processing, geometry kernels: {self._geometry}')
        if len(names) > 1:
            logger.info(f'{len(names)} cameras ({", ".join(names)}) share one model; '
                        f'each turn takes the newest frame of every camera: {batching}; '
                        f'{self._frames.scheduler.lanes_label()} parallel batches '
                        f'({lanes_why}){", one while it keeps up" if adaptive else ""}, '
                        f'torch threads {torch_threads}')
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
        self._frames.reset_failures()
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
        if self._tf is not None:
            self._tf.close()
        self._tf = self._pairing = None
        self._frames.release()
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        self.config = None

    def _backend_label(self) -> str:
        pipeline, config = self._pipeline, self.config
        requested = config.model.backend if config is not None else ''
        return (pipeline.backend_label() if pipeline is not None else '') or requested

    def _device_label(self) -> str:
        pipeline, config = self._pipeline, self.config
        if pipeline is None:
            return ''
        return pipeline.device_label() or (config.model.device if config is not None else '')

    # Callbacks: keep the newest data only --------------------------------------------------

    def _on_image(self, camera: CameraIO, msg: Any) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        last, camera.last_image_stamp = camera.last_image_stamp, stamp
        if last is not None and stamp < last:
            self._on_time_jump(camera, stamp, last)
        replaced = self._frames.scheduler.put(camera.name, FrameInput(msg, camera.camera_info))
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

    # Faults and diagnostics --------------------------------------------------------------

    def _on_fault(self) -> None:
        """Deactivate after the worker reported a fault (runs on the executor thread)."""
        fault = self.stats.fault
        if not fault or self._state_label != 'active':
            return
        self.last_error = fault
        self.get_logger().error(f'{fault}; deactivating (activate again to retry)')
        self.trigger_deactivate()

    def _publish_diagnostics(self) -> None:
        # Cleanup may run on another executor thread: work on what is held now.
        publisher, config, cameras = self._diag_pub, self.config, list(self._cameras)
        if publisher is None or config is None:
            return
        device, backend = self._device_label(), self._backend_label()
        extra = [('geometry kernels', self._geometry),
                 ('image transport', config.image_transport)]
        statuses = [(camera.name, camera.stats.summary(
            self._state_label, backend=backend, device=device,
            alignment_wanted=config.alignment.enabled,
            extra=extra + ([('camera', camera.name)] if camera.name else [])))
            for camera in cameras]
        self.model_stats.lanes = self._frames.scheduler.lanes_label()
        model = (self.model_stats.summary(self._state_label, backend=backend, device=device)
                 if len(cameras) > 1 else None)
        try:
            publisher.publish(node_diagnostics(
                self.get_fully_qualified_name(), device, statuses, model,
                self.get_clock().now().to_msg()))
        except InvalidHandle:
            pass   # destroyed by a cleanup since it was read


def run(args: Optional[Sequence[str]] = None) -> int:
    """Run the node until SIGINT or SIGTERM; return the exit code (see `node_main.run`)."""
    from densepred_ros.node_main import run as run_node
    return run_node(args)


def batching_label(batching: str, pipeline: DepthPipeline) -> str:
    """Return how a turn's frames run: 'one batch', or 'per-frame loop: <reason>'.

    Args:
        batching: the ``batching`` parameter, 'auto' or 'off'.
        pipeline: the shared pipeline (its models decide whether they take a batch).
    """
    if batching == 'off':
        return f'per-frame loop: {BATCHING_OFF_REASON}'
    reason = pipeline.batching_reason()
    return f'per-frame loop: {reason}' if reason else 'one batch'


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the node as a process until SIGINT or SIGTERM (see `node_main.main`)."""
    from densepred_ros.node_main import main as run_process
    return run_process(args)


if __name__ == '__main__':
    main()
