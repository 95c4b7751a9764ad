"""Which cameras' frames the one model runs next (no ROS imports).

`FrameScheduler` holds the newest frame of every camera (one slot each: a newer frame
replaces an untaken one, counted as dropped). `take` waits until some camera has a frame
and returns the frames of up to `max_batch` cameras, visiting the cameras round-robin
from the one after the last served: with a batch as large as the camera count every
camera with a frame is served each turn; with a smaller batch no camera waits more than
ceil(n / max_batch) turns, however fast the others publish. A silent camera simply has
no frame and holds up nobody.

Several worker threads (lanes, `holder.TwoStageWorker`) may take batches at once. A
camera whose batch is still in flight (taken, `done` not yet called) is skipped, so a
camera is in one batch at a time: its frames are processed in order and its state is
touched by one thread at a time. At most `active_lanes` batches are in flight, each of up
to ceil(cameras / active_lanes) frames; with `LaneSwitch` the count follows the load.

It has the hand-over interface of `holder.LatestHolder` (`take`, `close`, `reopen`,
`clear`) plus `done`, so `holder.TwoStageWorker` runs batches from it.
"""

import os
import threading
import time
from typing import Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar('T')


class LaneSwitch:
    """One lane while it keeps up with the cameras, all lanes while it does not.

    One batch of every camera's frame is the cheapest way through the model per frame,
    and its latency is one turn; several lanes of smaller batches process more frames per
    second on a CPU whose cores one batch does not fill. So: run one lane; after a window
    in which it processed fewer than `keep_up` of the frames that arrived, run `lanes`;
    go back to one once the frames arrive slower than `back` × what one lane processes
    per busy second (measured while it ran alone).

    Args:
        lanes: the most lanes (>= 2).
        window: seconds between decisions.
        keep_up: fraction of the arrivals one lane must process.
        back: fraction of one lane's capacity below which one lane is enough again.
        clock: monotonic seconds.

    Attributes:
        active: lanes in use now.
        capacity: frames per busy second of one lane alone (0 until measured).
        switches: how often `active` changed.
    """

    def __init__(self, lanes: int, window: float = 3.0, keep_up: float = 0.7,
                 back: float = 0.9, clock: Callable[[], float] = time.monotonic) -> None:
        """Start with one lane."""
        if int(lanes) != lanes or lanes < 2:
            raise ValueError(f'a lane switch needs at least 2 lanes, got {lanes!r}')
        self.lanes = int(lanes)
        self.window, self.keep_up, self.back = window, keep_up, back
        self._clock = clock
        self.active = 1
        self.capacity = 0.0
        self.switches = 0
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self._start, self._arrived, self._served, self._busy = now, 0, 0, 0.0

    def arrived(self) -> None:
        """Count a frame put into the scheduler."""
        self._arrived += 1
        self._decide()

    def served(self, frames: int, seconds: float) -> None:
        """Count a batch of frames that kept a lane busy for seconds (take to done)."""
        self._served += int(frames)
        self._busy += float(seconds)
        self._decide()

    def _decide(self) -> None:
        now = self._clock()
        elapsed = now - self._start
        if elapsed < self.window:
            return
        before = self.active
        if self.active == 1:
            if self._busy > 0.0:
                self.capacity = self._served / self._busy
            if self._arrived and self._served < self.keep_up * self._arrived:
                self.active = self.lanes
        elif self._arrived / elapsed < self.back * self.capacity:
            self.active = 1
        self.switches += self.active != before
        self._reset(now)


class FrameScheduler(Generic[T]):
    """The newest frame per camera, handed out in round-robin batches (thread-safe).

    Args:
        names: the camera names (at least one, distinct).
        max_batch: most frames per batch (>= 1).
        lanes: most batches in flight at once (>= 1).
        switch: decides how many of the lanes run (None: all of them).
        gather: most seconds a `take` waits for the frames of other cameras that are due
            now (their next frame expected within this time, from their mean interval),
            so that cameras publishing together share a batch; 0 = never wait.

    Attributes:
        overwritten: camera name → frames replaced before the worker took them.
        served: camera name → frames handed out.
    """

    def __init__(self, names: Sequence[str], max_batch: int, lanes: int = 1,
                 switch: Optional[LaneSwitch] = None, gather: float = 0.0) -> None:
        """Start with every slot empty and the holder open."""
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f'camera names must be distinct and not empty, got {names!r}')
        if int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f'max_batch must be a positive integer, got {max_batch!r}')
        if int(lanes) != lanes or lanes < 1:
            raise ValueError(f'lanes must be a positive integer, got {lanes!r}')
        self.names = names
        self.max_batch = int(max_batch)
        self.lanes = int(lanes)
        self.switch = switch
        self.gather = float(gather)
        self._last_put: Dict[str, float] = {}
        self._interval: Dict[str, float] = {}     # camera → mean seconds between frames
        self._cond = threading.Condition()
        self._slots: Dict[str, Optional[T]] = dict.fromkeys(names)
        self._next = 0
        self._closed = False
        self._in_flight: Dict[str, float] = {}   # camera → when its batch was taken
        self._batches = 0
        self.overwritten: Dict[str, int] = dict.fromkeys(names, 0)
        self.served: Dict[str, int] = dict.fromkeys(names, 0)

    @property
    def active_lanes(self) -> int:
        """Batches that may be in flight at once now."""
        return min(self.lanes, self.switch.active) if self.switch is not None else self.lanes

    def lanes_label(self) -> str:
        """Describe the lanes for /diagnostics, e.g. '2 of 2 (one while it keeps up; 1 switch)'."""
        with self._cond:
            if self.switch is None:
                return str(self.lanes)
            switches = self.switch.switches
            return (f'{self.active_lanes} of {self.lanes} (one while it keeps up; '
                    f'{switches} switch{"" if switches == 1 else "es"})')

    def put(self, name: str, item: T) -> bool:
        """Store a camera's newest frame; return True when it replaced an untaken one."""
        if item is None:
            raise ValueError('cannot put None into a FrameScheduler')
        with self._cond:
            replaced = self._slots[name] is not None
            self._slots[name] = item
            if replaced:
                self.overwritten[name] += 1
            now = time.monotonic()
            if name in self._last_put:
                interval = now - self._last_put[name]
                mean = self._interval.get(name, interval)
                self._interval[name] = mean + 0.2 * (interval - mean)
            self._last_put[name] = now
            if self.switch is not None:
                self.switch.arrived()
            self._cond.notify_all()
        return replaced

    def _ready(self) -> bool:
        """Return True when a batch may be taken now (call with the lock held)."""
        return self._batches < self.active_lanes and any(
            item is not None and name not in self._in_flight
            for name, item in self._slots.items())

    def _due(self, most: int, end: float) -> bool:
        """Return True while fewer than `most` frames are ready and another is due by end."""
        ready = [name for name, item in self._slots.items()
                 if item is not None and name not in self._in_flight]
        if len(ready) >= most:
            return False
        now = time.monotonic()
        for name in self.names:
            if name in ready or name in self._in_flight or name not in self._interval:
                continue
            interval = self._interval[name]
            due = self._last_put[name] + interval
            if due <= end and now - due < 0.5 * interval:   # due soon, not given up on
                return True
        return False

    def take(self, timeout: Optional[float] = None) -> Optional[List[Tuple[str, T]]]:
        """Return [(camera, frame)] of up to max_batch cameras, waiting up to timeout s.

        The cameras returned are in flight until `done` is called with the batch.

        Returns:
            The batch in camera round-robin order; None on timeout or once closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._ready(), timeout)
            if self._closed or not self._ready():
                return None
            n = len(self.names)
            most = min(self.max_batch, -(-n // self.active_lanes))
            if self.gather > 0.0:
                end = time.monotonic() + self.gather
                self._cond.wait_for(lambda: self._closed or not self._due(most, end),
                                    self.gather)
                if self._closed or not self._ready():
                    return None
            now = time.monotonic()
            batch: List[Tuple[str, T]] = []
            last = None
            for step in range(n):
                index = (self._next + step) % n
                name = self.names[index]
                item = self._slots[name]
                if item is None or name in self._in_flight:
                    continue
                batch.append((name, item))
                self._slots[name] = None
                self._in_flight[name] = now
                self.served[name] += 1
                last = index
                if len(batch) == most:
                    break
            self._batches += 1
            self._next = (last + 1) % n
            return batch

    def done(self, batch: Sequence[Tuple[str, T]]) -> None:
        """End a batch that `take` returned: its cameras may be taken again."""
        with self._cond:
            taken = [self._in_flight.pop(name) for name, _ in batch if name in self._in_flight]
            if taken:
                self._batches -= 1
                if self.switch is not None:
                    self.switch.served(len(taken), time.monotonic() - min(taken))
            self._cond.notify_all()

    def clear(self) -> bool:
        """Discard every held frame; return True when one was discarded."""
        with self._cond:
            held = any(item is not None for item in self._slots.values())
            self._slots = dict.fromkeys(self.names)
            return held

    def close(self) -> None:
        """Wake every waiting `take` (they return None) and refuse to hand out frames."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Open again after `close`, every slot empty and no batch in flight."""
        with self._cond:
            self._closed = False
            self._slots = dict.fromkeys(self.names)
            self._in_flight.clear()
            self._batches = 0

    @property
    def closed(self) -> bool:
        """True after `close` (until `reopen`)."""
        return self._closed


def fair_shares(rates: Dict[str, float], capacity: float) -> Dict[str, float]:
    """Return the max-min fair processed rate of each camera, frames/s.

    A camera never gets more than it sends; what slower cameras leave is shared equally
    among the faster ones (water filling).

    Args:
        rates: camera → input rate, frames/s.
        capacity: frames/s the model can process in total.
    """
    shares: Dict[str, float] = {}
    left = float(capacity)
    pending = sorted(rates, key=lambda name: rates[name])
    while pending:
        equal = left / len(pending)
        name = pending[0]
        if rates[name] <= equal:
            shares[name] = rates[name]
            left -= rates[name]
            pending.pop(0)
        else:
            for name in pending:
                shares[name] = equal
            break
    return shares


def usable_cores() -> int:
    """Return the CPU cores this process may run on (its affinity, else os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parallel_lanes(requested: int, cameras: int, device: str, batching: str,
                   concurrency_reason: str, cores: int) -> Tuple[int, bool, str]:
    """Decide how many batches may run at once (worker lanes) and say why.

    On the CPU one batch at a time can leave cores idle: the small operations of a model
    do not spread over torch's intra-op threads, and the node's Python work between them
    is serial. Lanes on other cameras keep the cores busy with one copy of the weights,
    at the price of smaller batches, so in auto they run only while one lane does not
    keep up (`LaneSwitch`; docs/cameras.md has the measurements). On CUDA one batch per
    turn fills the device better than several small ones.

    Args:
        requested: the ``parallel_batches`` parameter (0 = auto).
        cameras: how many cameras the node serves.
        device: the depth model's device type, 'cpu' or 'cuda'.
        batching: the ``batching`` parameter, 'auto' or 'off'.
        concurrency_reason: why the models may not be called from several threads at
            once ('' when they may; `pipeline.DepthPipeline.concurrency_reason`).
        cores: usable CPU cores.

    Returns:
        (lanes in 1..cameras, whether a `LaneSwitch` decides how many run, why).
    """
    if cameras < 2:
        return 1, False, 'one camera'
    if concurrency_reason:
        return 1, False, concurrency_reason
    if requested > 0:
        return min(int(requested), cameras), False, f'parallel_batches {requested}'
    if device != 'cpu':
        return 1, False, f'one batch per turn on {device}'
    if batching == 'off':
        return 1, False, 'batching off'
    lanes = max(1, min(cameras, int(cores)))
    return lanes, lanes > 1, f'auto: {cameras} cameras, {cores} CPU cores'
