"""One camera of the depth node: its topics, publishers, subscriptions and state.

The node serves one camera on today's topic names (``image``, ``camera_info``,
``depth/image``, ...) or, with the ``cameras`` parameter, each camera N on the same names
under ``N/``. A `CameraIO` holds what belongs to one camera: its publishers and
subscriptions, the newest camera_info, its own `pipeline.DepthPipeline` view (the shared
model(s), its own temporal alignment prior), its lidar pose fallback and its statistics.
"""

import copy
from dataclasses import dataclass
import threading
from typing import Any, Callable, Dict, List, Optional

from densepred_ros.diagnostics import NodeStatistics
from densepred_ros.messages import (
    CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, OUTPUT_TYPES)
from densepred_ros.pipeline import DepthPipeline, STAGES
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

#: lookup(scan, image frame id) -> 4×4 T_cam_lidar (tf2); raises LookupError when unknown.
Lookup = Callable[[Any, str], np.ndarray]


@dataclass(frozen=True)
class FrameInput:
    """One image with the camera_info that was newest when it arrived."""

    image: Any  # sensor_msgs Image or CompressedImage (per image_transport)
    camera_info: Optional[CameraInfo]


class CameraIO:
    """The topics and per-camera state of one camera.

    Args:
        name: the camera name ('' for the single camera on today's topic names).
        pipeline: this camera's pipeline: the shared model(s), its own aligner.
        extrinsic: 4×4 T_cam_lidar from ``camera.N.extrinsic``, or None.
        default_extrinsic: 4×4 T_cam_lidar from ``alignment.extrinsic``.
    """

    def __init__(self, name: str, pipeline: DepthPipeline, extrinsic: Optional[np.ndarray],
                 default_extrinsic: np.ndarray) -> None:
        """Create the camera's state; no ROS entity exists until `create_publishers`."""
        self.name = name
        self.prefix = f'{name}/' if name else ''
        self.pipeline = pipeline
        self.extrinsic = extrinsic
        self.default_extrinsic = default_extrinsic
        self.stats = NodeStatistics(stages=STAGES)
        self.outputs: Dict[str, Any] = {}
        self.inputs: List[Any] = []
        self.camera_info: Optional[CameraInfo] = None
        self.last_image_stamp: Optional[float] = None
        self.time_reset = threading.Event()

    @property
    def label(self) -> str:
        """The camera name for log lines ('camera' for the single camera)."""
        return self.name or 'camera'

    def topic(self, relative: str) -> str:
        """Return this camera's topic for a relative name ('image' → 'front/image')."""
        return self.prefix + relative

    def create_publishers(self, node: Any, qos: Any) -> None:
        """Create the lifecycle publishers of every output."""
        self.outputs = {name: node.create_lifecycle_publisher(msg_type, self.topic(name), qos)
                        for name, msg_type in OUTPUT_TYPES.items()}

    def subscribe(self, node: Any, transport: str, qos: Any,
                  on_image: Callable[['CameraIO', Any], None]) -> None:
        """Subscribe to the camera's image (raw or compressed) and camera_info."""
        image_type, image_topic = ((CompressedImage, COMPRESSED_IMAGE) if transport ==
                                   'compressed' else (Image, IMAGE))
        self.last_image_stamp = None
        self.time_reset.clear()
        self.inputs = [
            node.create_subscription(image_type, self.topic(image_topic),
                                     lambda msg: on_image(self, msg), qos),
            node.create_subscription(CameraInfo, self.topic(CAMERA_INFO),
                                     self._on_camera_info, qos),
        ]

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg
        self.stats.record_camera_info()

    def unsubscribe(self, node: Any) -> None:
        """Remove the subscriptions and forget the camera_info."""
        for sub in self.inputs:
            node.destroy_subscription(sub)
        self.inputs = []
        self.camera_info = None

    def destroy_publishers(self, node: Any) -> None:
        """Remove the publishers."""
        for pub in self.outputs.values():
            node.destroy_lifecycle_publisher(pub)
        self.outputs = {}

    def wanted(self) -> set:
        """Return the outputs that have a subscriber."""
        return {name for name, pub in self.outputs.items() if pub.get_subscription_count() > 0}

    def lidar_pose(self, scan: Any, image_frame: str, lookup: Optional[Lookup]) -> np.ndarray:
        """Return T_cam_lidar: tf2 (lookup), else camera.N.extrinsic, else alignment.extrinsic.

        Raises:
            LookupError: tf2 is in use, does not know the transform, and the camera has no
                extrinsic of its own.
        """
        if lookup is not None:
            try:
                return lookup(scan, image_frame)
            except LookupError:
                if self.extrinsic is None:
                    raise
        return self.extrinsic if self.extrinsic is not None else self.default_extrinsic


def camera_pipeline(shared: DepthPipeline) -> DepthPipeline:
    """Return a pipeline on the shared model(s) with an aligner of its own (one camera's)."""
    aligner = copy.deepcopy(shared.aligner) if shared.aligner is not None else None
    return DepthPipeline(shared.predictor, shared.output, aligner, shared.normals_predictor,
                         device_geometry=shared.device_geometry)
