"""Which cameras' frames the one model runs next (no ROS imports).

`FrameScheduler` holds the newest frame of every camera (one slot each: a newer frame
replaces an untaken one, counted as dropped). `take` waits until some camera has a frame
and returns the frames of up to `max_batch` cameras, visiting the cameras round-robin
from the one after the last served: with a batch as large as the camera count every
camera with a frame is served each turn; with a smaller batch no camera waits more than
ceil(n / max_batch) turns, however fast the others publish. A silent camera simply has
no frame and holds up nobody.

It has the hand-over interface of `holder.LatestHolder` (`take`, `close`, `reopen`,
`clear`), so `holder.TwoStageWorker` runs batches from it unchanged.
"""

import threading
from typing import Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar('T')


class FrameScheduler(Generic[T]):
    """The newest frame per camera, handed out in round-robin batches (thread-safe).

    Args:
        names: the camera names (at least one, distinct).
        max_batch: most frames per batch (>= 1).

    Attributes:
        overwritten: camera name → frames replaced before the worker took them.
        served: camera name → frames handed out.
    """

    def __init__(self, names: Sequence[str], max_batch: int) -> None:
        """Start with every slot empty and the holder open."""
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f'camera names must be distinct and not empty, got {names!r}')
        if int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f'max_batch must be a positive integer, got {max_batch!r}')
        self.names = names
        self.max_batch = int(max_batch)
        self._cond = threading.Condition()
        self._slots: Dict[str, Optional[T]] = dict.fromkeys(names)
        self._next = 0
        self._closed = False
        self.overwritten: Dict[str, int] = dict.fromkeys(names, 0)
        self.served: Dict[str, int] = dict.fromkeys(names, 0)

    def put(self, name: str, item: T) -> bool:
        """Store a camera's newest frame; return True when it replaced an untaken one."""
        if item is None:
            raise ValueError('cannot put None into a FrameScheduler')
        with self._cond:
            replaced = self._slots[name] is not None
            self._slots[name] = item
            if replaced:
                self.overwritten[name] += 1
            self._cond.notify_all()
        return replaced

    def take(self, timeout: Optional[float] = None) -> Optional[List[Tuple[str, T]]]:
        """Return [(camera, frame)] of up to max_batch cameras, waiting up to timeout s.

        Returns:
            The batch in camera round-robin order; None on timeout or once closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed or any(
                item is not None for item in self._slots.values()), timeout)
            if self._closed:
                return None
            n = len(self.names)
            batch: List[Tuple[str, T]] = []
            last = None
            for step in range(n):
                index = (self._next + step) % n
                name = self.names[index]
                item = self._slots[name]
                if item is None:
                    continue
                batch.append((name, item))
                self._slots[name] = None
                self.served[name] += 1
                last = index
                if len(batch) == self.max_batch:
                    break
            if last is None:
                return None
            self._next = (last + 1) % n
            return batch

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
        """Open again after `close`, every slot empty."""
        with self._cond:
            self._closed = False
            self._slots = dict.fromkeys(self.names)

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
