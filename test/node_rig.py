"""The one rig for every test that feeds the depth node, over real rclpy.

`Rig` is a `feeder.Feeder` (publishers of image, camera_info and lidar; subscribers of the
outputs and /diagnostics) with a `DepthNode` spun on the same executor, in-process.
`feed_other_process` feeds a node running in a process of its own. All QoS is reliable,
so no test depends on best-effort luck. Test modules keep their own small fixtures (their
own ROS domain id) and build on these helpers.
"""

import inspect
from typing import Any, Callable, Dict, Iterator, List, Optional

from densepred_ros.camera import extrinsic_from_xyz_quat, xyz_quat_from_extrinsic
from densepred_ros.feeder import CAMERA_FRAME, Feeder, wait_for
from densepred_ros.models import ModelSpec, Prediction
from densepred_ros.node import DepthNode
import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

WIDTH, HEIGHT = 96, 72
# How long a test waits for an event over DDS. Generous, so a busy machine (CI beside other
# jobs) does not fail a test; a wait ends as soon as its event happens.
DEADLINE = 60.0
FRAME_ID = CAMERA_FRAME


def awaited(done: Callable[[], bool]) -> str:
    """Return the source of a wait's condition, for the message of a failed wait."""
    try:
        return ' '.join(inspect.getsource(done).split())[:300]
    except (OSError, TypeError):
        return repr(done)


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


class Rig(Feeder):
    """The node under test plus a helper node that feeds it and records its outputs."""

    def __init__(self, namespace: str, overrides: Dict[str, object]) -> None:
        """Create both nodes (the node stays unconfigured) and start spinning them."""
        super().__init__(namespace, node_name='helper')
        params = {'model.device': 'cpu', 'qos.input_reliability': 'reliable',
                  'alignment.max_time_offset': 0.05, 'max_age': 5.0,
                  'diagnostics_period': 0.2, **overrides}
        # The two-thread path (the default on CUDA) is the one with more to go wrong.
        self.node = DepthNode(namespace=namespace, overlap=True, parameter_overrides=[
            Parameter(name, value=value) for name, value in params.items()])
        self.add_node(self.node)

    def wait_inputs_matched(self, timeout: float = 5.0, compressed: bool = False) -> None:
        """Wait until the node subscribes to image (or image/compressed) and camera_info."""
        pubs = [self.compressed_pub if compressed else self.image_pub, self.info_pub]
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout), \
            'the node never subscribed to image and camera_info'

    def publish(self, frame, *, lidar: bool = True, encoding_image: Optional[Any] = None,
                age: float = 0.0, header: Optional[Header] = None,
                camera_info: Optional[CameraInfo] = None, info: bool = True) -> Header:
        """Publish camera_info, a scan (optional) and the image, all with one header.

        Args:
            frame: a `synthetic.SyntheticFrame` of WIDTH×HEIGHT.
            lidar: also publish the frame's scan (before the image).
            encoding_image: publish this Image (or CompressedImage) instead of the frame's
                rgb8 image.
            age: stamp the messages this many seconds in the past.
            header: use this header instead (overrides age).
            camera_info: publish this CameraInfo instead of the frame's.
            info: publish a camera_info at all.
        """
        camera = (camera_info if camera_info is not None else frame.camera) if info else None
        image = encoding_image if encoding_image is not None else frame.rgb
        return super().publish(image, camera, frame.lidar_points if lidar else None,
                               header=header, age=age, settle=0.02 if lidar else 0.0)

    def feed_until(self, frame, done: Callable[[], bool], timeout: float = DEADLINE,
                   **kwargs) -> bool:
        """Publish a frame every ~0.3 s until done() holds.

        Raises:
            AssertionError: done() still false after timeout seconds, naming what was
                awaited and what came back.
        """
        if super().feed_until(done, frame, timeout=timeout, **kwargs):
            return True
        received = {topic: self.count(topic) for topic in self.subscriptions}
        raise AssertionError(f'fed frames for {timeout:.0f} s, still waiting for '
                             f'{awaited(done)}; outputs received: {received}')


def feed_other_process(frame, domain_id: int, namespace: str,
                       done: Optional[Callable[[], bool]] = None, timeout: float = DEADLINE,
                       period: float = 0.1) -> bool:
    """Publish frames to a node in another process until done() holds.

    The feeder subscribes to depth/relative (so the node is not idle); done defaults to
    'a depth/relative came back'. An AssertionError says what was awaited when done() is
    still false after timeout seconds.
    """
    feeder = Feeder(namespace, domain_id=domain_id, node_name='feeder')
    try:
        feeder.subscribe(['depth/relative'], diagnostics=False)
        if done is None:
            def done() -> bool:
                return feeder.count('depth/relative') > 0
        if feeder.feed_until(done, frame.rgb, frame.camera, timeout=timeout, period=period):
            return True
        raise AssertionError(f'fed frames to {namespace} for {timeout:.0f} s, still waiting '
                             f'for {awaited(done)}; depth/relative received: '
                             f'{feeder.count("depth/relative")}')
    finally:
        feeder.close()


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
    return rig.diagnostics()


def diagnostic_statuses(rig: Rig) -> list:
    """Return every DiagnosticStatus of the rig's node so far."""
    return rig.diagnostic_statuses()


def state_id(node: DepthNode) -> int:
    """Return the lifecycle primary state id of the node."""
    return node._state_machine.current_state[0]


def assert_header(msg, header: Header) -> None:
    """Assert that a message carries the given frame_id and stamp."""
    assert msg.header.frame_id == header.frame_id
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == \
        (header.stamp.sec, header.stamp.nanosec)
