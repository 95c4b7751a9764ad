"""The depth node's per-turn work: decode and infer, pair the lidar, finish, publish.

`FrameWorker` runs a turn's frames through two stages (`holder.TwoStageWorker`): stage 1
decodes the images and runs the model(s), one call for the whole turn with batching
(`pipeline.DepthPipeline.infer_batch`); stage 2 pairs the lidar scan, aligns, computes
the outputs and publishes them with each image's header. With ``lanes`` > 1 that many
threads run turns at once, each on other cameras (`scheduler.FrameScheduler`). A failing
frame is counted and the others go on; after ``max_consecutive_failures`` in a row it
sets the fault on every camera and calls ``on_fault`` (the node deactivates itself on
the executor thread).
"""

from dataclasses import dataclass
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from densepred_ros import decode
from densepred_ros.camera_io import CameraIO, FrameInput
from densepred_ros.diagnostics import ModelStatistics
from densepred_ros.holder import TwoStageWorker
from densepred_ros.lidar_pose import optional_lookup, TfLidarPose
from densepred_ros.messages import decode_camera_and_scan, encode_outputs, stamp_seconds
from densepred_ros.pairing import ScanPairing
from densepred_ros.params import NodeConfig
from densepred_ros.pipeline import Inference, timed
from densepred_ros.scheduler import FrameScheduler, LaneSwitch
import numpy as np
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, PointCloud2

WORKER_POLL = 0.1
#: seconds a turn waits for the frames of cameras due now (`scheduler.FrameScheduler`).
GATHER = 0.015


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


@dataclass
class _Admitted:
    """A decoded frame that goes to the model (see `InferredFrame` for the fields)."""

    camera: CameraIO
    frame: FrameInput
    rgb: np.ndarray
    wanted: Set[str]
    stamp: Time
    timings: Dict[str, float]


class FrameWorker:
    """The worker threads of a depth node and what they do with each turn's frames.

    Args:
        node: the node (logger, clock and its `stats` for an error outside any camera).
        on_fault: called from a worker thread once the failures in a row reach the limit.

    Attributes:
        threads: the two-stage worker (``overlap``, ``start``, ``stop``, ``stopping``).
        model_stats: the shared model's statistics.
    """

    def __init__(self, node: Any, on_fault: Callable[[], None]) -> None:
        """Create the worker; nothing runs until `configure` and ``threads.start``."""
        self._node = node
        self._on_fault = on_fault
        self._config: Optional[NodeConfig] = None
        self._cameras: List[CameraIO] = []
        self._by_name: Dict[str, CameraIO] = {}
        self._pairing: Optional[ScanPairing[PointCloud2]] = None
        self._tf: Optional[TfLidarPose] = None
        self._failures_in_a_row = 0
        self._failure_lock = threading.Lock()
        self._share_cpu: Optional[Callable[[int], int]] = None
        self.model_stats = ModelStatistics()
        #: run a turn's frames through the model in one call (`DepthPipeline.infer_batch`).
        self.batching = False
        self.scheduler: FrameScheduler[FrameInput] = FrameScheduler([''], 1)
        # Stage 1 decodes and infers the frames of turn N+1 while stage 2 finishes and
        # publishes those of turn N.
        self.threads = TwoStageWorker(self.scheduler, self._infer_batch, self._finish_batch,
                                      self._on_worker_error, poll=WORKER_POLL,
                                      name='densepred-worker',
                                      done=lambda batch: self.scheduler.done(batch))

    def configure(self, config: NodeConfig, cameras: Sequence[CameraIO],
                  pairing: ScanPairing, tf: Optional[TfLidarPose],
                  model_stats: ModelStatistics, batching: bool = False,
                  lanes: int = 1, adaptive: bool = False,
                  share_cpu: Optional[Callable[[int], int]] = None) -> None:
        """Serve these cameras with this configuration, scan pairing and tf2 lookup.

        Args:
            batching: run the frames of a turn through the model in one call.
            lanes: batches that may run at once (threads), each of up to
                ceil(cameras / lanes) frames; more than one needs ``threads.overlap`` off.
            adaptive: run one of the lanes while it keeps up (`scheduler.LaneSwitch`).
            share_cpu: called by each lane before a batch with the lanes in use, to
                share the CPU cores among them (`pipeline.DepthPipeline.share_cpu`).
        """
        self.batching = bool(batching)
        self._config, self._pairing, self._tf = config, pairing, tf
        self._cameras = list(cameras)
        self._by_name = {camera.name: camera for camera in self._cameras}
        self.scheduler = FrameScheduler(
            [camera.name for camera in self._cameras], max_batch=len(self._cameras),
            lanes=lanes, switch=LaneSwitch(lanes) if adaptive else None,
            gather=GATHER if len(self._cameras) > 1 else 0.0)
        self._share_cpu = share_cpu
        self.threads.lanes = lanes
        self.threads.source = self.scheduler
        self.model_stats = model_stats

    def release(self) -> None:
        """Forget the cameras, configuration and lookups (cleanup)."""
        self._config, self._pairing, self._tf = None, None, None
        self._cameras, self._by_name = [], {}

    def reset_failures(self) -> None:
        """Start counting failures in a row from zero (activate)."""
        with self._failure_lock:
            self._failures_in_a_row = 0

    def _on_worker_error(self, exc: Exception) -> bool:
        """Handle an error raised past the per-frame handling; only `_Fault` ends the thread."""
        if isinstance(exc, _Fault):
            return False
        return self._on_frame_error(exc, None)

    def _on_frame_error(self, exc: Exception, camera: Optional[CameraIO]) -> bool:
        """Count a failed frame; return False once the failures in a row reach the limit."""
        component = _non_finite_component(exc)
        stats = camera.stats if camera is not None else self._node.stats
        stats.record_processing_error(component)
        with self._failure_lock:
            self._failures_in_a_row += 1
            failures = self._failures_in_a_row
        what = (f'{component} produced non-finite values' if component
                else type(exc).__name__)
        label = f'{camera.label}: ' if camera is not None and camera.name else ''
        self._node.get_logger().error(f'{label}frame failed: {what}: {exc}',
                                      throttle_duration_sec=5.0)
        limit = self._config.max_consecutive_failures
        if limit and failures >= limit:
            fault = (f'stopped after {failures} consecutive failed frames, '
                     f'last: {type(exc).__name__}: {exc}')
            for each in self._cameras:
                each.stats.set_fault(fault)
            self._on_fault()
            return False  # the fault transition (executor thread) deactivates the node
        return True

    def _each(self, items: List[Any], stage: Any, camera_of: Any) -> List[Any]:
        """Run stage on every item; a failing item is counted, the others go on."""
        results = []
        for item in items:
            try:
                result = stage(item)
            except Exception as exc:  # one camera's bad frame must not cost the others
                if self.threads.stopping:
                    raise
                if not self._on_frame_error(exc, camera_of(item)):
                    raise _Fault() from exc
                continue
            if result is not None:
                results.append(result)
        return results

    def _infer_batch(self, batch: List[Tuple[str, FrameInput]]) -> Optional[List[InferredFrame]]:
        """Stage 1: decode and run the model on the newest frame of each camera in the turn.

        With batching the turn's decoded frames go through the model in one call; should
        that call fail, they run again one by one so that one camera's bad frame is
        counted against that camera only.
        """
        started = time.perf_counter()
        if self._share_cpu is not None:
            self._share_cpu(self.scheduler.active_lanes)
        admitted = self._each(batch, lambda item: self._admit(self._by_name[item[0]], item[1]),
                              lambda item: self._by_name[item[0]])
        inferred = None
        if len(admitted) > 1 and self.batching:
            try:
                inferred = self._infer_together(admitted)
            except Exception as exc:  # retried frame by frame, where a failure is counted
                if self.threads.stopping:
                    raise
                self._node.get_logger().warning(
                    f'a batch of {len(admitted)} frames failed ({type(exc).__name__}: {exc}); '
                    'running them one by one', throttle_duration_sec=5.0)
        if inferred is None:
            inferred = self._each(admitted, self._infer, lambda item: item.camera)
        if inferred:
            self.model_stats.record_batch(len(inferred), time.perf_counter() - started)
        return inferred or None

    def _finish_batch(self, inferred: List[InferredFrame]) -> None:
        """Stage 2: finish and publish every frame of the turn."""
        self._each(inferred, self._finish, lambda item: item.camera)

    def _admit(self, camera: CameraIO, frame: FrameInput) -> Optional[_Admitted]:
        """Decode one camera's image; None when the frame ends here (idle, stale, bad)."""
        stats, logger, clock = camera.stats, self._node.get_logger(), self._node.get_clock()
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

        config = self._config
        stamp = Time.from_msg(frame.image.header.stamp, clock_type=clock.clock_type)
        age = (clock.now() - stamp).nanoseconds * 1e-9
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
        return _Admitted(camera, frame, rgb, wanted, stamp, timings)

    def _infer(self, item: _Admitted) -> InferredFrame:
        """Run the model(s) on one decoded frame."""
        return self._inferred(item, item.camera.pipeline.infer(item.rgb, item.wanted))

    def _infer_together(self, items: List[_Admitted]) -> List[InferredFrame]:
        """Run the model(s) once on the decoded frames of several cameras."""
        results = items[0].camera.pipeline.infer_batch([item.rgb for item in items],
                                                       [item.wanted for item in items])
        return [self._inferred(item, result) for item, result in zip(items, results)]

    @staticmethod
    def _inferred(item: _Admitted, inference: Inference) -> InferredFrame:
        inference.timings.update(item.timings)
        camera = item.camera
        reset = camera.time_reset.is_set()
        camera.time_reset.clear()
        return InferredFrame(camera, item.frame, inference, item.stamp, reset)

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
            self._node.get_logger().warning(error, throttle_duration_sec=5.0)
        messages = encode_outputs(result, image.header)
        if self.threads.stopping:
            return
        for topic, msg in messages.items():
            camera.outputs[topic].publish(msg)
        with self._failure_lock:
            self._failures_in_a_row = 0
        latency = (self._node.get_clock().now() - inferred.stamp).nanoseconds * 1e-9
        stats.record_output(latency if latency >= 0 else None, result.inference_time,
                            result.timings)
        fit = result.alignment
        stats.record_alignment(result.aligned, result.alignment_reason, *(
            (fit.n_points, fit.n_inliers, fit.median_rel_error, fit.scale, fit.shift,
             fit.correction, fit.correction_spread, fit.support_fraction, fit.correction_gain)
            if fit is not None else ()))

    def _paired_scan(self, camera: CameraIO, image: Any
                     ) -> Tuple[Optional[PointCloud2], Optional[np.ndarray], str]:
        """Return (scan, T_cam_lidar, reason): the scan nearest in time to the image."""
        if not self._config.alignment.enabled:
            return None, None, 'alignment disabled'
        scan, _, reason = self._pairing.paired(stamp_seconds(image.header.stamp))
        if scan is None:
            return None, None, reason
        try:
            return scan, camera.lidar_pose(scan, image.header.frame_id,
                                           optional_lookup(self._tf)), ''
        except LookupError as exc:
            return None, None, str(exc)


def _non_finite_component(exc: Exception) -> str:
    """Return the model component a `models.NonFiniteError` blames, else ''."""
    from densepred_ros.models.backends.guard import NonFiniteError  # torch is loaded by now
    return exc.component if isinstance(exc, NonFiniteError) else ''
