"""Private ROS domain ids for the demo, the soak script and the tests.

Each caller reserves an id that no other process on this machine holds, so two suites (or
a suite and a demo) on one machine never see each other's topics. The reservation is an
exclusive `fcntl` lock on a file per id, released when the process exits. Ids stay in
1..101: with Fast DDS, larger ids put ports into Linux's ephemeral range (32768+).
"""

import fcntl
import os
import tempfile
from typing import Dict, IO

LOWEST = 1
HIGHEST = 101
_held: Dict[int, IO] = {}


def reserve_domain_id(lock_dir: str = '') -> int:
    """Return a ROS domain id in [1, 101] that this process now holds exclusively.

    Args:
        lock_dir: folder of the lock files (default: the system's temporary folder).

    Raises:
        RuntimeError: every id is held by other processes.
    """
    folder = lock_dir or tempfile.gettempdir()
    start = os.getpid() % (HIGHEST - LOWEST + 1)
    for offset in range(HIGHEST - LOWEST + 1):
        domain_id = LOWEST + (start + offset) % (HIGHEST - LOWEST + 1)
        if domain_id in _held:
            continue
        handle = open(os.path.join(folder, f'densepred_ros-domain-{domain_id}.lock'), 'a')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held[domain_id] = handle
        return domain_id
    raise RuntimeError(f'no free ROS domain id in {LOWEST}..{HIGHEST} on this machine')
