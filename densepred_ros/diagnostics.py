"""Rate, latency and counter statistics for the node's /diagnostics (no ROS imports).

`NodeStatistics` is fed by the callbacks and the workers (thread-safe) and summarised by
`summary()` into a `DiagnosticSummary`: a level, a one-line message and key/value pairs,
which node.py turns into a diagnostic_msgs/DiagnosticStatus. Per-stage times of the
published frames (decode, predict, ..., encode) are reported as p50/p95 over the last
100 frames, so a user sees where the time goes.
"""

from collections import deque
from dataclasses import dataclass
import math
import threading
import time
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

OK = 0
WARN = 1
ERROR = 2


class RateMeter:
    """Events per second over a sliding time window.

    Args:
        window: seconds of history the rate is computed over (> 0).
        clock: monotonic time source in seconds.
    """

    def __init__(self, window: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Create a meter with no events."""
        if not window > 0:
            raise ValueError(f'window must be > 0 seconds, got {window!r}')
        self._window = float(window)
        self._clock = clock
        self._times: Deque[float] = deque()

    def tick(self) -> None:
        """Record one event now."""
        now = self._clock()
        self._times.append(now)
        self._trim(now)

    def rate(self) -> float:
        """Return events per second in the window (0.0 with fewer than two events).

        With n events spanning Δt seconds the rate is (n − 1) / Δt, which is exact for
        evenly spaced events whatever the window length.
        """
        self._trim(self._clock())
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()


class Percentiles:
    """Percentiles of the last `size` samples."""

    def __init__(self, size: int = 100) -> None:
        """Create an empty sample window of the given size (>= 1)."""
        if int(size) != size or size < 1:
            raise ValueError(f'size must be a positive integer, got {size!r}')
        self._samples: Deque[float] = deque(maxlen=int(size))

    def add(self, value: float) -> None:
        """Record one sample."""
        self._samples.append(float(value))

    def get(self, *qs: float) -> Tuple[float, ...]:
        """Return the requested percentiles (0–100) of the window; NaN when empty."""
        if not self._samples:
            return tuple(math.nan for _ in qs)
        return tuple(float(p) for p in np.percentile(np.asarray(self._samples), qs))

    def __len__(self) -> int:
        """Return the number of samples held."""
        return len(self._samples)


@dataclass(frozen=True)
class DiagnosticSummary:
    """What the node reports: level (OK/WARN/ERROR), a message and key/value strings."""

    level: int
    message: str
    values: List[Tuple[str, str]]


class NodeStatistics:
    """Counters and windows of the node's work, updated from several threads.

    Args:
        window: seconds over which rates are computed.
        clock: monotonic time source in seconds.
        stages: stage names in the order /diagnostics lists them (stages recorded but not
            named here follow, in the order first seen).
    """

    def __init__(self, window: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 stages: Sequence[str] = ()) -> None:
        """Start with every counter at zero."""
        self._lock = threading.Lock()
        self._clock = clock
        self.stage_times: Dict[str, Percentiles] = {name: Percentiles() for name in stages}
        self.input_rate = RateMeter(window, clock)
        self.output_rate = RateMeter(window, clock)
        self.latency = Percentiles()
        self.inference_time = Percentiles()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_overwritten = 0
        self.dropped_stale = 0
        self.decode_errors = 0
        self.processing_errors = 0
        self.non_finite: Dict[str, int] = {}
        self.consecutive_failures = 0
        self.skipped_idle = 0
        self.clock_jumps = 0
        self.fault = ''
        self.idle_no_subscribers = False
        self._last_scan: Optional[float] = None
        self._last_camera_info: Optional[float] = None
        self.alignment_ok: Optional[bool] = None
        self.alignment_reason = 'no frame yet'
        self.alignment_inliers = 0
        self.alignment_points = 0
        self.alignment_error = math.nan
        self.alignment_scale = math.nan
        self.alignment_shift = math.nan
        self.correction = 'none'
        self.correction_spread = math.nan
        self.correction_support = math.nan
        self.correction_gain = math.nan
        self.corrections: Dict[str, int] = {}

    def record_input(self, replaced: bool) -> None:
        """Count an image received; replaced: it overwrote one the worker never took."""
        with self._lock:
            self.frames_in += 1
            self.input_rate.tick()
            if replaced:
                self.dropped_overwritten += 1

    def record_stale(self) -> None:
        """Count a frame dropped because it was older than max_age."""
        with self._lock:
            self.dropped_stale += 1

    def record_decode_error(self) -> None:
        """Count a message that could not be decoded (frame skipped)."""
        with self._lock:
            self.decode_errors += 1

    def record_processing_error(self, non_finite_component: str = '') -> int:
        """Count a frame lost to an error; return the consecutive failures.

        Args:
            non_finite_component: the model component whose output was not finite, when
                that was the error (counted per component as well).
        """
        with self._lock:
            self.processing_errors += 1
            if non_finite_component:
                self.non_finite[non_finite_component] = (
                    self.non_finite.get(non_finite_component, 0) + 1)
            self.consecutive_failures += 1
            return self.consecutive_failures

    def record_idle_skip(self) -> None:
        """Count a frame taken but not processed because no output had a subscriber."""
        with self._lock:
            self.skipped_idle += 1

    def record_output(self, latency: Optional[float], inference_time: float,
                      stage_times: Optional[Mapping[str, float]] = None) -> None:
        """Count a published frame: latency (stamp → publish), inference and stage times, s.

        A None latency (the image stamp is ahead of the node clock, e.g. just after the
        clock jumped back) counts the frame without adding a latency sample. A published
        frame ends any run of consecutive failures.
        """
        with self._lock:
            self.frames_out += 1
            self.consecutive_failures = 0
            self.output_rate.tick()
            if latency is not None:
                self.latency.add(latency)
            self.inference_time.add(inference_time)
            for name, seconds in (stage_times or {}).items():
                self.stage_times.setdefault(name, Percentiles()).add(seconds)

    def record_clock_jump(self) -> None:
        """Count a backward jump of the image stamps and forget the latency history."""
        with self._lock:
            self.clock_jumps += 1
            self.latency = Percentiles()

    def record_scan(self) -> None:
        """Note that a lidar scan arrived now."""
        with self._lock:
            self._last_scan = self._clock()

    def record_camera_info(self) -> None:
        """Note that a camera_info arrived now."""
        with self._lock:
            self._last_camera_info = self._clock()

    def set_fault(self, reason: str) -> None:
        """Mark the node as failed (diagnostics ERROR) with a reason; '' clears it."""
        with self._lock:
            self.fault = str(reason)
            if not reason:
                self.consecutive_failures = 0

    def _since(self, last: Optional[float]) -> str:
        return 'never' if last is None else f'{self._clock() - last:.2f}'

    def record_alignment(self, ok: bool, reason: str, n_points: int = 0, n_inliers: int = 0,
                         median_rel_error: float = math.nan, scale: float = math.nan,
                         shift: float = math.nan, correction: str = 'none',
                         correction_spread: float = math.nan,
                         support_fraction: float = math.nan,
                         correction_gain: float = math.nan) -> None:
        """Store the latest frame's alignment outcome and count its local correction.

        Args:
            ok, reason: whether the frame was aligned, and why not.
            n_points, n_inliers, median_rel_error, scale, shift: the global fit's figures.
            correction: `AlignmentResult.correction` ('none', 'local', 'declined',
                'skipped'); counted per value.
            correction_spread, support_fraction, correction_gain: the latest frame's
                `AlignmentResult` figures (relative depth, share of the image, share of
                the held-out misfit removed); NaN without a correction.
        """
        with self._lock:
            self.alignment_ok = ok
            self.alignment_reason = reason
            self.alignment_points = int(n_points)
            self.alignment_inliers = int(n_inliers)
            self.alignment_error = float(median_rel_error)
            self.alignment_scale = float(scale)
            self.alignment_shift = float(shift)
            self.correction = correction
            self.correction_spread = float(correction_spread)
            self.correction_support = float(support_fraction)
            self.correction_gain = float(correction_gain)
            if ok:
                self.corrections[correction] = self.corrections.get(correction, 0) + 1

    @property
    def dropped(self) -> int:
        """All dropped frames: overwritten before processing plus stale."""
        return self.dropped_overwritten + self.dropped_stale

    def summary(self, state: str, backend: str = '', device: str = '',
                alignment_wanted: bool = True,
                extra: Sequence[Tuple[str, str]] = ()) -> DiagnosticSummary:
        """Summarise the statistics.

        Args:
            state: lifecycle state label ('active', 'inactive', ...).
            backend, device: reported as-is.
            alignment_wanted: whether failing alignment is a warning.
            extra: further key/values reported as-is (after 'device').

        Returns:
            ERROR after a fault (`set_fault`, e.g. repeated inference failures), whatever
            the state; WARN when inactive, when images arrive but nothing was published
            yet, or when alignment is wanted and failing (the message then says when the
            last scan arrived); else OK (also when idle without subscribers).
        """
        with self._lock:
            rate_in, rate_out = self.input_rate.rate(), self.output_rate.rate()
            p50, p95 = self.latency.get(50, 95)
            (inference_p50,) = self.inference_time.get(50)
            if self.alignment_ok is None:
                alignment = 'no frame yet'
            else:
                alignment = 'ok' if self.alignment_ok else self.alignment_reason
            values = [
                ('state', state),
                ('input rate (Hz)', f'{rate_in:.2f}'),
                ('output rate (Hz)', f'{rate_out:.2f}'),
                ('latency p50 (s)', f'{p50:.3f}'),
                ('latency p95 (s)', f'{p95:.3f}'),
                ('inference time p50 (s)', f'{inference_p50:.3f}'),
                ('frames in', str(self.frames_in)),
                ('frames out', str(self.frames_out)),
                ('dropped (overwritten)', str(self.dropped_overwritten)),
                ('dropped (stale)', str(self.dropped_stale)),
                ('decode errors', str(self.decode_errors)),
                ('processing errors', str(self.processing_errors)),
                ('non-finite model outputs', ', '.join(
                    f'{name}: {count}' for name, count in sorted(self.non_finite.items()))),
                ('consecutive failures', str(self.consecutive_failures)),
                ('skipped (no subscribers)', str(self.skipped_idle)),
                ('clock jumps', str(self.clock_jumps)),
                ('time since last scan (s)', self._since(self._last_scan)),
                ('time since last camera_info (s)', self._since(self._last_camera_info)),
                ('fault', self.fault),
                ('alignment', alignment),
                ('alignment points', str(self.alignment_points)),
                ('alignment inliers', str(self.alignment_inliers)),
                ('alignment median rel. error', f'{self.alignment_error:.4f}'),
                ('alignment scale', f'{self.alignment_scale:.6g}'),
                ('alignment shift', f'{self.alignment_shift:.6g}'),
                ('local correction', self.correction),
                ('local correction frames', ', '.join(
                    f'{name}: {count}' for name, count in sorted(self.corrections.items()))),
                ('local correction spread p95', f'{self.correction_spread:.4f}'),
                ('local correction support', f'{self.correction_support:.3f}'),
                ('local correction held-out gain', f'{self.correction_gain:.3f}'),
                ('backend', backend),
                ('device', device),
                *extra,
            ]
            for name, times in self.stage_times.items():
                if not len(times):
                    continue  # a stage no published frame ran (e.g. normals unwanted)
                p50_stage, p95_stage = times.get(50, 95)
                values += [(f'stage {name} p50 (s)', f'{p50_stage:.4f}'),
                           (f'stage {name} p95 (s)', f'{p95_stage:.4f}')]
            if self.fault:
                level, message = ERROR, f'{state}: {self.fault}'
            elif state != 'active':
                level, message = WARN, f'{state}: not processing'
            elif self.idle_no_subscribers:
                level, message = OK, 'idle: no subscribers to any output'
            elif rate_in > 0 and self.frames_out == 0:
                level, message = WARN, 'receiving images, nothing published yet'
            elif alignment_wanted and self.alignment_ok is False:
                last = self._since(self._last_scan)
                scan = 'no scan received' if last == 'never' else f'last scan {last} s ago'
                level, message = WARN, f'alignment failing: {self.alignment_reason} ({scan})'
            else:
                level, message = OK, f'publishing at {rate_out:.1f} Hz'
        return DiagnosticSummary(level=level, message=message, values=values)


class ModelStatistics:
    """Batches run by the one model serving several cameras (thread-safe).

    Args:
        batching: how the frames of one turn run, e.g. 'one batch' or 'per-frame loop
            (reason)'.

    Attributes:
        lanes: how many batches run at once (`scheduler.FrameScheduler.lanes_label`).
    """

    def __init__(self, batching: str = '') -> None:
        """Start with no batch."""
        self._lock = threading.Lock()
        self.batching = batching
        self.lanes = '1'
        self.batches = 0
        self.frames = 0
        self.batch_sizes: Deque[int] = deque(maxlen=100)
        self.inference_time = Percentiles()
        #: seconds spent in the model(s) since the start, all batches.
        self.inference_seconds = 0.0

    def record_batch(self, size: int, seconds: float) -> None:
        """Count one turn of size frames that spent seconds in the model(s)."""
        with self._lock:
            self.batches += 1
            self.frames += int(size)
            self.batch_sizes.append(int(size))
            self.inference_time.add(seconds)
            self.inference_seconds += float(seconds)

    def summary(self, state: str, backend: str = '', device: str = '') -> DiagnosticSummary:
        """Summarise: OK while active, WARN otherwise; batch sizes and inference time."""
        with self._lock:
            sizes = list(self.batch_sizes)
            p50, p95 = self.inference_time.get(50, 95)
            values = [
                ('state', state),
                ('batching', self.batching),
                ('parallel batches', self.lanes),
                ('batches', str(self.batches)),
                ('frames', str(self.frames)),
                ('batch size mean', f'{np.mean(sizes):.2f}' if sizes else 'nan'),
                ('batch size max', str(max(sizes)) if sizes else '0'),
                ('inference time per batch p50 (s)', f'{p50:.3f}'),
                ('inference time per batch p95 (s)', f'{p95:.3f}'),
                ('backend', backend),
                ('device', device),
            ]
        level = OK if state == 'active' else WARN
        message = (f'{self.batches} batches' if state == 'active'
                   else f'{state}: not processing')
        return DiagnosticSummary(level=level, message=message, values=values)
