"""Running the depth node as a process: signal handling, the spin loop, a prompt exit.

``ros2 run densepred_ros depth_node`` and ``python -m densepred_ros.node`` come here
(through `node.main`).
"""

import os
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from densepred_ros.node import DepthNode, EXIT_JOIN_TIMEOUT
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


def run(args: Optional[Sequence[str]] = None) -> int:
    """Run the node until SIGINT or SIGTERM; return the process exit code.

    Installs its own SIGINT/SIGTERM handlers (they only set a flag), so call it from the
    main thread of a process of its own; `main` also ends that process.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()  # only a flag: logging from a signal handler could deadlock

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    node = None
    code = 0
    try:
        node = DepthNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not node.autostart:
            node.get_logger().info('unconfigured: waiting for lifecycle transitions')
        elif not node.start():
            node.get_logger().error(f'autostart failed ({node.last_error or "see above"}); '
                                    f'the node stays up')
        # Spinning in short slices lets the loop see the stop request promptly.
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.2)
        if stop.is_set():
            node.get_logger().info('signal received: shutting down')
    except ParameterException as exc:
        print(f'densepred: invalid parameter: {exc}', file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close(timeout=EXIT_JOIN_TIMEOUT)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the node (see `run`) and end the process with its exit code.

    The node, its worker and rclpy are shut down by `run`; the interpreter's own
    finalisation is skipped (``os._exit``): with torch loaded it takes seconds, and a
    worker thread still inside a slow inference could hold it up further, while a node
    must be gone within 2 s of SIGINT/SIGTERM.
    """
    code = run(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
    return code  # not reached


if __name__ == '__main__':
    main()
