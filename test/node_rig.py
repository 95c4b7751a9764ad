"""Shared rig for the node tests: the node plus a helper node over real rclpy, in-process.

`Rig` runs a `DepthNode` and a helper node (publishers of image, camera_info and lidar;
subscribers of the outputs and /diagnostics) on one multi-threaded executor. All QoS is
reliable, so no test depends on best-effort luck. Test modules keep their own small
fixtures (their own ROS domain id) and build on these helpers.
"""

import threading
import time
from typing import Callable, Dict, Iterator, List, Optional

from densepred_ros import encode
from densepred_ros.camera import extrinsic_from_xyz_quat, xyz_quat_from_extrinsic
from densepred_ros.models import ModelSpec, Prediction
from densepred_ros.node import DepthNode
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

WIDTH, HEIGHT = 96, 72
FRAME_ID = 'camera_optical_frame'
RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = {
    'depth/image': Image, 'depth/camera_info': CameraInfo, 'depth/relative': Image,
    'depth/color': Image, 'normals/image': Image, 'normals/color': Image,
    'points': PointCloud2,
}


def ros_session(domain_id: int) -> Iterator[None]:
    """Initialise rclpy on a domain for the length of a (module) fixture."""
    rclpy.init(domain_id=domain_id)
    yield
    rclpy.try_shutdown()


def extrinsic_parameter(T: np.ndarray) -> List[float]:
    """Return [x, y, z, qx, qy, qz, qw] of T, checked by rebuilding T from it."""
    values = xyz_quat_from_extrinsic(T)
    np.testing.assert_allclose(extrinsic_from_xyz_quat(*values), T, atol=1e-9)
    return values


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll predicate every 20 ms until it holds or timeout seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def stamp_header(nanoseconds: int) -> Header:
    """Return a camera Header stamped at the given time in nanoseconds."""
    header = Header(frame_id=FRAME_ID)
    header.stamp.sec, header.stamp.nanosec = divmod(int(nanoseconds), 10**9)
    return header


class OraclePredictor:
    """A 'model' that returns the frame's true depth, normalised to [0, 1] (depth space).

    With it the alignment must recover metric depth exactly, which checks the whole
    chain (extrinsic convention, projection, pairing, encoding) end to end.
    """

    def __init__(self, frame) -> None:
        """Precompute the normalised depth of the frame."""
        depth = frame.depth.astype(np.float64)
        finite = np.isfinite(depth)
        lo, hi = depth[finite].min(), depth[finite].max()
        relative = np.where(finite, (depth - lo) / (hi - lo), 1.0)
        self.relative = relative.astype(np.float32)
        self.rgb = frame.rgb
        self.spec = ModelSpec(family='lotus', variant='g', space='depth',
                              default_processing_resolution=0, source='oracle')
        self.closed = False

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Return the normalised true depth; the input must be the frame's image."""
        assert np.array_equal(rgb, self.rgb), 'the oracle only knows its own frame'
        return Prediction(space='depth', values=self.relative.copy())

    def close(self) -> None:
        """Record that the node freed the model."""
        self.closed = True


class Rig:
    """The node under test plus a helper node that feeds it and records its outputs."""

    def __init__(self, namespace: str, overrides: Dict[str, object]) -> None:
        """Create both nodes (the node stays unconfigured) and start spinning them."""
        self.namespace = namespace
        params = {'model.device': 'cpu', 'qos.input_reliability': 'reliable',
                  'alignment.max_time_offset': 0.05, 'max_age': 5.0,
                  'diagnostics_period': 0.2, **overrides}
        self.node = DepthNode(namespace=namespace, parameter_overrides=[
            Parameter(name, value=value) for name, value in params.items()])
        self.helper = Node('helper', namespace=namespace)
        self.received: Dict[str, list] = {topic: [] for topic in OUTPUTS}
        self.diagnostics: List[DiagnosticArray] = []
        self.lock = threading.Lock()
        self.image_pub = self.helper.create_publisher(Image, 'image', RELIABLE)
        self.info_pub = self.helper.create_publisher(CameraInfo, 'camera_info', RELIABLE)
        self.lidar_pub = self.helper.create_publisher(PointCloud2, 'lidar', RELIABLE)
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self.executor.add_node(self.helper)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def subscribe(self, topics=tuple(OUTPUTS)) -> None:
        """Subscribe the helper to the given outputs and to /diagnostics."""
        for topic in topics:
            self.helper.create_subscription(
                OUTPUTS[topic], topic, lambda msg, t=topic: self._store(t, msg), RELIABLE)
        self.helper.create_subscription(DiagnosticArray, '/diagnostics', self._diag, 10)

    def _store(self, topic: str, msg) -> None:
        with self.lock:
            self.received[topic].append(msg)

    def _diag(self, msg: DiagnosticArray) -> None:
        if msg.status and msg.status[0].name.startswith(self.namespace + '/densepred'):
            with self.lock:
                self.diagnostics.append(msg)

    def header(self, age: float = 0.0) -> Header:
        """Return a header stamped age seconds before the node's clock."""
        return stamp_header(self.node.get_clock().now().nanoseconds - int(age * 1e9))

    def wait_inputs_matched(self, timeout: float = 5.0) -> None:
        """Wait until the node subscribes to image and camera_info."""
        pubs = [self.image_pub, self.info_pub]
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout), \
            'the node never subscribed to image and camera_info'

    def publish(self, frame, *, lidar: bool = True, encoding_image: Image = None,
                age: float = 0.0, header: Optional[Header] = None,
                camera_info: Optional[CameraInfo] = None, info: bool = True) -> Header:
        """Publish camera_info, a scan (optional) and the image, all with one header.

        Args:
            frame: a `synthetic.SyntheticFrame` of WIDTH×HEIGHT.
            lidar: also publish the frame's scan (before the image).
            encoding_image: publish this Image instead of the frame's rgb8 image.
            age: stamp the messages this many seconds in the past.
            header: use this header instead (overrides age).
            camera_info: publish this CameraInfo instead of the frame's.
            info: publish a camera_info at all.
        """
        header = header if header is not None else self.header(age)
        if info:
            msg = camera_info if camera_info is not None else encode.camera_info_for(
                frame.camera, header, WIDTH, HEIGHT)
            msg.header = header
            self.info_pub.publish(msg)
        if lidar:
            lidar_header = Header(frame_id='lidar', stamp=header.stamp)
            self.lidar_pub.publish(encode.points_to_pointcloud2(frame.lidar_points,
                                                                lidar_header))
            time.sleep(0.02)  # let the scan arrive before the image
        image = encoding_image if encoding_image is not None else encode.rgb_to_image(
            frame.rgb, header)
        image.header = header
        self.image_pub.publish(image)
        return header

    def feed_until(self, frame, done: Callable[[], bool], timeout: float = 15.0,
                   **kwargs) -> bool:
        """Publish a frame every ~0.3 s until done() holds; False after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish(frame, **kwargs)
            if wait_for(done, 0.3):
                return True
        return False

    def count(self, topic: str) -> int:
        """Return how many messages of an output arrived."""
        with self.lock:
            return len(self.received[topic])

    def latest(self, topic: str):
        """Return the newest message of an output."""
        with self.lock:
            return self.received[topic][-1]

    def close(self) -> None:
        """Stop spinning and destroy both nodes."""
        self.executor.shutdown()
        self.thread.join(timeout=2.0)
        self.node.close()
        self.node.destroy_node()
        self.helper.destroy_node()


def rig_factory(request) -> Iterator[Callable[[Dict[str, object]], Rig]]:
    """Yield a function making Rigs namespaced after the test; close them afterwards."""
    rigs = []

    def make(overrides: Dict[str, object]) -> Rig:
        rig = Rig(f'/{request.node.name.replace("[", "_").replace("]", "")}', overrides)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def diagnostics(rig: Rig) -> List[Dict[str, str]]:
    """Return the key/values of every /diagnostics status of the rig's node so far."""
    with rig.lock:
        arrays = list(rig.diagnostics)
    return [{kv.key: kv.value for kv in d.status[0].values} for d in arrays]


def diagnostic_statuses(rig: Rig) -> list:
    """Return every DiagnosticStatus of the rig's node so far."""
    with rig.lock:
        return [d.status[0] for d in rig.diagnostics]


def state_id(node: DepthNode) -> int:
    """Return the lifecycle primary state id of the node."""
    return node._state_machine.current_state[0]


def assert_header(msg, header: Header) -> None:
    """Assert that a message carries the given frame_id and stamp."""
    assert msg.header.frame_id == header.frame_id
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == \
        (header.stamp.sec, header.stamp.nanosec)
