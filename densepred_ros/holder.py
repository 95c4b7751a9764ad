"""Hand-over between subscription callbacks and the inference worker (no ROS imports).

`LatestHolder` is a one-slot mailbox: callbacks `put` the newest item and never block on
inference; the worker `take`s it, waiting if the slot is empty. An item replaced before the
worker took it is counted as dropped. `StampedBuffer` keeps a few recent stamped items
(lidar scans) and returns the one nearest in time to a query stamp.
"""

from collections import deque
import threading
from typing import Deque, Generic, Optional, Tuple, TypeVar

T = TypeVar('T')


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
            self._cond.notify()
        return replaced

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
