"""A node that feeds the depth node and records what it publishes (demo, soak, tests).

`Feeder` publishes image, camera_info and lidar scans (from numpy or ready messages) with
one header per frame, subscribes to the node's outputs and /diagnostics, and spins in a
background thread. The depth node can be spun on the same executor (`add_node`: the demo
and the in-process tests) or run in a process of its own (the soak script, the signal
tests). All QoS is reliable unless told otherwise, so nothing depends on best-effort luck.
"""

from collections import deque
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Union

from densepred_ros import encode
from densepred_ros.camera import CameraModel
from densepred_ros.messages import (
    CAMERA_INFO, COMPRESSED_IMAGE, DIAGNOSTICS, IMAGE, LIDAR, OUTPUT_TYPES, stamp_seconds)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import rclpy
from rclpy.executors import Executor, MultiThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

CAMERA_FRAME = 'camera_optical_frame'
LIDAR_FRAME = 'lidar'


def stamp_key(header: Header) -> int:
    """Return a header's stamp as integer nanoseconds (a dictionary key for one frame)."""
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def wait_for(predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Poll predicate every period seconds until it holds or timeout seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


class Feeder:
    """Publishes frames to a depth node in namespace and records its outputs.

    Args:
        namespace: the depth node's namespace ('' or '/name').
        domain_id: with a value, run on a context of its own initialised on that ROS
            domain (shut down by `close`); None uses rclpy's default context, which the
            caller initialised.
        qos_depth: history depth of the reliable publishers and subscriptions.
        keep: messages kept per output topic (None = all; counts are kept regardless).
        node_name: the feeding node's name.
        on_output: called as on_output(topic, msg) for every output message received,
            from the executor thread.
        executor: spin on this executor, which the caller spins (several feeders in one
            process on one thread); None = a two-thread executor of its own, spun in a
            background thread.
    """

    def __init__(self, namespace: str = '', *, domain_id: Optional[int] = None,
                 qos_depth: int = 5, keep: Optional[int] = None,
                 node_name: str = 'densepred_feeder',
                 on_output: Optional[Callable[[str, Any], None]] = None,
                 executor: Optional[Executor] = None) -> None:
        """Create the node and its publishers, and start spinning."""
        self.namespace = namespace.rstrip('/')
        self.context = None
        if domain_id is not None:
            self.context = rclpy.Context()
            rclpy.init(context=self.context, domain_id=domain_id)
        self.qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self.helper = rclpy.create_node(node_name, namespace=namespace or '/',
                                        context=self.context)
        self.image_pub = self.helper.create_publisher(Image, IMAGE, self.qos)
        self.compressed_pub = self.helper.create_publisher(CompressedImage, COMPRESSED_IMAGE,
                                                           self.qos)
        self.info_pub = self.helper.create_publisher(CameraInfo, CAMERA_INFO, self.qos)
        self.lidar_pub = self.helper.create_publisher(PointCloud2, LIDAR, self.qos)
        self.lock = threading.Lock()
        self.received: Dict[str, Deque[Any]] = {t: deque(maxlen=keep) for t in OUTPUT_TYPES}
        self.counts: Dict[str, int] = dict.fromkeys(OUTPUT_TYPES, 0)
        self.arrival: Dict[int, float] = {}
        self.statuses: Deque[DiagnosticStatus] = deque(maxlen=keep)
        self.subscriptions: Dict[str, Any] = {}
        self._on_output = on_output
        self._nodes: List[Any] = []
        self._own_executor = executor is None
        self.executor = executor or MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.helper)
        self.thread: Optional[threading.Thread] = None
        if self._own_executor:
            self.thread = threading.Thread(target=self.executor.spin, daemon=True)
            self.thread.start()

    def add_node(self, node: Any) -> None:
        """Spin another node (the depth node) on the feeder's executor."""
        self._nodes.append(node)
        self.executor.add_node(node)

    def subscribe(self, topics: Iterable[str] = tuple(OUTPUT_TYPES),
                  diagnostics: bool = True) -> None:
        """Subscribe to the given outputs of the node (and to /diagnostics)."""
        for topic in topics:
            if topic not in self.subscriptions:
                self.subscriptions[topic] = self.helper.create_subscription(
                    OUTPUT_TYPES[topic], topic, lambda msg, t=topic: self._store(t, msg),
                    self.qos)
        if diagnostics and DIAGNOSTICS not in self.subscriptions:
            self.subscriptions[DIAGNOSTICS] = self.helper.create_subscription(
                DiagnosticArray, DIAGNOSTICS, self._on_diagnostics, 10)

    def _store(self, topic: str, msg: Any) -> None:
        now = time.monotonic()
        with self.lock:
            self.received[topic].append(msg)
            self.counts[topic] += 1
            self.arrival.setdefault(stamp_key(msg.header), now)
        if self._on_output is not None:
            self._on_output(topic, msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        prefix = f'{self.namespace}/densepred'
        statuses = [s for s in msg.status if s.name.startswith(prefix)]
        if statuses:
            with self.lock:
                self.statuses.extend(statuses)

    # Publishing ----------------------------------------------------------------------------

    def header(self, age: float = 0.0) -> Header:
        """Return a camera header stamped age seconds before the feeder's clock."""
        header = Header(frame_id=CAMERA_FRAME)
        ns = self.helper.get_clock().now().nanoseconds - int(age * 1e9)
        header.stamp.sec, header.stamp.nanosec = divmod(ns, 10**9)
        return header

    def publish(self, image: Union[np.ndarray, Image, CompressedImage],
                camera: Union[CameraModel, CameraInfo, None] = None,
                points: Union[np.ndarray, PointCloud2, None] = None, *,
                header: Optional[Header] = None, age: float = 0.0,
                settle: float = 0.0) -> Header:
        """Publish one frame: camera_info, lidar scan, then the image, all with one stamp.

        Args:
            image: H×W×3 uint8 RGB (encoded as rgb8), a ready Image, or a ready
                CompressedImage (published on image/compressed).
            camera: the camera (encoded at the image size), a ready CameraInfo, or None
                (no camera_info).
            points: N×3 lidar points (lidar frame, metres), a ready PointCloud2, or None.
            header: the frame's header (default: stamped now minus age). Ready messages
                get this header (the scan keeps its frame_id, with the stamp).
            age: seconds to stamp the frame in the past (when header is None).
            settle: seconds to wait between the scan and the image, so the node has the
                camera_info and scan when the image arrives.

        Returns:
            The header the frame was published with.
        """
        header = header if header is not None else self.header(age)
        if camera is not None:
            if isinstance(camera, CameraModel):
                camera = encode.camera_info_for(camera, header, camera.width, camera.height)
            camera.header = header
            self.info_pub.publish(camera)
        if points is not None:
            if not isinstance(points, PointCloud2):
                points = encode.points_to_pointcloud2(points, Header(frame_id=LIDAR_FRAME))
            points.header.stamp = header.stamp
            self.lidar_pub.publish(points)
        if settle > 0:
            time.sleep(settle)
        if isinstance(image, CompressedImage):
            image.header = header
            self.compressed_pub.publish(image)
            return header
        if not isinstance(image, Image):
            image = encode.rgb_to_image(image, header)
        image.header = header
        self.image_pub.publish(image)
        return header

    def feed_until(self, done: Callable[[], bool], *args: Any, timeout: float = 15.0,
                   period: float = 0.3, **kwargs: Any) -> bool:
        """Publish a frame (`publish` arguments) every period seconds until done() holds.

        Returns:
            False when done() still does not hold after timeout seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish(*args, **kwargs)
            if wait_for(done, period):
                return True
        return False

    # What came back ----------------------------------------------------------------------

    def count(self, topic: str) -> int:
        """Return how many messages of an output arrived."""
        with self.lock:
            return self.counts[topic]

    def latest(self, topic: str) -> Any:
        """Return the newest message of an output."""
        with self.lock:
            return self.received[topic][-1]

    def messages(self, topic: str) -> List[Any]:
        """Return the kept messages of an output, oldest first."""
        with self.lock:
            return list(self.received[topic])

    def find(self, topic: str, key: int) -> Optional[Any]:
        """Return the kept message of an output with the given stamp (`stamp_key`)."""
        with self.lock:
            for msg in reversed(self.received[topic]):
                if stamp_key(msg.header) == key:
                    return msg
        return None

    def arrived_at(self, key: int) -> Optional[float]:
        """Return when the first output of a frame arrived (monotonic seconds)."""
        with self.lock:
            return self.arrival.get(key)

    def diagnostic_statuses(self) -> List[DiagnosticStatus]:
        """Return the depth node's /diagnostics statuses so far, oldest first."""
        with self.lock:
            return list(self.statuses)

    def diagnostics(self) -> List[Dict[str, str]]:
        """Return the key/values of every /diagnostics status of the node so far."""
        return [{kv.key: kv.value for kv in s.values} for s in self.diagnostic_statuses()]

    def connected(self, lidar: bool = True, topic: str = 'depth/relative') -> bool:
        """Whether the node subscribes to the inputs and publishes topic to us."""
        pubs = [self.image_pub, self.info_pub] + ([self.lidar_pub] if lidar else [])
        sub = self.subscriptions.get(topic)
        return (all(p.get_subscription_count() > 0 for p in pubs)
                and (sub is None or sub.get_publisher_count() > 0))

    def close(self) -> None:
        """Stop spinning, close and destroy every node, and end a context of its own."""
        for node in self._nodes:
            if hasattr(node, 'close'):
                node.close()  # the depth node stops its workers before the executor
        if self._own_executor:
            self.executor.shutdown()
            self.thread.join(timeout=2.0)
        else:
            for node in self._nodes + [self.helper]:
                self.executor.remove_node(node)
        for node in self._nodes:
            node.destroy_node()
        self.helper.destroy_node()
        if self.context is not None:
            rclpy.try_shutdown(context=self.context)


def seconds_since(header: Header) -> float:
    """Return the wall-clock seconds since a header's stamp (system clock stamps)."""
    return time.time() - stamp_seconds(header.stamp)
