"""Pairing images with lidar scans by stamp (no ROS)."""

from densepred_ros.pairing import ScanPairing
import numpy as np


def test_nearest_scan_within_the_offset_with_the_extrinsic() -> None:
    T = np.diag([1.0, 2.0, 3.0, 1.0])
    pairing = ScanPairing(5, 0.05, T)
    assert pairing.paired(10.0) == (None, None, 'no lidar scan within 0.05 s of the image')
    assert pairing.add(9.90, 'a') is None
    assert pairing.add(10.03, 'b') is None
    scan, T_cam_lidar, reason = pairing.paired(10.0)
    assert (scan, reason) == ('b', '') and T_cam_lidar is T
    assert pairing.paired(10.2)[0] is None


def test_lookup_and_its_failure() -> None:
    def lookup(scan, image_frame):
        if image_frame != 'camera':
            raise LookupError(f'no transform {image_frame} <- lidar')
        return np.eye(4) * 2

    pairing = ScanPairing(5, 0.1, np.eye(4), lookup)
    pairing.add(1.0, 'a')
    assert pairing.paired(1.0, 'camera')[1][0, 0] == 2.0
    assert pairing.paired(1.0, 'elsewhere') == (None, None, 'no transform elsewhere <- lidar')


def test_stamps_jumping_back() -> None:
    pairing = ScanPairing(5, 0.1, np.eye(4))
    for stamp in (1.0, 1.1, 1.2):
        pairing.add(stamp, stamp)
    # An image from before the newest scans (a bag loop): those scans must not pair.
    assert not pairing.image_jumped_back(1.15)
    assert pairing.image_jumped_back(0.5)
    assert pairing.paired(1.0)[0] is None
    # Scans going back clear the older ones and say by how much.
    pairing.add(5.0, 'x')
    assert pairing.add(4.0, 'y') == 1.0
    assert pairing.paired(5.0)[0] is None and pairing.paired(4.0)[0] == 'y'
