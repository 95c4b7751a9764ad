"""Hand-over between subscription callbacks and the worker threads (no ROS imports).

`LatestHolder` is a one-slot mailbox: callbacks `put` the newest item and never block on
inference; the worker `take`s it, waiting if the slot is empty. An item replaced before the
worker took it is counted as dropped. `put_when_empty` is the other hand-over: it waits
for the slot instead of replacing (between the two stages of `TwoStageWorker`).
`StampedBuffer` keeps a few recent stamped items (lidar scans) and returns the one nearest
in time to a query stamp.
"""

from collections import deque
import threading
from typing import Callable, Deque, Generic, List, Optional, Tuple, TypeVar

T = TypeVar('T')
U = TypeVar('U')


class LatestHolder(Generic[T]):
    """A thread-safe one-slot holder that keeps only the newest item.

    Attributes:
        overwritten: items replaced by a newer one before anybody took them.
        put_count: items ever put.
    """

    def __init__(self) -> None:
        """Create an empty, open holder."""
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self.overwritten = 0
        self.put_count = 0

    def put(self, item: T) -> bool:
        """Store the item, replacing any untaken one; return True when one was replaced."""
        if item is None:
            raise ValueError('cannot put None into a LatestHolder')
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self.put_count += 1
            if replaced:
                self.overwritten += 1
            self._cond.notify_all()
        return replaced

    def put_when_empty(self, item: T, timeout: Optional[float] = None) -> bool:
        """Store the item once the slot is empty, never replacing one.

        Returns:
            True when stored; False on timeout or once the holder is closed (the item is
            then discarded).
        """
        if item is None:
            raise ValueError('cannot put None into a LatestHolder')
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed, timeout)
            if self._closed or self._item is not None:
                return False
            self._item = item
            self.put_count += 1
            self._cond.notify_all()
        return True

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """Remove and return the newest item, waiting up to timeout seconds for one.

        Returns None on timeout or once the holder is closed (an item still held when it
        was closed is discarded).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            self._cond.notify_all()  # a put_when_empty may be waiting for the slot
            return item

    def clear(self) -> bool:
        """Discard the held item, if any; return True when one was discarded."""
        with self._cond:
            held = self._item is not None
            self._item = None
            return held

    def close(self) -> None:
        """Wake every waiting `take` (they return None) and refuse to hand out items."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Open the holder again after `close`, empty."""
        with self._cond:
            self._closed = False
            self._item = None

    @property
    def closed(self) -> bool:
        """True after `close` (until `reopen`)."""
        return self._closed


class TwoStageWorker(Generic[T, U]):
    """Runs two stages on the newest items of a holder: overlapped, in lanes, or in turn.

    With overlap, one thread takes the newest item from `source` and runs `first` on it,
    and hands the result over (one slot, `put_when_empty`) to a second thread running
    `second`: while item N is in the second stage, item N+1 is in the first. The hand-over
    never queues more than one item; meanwhile newer inputs keep replacing each other in
    `source` (latest-item semantics). Without overlap each of ``lanes`` threads takes an
    item and runs both stages on it; several lanes work on different items at once (the
    source decides which items may be in flight together, see
    `scheduler.FrameScheduler.done`).

    Args:
        source: where the inputs arrive.
        first: stage 1; returns the hand-over item, or None when the item ends here.
        second: stage 2.
        on_error: called with an exception raised by either stage (not after `stop`);
            return False to end the thread that raised it.
        overlap: two threads (True) or ``lanes`` threads running both stages (False).
        poll: seconds between checks of the stop flag while waiting.
        name: thread name prefix.
        lanes: threads taking items from `source` without overlap (>= 1).
        done: called with each item taken once it has left the worker (after stage 2,
            after stage 1 ended it, or after an error; with overlap once handed over).
    """

    def __init__(self, source: LatestHolder[T], first: Callable[[T], Optional[U]],
                 second: Callable[[U], None], on_error: Callable[[Exception], bool],
                 overlap: bool = True, poll: float = 0.1, name: str = 'worker',
                 lanes: int = 1, done: Optional[Callable[[T], None]] = None) -> None:
        """Create the worker; nothing runs until `start`."""
        self.source = source
        self.first, self.second, self.on_error = first, second, on_error
        self.overlap = overlap
        self.lanes = lanes
        self.done = done
        self.poll = poll
        self.name = name
        self.handover: LatestHolder[U] = LatestHolder()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    @property
    def stopping(self) -> bool:
        """True once `stop` was called (until the next `start`)."""
        return self._stop.is_set()

    def start(self) -> None:
        """Open the holders and start the thread(s).

        Raises:
            ValueError: lanes is not a positive integer, or lanes > 1 with overlap.
        """
        if int(self.lanes) != self.lanes or self.lanes < 1:
            raise ValueError(f'lanes must be a positive integer, got {self.lanes!r}')
        if self.overlap and self.lanes > 1:
            raise ValueError('overlap runs one lane: the lanes already overlap each other')
        self._stop.clear()
        self.source.reopen()
        self.handover.reopen()
        loops = [self._first_loop] * int(self.lanes) + (
            [self._second_loop] if self.overlap else [])
        self._threads = [threading.Thread(target=loop, name=f'{self.name}-{i + 1}',
                                          daemon=True) for i, loop in enumerate(loops)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop the threads; return False when one still runs after timeout seconds.

        Called from a worker thread itself, it does not wait for that thread.
        """
        self._stop.set()
        self.source.close()
        self.handover.close()
        threads, self._threads = self._threads, []
        alive = False
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)
                alive = alive or thread.is_alive()
        return not alive

    def _run(self, stage: Callable, item) -> Tuple[bool, object]:
        """Run a stage; return (go on, its result)."""
        try:
            return not self._stop.is_set(), stage(item)
        except Exception as exc:  # keep the worker alive whatever one item does
            if self._stop.is_set():
                return False, None
            return self.on_error(exc) and not self._stop.is_set(), None

    def _first_loop(self) -> None:
        while not self._stop.is_set():
            item = self.source.take(timeout=self.poll)
            if item is None:
                continue
            try:
                if self._stop.is_set():
                    return
                go_on, handed = self._run(self.first, item)
                if go_on and handed is not None:
                    if self.overlap:
                        self.handover.put_when_empty(handed)
                    else:
                        go_on, _ = self._run(self.second, handed)
            finally:
                if self.done is not None:
                    self.done(item)
            if not go_on:
                return

    def _second_loop(self) -> None:
        while not self._stop.is_set():
            handed = self.handover.take(timeout=self.poll)
            if handed is None or self._stop.is_set():
                continue
            go_on, _ = self._run(self.second, handed)
            if not go_on:
                return


class StampedBuffer(Generic[T]):
    """The most recent items with their stamps, for nearest-in-time lookup (thread-safe).

    Args:
        capacity: how many items to keep (oldest dropped first), >= 1.
    """

    def __init__(self, capacity: int = 10) -> None:
        """Create an empty buffer of the given capacity."""
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f'capacity must be a positive integer, got {capacity!r}')
        self._items: Deque[Tuple[float, T]] = deque(maxlen=int(capacity))
        self._lock = threading.Lock()

    def add(self, stamp: float, item: T) -> None:
        """Store an item with its stamp in seconds."""
        with self._lock:
            self._items.append((float(stamp), item))

    def nearest(self, stamp: float, max_offset: float) -> Optional[Tuple[float, T]]:
        """Return (stamp, item) nearest in time to stamp, or None beyond max_offset seconds.

        On a tie the newer item wins.
        """
        with self._lock:
            items = list(self._items)
        best = None
        for item_stamp, item in items:
            offset = abs(item_stamp - stamp)
            if offset <= max_offset and (best is None or offset <= best[0]):
                best = (offset, item_stamp, item)
        return None if best is None else (best[1], best[2])

    def clear(self) -> None:
        """Forget every item."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        """Return the number of items held."""
        with self._lock:
            return len(self._items)
