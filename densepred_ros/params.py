"""The depth node's parameters: declared in one table, read once into a validated config.

`PARAMETERS` lists every parameter with its default, description and allowed range.
`NodeConfig.from_parameters(mapping)` reads them into a frozen `NodeConfig`, raising
`ConfigError` (a ValueError) that names the bad parameter. No ROS here: `node_params`
declares the table on an rclpy node and reads a node's values through `from_parameters`.
"""

from dataclasses import dataclass, field
import math
import re
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from densepred_ros.alignment import AlignmentConfig, CORRECTIONS
from densepred_ros.models.base import (
    DTYPES, options_from, parse_backend_spec, parse_precision_spec, PredictorOptions)

FAMILIES = ('auto', 'lotus', 'marigold')
RELIABILITIES = ('best_effort', 'reliable')
IMAGE_TRANSPORTS = ('raw', 'compressed')
BATCHING = ('auto', 'off')
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
MAX_PROCESSING_RESOLUTION = 4096
# A lidar (x forward, y left, z up) at the camera's origin: camera x = -lidar y,
# camera y = -lidar z, camera z = lidar x.
DEFAULT_EXTRINSIC = (0.0, 0.0, 0.0, 0.5, -0.5, 0.5, 0.5)


class ConfigError(ValueError):
    """A parameter value is invalid; the message names the parameter and the value."""


class ParameterSpec(NamedTuple):
    """One declared parameter.

    Attributes:
        name: dotted ROS parameter name.
        default: default value; its Python type fixes the ROS parameter type (a tuple:
            a string array).
        description: shown by ``ros2 param describe``.
        bounds: (low, high) inclusive for numbers (a FloatingPoint/IntegerRange), or None.
        choices: allowed string values, or None.
    """

    name: str
    default: Any
    description: str
    bounds: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None


PARAMETERS: Tuple[ParameterSpec, ...] = (
    ParameterSpec('model.path', '',
                  'Depth, disparity or log-depth checkpoint: a local diffusers folder or a hub id '
                  '(required).'),
    ParameterSpec('model.normals_path', '',
                  'Optional normals checkpoint; when empty, normals are computed from the '
                  'metric depth.'),
    ParameterSpec('model.family', 'auto', 'Model family: auto (from the checkpoint), lotus '
                  'or marigold.', choices=FAMILIES),
    ParameterSpec('model.backend', 'torch',
                  'Inference backend of the Lotus UNet and VAE: torch, onnxruntime or '
                  'tensorrt, or component=backend pairs such as '
                  '"unet=tensorrt,vae_decoder=torch" (components: vae_encoder, unet, '
                  'vae_decoder; unnamed ones use torch). onnxruntime and tensorrt need '
                  'model.export_dir; a backend that cannot run falls back along tensorrt -> '
                  'onnxruntime -> torch CUDA -> torch CPU, logged. Marigold runs on torch.'),
    ParameterSpec('model.export_dir', '',
                  'Folder written by `densepred export` for model.path at the processing '
                  'size the camera images are resized to (needed by onnxruntime/tensorrt).'),
    ParameterSpec('model.normals_export_dir', '',
                  'The same for model.normals_path; when empty the normals model runs on '
                  'torch.'),
    ParameterSpec('model.engine_cache_dir', '',
                  'TensorRT engine cache; empty = ~/.cache/densepred_ros/tensorrt. Engines '
                  'are built on first use (minutes) and reused while GPU, TensorRT version, '
                  'shapes, precision and ONNX file match.'),
    ParameterSpec('model.engine_precision', 'fp16',
                  'TensorRT engine precision: fp16 or fp32, or component=precision pairs '
                  'such as "unet=fp16,vae_decoder=fp32" (unnamed components: fp16).'),
    ParameterSpec('model.rebuild_engines', False,
                  'Rebuild the TensorRT engines even when matching ones are cached.'),
    ParameterSpec('model.ort_providers', '',
                  'ONNX Runtime providers in order of preference, comma separated; empty = '
                  'TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider '
                  '(those installed).'),
    ParameterSpec('model.threads', 0,
                  'CPU threads for torch and ONNX Runtime; 0 = the default of the libraries.',
                  bounds=(0, 1024)),
    ParameterSpec('model.device', 'auto',
                  'Torch device: auto (CUDA when present), cpu, cuda or cuda:N.'),
    ParameterSpec('model.dtype', 'auto',
                  'Compute precision: auto (fp16 on CUDA; on the CPU bf16 where it is '
                  'native, else fp32, with channels-last layout), fp32 (exact), fp16 or '
                  'bf16.', choices=DTYPES),
    ParameterSpec('model.processing_resolution', -1,
                  'Longest image edge the model runs at, pixels; -1 = the model default, '
                  '0 = the input image size.', bounds=(-1, MAX_PROCESSING_RESOLUTION)),
    ParameterSpec('model.seed', 0, 'Seed of every random draw (noise, latents).',
                  bounds=(0, 2**31 - 1)),
    ParameterSpec('model.allow_pickle', False,
                  'Allow pickle-based weight files (unsafe with untrusted checkpoints).'),
    ParameterSpec('alignment.enabled', True,
                  'Scale the relative prediction to metres with the lidar.'),
    ParameterSpec('alignment.use_tf', True,
                  'Look the lidar pose up in tf2 (camera optical frame <- lidar frame at the '
                  'scan stamp) when tf2_ros is available; otherwise use alignment.extrinsic.'),
    ParameterSpec('alignment.extrinsic', list(DEFAULT_EXTRINSIC),
                  'Lidar frame pose in the camera optical frame, [x, y, z, qx, qy, qz, qw] '
                  '(metres, unit quaternion): p_cam = R p_lidar + t. The default is a lidar '
                  'at the camera origin with the usual body axes (x forward, z up).'),
    ParameterSpec('alignment.max_time_offset', 0.1,
                  'Largest |image stamp - scan stamp| for pairing an image with a scan, s.',
                  bounds=(0.0, 10.0)),
    ParameterSpec('alignment.far_limit', 80.0,
                  'Aligned depths beyond this become +inf (REP 117/118), metres.',
                  bounds=(0.1, 10000.0)),
    ParameterSpec('alignment.smoothing', 0.5,
                  'Weight of a new frame in the temporal filter of the metric scale '
                  '(1 = no smoothing).', bounds=(0.01, 1.0)),
    ParameterSpec('alignment.correction', 'local',
                  'After the global scale and shift: none, or local (a smooth, edge-aware '
                  'correction spread from the lidar residuals, fading back to the global fit '
                  'away from the points; see docs/local-correction.md).', choices=CORRECTIONS),
    ParameterSpec('alignment.correction_cell', 8,
                  'Pixels between the nodes of the local correction grid (finer = more '
                  'detail, more time).', bounds=(1, 256)),
    ParameterSpec('alignment.correction_smoothness', 0.05,
                  'Smoothness of the local correction relative to its data term (larger = '
                  'smoother).', bounds=(1e-6, 1e6)),
    ParameterSpec('alignment.correction_reach', 48.0,
                  'Distance in pixels over which the local correction fades back to the '
                  'global fit away from lidar points.', bounds=(1.0, 1e5)),
    ParameterSpec('alignment.correction_edge', 0.1,
                  'Relative depth step of the prediction (0.1 = 10 %) treated as a depth edge '
                  'that the local correction does not cross.', bounds=(1e-3, 10.0)),
    ParameterSpec('output.points_stride', 1,
                  'Decimation of the point cloud: every Nth pixel on both axes.',
                  bounds=(1, 64)),
    ParameterSpec('output.max_depth', 50.0,
                  'Points farther than this become NaN in the point cloud, metres.',
                  bounds=(0.1, 10000.0)),
    ParameterSpec('output.publish_points', True, 'Publish the points PointCloud2.'),
    ParameterSpec('output.edge_filter', True,
                  'Remove flying pixels (depths in mid-air across a depth edge) from the points '
                  'and set them to NaN in depth/image.'),
    ParameterSpec('output.edge_threshold', 0.05,
                  'Relative depth misfit (0.05 = 5 %) above which the edge filter marks a '
                  'pixel that neither side of it explains as a flying pixel.',
                  bounds=(1e-3, 1.0)),
    ParameterSpec('output.points_color', True,
                  'Add the packed rgb field (colours from the input image) to the points.'),
    ParameterSpec('max_age', 1.0,
                  'Drop frames older than this when inference starts (node clock minus image '
                  'stamp), s; 0 disables the check.', bounds=(0.0, 3600.0)),
    ParameterSpec('max_consecutive_failures', 5,
                  'Frames in a row that may fail in the model (an unexpected error, not a bad '
                  'input message) before the node gives up: it logs an ERROR, reports ERROR '
                  'on /diagnostics and deactivates itself (activate again to retry); '
                  '0 = never give up, only count.', bounds=(0, 1000)),
    ParameterSpec('qos.input_reliability', 'best_effort',
                  'Reliability of the image, camera_info and lidar subscriptions. '
                  'best_effort matches every publisher.', choices=RELIABILITIES),
    ParameterSpec('qos.output_reliability', 'reliable',
                  'Reliability of the outputs. reliable is what RViz and message_filters '
                  'expect by default.', choices=RELIABILITIES),
    ParameterSpec('qos.depth', 5, 'History depth (KEEP_LAST) of subscriptions and publishers.',
                  bounds=(1, 100)),
    ParameterSpec('diagnostics_period', 1.0, 'Period of the /diagnostics status, s.',
                  bounds=(0.1, 60.0)),
    ParameterSpec('image_transport', 'raw',
                  'Camera input, as image_transport names it: raw subscribes to image '
                  '(sensor_msgs/Image), compressed to image/compressed '
                  '(sensor_msgs/CompressedImage, JPEG or PNG).', choices=IMAGE_TRANSPORTS),
    ParameterSpec('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS,
                  'Largest width·height of a compressed image; a header claiming more is '
                  'skipped undecoded (decompression bomb) and counted.',
                  bounds=(1, 2 ** 31 - 1)),
    ParameterSpec('cameras', (),
                  'Camera names served by one model (string array, e.g. [front, left, '
                  'right]): camera N reads N/image (or N/image/compressed) and '
                  'N/camera_info and publishes N/depth/image, ..., N/points; its lidar pose '
                  'is tf2, else camera.N.extrinsic, else alignment.extrinsic. Empty: one '
                  'camera on image and camera_info.'),
    ParameterSpec('batching', 'auto',
                  'How the frames of one turn run with several cameras: auto = one model '
                  'call per processing size where every component runs on torch (an '
                  'ONNX/TensorRT export has a batch of one: per-frame loop, reason logged); '
                  "off = one frame after another, so a camera's result never depends on the "
                  'frames that shared its turn.', choices=BATCHING),
    ParameterSpec('parallel_batches', 0,
                  'Turns that run at once with several cameras, each on other cameras and '
                  'of up to ceil(cameras / n) frames, on threads sharing the one model; '
                  'torch then gets CPU cores / n threads each unless model.threads is set. '
                  '0 = auto: on the CPU with batching auto up to min(cameras, CPU cores), '
                  'one of them while it keeps up with the cameras and all when it does not; '
                  'else 1 (CUDA: one batch per turn; TensorRT and Marigold: 1).',
                  bounds=(0, 64)),
    ParameterSpec('autostart', False,
                  'Configure and activate at start-up instead of waiting for lifecycle '
                  'transitions.'),
)

_SPECS: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class ModelConfig:
    """Which checkpoint(s) to load and how to run them (see PARAMETERS for meanings)."""

    path: str
    normals_path: str
    family: str
    backend: str
    device: str
    dtype: str
    processing_resolution: Optional[int]
    seed: int
    allow_pickle: bool
    export_dir: str = ''
    normals_export_dir: str = ''
    engine_cache_dir: str = ''
    engine_precision: str = 'fp16'
    rebuild_engines: bool = False
    ort_providers: str = ''
    threads: int = 0

    def predictor_options(self, normals: bool = False) -> PredictorOptions:
        """Return the run-time options of the depth model, or of the normals model.

        The normals model uses the backend only with its own export
        (`normals_export_dir`); without one it runs on torch.
        """
        export_dir = self.normals_export_dir if normals else self.export_dir
        return options_from(self, 'node', export_dir=export_dir,
                            backend=self.backend if export_dir else 'torch')


@dataclass(frozen=True)
class AlignmentSettings:
    """Lidar alignment settings; extrinsic is (x, y, z, qx, qy, qz, qw), lidar in camera."""

    enabled: bool
    use_tf: bool
    extrinsic: Tuple[float, ...]
    max_time_offset: float
    far_limit: float
    smoothing: float
    correction: str = 'local'
    correction_cell: int = 8
    correction_smoothness: float = 0.05
    correction_reach: float = 48.0
    correction_edge: float = 0.1

    def alignment_config(self) -> AlignmentConfig:
        """Return the `alignment.AlignmentConfig` of these settings (the rest at defaults)."""
        return AlignmentConfig(
            far_limit=self.far_limit, smoothing=self.smoothing, correction=self.correction,
            correction_cell=self.correction_cell,
            correction_smoothness=self.correction_smoothness,
            correction_reach=self.correction_reach, correction_edge=self.correction_edge)


@dataclass(frozen=True)
class OutputConfig:
    """What is published and how the point cloud is built."""

    points_stride: int
    max_depth: float
    publish_points: bool
    points_color: bool
    edge_filter: bool = True
    edge_threshold: float = 0.05


@dataclass(frozen=True)
class QosConfig:
    """Subscription and publisher QoS: reliability names and the history depth."""

    input_reliability: str
    output_reliability: str
    depth: int


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node reads from its parameters, validated.

    Attributes:
        model, alignment, output, qos: the parameter groups.
        max_age: seconds; frames older than this are dropped (0 = never).
        max_consecutive_failures: failed frames in a row before the node deactivates
            itself (0 = never).
        diagnostics_period: seconds between /diagnostics messages.
        autostart: configure and activate at start-up.
        image_transport: 'raw' (sensor_msgs/Image on image) or 'compressed'
            (sensor_msgs/CompressedImage on image/compressed).
        max_image_pixels: pixel limit of a compressed image's header.
        cameras: the camera names (empty: one camera on today's topic names).
        camera_extrinsics: camera name → its own lidar pose [x, y, z, qx, qy, qz, qw]
            (``camera.N.extrinsic``), for the cameras that have one.
        batching: 'auto' (a turn's frames as one batch where the backend allows it) or
            'off' (one after another).
        parallel_batches: turns run at once (0 = auto, see `scheduler.parallel_lanes`).
    """

    model: ModelConfig
    alignment: AlignmentSettings
    output: OutputConfig
    qos: QosConfig
    max_age: float
    diagnostics_period: float
    autostart: bool
    max_consecutive_failures: int = 5
    image_transport: str = 'raw'
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    cameras: Tuple[str, ...] = ()
    camera_extrinsics: Mapping[str, Tuple[float, ...]] = field(default_factory=dict)
    batching: str = 'auto'
    parallel_batches: int = 0

    @staticmethod
    def from_parameters(values: Mapping[str, Any]) -> 'NodeConfig':
        """Build a config from parameter values; missing names take their defaults.

        Raises:
            ConfigError: an unknown name, a wrong type, or a value outside its range or
                choices; the message names the parameter and the value.
        """
        per_camera = {name: value for name, value in values.items()
                      if name.startswith('camera.') and name.endswith('.extrinsic')}
        unknown = sorted(set(values) - set(_SPECS) - set(per_camera))
        if unknown:
            raise ConfigError(f'unknown parameter(s): {", ".join(unknown)}')
        v = {name: _checked(spec, values.get(name, spec.default)) for name, spec in
             _SPECS.items()}
        if not v['model.path']:
            raise ConfigError('model.path is empty: set it to a checkpoint folder or hub id')
        try:
            requested = parse_backend_spec(v['model.backend'])
        except ValueError as exc:
            raise ConfigError(f'model.backend: {exc}') from exc
        try:
            parse_precision_spec(v['model.engine_precision'])
        except ValueError as exc:
            raise ConfigError(f'model.engine_precision: {exc}') from exc
        if set(requested.values()) != {'torch'} and not v['model.export_dir']:
            raise ConfigError(f"model.backend '{v['model.backend']}' needs model.export_dir, "
                              'the folder written by `densepred export --model <model.path> '
                              '--height H --width W --output DIR`')
        device = v['model.device']
        if not (device in ('auto', 'cpu', 'cuda') or _is_cuda_index(device)):
            raise ConfigError(f'model.device must be auto, cpu, cuda or cuda:N, got {device!r}')
        resolution = v['model.processing_resolution']
        return NodeConfig(
            model=ModelConfig(
                path=v['model.path'], normals_path=v['model.normals_path'],
                family=v['model.family'], backend=v['model.backend'], device=device,
                dtype=v['model.dtype'],
                processing_resolution=None if resolution < 0 else resolution,
                seed=v['model.seed'], allow_pickle=v['model.allow_pickle'],
                export_dir=v['model.export_dir'],
                normals_export_dir=v['model.normals_export_dir'],
                engine_cache_dir=v['model.engine_cache_dir'],
                engine_precision=v['model.engine_precision'],
                rebuild_engines=v['model.rebuild_engines'],
                ort_providers=v['model.ort_providers'], threads=v['model.threads']),
            alignment=AlignmentSettings(
                enabled=v['alignment.enabled'], use_tf=v['alignment.use_tf'],
                extrinsic=_extrinsic(v['alignment.extrinsic']),
                max_time_offset=v['alignment.max_time_offset'],
                far_limit=v['alignment.far_limit'], smoothing=v['alignment.smoothing'],
                correction=v['alignment.correction'],
                correction_cell=v['alignment.correction_cell'],
                correction_smoothness=v['alignment.correction_smoothness'],
                correction_reach=v['alignment.correction_reach'],
                correction_edge=v['alignment.correction_edge']),
            output=OutputConfig(
                points_stride=v['output.points_stride'], max_depth=v['output.max_depth'],
                publish_points=v['output.publish_points'],
                points_color=v['output.points_color'], edge_filter=v['output.edge_filter'],
                edge_threshold=v['output.edge_threshold']),
            qos=QosConfig(input_reliability=v['qos.input_reliability'],
                          output_reliability=v['qos.output_reliability'],
                          depth=v['qos.depth']),
            max_age=v['max_age'], diagnostics_period=v['diagnostics_period'],
            autostart=v['autostart'],
            max_consecutive_failures=v['max_consecutive_failures'],
            image_transport=v['image_transport'],
            max_image_pixels=v['max_image_pixels'],
            cameras=v['cameras'],
            camera_extrinsics=_camera_extrinsics(v['cameras'], per_camera),
            batching=v['batching'], parallel_batches=v['parallel_batches'])


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(':')
    return prefix == 'cuda' and index.isdigit()


def _checked(spec: ParameterSpec, value: Any) -> Any:
    """Return the value converted to the spec's type, or raise ConfigError."""
    default = spec.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f'{spec.name} must be true or false, got {value!r}')
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{spec.name} must be an integer, got {value!r}')
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{spec.name} must be a number, got {value!r}')
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f'{spec.name} must be finite, got {value!r}')
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f'{spec.name} must be a string, got {value!r}')
        value = value.strip()
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f'{spec.name} must be a list of strings, got {value!r}')
        value = tuple(x.strip() for x in value)
    elif isinstance(default, list):
        try:
            value = [float(x) for x in value]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f'{spec.name} must be a list of numbers, got {value!r}') from exc
    if spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
        raise ConfigError(f'{spec.name}={value!r} is outside [{spec.bounds[0]}, '
                          f'{spec.bounds[1]}]')
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f'{spec.name}={value!r} is not one of {", ".join(spec.choices)}')
    return value


_CAMERA_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*')


def valid_camera_name(name: str) -> bool:
    """Return whether name is a relative ROS name usable as a camera's topic prefix.

    Tokens of letters, digits and underscores separated by '/', each starting with a
    letter, no '__' (the rules of rcl's topic name validation for a relative name
    without substitutions).
    """
    return bool(_CAMERA_NAME.fullmatch(name)) and '__' not in name


def camera_extrinsic_parameter(camera: str) -> str:
    """Return the name of a camera's lidar pose parameter: ``camera.<name>.extrinsic``."""
    return f'camera.{camera.replace("/", ".")}.extrinsic'


def _camera_extrinsics(cameras: Tuple[str, ...], values: Mapping[str, Any]
                       ) -> Dict[str, Tuple[float, ...]]:
    """Check the camera names and their extrinsics; return name → extrinsic."""
    seen = set()
    for camera in cameras:
        if not valid_camera_name(camera):
            raise ConfigError(f'cameras: {camera!r} is not a valid relative ROS name '
                              f'(letters, digits, _ and /, each part starting with a letter)')
        if camera in seen:
            raise ConfigError(f'cameras: {camera!r} is given twice')
        seen.add(camera)
    names = {camera_extrinsic_parameter(c): c for c in cameras}
    out: Dict[str, Tuple[float, ...]] = {}
    for name, value in values.items():
        if name not in names:
            raise ConfigError(f'{name} names no camera in cameras={list(cameras)!r}')
        if value is None:
            continue
        try:
            numbers = [float(x) for x in value]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f'{name} must be a list of numbers, got {value!r}') from exc
        out[names[name]] = _extrinsic(numbers, name)
    return out


def _extrinsic(values: list, name: str = 'alignment.extrinsic') -> Tuple[float, ...]:
    """Check [x, y, z, qx, qy, qz, qw] and return it with the quaternion normalised."""
    if len(values) != 7 or not all(math.isfinite(x) for x in values):
        raise ConfigError(f'{name} must be 7 finite numbers [x, y, z, qx, qy, '
                          f'qz, qw], got {values!r}')
    norm = math.sqrt(sum(q * q for q in values[3:]))
    if abs(norm - 1.0) > 1e-3:
        raise ConfigError(f'{name} quaternion {values[3:]!r} has norm '
                          f'{norm:.6g}, expected a unit quaternion')
    return tuple(values[:3]) + tuple(q / norm for q in values[3:])
