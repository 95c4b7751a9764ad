"""What `densepred export` writes and its readers rely on: file and tensor names, metadata.

An export folder holds `vae_encoder.onnx`, `unet.onnx`, `vae_decoder.onnx` (static
shapes, float32 I/O) and `densepred_export.json` with sizes, padding, precision, opset,
file hashes and I/O shapes. See `export.py` for the writer.
"""

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from densepred_ros.models.base import (
    BackendUnavailable, COMPONENTS, ENGINE_PRECISIONS, ExportError)
from densepred_ros.models.checkpoint import file_sha256

OPSET = 17
METADATA = 'densepred_export.json'
#: Export precisions (the same as the engine precisions).
PRECISIONS = ENGINE_PRECISIONS
PROTOBUF_LIMIT = 2 ** 31 - 2 ** 20   # bytes; larger models keep their weights in a .data file
FORMAT_VERSION = 1

INPUT_NAMES = {
    'vae_encoder': ['image'],
    'unet': ['sample', 'timestep', 'encoder_hidden_states', 'class_labels'],
    'vae_decoder': ['latent'],
}
OUTPUT_NAMES = {'vae_encoder': ['moments'], 'unet': ['x0'], 'vae_decoder': ['decoded']}


def padded_size(height: int, width: int, multiple: int) -> Tuple[int, int]:
    """Return (height, width) rounded up to a multiple of `multiple` (8, 16, 32 or 64)."""
    if multiple not in (8, 16, 32, 64):
        raise ValueError(f'pad multiple must be 8, 16, 32 or 64, got {multiple}')
    if height < 8 or width < 8:
        raise ValueError(f'processing size must be at least 8×8, got {width}×{height}')
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def parse_components(text: str) -> List[str]:
    """Parse 'unet,vae_encoder,vae_decoder' (any subset, any order) into a checked list."""
    names = [n.strip() for n in str(text).split(',') if n.strip()]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown or not names:
        raise ValueError(f'components must be a comma list of {", ".join(COMPONENTS)}, '
                         f'got {text!r}')
    return [c for c in COMPONENTS if c in names]


def read_metadata(folder: os.PathLike) -> Dict:
    """Read and check `densepred_export.json` in an export folder.

    Raises:
        ExportError: the file is missing, not JSON, of another format version, or names
            an ONNX file that is not there.
    """
    folder = Path(folder)
    path = folder / METADATA
    if not path.is_file():
        raise ExportError(f'{folder} is not an export folder: {METADATA} is missing '
                          '(create it with `densepred export`)')
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f'{path} is not valid JSON: {exc}') from exc
    if not isinstance(meta, dict) or meta.get('format') != FORMAT_VERSION:
        raise ExportError(f'{path}: unsupported export format {meta.get("format")!r}')
    for name, entry in meta.get('components', {}).items():
        if not (folder / entry['file']).is_file():
            raise ExportError(f'{path} names {entry["file"]} for {name}, which is missing')
    return meta


def component_entry(meta: Dict, component: str, folder: Path) -> Dict:
    """Return one component's metadata entry, or raise BackendUnavailable when absent."""
    entry = meta.get('components', {}).get(component)
    if entry is None:
        raise BackendUnavailable(f'{folder} has no exported {component} '
                                 f'(exported: {sorted(meta.get("components", {}))})')
    if not (folder / entry['file']).is_file():
        raise BackendUnavailable(f'{folder / entry["file"]} is missing')
    return entry


def onnx_hash(folder: Path, entry: Dict) -> str:
    """Return the ONNX file's SHA-256: the recorded one if the file is unchanged, else fresh.

    The hash recorded at export is trusted only while the file keeps the size recorded
    with it; hashing a 3.5 GB UNet takes seconds, so it is not redone on every start.
    """
    path = folder / entry['file']
    size = sum(p.stat().st_size for p in (path, Path(str(path) + '.data')) if p.is_file())
    if entry.get('sha256') and entry.get('bytes') == size:
        return entry['sha256']
    return file_sha256(path)


def check_shapes(component: str, names: Sequence[str], expected: Dict[str, Sequence[int]],
                 tensors: Sequence) -> None:
    """Raise ValueError when the inputs do not have the shapes the file was exported for.

    Args:
        tensors: arrays or tensors (anything with `.shape`), one per name.
    """
    if len(tensors) != len(names):
        raise ValueError(f'{component} takes {len(names)} inputs ({", ".join(names)}), '
                         f'got {len(tensors)}')
    for name, tensor in zip(names, tensors):
        want = [int(d) for d in expected[name]]
        if list(tensor.shape) != want:
            raise ValueError(
                f'{component} input {name!r} was exported for shape {want}, got '
                f'{list(tensor.shape)}: the processing size differs from the export; '
                'export again for this size (densepred export --height --width) or set '
                'the processing resolution that gives the exported size')


def onnx_io(path: os.PathLike) -> Dict[str, List[Optional[int]]]:
    """Return {tensor name: shape} of an ONNX file's graph inputs and outputs."""
    import onnx   # heavy optional library
    model = onnx.load(str(path), load_external_data=False)
    shapes = {}
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField('dim_value') else None for d in dims]
    return shapes
