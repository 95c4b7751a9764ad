"""Where the lidar is in a camera's frame: tf2 when it is in use, else the parameters.

`TfLidarPose` listens to tf2 (when ``alignment.use_tf`` and tf2_ros is importable) and
looks up T_cam_lidar at a scan's stamp; `CameraIO.lidar_pose` falls back to
``camera.N.extrinsic`` and then ``alignment.extrinsic``.
"""

from typing import Any, Optional

from densepred_ros.camera import extrinsic_from_xyz_quat
from densepred_ros.params import NodeConfig
import numpy as np
from rclpy.time import Time

try:
    import tf2_ros
except ImportError:  # tf2_ros comes with a ROS distro, not with the PyPI message wheels
    tf2_ros = None


class TfLidarPose:
    """T_cam_lidar from tf2 on a node.

    Args:
        node: the node the tf listener subscribes on.
        config: the node's configuration (``alignment.enabled``, ``alignment.use_tf``).

    Attributes:
        active: tf2 is in use (the lookup can answer).
    """

    def __init__(self, node: Any, config: NodeConfig) -> None:
        """Start listening to tf2 when the configuration asks for it and tf2_ros exists."""
        self._buffer = None
        self._listener = None
        if not (config.alignment.enabled and config.alignment.use_tf):
            return
        if tf2_ros is None:
            node.get_logger().info('tf2_ros is not importable: using camera.N.extrinsic or '
                                   'alignment.extrinsic for the lidar pose')
            return
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)

    @property
    def active(self) -> bool:
        """Whether tf2 is in use."""
        return self._buffer is not None

    def lookup(self, scan: Any, image_frame: str) -> np.ndarray:
        """Return the 4×4 T_cam_lidar from tf2 at the scan's stamp.

        Raises:
            LookupError: tf2 does not know the transform.
        """
        try:
            tf = self._buffer.lookup_transform(
                image_frame, scan.header.frame_id, Time.from_msg(scan.header.stamp))
        except tf2_ros.TransformException as exc:
            raise LookupError(
                f'no transform {image_frame} <- {scan.header.frame_id}: {exc}') from exc
        t, q = tf.transform.translation, tf.transform.rotation
        return extrinsic_from_xyz_quat(t.x, t.y, t.z, q.x, q.y, q.z, q.w)

    def close(self) -> None:
        """Stop listening."""
        if self._listener is not None and hasattr(self._listener, 'unregister'):
            self._listener.unregister()
        self._listener = self._buffer = None


def optional_lookup(pose: Optional[TfLidarPose]) -> Any:
    """Return pose.lookup when tf2 is in use, else None (`CameraIO.lidar_pose`'s lookup)."""
    return pose.lookup if pose is not None and pose.active else None
