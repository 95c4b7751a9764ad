"""`densepred evaluate-alignment`: project → align → compare with ground truth on real frames.

Data layout (`--data DIR`; DIR itself or each of its sub-folders is one dataset):

* Ground-truth depth datasets (e.g. KITTI depth, NYU): `intrinsics.json` with fx, fy, cx, cy
  and `depth_png_scale` (metres = PNG value / scale, 0 = no measurement), `depth/*.png`
  (uint16) and optionally `rgb/*` (the images predictions were made from; paired with the
  depth files by identical stem or by the trailing number). There is no lidar: a sparse
  sensor is simulated by sampling `--points` GT pixels (random or on scanlines); they are
  back-projected to 3-D and sent through `project_points` like lidar points. Evaluation is
  on all other valid GT pixels.
* Lidar datasets: `calib.json`, one `*.bin` scan (float32 records) and one image. Two calib
  layouts are read: KITTI object (`P2_cam2img` 4×4, `lidar2cam_rect`; 4 floats per point)
  and nuScenes (`cam2img_K` 3×3, `lidar2cam`; 5 floats per point); `point_fields` in the
  json overrides the record size. The projected, filtered points are split at random: half
  for the fit, half held out as ground truth.

The relative input is `--predictions DIR/<dataset>/<image stem>.npy` or
`DIR/<image stem>.npy` (as written by `densepred predict`: H×W in the model's [0, 1] space,
`--space` tells which). Without a prediction file, the ground truth is converted to the
chosen space, perturbed by a smooth low-frequency error (`--noise`, a fraction of the
value range) and renormalised to [0, 1] (an unknown affine map). For lidar datasets without
predictions this "prediction" exists only at the lidar pixels.

Printed per frame: points used, inliers, AbsRel, δ1, RMSE (m) and coverage of the aligned
depth, AbsRel and δ1 of the oracle fit (plain least squares in the model's space on all
evaluation pixels, the protocol of the Marigold/Lotus evaluations: an upper bound), and
AbsRel and δ1 of the no-model baseline (`lidar_only_depth`: the points given to the fit,
interpolated alone); then the means over the frames whose alignment succeeded. The
metrics, the oracle fit and the rule for NaN, +inf and the far limit (`--max-depth`) are
those of `densepred_ros.metrics`.

Bad input (`densepred_ros.cli_errors`): a file that cannot be read or parsed (a corrupt PNG
or .npy, a calib.json or intrinsics.json that is not valid JSON or lacks a key, a scan of
the wrong size) is a `UserError` naming that file. With several frames the bad one is
reported on stderr in one line, its row says `skipped`, the others are evaluated, and the
run ends with a last error line counting the skipped frames (exit 2); a bad intrinsics.json
or calib.json is reported once and skips its whole dataset. A single frame that cannot be
read, no frames at all, or no frame aligned also end with exit 2.
"""

import argparse
import contextlib
from dataclasses import dataclass
import json
import math
from pathlib import Path
import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple
import zipfile

from densepred_ros.alignment import align, AlignmentConfig, CORRECTIONS, SPACES, to_model_space
from densepred_ros.camera import CameraModel, project_points, transform_points
from densepred_ros.cli_errors import os_error, user_errors, UserError
from densepred_ros.metrics import depth_metrics, mean_over_frames, oracle_depth
import numpy as np
from scipy import interpolate, spatial

COMMAND = 'evaluate-alignment'
_IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')


@dataclass
class _Frame:
    """One evaluation frame as found on disk."""

    dataset: str
    name: str
    kind: str                 # 'gt' or 'lidar'
    folder: Path
    image: Optional[Path]
    depth: Optional[Path] = None
    scan: Optional[Path] = None


@dataclass
class _Row:
    """One printed line."""

    label: str
    source: str
    n_points: int
    n_inliers: int
    abs_rel: float
    delta1: float
    rmse: float
    coverage: float
    oracle_abs_rel: float
    oracle_delta1: float
    lidar_abs_rel: float
    lidar_delta1: float
    status: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the evaluate-alignment options to `parser`."""
    parser.add_argument('--data', required=True, type=Path,
                        help='folder of datasets laid out as described in the module doc')
    parser.add_argument('--predictions', type=Path, default=None,
                        help='folder of <image stem>.npy predictions (optionally in '
                             '<dataset>/ sub-folders); default: perturbed ground truth')
    parser.add_argument('--space', choices=SPACES, default='disparity',
                        help="the predictions' space (default: disparity)")
    parser.add_argument('--points', type=int, default=500,
                        help='sparse samples per ground-truth-only frame (default: 500)')
    parser.add_argument('--pattern', choices=['random', 'scanlines'], default='random',
                        help='sparse sampling pattern for ground-truth-only frames')
    parser.add_argument('--noise', type=float, default=0.02,
                        help='smooth error amplitude of the perturbed ground truth, as a '
                             'fraction of its range (default: 0.02)')
    parser.add_argument('--max-depth', type=float, default=80.0,
                        help='evaluation cap and alignment far limit in metres (default: 80)')
    parser.add_argument('--seed', type=int, default=0, help='seed of every random draw')
    parser.add_argument('--correction', choices=CORRECTIONS,
                        default=AlignmentConfig.correction,
                        help='local correction after the global fit (default: %(default)s)')


def run(args: argparse.Namespace) -> int:
    """Evaluate every frame under --data and print a table.

    Returns:
        0 when every frame was read and at least one was aligned.

    Raises:
        UserError: a bad option or folder, no frames, a single frame that cannot be read;
            after the table: frames skipped because a file could not be read (each one
            reported on stderr as it was met), or no frame aligned.
    """
    for flag, folder in (('--data', args.data), ('--predictions', args.predictions)):
        if folder is not None and not folder.is_dir():
            raise UserError(f'{flag}: not a folder', folder)
    if args.points < 2:
        raise UserError('--points must be >= 2', args.points)
    if not 0.0 <= args.noise < 1.0:
        raise UserError('--noise must be in [0, 1)', args.noise)
    if not args.max_depth > 0.0:
        raise UserError('--max-depth must be > 0', args.max_depth)
    frames = discover(args.data)
    if not frames:
        raise UserError('no frames found (expected intrinsics.json with depth/*.png, or '
                        'calib.json with *.bin, in the folder or its sub-folders)', args.data)
    config = AlignmentConfig(far_limit=args.max_depth, correction=args.correction)
    header = (f'{"frame":<28} {"input":<10} {"points":>7} {"inliers":>7} {"AbsRel":>8} '
              f'{"delta1":>7} {"RMSE m":>7} {"cover":>6} {"oracle AbsRel":>14} '
              f'{"oracle delta1":>14} {"lidar AbsRel":>13} {"lidar delta1":>13}  status')
    print(f'space: {args.space}; relative input: '
          f'{args.predictions if args.predictions else "perturbed ground truth"}')
    print(header)
    rows: List[_Row] = []
    skipped: List[UserError] = []
    reported = set()
    for index, frame in enumerate(frames):
        rng = np.random.default_rng([args.seed, index])
        try:
            row = evaluate_frame(frame, args, config, rng)
        except UserError as exc:
            if len(frames) == 1:
                raise
            skipped.append(exc)
            line = exc.line(COMMAND)
            if line not in reported:   # a bad calib.json or intrinsics.json: once
                reported.add(line)
                print(line, file=sys.stderr, flush=True)
            row = _Row(f'{frame.dataset}/{frame.name}', '-', 0, 0, math.nan, math.nan,
                       math.nan, 0.0, math.nan, math.nan, math.nan, math.nan,
                       f'skipped: {exc.what}')
        rows.append(row)
        print(_format(row), flush=True)
    good = [r for r in rows if r.status == 'ok']
    if good:
        keys = ('abs_rel', 'delta1', 'rmse', 'coverage', 'oracle_abs_rel', 'oracle_delta1',
                'lidar_abs_rel', 'lidar_delta1')
        mean = mean_over_frames({key: getattr(r, key) for key in keys} for r in good)
        print(_format(_Row(f'mean ({len(good)}/{len(rows)} ok)', '', 0, 0, **mean,
                           status=''), counts=False))
    if skipped:
        raise UserError(f'{len(skipped)} of {len(frames)} frames skipped (each reported '
                        'above), the first', skipped[0].subject)
    if not good:
        raise UserError('no frame could be aligned (see the status column)', args.data)
    return 0


def _format(row: _Row, counts: bool = True) -> str:
    n = f'{row.n_points:>7} {row.n_inliers:>7}' if counts else ' ' * 15
    return (f'{row.label:<28} {row.source:<10} {n} {row.abs_rel:>8.4f} {row.delta1:>7.4f} '
            f'{row.rmse:>7.3f} {row.coverage:>6.3f} {row.oracle_abs_rel:>14.4f} '
            f'{row.oracle_delta1:>14.4f} {row.lidar_abs_rel:>13.4f} {row.lidar_delta1:>13.4f}  '
            f'{row.status}')


def discover(data: Path) -> List[_Frame]:
    """List the frames of every dataset in `data` (itself or its sub-folders), sorted.

    Raises:
        UserError: a folder that cannot be listed.
    """
    folder = data
    try:
        folders = [data] + sorted(p for p in data.iterdir() if p.is_dir())
        frames: List[_Frame] = []
        for folder in folders:
            if (folder / 'intrinsics.json').is_file() and (folder / 'depth').is_dir():
                frames += _gt_frames(folder)
            elif (folder / 'calib.json').is_file() and any(folder.glob('*.bin')):
                frames += _lidar_frames(folder)
    except OSError as exc:
        raise os_error(exc, 'read', exc.filename or folder) from exc
    return frames


def _trailing_number(stem: str) -> Optional[str]:
    m = re.search(r'(\d+)$', stem)
    return m.group(1).lstrip('0') or '0' if m else None


def _gt_frames(folder: Path) -> List[_Frame]:
    rgb_dir = folder / 'rgb'
    images = sorted(p for p in rgb_dir.iterdir()
                    if p.suffix.lower() in _IMAGE_SUFFIXES) if rgb_dir.is_dir() else []
    by_stem = {p.stem: p for p in images}
    by_number = {_trailing_number(p.stem): p for p in images}
    frames = []
    for depth in sorted((folder / 'depth').glob('*.png')):
        image = by_stem.get(depth.stem) or by_number.get(_trailing_number(depth.stem))
        frames.append(_Frame(folder.name, image.stem if image else depth.stem, 'gt', folder,
                             image, depth=depth))
    return frames


def _lidar_frames(folder: Path) -> List[_Frame]:
    scans = sorted(folder.glob('*.bin'))
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if len(scans) == 1 and len(images) <= 1:
        pairs = [(scans[0], images[0] if images else None)]
    else:
        by_stem = {p.stem: p for p in images}
        pairs = [(s, by_stem.get(s.name.split('.')[0])) for s in scans]
    return [_Frame(folder.name, image.stem if image else scan.name.split('.')[0], 'lidar',
                   folder, image, scan=scan) for scan, image in pairs]


def _find_prediction(args: argparse.Namespace, frame: _Frame) -> Optional[np.ndarray]:
    if args.predictions is None:
        return None
    for path in (args.predictions / frame.dataset / f'{frame.name}.npy',
                 args.predictions / f'{frame.name}.npy'):
        if path.is_file():
            with _reading(path, 'cannot read as a .npy array', ValueError, EOFError,
                          zipfile.BadZipFile):
                values = np.load(path, allow_pickle=False)
            if not isinstance(values, np.ndarray):
                values.close()
                raise UserError('an .npz archive, not a .npy array', path)
            if values.ndim != 2 or min(values.shape) < 2:
                raise UserError(f'prediction must be H×W, got shape {values.shape}', path)
            if not (np.issubdtype(values.dtype, np.floating)
                    or np.issubdtype(values.dtype, np.integer)):
                raise UserError(f'prediction must be numbers, got dtype {values.dtype}', path)
            return values.astype(np.float32)
    return None


def evaluate_frame(frame: _Frame, args: argparse.Namespace, config: AlignmentConfig,
                   rng: np.random.Generator) -> _Row:
    """Run the chain on one frame and return its printed row."""
    label = f'{frame.dataset}/{frame.name}'
    prediction = _find_prediction(args, frame)
    source = 'prediction' if prediction is not None else 'perturbed'
    if frame.kind == 'gt':
        data = _gt_inputs(frame, args, prediction, rng)
    else:
        data = _lidar_inputs(frame, args, prediction, rng)
    relative, uv_fit, z_fit, gt_pick, gt_z = data
    result = align(relative, args.space, uv_fit, z_fit, config=config)
    oracle = depth_metrics(oracle_depth(gt_pick(relative), args.space, gt_z, args.max_depth),
                           gt_z, args.max_depth)
    lidar = depth_metrics(gt_pick(lidar_only_depth(uv_fit, z_fit, relative.shape)), gt_z,
                          args.max_depth)
    reference = (oracle['abs_rel'], oracle['delta1'], lidar['abs_rel'], lidar['delta1'])
    if not result.ok:
        return _Row(label, source, result.n_points, result.n_inliers, math.nan, math.nan,
                    math.nan, 0.0, *reference, f'failed: {result.reason}')
    aligned = depth_metrics(gt_pick(result.depth), gt_z, args.max_depth)
    return _Row(label, source, result.n_points, result.n_inliers, aligned['abs_rel'],
                aligned['delta1'], aligned['rmse'], aligned['coverage'], *reference, 'ok')


def lidar_only_depth(uv: np.ndarray, z: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """No-model baseline: the sparse depths alone, interpolated over the image.

    uv: N×2 integer pixels (u, v), z: N depths in metres; shape: (H, W). Returns an H×W
    float32 depth image (m): scipy's linear `griddata` (Delaunay) inside the points' hull,
    the nearest point's depth outside it (and everywhere when the points are fewer than 3
    or collinear); NaN when there is no point with a finite depth > 0.
    """
    height, width = shape
    ok = np.isfinite(z) & (z > 0.0)
    if not ok.any():
        return np.full(shape, np.nan, np.float32)
    # Duplicate pixels: their mean depth, so Delaunay sees each site once.
    flat = uv[ok, 1].astype(np.int64) * width + uv[ok, 0]
    sites, inverse = np.unique(flat, return_inverse=True)
    depth = np.bincount(inverse, z[ok]) / np.bincount(inverse)
    xy = np.stack(np.divmod(sites, width), axis=1).astype(np.float64)
    grid = tuple(np.mgrid[0:height, 0:width])
    near = interpolate.griddata(xy, depth, grid, method='nearest')
    try:
        lin = interpolate.griddata(xy, depth, grid, method='linear')
    except (ValueError, spatial.QhullError):  # fewer than 3 sites, or all on a line
        return near.astype(np.float32)
    return np.where(np.isfinite(lin), lin, near).astype(np.float32)


def _smooth_field(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """H×W low-frequency field (a few sinusoids of at most 2 cycles per image), |max| = 1."""
    v, u = np.mgrid[0:height, 0:width]
    field = np.zeros((height, width))
    for _ in range(3):
        fu, fv = rng.uniform(0.2, 2.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        field += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * (fu * u / width + fv * v / height)
                                                + phase)
    return field / np.abs(field).max()


def perturbed_relative(gt_depth: np.ndarray, space: str, noise: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Simulate a relative prediction from ground truth (NaN where the GT is unknown).

    The GT is taken to the model's space (z or 1/z), normalised to [0, 1], a smooth
    low-frequency error of amplitude `noise` is added and the result is renormalised to
    [0, 1] over the known pixels (the unknown affine map).
    """
    known = np.isfinite(gt_depth) & (gt_depth > 0.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        y = np.where(known, to_model_space(gt_depth, space), np.nan)
    lo, hi = np.nanmin(y), np.nanmax(y)
    rel = (y - lo) / (hi - lo) + noise * _smooth_field(*y.shape, rng)
    lo, hi = np.nanmin(rel), np.nanmax(rel)
    return ((rel - lo) / (hi - lo)).astype(np.float32)


@contextlib.contextmanager
def _reading(path: Path, what: str, *parse_errors: type) -> Iterator[None]:
    """Turn the failures of reading or parsing `path` into a UserError naming it.

    Only around the call that reads one input file: an OSError with an errno (missing,
    unreadable) is `cannot read: <reason>`; an OSError without one (a decoder's error)
    or one of `parse_errors` is `<what>: <detail>`.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise UserError(f'{what}: {_one_line(exc)}', path) from exc
        raise os_error(exc, 'read', path) from exc
    except parse_errors as exc:
        raise UserError(f'{what}: {_one_line(exc)}', path) from exc


def _one_line(exc: BaseException) -> str:
    return ' '.join(str(exc).split()) or type(exc).__name__


def _read_json(path: Path) -> Dict[str, Any]:
    """Return the JSON object in `path`; a UserError naming it if there is none."""
    with _reading(path, 'cannot parse as JSON', ValueError):
        value = json.loads(path.read_text())
    if not isinstance(value, dict):
        raise UserError(f'must hold a JSON object, not {type(value).__name__}', path)
    return value


def _number(meta: Dict[str, Any], key: str, path: Path,
            default: Optional[float] = None) -> float:
    """Return the finite number `meta[key]` (or `default`); a UserError naming `path`."""
    if key not in meta and default is None:
        raise UserError(f'no "{key}"', path)
    value = meta.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or isinstance(value, bool):
        raise UserError(f'"{key}" must be a finite number, got {value!r}', path)
    return number


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image
    with _reading(path, 'cannot read as an image', Image.DecompressionBombError):
        with Image.open(path) as image:
            return np.asarray(image)


def _image_size(path: Path) -> Tuple[int, int]:
    from PIL import Image
    with _reading(path, 'cannot read as an image', Image.DecompressionBombError):
        with Image.open(path) as image:
            return image.size


def _sample_sparse(known: np.ndarray, n: int, pattern: str,
                   rng: np.random.Generator) -> np.ndarray:
    """Flat indices of about n known pixels: random, or on evenly spaced scanlines."""
    flat = np.flatnonzero(known.ravel())
    if flat.size <= n:
        return flat
    if pattern == 'random':
        return np.sort(rng.choice(flat, n, replace=False))
    rows = np.flatnonzero(known.any(axis=1))
    lines = rows[np.linspace(0, rows.size - 1, min(rows.size, max(4, n // 50))).astype(int)]
    on_lines = flat[np.isin(flat // known.shape[1], lines)]
    step = max(1, on_lines.size // n)
    return on_lines[::step][:n]


def _gt_inputs(frame: _Frame, args: argparse.Namespace, prediction: Optional[np.ndarray],
               rng: np.random.Generator):
    meta_path = frame.folder / 'intrinsics.json'
    meta = _read_json(meta_path)
    fx, fy, cx, cy = (_number(meta, key, meta_path) for key in ('fx', 'fy', 'cx', 'cy'))
    scale = _number(meta, 'depth_png_scale', meta_path, 1000.0)
    if not scale > 0.0:
        raise UserError(f'"depth_png_scale" must be > 0, got {scale}', meta_path)
    raw = _read_png(frame.depth)
    if raw.ndim != 2 or raw.dtype.kind not in 'ui':
        raise UserError(f'depth PNG must be one integer channel (uint16), got shape '
                        f'{raw.shape} {raw.dtype}', frame.depth)
    raw = raw.astype(np.float64)
    gt = np.where(raw > 0, raw / scale, np.nan)
    if np.count_nonzero(raw > 0) < 2:
        raise UserError('depth PNG has fewer than 2 known pixels (value > 0)', frame.depth)
    height, width = gt.shape
    with user_errors(ValueError, subject=meta_path):
        camera = CameraModel.pinhole(fx, fy, cx, cy, width, height)
    known = np.isfinite(gt)
    # Sparse "sensor": sampled GT pixels back-projected to 3-D, then projected like lidar.
    picked = _sample_sparse(known, args.points, args.pattern, rng)
    v, u = np.divmod(picked, width)
    z = gt.ravel()[picked]
    fx, fy, cx, cy = camera.intrinsics()
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1)
    relative = prediction if prediction is not None else \
        perturbed_relative(gt, args.space, args.noise, rng)
    rh, rw = relative.shape
    uv, zp = project_points(points, camera.scaled_to(rw, rh))
    held_out = known.copy()
    held_out.ravel()[picked] = False
    eval_v, eval_u = np.nonzero(held_out)
    # Nearest-neighbour lookup of the prediction-resolution pixel covering each GT pixel.
    src_u = np.minimum(((eval_u + 0.5) * rw / width).astype(int), rw - 1)
    src_v = np.minimum(((eval_v + 0.5) * rh / height).astype(int), rh - 1)

    def gt_pick(image: np.ndarray) -> np.ndarray:
        return image[src_v, src_u]
    return relative, uv, zp, gt_pick, gt[eval_v, eval_u]


def _lidar_calibration(frame: _Frame) -> Tuple[CameraModel, np.ndarray, int]:
    path = frame.folder / 'calib.json'
    calib = _read_json(path)
    if 'width' in calib and 'height' in calib:
        width, height = (_number(calib, key, path) for key in ('width', 'height'))
    elif frame.image is not None:
        width, height = _image_size(frame.image)
    else:
        raise UserError(f'no image for this scan and no width/height in {path}', frame.scan)
    # Every ValueError or TypeError below comes from a value of calib.json.
    with user_errors(ValueError, TypeError, subject=path):
        if 'P2_cam2img' in calib and 'lidar2cam_rect' in calib:
            P = _array(calib, 'P2_cam2img')[:3]
            if P.shape != (3, 4):
                raise ValueError(f'P2_cam2img must be 3×4 or 4×4, got shape {P.shape}')
            camera = CameraModel(width=width, height=height, K=P[:, :3], P=P)
            T = _array(calib, 'lidar2cam_rect')
            fields = 4
        elif 'cam2img_K' in calib and 'lidar2cam' in calib:
            K = _array(calib, 'cam2img_K')
            camera = CameraModel(width=width, height=height, K=K)
            T = _array(calib, 'lidar2cam')
            fields = 5
        else:
            raise ValueError(f'unrecognised calib.json layout, keys {sorted(calib)} (expected '
                             'P2_cam2img + lidar2cam_rect or cam2img_K + lidar2cam)')
        if T.shape != (4, 4) or not np.isfinite(T).all() or \
                not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f'the lidar-to-camera transform must be a finite 4×4 homogeneous '
                             f'matrix, got {T.tolist()}')
        fields = _number(calib, 'point_fields', path, fields)
        if fields != int(fields) or fields < 3:
            raise ValueError(f'point_fields must be an integer >= 3, got {fields}')
    return camera, T, int(fields)


def _array(calib: Dict[str, Any], key: str) -> np.ndarray:
    """Return calib[key] as a float64 array; a ValueError if it is not a matrix of numbers."""
    try:
        return np.asarray(calib[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'"{key}" is not a matrix of numbers') from exc


def _lidar_inputs(frame: _Frame, args: argparse.Namespace, prediction: Optional[np.ndarray],
                  rng: np.random.Generator):
    camera, T, fields = _lidar_calibration(frame)
    with _reading(frame.scan, 'cannot read as float32 records'):
        raw = np.fromfile(frame.scan, dtype=np.float32)
    if raw.size % fields or not raw.size:
        raise UserError(f'{raw.size} float32 values: not a positive multiple of '
                        f'{fields} (point_fields)', frame.scan)
    points = transform_points(raw.reshape(-1, fields)[:, :3], T)
    if prediction is not None:
        camera = camera.scaled_to(prediction.shape[1], prediction.shape[0])
    uv, z = project_points(points, camera)
    holdout = rng.random(z.size) < 0.5
    if prediction is not None:
        relative = prediction
    else:
        sparse = np.full((camera.height, camera.width), np.nan)
        sparse[uv[:, 1], uv[:, 0]] = z
        relative = perturbed_relative(sparse, args.space, args.noise, rng)
    eval_uv = uv[holdout]

    def gt_pick(image: np.ndarray) -> np.ndarray:
        return image[eval_uv[:, 1], eval_uv[:, 0]]
    return relative, uv[~holdout], z[~holdout], gt_pick, z[holdout].astype(np.float64)
