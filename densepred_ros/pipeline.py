"""The per-frame work of the depth node, free of ROS: numpy in, numpy out.

One frame goes predict → project → align → normals → colour maps → points. `DepthPipeline`
does it in two steps so that a caller can overlap them across frames: `infer` (the
model(s): GPU or CPU heavy, no state) and `finish` (everything after it, which carries
the alignment filter from frame to frame); `process` runs both. The node, the demo, the
soak and bench scripts and the bag tool all run frames through this class; decoding
and encoding ROS messages stays outside it (`messages.py`).

With `device_geometry` on (by default when the model runs on CUDA), normals from depth,
colour maps and points are computed with torch on the prediction's device
(`geometry_torch`, imported only then) from the host's aligned metric depth, uploaded
once; each output comes back to the host once, as numpy, for encoding.

Conventions: images are H×W×3 uint8 RGB; depth follows REP 118 (float32 metres along the
optical axis, NaN unknown, +inf beyond range); points and normals are in the camera
optical frame (REP 103: x right, y down, z forward), metres.
"""

from dataclasses import dataclass, field
import inspect
import time
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Union

from densepred_ros import geometry
from densepred_ros.alignment import AlignmentResult, TemporalAligner
from densepred_ros.camera import CameraModel, project_points, transform_points
from densepred_ros.params import ConfigError, NodeConfig, OutputConfig
import numpy as np

DEPTH_IMAGE = 'depth/image'
DEPTH_INFO = 'depth/camera_info'
DEPTH_RELATIVE = 'depth/relative'
DEPTH_COLOR = 'depth/color'
NORMALS_IMAGE = 'normals/image'
NORMALS_COLOR = 'normals/color'
POINTS = 'points'
#: Every output of a frame, by the topic name the node publishes it on.
OUTPUTS = (DEPTH_IMAGE, DEPTH_INFO, DEPTH_RELATIVE, DEPTH_COLOR, NORMALS_IMAGE,
           NORMALS_COLOR, POINTS)
NORMALS_OUTPUTS = frozenset({NORMALS_IMAGE, NORMALS_COLOR})
#: Per-frame stages, in order; `FrameResult.timings` and /diagnostics use these names.
STAGES = ('decode', 'predict', 'project', 'align', 'normals', 'colour maps', 'points',
          'encode')


def depth_order(values: np.ndarray, space: str) -> np.ndarray:
    """Return relative values ordered like depth (larger = farther), for display.

    The one display rule for relative predictions: disparity (large = near) is shown as
    1 − d so a colour map means the same for every space; depth and log-depth are
    already ordered like depth. Colour maps scale to the values' own range, so only the
    order matters.

    Args:
        values: H×W relative prediction in [0, 1].
        space: 'depth', 'disparity' or 'log_depth'.
    """
    return 1.0 - values if space == 'disparity' else values


@dataclass
class Inference:
    """What the model(s) produced for one frame (`DepthPipeline.infer`).

    Attributes:
        rgb: the H×W×3 uint8 input image.
        space: the depth model's space: 'depth', 'disparity' or 'log_depth'.
        relative: H×W float32 in [0, 1], affine-invariant in `space`.
        normals: H×W×3 float32 unit normals from the normals model (optical frame, NaN
            unknown), or None (no normals model, or no normals output wanted).
        wanted: the outputs asked for.
        timings: seconds per stage so far ('predict', and 'decode' when the caller adds it).
        relative_tensor, normals_tensor: `relative` and `normals` as torch tensors on the
            model's device when the model handed them out (`Prediction.tensor`), else None.
    """

    rgb: np.ndarray
    space: str
    relative: np.ndarray
    normals: Optional[np.ndarray]
    wanted: FrozenSet[str]
    timings: Dict[str, float] = field(default_factory=dict)
    relative_tensor: Any = None
    normals_tensor: Any = None


@dataclass
class FrameResult:
    """Everything `DepthPipeline` computed for one frame; None where not computed.

    Attributes:
        space: the depth model's space: 'depth', 'disparity' or 'log_depth'.
        relative: H×W float32 relative prediction in [0, 1] (always present).
        wanted: the output names (`OUTPUTS`) asked for; `messages.encode_outputs` encodes
            only those.
        camera: the camera scaled to the image size, or None without a usable camera.
        metric: H×W float32 metric depth, metres (REP 118: NaN unknown, +inf beyond the
            alignment's far limit), or None when not aligned.
        normals: H×W×3 float32 unit normals, optical frame, NaN unknown: from the normals
            model, else from the metric depth; None when neither is available or wanted.
        depth_color: H×W×3 uint8 picture of the metric depth, else of the relative
            prediction in depth order (`depth_order`); near is warm.
        normals_color: H×W×3 uint8 picture of the normals (`geometry.colorize_normals`).
        points: h×w×3 float32 organized points, metres, optical frame, every
            `points_stride`-th pixel; NaN beyond `max_depth` or unknown.
        point_colors: h×w×3 uint8 colours of the points (input image), or None.
        alignment: the fit, when one was attempted.
        alignment_reason: why there is no metric depth ('' when aligned).
        input_errors: why the camera or the lidar points could not be used (the frame went
            on without them).
        timings: seconds per stage (names in `STAGES`); stages not run are absent.
    """

    space: str
    relative: np.ndarray
    wanted: FrozenSet[str] = frozenset(OUTPUTS)
    camera: Optional[CameraModel] = None
    metric: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None
    depth_color: Optional[np.ndarray] = None
    normals_color: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    point_colors: Optional[np.ndarray] = None
    alignment: Optional[AlignmentResult] = None
    alignment_reason: str = ''
    input_errors: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def aligned(self) -> bool:
        """True when `metric` holds metric depth."""
        return self.metric is not None

    @property
    def inference_time(self) -> float:
        """Seconds spent in the model(s)."""
        return self.timings.get('predict', 0.0)


class _Timer:
    """Adds the seconds spent in a `with` block to timings[stage]."""

    def __init__(self, timings: Dict[str, float], stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        elapsed = time.perf_counter() - self.start
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + elapsed


def timed(timings: Dict[str, float], stage: str) -> _Timer:
    """Return a context manager adding its block's duration (s) to timings[stage]."""
    return _Timer(timings, stage)


class DepthPipeline:
    """The per-frame work: image (+ camera, lidar points) in, dense outputs out.

    Args:
        predictor: the depth, disparity or log-depth model (`models.Predictor`).
        output: point cloud settings (`params.OutputConfig`).
        aligner: metric alignment with a temporal prior, or None to never align.
        normals_predictor: optional normals model; without it normals come from the
            metric depth.
        device_geometry: compute normals from depth, colour maps and points with torch on
            the model's device: 'auto' (on when the depth model runs on CUDA), True (also
            on the CPU, with CPU tensors) or False (numpy only).

    Raises:
        ValueError: device_geometry is not 'auto', True or False.
    """

    def __init__(self, predictor: Any, output: OutputConfig,
                 aligner: Optional[TemporalAligner] = None,
                 normals_predictor: Any = None,
                 device_geometry: Union[bool, str] = 'auto') -> None:
        """Keep the models and settings."""
        if device_geometry not in ('auto', True, False):
            raise ValueError(f"device_geometry must be 'auto', True or False, "
                             f'got {device_geometry!r}')
        self.predictor = predictor
        self.output = output
        self.aligner = aligner
        self.normals_predictor = normals_predictor
        if device_geometry == 'auto':
            device_geometry = self.device_label().split(':')[0] == 'cuda'
        self.device_geometry = bool(device_geometry)
        # Which models hand out their prediction as a device tensor, decided once.
        self._keeps_tensor = {
            id(model) for model in (predictor, normals_predictor)
            if model is not None and self.device_geometry and _accepts_keep_tensor(model)}
        self._threads_before_lanes: Optional[int] = None
        self._cores = 1

    @property
    def space(self) -> str:
        """The depth model's space: 'depth', 'disparity' or 'log_depth'."""
        return self.predictor.spec.space

    def backend_label(self) -> str:
        """Return what runs each component, e.g. 'vae_encoder=torch/cpu,unet=onnxruntime/cpu'.

        '' for a predictor that does not report its components (e.g. Marigold).
        """
        choices = getattr(self.predictor, 'backend_choices', None) or {}
        return ','.join(f'{c.component}={c.backend}/{c.device}' for c in choices.values())

    def device_label(self) -> str:
        """Return the depth model's device, e.g. 'cpu' or 'cuda:0' ('' when unknown)."""
        return str(getattr(self.predictor, 'device', ''))

    def close(self) -> None:
        """Free the model(s)."""
        self.predictor.close()
        if self.normals_predictor is not None:
            self.normals_predictor.close()

    def process(self, rgb: np.ndarray, camera: Optional[CameraModel] = None,
                lidar_points: Optional[np.ndarray] = None,
                T_cam_lidar: Optional[np.ndarray] = None,
                wanted: Optional[Iterable[str]] = None,
                no_points_reason: str = 'no lidar scan') -> FrameResult:
        """Run one frame: `infer` then `finish` (see them for the arguments)."""
        return self.finish(self.infer(rgb, wanted), camera, lidar_points, T_cam_lidar,
                           no_points_reason)

    def infer(self, rgb: np.ndarray, wanted: Optional[Iterable[str]] = None) -> Inference:
        """Run the model(s) on one image.

        Args:
            rgb: H×W×3 uint8 RGB image.
            wanted: output names (`OUTPUTS`) to compute; None = all. The normals model
                runs only when a normals output is wanted.

        Raises:
            Whatever the model raises.
        """
        wanted = frozenset(OUTPUTS if wanted is None else wanted)
        timings: Dict[str, float] = {}
        with timed(timings, 'predict'):
            depth = self._predict(self.predictor, rgb)
            normals = None
            if self.normals_predictor is not None and wanted & NORMALS_OUTPUTS:
                normals = self._predict(self.normals_predictor, rgb)
        return Inference(rgb, self.space, depth.values,
                         None if normals is None else normals.values, wanted, timings,
                         relative_tensor=depth.tensor,
                         normals_tensor=None if normals is None else normals.tensor)

    def _models(self) -> List[Any]:
        """Return [(name, predictor)] of the depth model and the normals model, if any."""
        return [(name, model) for name, model in (('model', self.predictor),
                                                  ('normals model', self.normals_predictor))
                if model is not None]

    def batching_reason(self) -> str:
        """Return '' when `infer_batch` runs a turn as one batch, else why it loops."""
        for name, model in self._models():
            if not callable(getattr(model, 'predict_batch', None)):
                return f'the {name} ({model.spec.family}) predicts one frame at a time'
            reason = getattr(model, 'batching_reason', '')
            if reason:
                return f'{name}: {reason}'
        return ''

    def concurrency_reason(self) -> str:
        """Return '' when several threads may run `infer_batch` at once, else why not."""
        for name, model in self._models():
            reason = getattr(model, 'concurrency_reason', None)
            if reason is None:
                return f'the {name} ({model.spec.family}) runs one call at a time'
            if reason:
                return f'{name}: {reason}'
        return ''

    def share_cpu(self, lanes: int) -> int:
        """Give the calling thread its share of the CPU cores for `lanes` calling threads.

        torch's intra-op thread count is kept per calling thread: `lanes` threads with the
        default (one per core) would run lanes × cores threads. On the CPU, unless
        model.threads fixed the count, the calling thread gets cores // lanes threads (at
        least 1), or torch's default for one lane. Cheap when nothing changes: each lane
        calls it before each batch.

        Returns:
            the calling thread's intra-op thread count now.
        """
        import torch   # loaded with the model already
        device = getattr(self.predictor, 'device', None)
        options = getattr(self.predictor, 'options', None)
        if getattr(device, 'type', '') != 'cpu' or getattr(options, 'threads', 0) != 0:
            return torch.get_num_threads()
        if self._threads_before_lanes is None:
            from densepred_ros.scheduler import usable_cores
            self._threads_before_lanes = torch.get_num_threads()
            self._cores = usable_cores()
        wanted = (max(1, self._cores // lanes) if lanes > 1
                  else self._threads_before_lanes)
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
        return wanted

    def infer_batch(self, images: Sequence[np.ndarray],
                    wanted: Sequence[Optional[Iterable[str]]]) -> List[Inference]:
        """Run the model(s) once on several images (of any cameras sharing the models).

        Images of one processing size go through each model as one batch
        (`models.LotusPredictor.predict_batch`); the normals model sees only the images
        that want a normals output. Each Inference's 'predict' time is the whole call's.

        Args:
            images: H×W×3 uint8 RGB images.
            wanted: for each image, its output names (None = all).

        Raises:
            ValueError: `batching_reason` is not empty, or the lengths differ.
            Whatever the model raises.
        """
        reason = self.batching_reason()
        if reason:
            raise ValueError(f'cannot batch: {reason}')
        if len(images) != len(wanted):
            raise ValueError(f'{len(images)} images but {len(wanted)} output sets')
        sets = [frozenset(OUTPUTS if w is None else w) for w in wanted]
        timings: Dict[str, float] = {}
        with timed(timings, 'predict'):
            depth = self._predict_batch(self.predictor, images)
            normals: List[Any] = [None] * len(images)
            if self.normals_predictor is not None:
                chosen = [i for i, w in enumerate(sets) if w & NORMALS_OUTPUTS]
                if chosen:
                    for i, prediction in zip(chosen, self._predict_batch(
                            self.normals_predictor, [images[i] for i in chosen])):
                        normals[i] = prediction
        return [Inference(rgb, self.space, d.values, None if n is None else n.values, w,
                          dict(timings), relative_tensor=d.tensor,
                          normals_tensor=None if n is None else n.tensor)
                for rgb, d, n, w in zip(images, depth, normals, sets)]

    def _predict_batch(self, predictor: Any, images: Sequence[np.ndarray]) -> List[Any]:
        """Run one model on several images (see `_predict`)."""
        if id(predictor) in self._keeps_tensor:
            return predictor.predict_batch(images, keep_tensor=True)
        return predictor.predict_batch(images)

    def _predict(self, predictor: Any, rgb: np.ndarray) -> Any:
        """Run one model, asking for its device tensor when geometry runs on the device."""
        if id(predictor) in self._keeps_tensor:
            return predictor.predict(rgb, keep_tensor=True)
        return predictor.predict(rgb)

    def finish(self, inference: Inference, camera: Optional[CameraModel] = None,
               lidar_points: Optional[np.ndarray] = None,
               T_cam_lidar: Optional[np.ndarray] = None,
               no_points_reason: str = 'no lidar scan') -> FrameResult:
        """Align, then compute the wanted outputs of one inferred frame.

        Args:
            inference: what `infer` returned.
            camera: the image's camera (scaled here to the image size); without it there
                is no alignment, no metric output and no depth/camera_info.
            lidar_points: N×3 float lidar points in the lidar frame, metres, or None.
            T_cam_lidar: 4×4 transform taking lidar points into the camera optical frame.
            no_points_reason: alignment status reported when lidar_points is None.

        Returns:
            The outputs; timings hold the stages run here plus those of `inference`.
        """
        rgb, wanted = inference.rgb, inference.wanted
        height, width = rgb.shape[:2]
        out = FrameResult(space=inference.space, relative=inference.relative, wanted=wanted,
                          timings=dict(inference.timings))
        if camera is not None:
            try:
                out.camera = camera.scaled_to(width, height)
            except ValueError as exc:
                out.input_errors.append(f'camera_info unusable: {exc}')
        out.metric = self._align(out, lidar_points, T_cam_lidar, no_points_reason)
        if self.device_geometry:
            self._finish_on_device(out, inference)
            return out

        if wanted & NORMALS_OUTPUTS:
            if inference.normals is not None:
                out.normals = inference.normals
            elif out.metric is not None:
                with timed(out.timings, 'normals'):
                    out.normals = geometry.normals_from_depth(out.metric, out.camera)
        with timed(out.timings, 'colour maps'):
            if DEPTH_COLOR in wanted:
                shown = out.metric if out.metric is not None else depth_order(
                    out.relative, out.space)
                out.depth_color = geometry.colorize_depth(shown)
            if out.normals is not None and NORMALS_COLOR in wanted:
                out.normals_color = geometry.colorize_normals(out.normals)
        if out.metric is not None and POINTS in wanted and self.output.publish_points:
            with timed(out.timings, 'points'):
                stride = self.output.points_stride
                out.points = geometry.depth_to_points(out.metric, out.camera, stride=stride,
                                                      max_depth=self.output.max_depth)
                if self.output.points_color:
                    out.point_colors = rgb[::stride, ::stride]
        return out

    def _finish_on_device(self, out: FrameResult, inference: Inference) -> None:
        """Compute normals, colour maps and points of out with torch (see the module doc).

        The published metric depth is the host's (global fit, local correction, edge
        filter), so it is uploaded once rather than rebuilt from the prediction tensor;
        every output is copied back to the host once.
        """
        from densepred_ros import geometry_torch as gt
        import torch

        wanted, rgb = out.wanted, inference.rgb
        tensor = inference.relative_tensor
        device = tensor.device if tensor is not None else _torch_device(self.device_label())
        metric = None

        def metric_tensor() -> Any:
            nonlocal metric
            if metric is None:
                metric = torch.from_numpy(out.metric).to(device)
            return metric

        normals = None
        if wanted & NORMALS_OUTPUTS:
            if inference.normals is not None:
                out.normals = inference.normals
                normals = inference.normals_tensor
            elif out.metric is not None:
                with timed(out.timings, 'normals'):
                    normals = gt.normals_from_depth(metric_tensor(), out.camera)
                    out.normals = gt.to_numpy(normals)
        with timed(out.timings, 'colour maps'):
            if DEPTH_COLOR in wanted:
                if out.metric is not None:
                    shown = metric_tensor()
                else:
                    relative = tensor if tensor is not None else torch.from_numpy(
                        out.relative).to(device)
                    shown = depth_order(relative, out.space)
                out.depth_color = gt.to_numpy(gt.colorize_depth(shown))
            if out.normals is not None and NORMALS_COLOR in wanted:
                if normals is None:
                    normals = torch.from_numpy(out.normals).to(device)
                out.normals_color = gt.to_numpy(gt.colorize_normals(normals))
        if out.metric is not None and POINTS in wanted and self.output.publish_points:
            with timed(out.timings, 'points'):
                stride = self.output.points_stride
                out.points = gt.to_numpy(gt.depth_to_points(
                    metric_tensor(), out.camera, stride=stride,
                    max_depth=self.output.max_depth))
                if self.output.points_color:
                    out.point_colors = rgb[::stride, ::stride]

    def _align(self, out: FrameResult, lidar_points: Optional[np.ndarray],
               T_cam_lidar: Optional[np.ndarray], no_points_reason: str
               ) -> Optional[np.ndarray]:
        """Return H×W metric depth (metres, REP 118) or None, recording why in out."""
        if self.aligner is None:
            out.alignment_reason = 'alignment disabled'
            return None
        if out.camera is None:
            out.alignment_reason = 'no usable camera_info'
            return None
        if lidar_points is None or T_cam_lidar is None:
            out.alignment_reason = no_points_reason
            return None
        with timed(out.timings, 'project'):
            uv, z = project_points(transform_points(lidar_points, T_cam_lidar), out.camera)
        with timed(out.timings, 'align'):
            result = self.aligner.align(out.relative, uv, z)
            out.alignment = result
            out.alignment_reason = result.reason
            if not result.ok:
                return None
            depth = result.depth
            if self.output.edge_filter:
                # Flying pixels between a foreground and a background surface: NaN.
                depth = depth.copy()
                depth[geometry.depth_edge_mask(depth, self.output.edge_threshold)] = np.nan
        return depth


def _accepts_keep_tensor(predictor: Any) -> bool:
    """Return True when predictor.predict takes keep_tensor (it can hand out a tensor)."""
    try:
        return 'keep_tensor' in inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return False


def _torch_device(label: str) -> Any:
    """Return the torch device named by label ('cpu' when it names none)."""
    import torch

    try:
        return torch.device(label or 'cpu')
    except (RuntimeError, ValueError):
        return torch.device('cpu')


def load_pipeline(config: NodeConfig) -> DepthPipeline:
    """Load the model(s) named by a node configuration and build its pipeline.

    Raises:
        ConfigError: model.path is a normals checkpoint, or model.normals_path is not.
        Whatever loading raises (missing files, refused pickle weights, a backend that
        cannot run); nothing stays loaded then.
    """
    from densepred_ros import models

    m = config.model
    predictor = models.load_predictor(m.path, m.predictor_options(), family=m.family,
                                      allow_pickle=m.allow_pickle)
    normals_predictor = None
    try:
        if predictor.spec.space == 'normals':
            raise ConfigError(f'model.path {m.path!r} is a normals checkpoint; it must '
                              f'predict depth or disparity (put normal checkpoints in '
                              f'model.normals_path)')
        if m.normals_path:
            normals_predictor = models.load_predictor(
                m.normals_path, m.predictor_options(normals=True), allow_pickle=m.allow_pickle)
            if normals_predictor.spec.space != 'normals':
                raise ConfigError(f'model.normals_path {m.normals_path!r} predicts '
                                  f'{normals_predictor.spec.space}, not normals')
    except BaseException:
        predictor.close()
        if normals_predictor is not None:
            normals_predictor.close()
        raise
    aligner = None
    if config.alignment.enabled:
        aligner = TemporalAligner(predictor.spec.space, config.alignment.alignment_config())
    return DepthPipeline(predictor, config.output, aligner, normals_predictor)
