"""Pairing images with lidar scans by stamp, robust to stamps jumping back (no ROS imports).

`ScanPairing` keeps the recent scans (`holder.StampedBuffer`) and returns, for an image,
the scan nearest in time within `max_offset` with the transform that takes its points into
the camera frame: from a lookup (tf2 in the node) or a fixed extrinsic. Stamps going back
(a bag replayed in a loop, a clock reset) clear the scans that would pair wrongly.
"""

import threading
from typing import Callable, Generic, Optional, Tuple, TypeVar

from densepred_ros.holder import StampedBuffer
import numpy as np

T = TypeVar('T')
#: lookup(scan, image frame id) -> 4×4 T_cam_lidar; raises LookupError (with the reason)
#: when unknown.
Lookup = Callable[[T, str], np.ndarray]


class ScanPairing(Generic[T]):
    """The recent lidar scans, for pairing with images (thread-safe).

    Args:
        capacity: scans kept (oldest dropped first).
        max_offset: largest image-to-scan stamp difference paired, seconds.
        extrinsic: 4×4 T_cam_lidar used without a lookup.
        lookup: optional per-scan transform lookup (e.g. tf2 at the scan stamp).
    """

    def __init__(self, capacity: int, max_offset: float, extrinsic: np.ndarray,
                 lookup: Optional[Lookup] = None) -> None:
        """Start with no scans."""
        self.max_offset = float(max_offset)
        self.extrinsic = extrinsic
        self.lookup = lookup
        self._scans: StampedBuffer[T] = StampedBuffer(capacity)
        self._last: Optional[float] = None
        self._lock = threading.Lock()

    def add(self, stamp: float, scan: T) -> Optional[float]:
        """Store a scan stamped at stamp seconds.

        Returns:
            How far the scan stamps jumped back, seconds, when they did (the older scans
            were dropped); else None.
        """
        with self._lock:
            jump = None
            if self._last is not None and stamp < self._last:
                self._scans.clear()
                jump = self._last - stamp
            self._last = stamp
            self._scans.add(stamp, scan)
        return jump

    def image_jumped_back(self, image_stamp: float) -> bool:
        """Drop the scans from after an image whose stamp jumped back; True when dropped.

        The scans still come from before the jump: they must not pair with the images
        after it, even when a replay loop repeats their stamps.
        """
        with self._lock:
            if self._last is None or self._last <= image_stamp + self.max_offset:
                return False
            self._scans.clear()
            self._last = None
            return True

    def paired(self, image_stamp: float, image_frame: str = ''
               ) -> Tuple[Optional[T], Optional[np.ndarray], str]:
        """Return (scan, T_cam_lidar, '') for an image, or (None, None, why not)."""
        found = self._scans.nearest(image_stamp, self.max_offset)
        if found is None:
            return None, None, f'no lidar scan within {self.max_offset} s of the image'
        scan = found[1]
        if self.lookup is None:
            return scan, self.extrinsic, ''
        try:
            return scan, self.lookup(scan, image_frame), ''
        except LookupError as exc:
            return None, None, str(exc)

    def clear(self) -> None:
        """Forget every scan."""
        with self._lock:
            self._scans.clear()
            self._last = None
