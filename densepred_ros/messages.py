"""ROS messages around `pipeline.DepthPipeline`: topics, QoS, decoding, encoding.

The node, the feeder (demo, soak, tests) and the bag tool name topics and message types
from here; `decode_inputs` and `encode_outputs` turn one frame's messages into the
pipeline's numpy inputs and its `FrameResult` back into messages, timing both ('decode',
'encode' in the result's timings).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from densepred_ros import decode, encode
from densepred_ros.camera import CameraModel
from densepred_ros.pipeline import (
    DEPTH_COLOR, DEPTH_IMAGE, DEPTH_INFO, DEPTH_RELATIVE, FrameResult, NORMALS_COLOR,
    NORMALS_IMAGE, POINTS, timed)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

IMAGE = 'image'
#: The compressed image topic as image_transport names it (``image_transport:=compressed``).
COMPRESSED_IMAGE = 'image/compressed'
CAMERA_INFO = 'camera_info'
LIDAR = 'lidar'
DIAGNOSTICS = '/diagnostics'
#: Input topic → message type (relative names, remapped as usual).
INPUT_TYPES = {IMAGE: Image, CAMERA_INFO: CameraInfo, LIDAR: PointCloud2}
#: Output topic → message type, for every name in `pipeline.OUTPUTS`.
OUTPUT_TYPES = {
    DEPTH_IMAGE: Image, DEPTH_INFO: CameraInfo, DEPTH_RELATIVE: Image, DEPTH_COLOR: Image,
    NORMALS_IMAGE: Image, NORMALS_COLOR: Image, POINTS: PointCloud2,
}


def stamp_seconds(stamp: Any) -> float:
    """Return a builtin_interfaces/Time as seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """Return a KEEP_LAST, volatile QoS profile with 'reliable' or 'best_effort' delivery."""
    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def diagnostic_status(name: str, hardware_id: str, summary: Any) -> DiagnosticStatus:
    """Build a DiagnosticStatus from a `diagnostics.DiagnosticSummary`."""
    return DiagnosticStatus(
        level=bytes([summary.level]), name=name, message=summary.message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in summary.values])


def diagnostic_array(name: str, hardware_id: str, summary: Any, stamp: Any) -> DiagnosticArray:
    """Build a DiagnosticArray holding one status from a `diagnostics.DiagnosticSummary`."""
    msg = DiagnosticArray(status=[diagnostic_status(name, hardware_id, summary)])
    msg.header.stamp = stamp
    return msg


def node_diagnostics(node_name: str, hardware_id: str,
                     camera_summaries: Sequence[Tuple[str, Any]],
                     model_summary: Optional[Any], stamp: Any) -> DiagnosticArray:
    """Build the node's DiagnosticArray: one status per camera, one for a shared model.

    Args:
        node_name: the node's fully qualified name.
        hardware_id: the device the model runs on.
        camera_summaries: (camera name, '' for the single camera; its
            `diagnostics.DiagnosticSummary`) per camera.
        model_summary: the shared model's summary (several cameras), or None.
        stamp: the header stamp (builtin_interfaces/Time).
    """
    statuses = [diagnostic_status(f'{node_name}: {camera or "depth"}', hardware_id, summary)
                for camera, summary in camera_summaries]
    if model_summary is not None:
        statuses.append(diagnostic_status(f'{node_name}: model', hardware_id, model_summary))
    msg = DiagnosticArray(status=statuses)
    msg.header.stamp = stamp
    return msg


@dataclass
class DecodedCamera:
    """A frame's camera and lidar points decoded from their messages.

    Attributes:
        camera: the camera, or None (no or unusable camera_info).
        lidar_points: N×3 float lidar points in the scan's frame, metres, or None.
        errors: why a camera_info or scan could not be used.
        no_points_reason: the alignment status when lidar_points is None.
        seconds: time spent decoding.
    """

    camera: Optional[CameraModel] = None
    lidar_points: Optional[np.ndarray] = None
    errors: List[str] = field(default_factory=list)
    no_points_reason: str = 'no lidar scan'
    seconds: float = 0.0


def decode_camera_and_scan(camera_info: Optional[CameraInfo], scan: Optional[PointCloud2],
                           need_points: bool = True,
                           no_scan_reason: str = 'no lidar scan') -> DecodedCamera:
    """Decode the camera_info and the scan paired with an image.

    Args:
        camera_info: the newest camera_info when the image arrived, or None.
        scan: the scan paired with the image, or None.
        need_points: decode the scan at all (False: alignment disabled).
        no_scan_reason: the alignment status to report when scan is None.

    Returns:
        The decoded inputs; a message that cannot be used is reported in `errors` (and,
        for the scan, as 'lidar scan unusable'), never raised. The scan is only decoded
        with a usable camera, as only then can it be used.
    """
    out = DecodedCamera(no_points_reason=no_scan_reason)
    timings: Dict[str, float] = {}
    with timed(timings, 'decode'):
        if camera_info is not None:
            try:
                out.camera = decode.camera_info_to_model(camera_info)
            except decode.DecodeError as exc:
                out.errors.append(f'camera_info unusable: {exc}')
        if scan is not None and need_points and out.camera is not None:
            try:
                out.lidar_points = decode.pointcloud2_to_xyz(scan)
            except decode.DecodeError as exc:
                out.errors.append(f'lidar scan unusable: {exc}')
                out.no_points_reason = 'lidar scan unusable'
    out.seconds = timings['decode']
    return out


def encode_outputs(result: FrameResult, header: Any) -> Dict[str, Any]:
    """Encode a frame's outputs as messages carrying the image's header.

    Returns:
        Output topic → message, for the wanted outputs the result holds; adds the seconds
        spent to result.timings['encode'].
    """
    msgs: Dict[str, Any] = {}
    wanted = result.wanted
    with timed(result.timings, 'encode'):
        if DEPTH_RELATIVE in wanted:
            msgs[DEPTH_RELATIVE] = encode.depth_to_image(result.relative, header)
        if result.depth_color is not None:
            msgs[DEPTH_COLOR] = encode.rgb_to_image(result.depth_color, header)
        if result.camera is not None and DEPTH_INFO in wanted:
            msgs[DEPTH_INFO] = encode.camera_info_for(
                result.camera, header, result.camera.width, result.camera.height)
        if result.metric is not None and DEPTH_IMAGE in wanted:
            msgs[DEPTH_IMAGE] = encode.depth_to_image(result.metric, header)
        if result.normals is not None and NORMALS_IMAGE in wanted:
            msgs[NORMALS_IMAGE] = encode.normals_to_image(result.normals, header)
        if result.normals_color is not None:
            msgs[NORMALS_COLOR] = encode.rgb_to_image(result.normals_color, header)
        if result.points is not None:
            msgs[POINTS] = encode.points_to_pointcloud2(result.points, header,
                                                        result.point_colors)
    return msgs
