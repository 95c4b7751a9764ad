"""Training data for `densepred train`: generated scenes or a folder of annotated images.

A frame set holds, at one training resolution, the RGB images and whichever ground truth
exists (metric depth, optical-frame normals). Annotations become 3-channel images in
[-1, 1] as the Lotus authors build them:

- depth: per image, the 2% and 98% percentiles map to -1 and 1 (values clipped), the
  result replicated to three channels; sky (+inf) is the far end (1);
- disparity: the same on 1/depth; sky (+inf) has disparity 0;
- normals: the model frame (x right, y up, z towards the viewer), so the optical-frame
  ground truth n becomes (n_x, -n_y, -n_z); sky gets the normal facing the camera.

Unknown ground truth (NaN, or a depth <= 0) is invalid; `valid` masks mark it and the
trainer drops every latent cell that an invalid pixel touches (as the authors do).
Frames whose depth is known on less than half of the pixels (lidar-only ground truth) are
sparse: their points are carried over to the training resolution one by one (the nearest
point wins a pixel) and the trainer supervises them in pixel space instead (see
`trainer.LotusTrainer.sparse_losses`).

A frame file that cannot be read or used (corrupt .npz/.npy/image, missing arrays, wrong
shapes or types) stops the loading with a `DataFileError` naming the file: every frame is
read before training starts, so the user fixes or removes it and runs again, rather than
training on a silently smaller set.
"""

import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple
import zipfile
import zlib

from densepred_ros.alignment import to_model_space
from densepred_ros.cli_errors import UserError
from densepred_ros.models.base import DEPTH_SPACES, DISPARITY, NORMALS
import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
TRUNC_LOW, TRUNC_HIGH = 2.0, 98.0
MIN_VALID_FRACTION = 0.5


class DataFileError(UserError, ValueError):
    """A training frame file that cannot be used: one line naming it (also a ValueError)."""


@dataclass
class FrameSet:
    """Training frames at one resolution.

    Attributes:
        rgb: N×H×W×3 uint8.
        depth: N×H×W float32 metres (+inf sky, NaN unknown), or None.
        normals: N×H×W×3 float32 unit normals, optical frame (NaN unknown), or None.
        names: N frame names (file stems).
        sparse: N bool: depth known on less than MIN_VALID_FRACTION of the frame (lidar);
            None when no frame is sparse.
    """

    rgb: np.ndarray
    depth: Optional[np.ndarray]
    normals: Optional[np.ndarray]
    names: List[str]
    sparse: Optional[np.ndarray] = None

    def __len__(self) -> int:
        """Return the number of frames."""
        return int(self.rgb.shape[0])


def synthetic_name(seed: int) -> Tuple[str, str]:
    """Return (kind, file stem) of generated training frame `seed` (kinds alternate)."""
    kind = ('indoor', 'outdoor')[seed % 2]
    return kind, f'{kind}_{seed:06d}'


def render_synthetic(cache: Path, seeds: Sequence[int], height: int, width: int,
                     progress: Optional[Callable[[int], None]] = None) -> Path:
    """Render generated scenes into `cache` as .npz (rgb, depth, normals), once.

    Frames already in the cache are kept. Even seeds are indoor scenes, odd outdoor.

    Returns:
        The cache folder.
    """
    from densepred_ros.synthetic import make_frame
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        kind, stem = synthetic_name(int(seed))
        target = cache / f'{stem}.npz'
        if not target.is_file():
            frame = make_frame(int(seed), kind=kind, width=width, height=height, beams=16)
            partial = cache / f'{stem}.{os.getpid()}.tmp.npz'
            np.savez(partial, rgb=frame.rgb, depth=frame.depth,
                     normals=frame.normals.astype(np.float16))
            partial.replace(target)
        if progress is not None:
            progress(1)
    return cache


def _nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize H×W(×C) by nearest-neighbour sampling of pixel centres."""
    rows = ((np.arange(height) + 0.5) * array.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * array.shape[1] / width).astype(np.int64)
    return array[rows[:, None], cols[None, :]]


def _scatter_points(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a sparse H×W depth image by moving each known point to its new pixel.

    Nearest sampling would drop most lidar points when shrinking; here every finite,
    positive point lands in the pixel containing its centre, the nearest point winning.
    """
    rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0.0))
    values = depth[rows, cols]
    r = ((rows + 0.5) * height / depth.shape[0]).astype(np.int64)
    c = ((cols + 0.5) * width / depth.shape[1]).astype(np.int64)
    out = np.full(height * width, np.inf, np.float32)
    np.minimum.at(out, r * width + c, values.astype(np.float32))
    out[np.isinf(out)] = np.nan
    return out.reshape(height, width)


def _resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    if rgb.shape[:2] == (height, width):
        return rgb
    from PIL import Image
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


@contextlib.contextmanager
def _reading(path: Path, what: str, *parse_errors: type) -> Iterator[None]:
    """Turn the failures of reading or parsing `path` into a DataFileError naming it.

    Only around the calls that read one file: an OSError with an errno (missing,
    unreadable) is `cannot read: <reason>`; an OSError without one (a decoder's error)
    or one of `parse_errors` is `<what>: <detail>`.
    """
    try:
        yield
    except UserError:
        raise
    except OSError as exc:
        detail = exc.strerror if exc.errno is not None else ' '.join(str(exc).split())
        prefix = 'cannot read' if exc.errno is not None else what
        raise DataFileError(f'{prefix}: {detail or type(exc).__name__}', path) from exc
    except parse_errors as exc:
        detail = ' '.join(str(exc).split()) or type(exc).__name__
        raise DataFileError(f'{what}: {detail}', path) from exc


_ARRAY_ERRORS = (ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _numbers(array: np.ndarray, name: str, path: Path) -> np.ndarray:
    """Return `array` as float32; a DataFileError if it does not hold numbers."""
    if array.dtype.kind not in 'fiub':
        raise DataFileError(f'{name} must hold numbers, got dtype {array.dtype}', path)
    return array.astype(np.float32)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image
    with _reading(path, 'cannot read as an image', Image.DecompressionBombError):
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'))


def _read_npy(path: Path, name: str) -> np.ndarray:
    with _reading(path, 'cannot read as a .npy array', *_ARRAY_ERRORS):
        array = np.load(path, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataFileError('an .npz archive, not a .npy array', path)
    return _numbers(array, name, path)


def _read_frame(path: Path) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Read one frame: an .npz (rgb, depth, normals) or an image with .npy siblings.

    Raises:
        DataFileError: a file that cannot be read or holds no usable arrays.
    """
    if path.suffix == '.npz':
        # Reading the arrays of an archive is lazy: they fail inside the block too.
        with _reading(path, 'cannot read as a .npz archive', *_ARRAY_ERRORS):
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise DataFileError('a .npy array, not a .npz archive', path)
            with data:
                if 'rgb' not in data:
                    raise DataFileError(f'no "rgb" array (has: {", ".join(data.files)})',
                                        path)
                depth = _numbers(data['depth'], 'depth', path) if 'depth' in data else None
                normals = _numbers(data['normals'], 'normals', path) \
                    if 'normals' in data else None
                return np.asarray(data['rgb']), depth, normals
    rgb = _read_image(path)
    depth_file = path.with_name(f'{path.stem}_depth.npy')
    normals_file = path.with_name(f'{path.stem}_normals.npy')
    depth = _read_npy(depth_file, 'depth') if depth_file.is_file() else None
    normals = _read_npy(normals_file, 'normals') if normals_file.is_file() else None
    return rgb, depth, normals


def list_frames(folder: Path) -> List[Path]:
    """Return the frame files of a data folder: *.npz, or images (not *_depth/_normals)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f'data folder {str(folder)!r} does not exist')
    files = sorted(p for p in folder.iterdir()
                   if p.suffix == '.npz' and not p.name.endswith('.tmp.npz'))
    if not files:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f'{folder} holds no training frames: expected NAME.npz (rgb uint8 H×W×3, depth '
            'float32 H×W metres, normals float32 H×W×3 optical frame) or NAME.png/.jpg '
            'with NAME_depth.npy and/or NAME_normals.npy')
    return files


def _check_shapes(path: Path, rgb: np.ndarray, depth: Optional[np.ndarray],
                  normals: Optional[np.ndarray]) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataFileError(f'rgb must be H×W×3 uint8, got {rgb.shape} {rgb.dtype}', path)
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise DataFileError(f'depth shape {depth.shape} differs from the image '
                            f'{rgb.shape[:2]}', path)
    if normals is not None and normals.shape != rgb.shape:
        raise DataFileError(f'normals shape {normals.shape} differs from {rgb.shape}', path)


def load_frames(folder: Path, height: int, width: int, files: Optional[List[Path]] = None,
                progress: Optional[Callable[[int], None]] = None) -> FrameSet:
    """Load every frame of `folder` at height×width (ground truth by nearest sampling).

    Raises:
        ValueError: no frames in the folder.
        DataFileError: a frame that cannot be read, inconsistent shapes, a frame without
            the ground truth the others have, or sparse depth without a known point; it
            names the file (and stops the loading: see the module doc).
    """
    files = list_frames(folder) if files is None else files
    rgbs, depths, normals_list, sparse = [], [], [], []
    has = {'depth': [], 'normals': []}
    for path in files:
        rgb, depth, normals = _read_frame(path)
        _check_shapes(path, rgb, depth, normals)
        has['depth'].append(depth is not None)
        has['normals'].append(normals is not None)
        if depth is not None:
            known = np.isfinite(depth) & (depth > 0.0) | (depth == np.inf)
            sparse.append(bool(known.mean() < MIN_VALID_FRACTION))
            if not sparse[-1]:
                depths.append(_nearest(depth, height, width))
            else:
                depths.append(_scatter_points(depth, height, width))
                if not np.isfinite(depths[-1]).any():
                    raise DataFileError('depth has no finite positive value', path)
        if normals is not None:
            normals_list.append(_nearest(normals, height, width))
        rgbs.append(_resize_rgb(rgb, height, width))
        if progress is not None:
            progress(1)
    for name, present in has.items():
        if any(present) and not all(present):
            missing = files[present.index(False)]
            raise DataFileError(f'no {name}, while {sum(present)} of {len(files)} frames '
                                'have it', missing)
    return FrameSet(
        rgb=np.stack(rgbs),
        depth=np.stack(depths).astype(np.float32) if depths else None,
        normals=np.stack(normals_list).astype(np.float32) if normals_list else None,
        names=[p.stem for p in files],
        sparse=np.array(sparse) if any(sparse) else None)


def depth_annotation(depth: np.ndarray, space: str) -> Tuple[np.ndarray, np.ndarray]:
    """Normalise metric depth to the Lotus annotation of one image.

    Args:
        depth: H×W float metres; +inf sky, NaN or <= 0 unknown.
        space: 'depth', 'disparity' or 'log_depth' (z, 1/z or ln z is normalised).

    Returns:
        (annotation H×W float32 in [-1, 1], valid H×W bool). Unknown pixels are 0.
    """
    if space not in DEPTH_SPACES:
        raise ValueError(f'space must be one of {DEPTH_SPACES}, got {space!r}')
    depth = np.asarray(depth, dtype=np.float64)
    sky = depth == np.inf
    valid = (np.isfinite(depth) & (depth > 0.0)) | sky
    if not valid.any():
        raise ValueError('depth image has no known pixel')
    value = to_model_space(depth, space)                 # sky: inf / 0 / inf
    finite = value[valid & np.isfinite(value)]
    if finite.size == 0:
        finite = np.zeros(1)
    lo, hi = np.percentile(value[valid] if space == DISPARITY else finite,
                           (TRUNC_LOW, TRUNC_HIGH))
    with np.errstate(invalid='ignore'):
        norm = ((value - lo) / (hi - lo + 1e-5) - 0.5) * 2.0
    norm = np.clip(np.where(valid, norm, 0.0), -1.0, 1.0)
    return norm.astype(np.float32), valid


def normals_annotation(normals: np.ndarray, sky: Optional[np.ndarray] = None
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Convert optical-frame normals to the Lotus model frame.

    Args:
        normals: H×W×3 unit normals, optical frame (x right, y down, z forward), NaN unknown.
        sky: optional H×W bool; sky pixels get (0, 0, 1) (facing the viewer) and are valid.

    Returns:
        (annotation H×W×3 float32 in [-1, 1] in the model frame, valid H×W bool).
    """
    model = np.asarray(normals, dtype=np.float32) * np.array([1.0, -1.0, -1.0], np.float32)
    valid = np.isfinite(model).all(axis=-1)
    if sky is not None:
        model[sky & ~valid] = (0.0, 0.0, 1.0)
        valid = valid | sky
    model[~valid] = 0.0
    return np.clip(model, -1.0, 1.0), valid


def annotations(frames: FrameSet, space: str) -> Tuple[np.ndarray, np.ndarray]:
    """Return the N×3×H×W float32 annotation images in [-1, 1] and N×H×W valid masks."""
    images, masks = [], []
    for i in range(len(frames)):
        if space == NORMALS:
            if frames.normals is None:
                raise ValueError('normals training needs ground-truth normals in the data')
            sky = frames.depth[i] == np.inf if frames.depth is not None else None
            ann, valid = normals_annotation(frames.normals[i], sky)
            images.append(ann.transpose(2, 0, 1))
        else:
            if frames.depth is None:
                raise ValueError(f'{space} training needs ground-truth depth in the data')
            ann, valid = depth_annotation(frames.depth[i], space)
            images.append(np.repeat(ann[None], 3, axis=0))
        masks.append(valid)
    return np.stack(images), np.stack(masks)


def rgb_images(frames: FrameSet) -> np.ndarray:
    """Return the N×3×H×W float32 images in [-1, 1]."""
    return frames.rgb.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
