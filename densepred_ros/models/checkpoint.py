"""Find a checkpoint, check that it is safe to load, tell what it is, and fingerprint it.

A checkpoint is a folder in the diffusers layout (`model_index.json`, `unet/`, `vae/`,
`scheduler/`, `text_encoder/`, `tokenizer/`) or a model-hub id such as
`jingheya/lotus-depth-g-v2-1-disparity`, downloaded when a network is there.
Weights load from safetensors only unless pickle files are explicitly allowed.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from densepred_ros.models.base import (
    CheckpointError, DENSEPRED_CONFIG, DEPTH, DISPARITY, NORMALS, SPACES)

#: The sub-folders of a diffusers checkpoint that the loaders read.
CHECKPOINT_FOLDERS = ('unet', 'vae', 'scheduler', 'text_encoder', 'tokenizer')
WEIGHT_FOLDERS = ('unet', 'vae', 'text_encoder')
KNOWN_HUB_IDS = (
    'jingheya/lotus-depth-g-v2-1-disparity',
    'jingheya/lotus-depth-d-v2-0-disparity',
    'jingheya/lotus-normal-g-v1-1',
    'jingheya/lotus-normal-d-v1-1',
    'prs-eth/marigold-depth-v1-1',
    'prs-eth/marigold-normals-v1-1',
)
LOTUS_DEFAULT_RESOLUTION = 768
#: model_index.json `_class_name` of the Lotus pipelines, by variant.
LOTUS_CLASS_NAMES = {'g': 'LotusGPipeline', 'd': 'LotusDPipeline'}


def _download_hint(source: str) -> str:
    return (
        'Download it on a machine with network access, e.g.\n'
        f'  huggingface-cli download {source} --local-dir ~/models/{source.split("/")[-1]}\n'
        'and pass that folder as the model path. Known checkpoints: '
        + ', '.join(KNOWN_HUB_IDS))


def resolve_checkpoint(source: str) -> Path:
    """Return the local folder of a checkpoint given as a folder or a model-hub id.

    Raises:
        CheckpointError: the folder does not exist and the hub id cannot be fetched
            (offline, unknown id), with a message naming what was looked for.
    """
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        return path
    looks_like_hub_id = (str(source).count('/') == 1 and not str(source).startswith(('.', '/'))
                         and not path.suffix)
    if not looks_like_hub_id:
        raise CheckpointError(f'model path {str(source)!r} does not exist or is not a folder')
    try:
        from huggingface_hub import snapshot_download   # network library, only for hub ids
        local = snapshot_download(
            repo_id=str(source),
            allow_patterns=['*.json', '*.txt', '*.safetensors', '*.model'])
    except Exception as exc:  # offline, unknown id, auth: all mean "not here"
        raise CheckpointError(
            f'model {str(source)!r} is not a local folder and could not be fetched from the '
            f'model hub ({type(exc).__name__}: {exc}).\n' + _download_hint(str(source))) from exc
    return Path(local)


def check_layout(path: Path, allow_pickle: bool = False) -> None:
    """Check the diffusers layout and that every weight file is safetensors.

    Raises:
        CheckpointError: a component folder, its config or its weights are missing, or
            only pickle-based weights (`.bin`, `.ckpt`, `.pt`) exist and `allow_pickle`
            is False.
    """
    if not (path / 'model_index.json').is_file():
        raise CheckpointError(
            f'{path} is not a diffusers checkpoint: model_index.json is missing')
    try:
        json.loads((path / 'model_index.json').read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f'{path / "model_index.json"} is not valid JSON: {exc}') from exc
    missing = [c for c in CHECKPOINT_FOLDERS if not (path / c).is_dir()]
    if missing:
        raise CheckpointError(f'{path} lacks the component folder(s) {", ".join(missing)}')
    for component in WEIGHT_FOLDERS:
        folder = path / component
        if not (folder / 'config.json').is_file():
            raise CheckpointError(f'{folder} has no config.json')
        if any(folder.glob('*.safetensors')):
            continue
        pickled = sorted(p.name for p in folder.iterdir()
                         if p.suffix in ('.bin', '.ckpt', '.pt', '.pth'))
        if not pickled:
            raise CheckpointError(f'{folder} holds no weights (*.safetensors)')
        if not allow_pickle:
            raise CheckpointError(
                f'{folder} holds only pickle-based weights ({", ".join(pickled)}); loading them '
                'can run arbitrary code. Convert them to safetensors, or set allow_pickle '
                '(model.allow_pickle) if you trust the file.')


def read_json(path: Path) -> dict:
    """Read a JSON object, or {} when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f'{path} is not valid JSON: {exc}') from exc
    if not isinstance(value, dict):
        raise CheckpointError(f'{path} must hold a JSON object')
    return value


def detect_family(path: Path) -> str:
    """Return 'lotus' or 'marigold' from model_index.json and the UNet config.

    `_class_name` containing 'marigold' or 'lotus' decides; otherwise a UNet with a
    4-input projection class embedding (the Lotus task switcher) means Lotus.
    """
    class_name = str(read_json(path / 'model_index.json').get('_class_name', ''))
    if 'marigold' in class_name.lower():
        return 'marigold'
    if 'lotus' in class_name.lower():
        return 'lotus'
    unet = read_json(path / 'unet' / 'config.json')
    if (unet.get('class_embed_type') == 'projection'
            and unet.get('projection_class_embeddings_input_dim') == 4):
        return 'lotus'
    raise CheckpointError(
        f'cannot tell the model family of {path} (model_index.json _class_name '
        f'{class_name!r}); set model.family to lotus or marigold')


def detect_space(path: Path, source: str, override: Optional[str] = None) -> str:
    """Return what the checkpoint predicts: 'depth', 'disparity', 'log_depth' or 'normals'.

    Checked in this order, the first that answers wins:

    1. the explicit `override`;
    2. `space` in the checkpoint's `densepred.json`;
    3. model_index.json's `_class_name`: 'normals' in it means normals; a Marigold class
       means its `prediction_type` ('disparity', else depth);
    4. the checkpoint's name (hub id or folder): 'normal', then 'disparity' (the Lotus
       hub ids say so);
    5. depth.
    """
    if override:
        if override not in SPACES:
            raise ValueError(f'space must be one of {SPACES}, got {override!r}')
        return override
    space = read_json(path / DENSEPRED_CONFIG).get('space')
    if space is not None:
        if space not in SPACES:
            raise CheckpointError(f'{path / DENSEPRED_CONFIG}: unknown space {space!r}')
        return space
    index = read_json(path / 'model_index.json')
    class_name = str(index.get('_class_name', '')).lower()
    if 'normals' in class_name:
        return NORMALS
    if 'marigold' in class_name:
        return DISPARITY if index.get('prediction_type') == 'disparity' else DEPTH
    name = f'{source} {path.name}'.lower()
    if 'normal' in name:
        return NORMALS
    if 'disparity' in name:
        return DISPARITY
    return DEPTH


def default_resolution(path: Path) -> int:
    """Return the checkpoint's recorded processing resolution, else the Lotus default."""
    value = read_json(path / DENSEPRED_CONFIG).get('processing_resolution')
    return int(value) if value is not None else LOTUS_DEFAULT_RESOLUTION


def quiet_libraries() -> None:
    """Silence the libraries' progress bars and info chatter (errors still show)."""
    import diffusers      # heavy optional libraries: imported when a model is loaded
    import transformers
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def file_sha256(path: os.PathLike) -> str:
    """Return the hex SHA-256 of a file together with its `<file>.data` (ONNX external data)."""
    digest = hashlib.sha256()
    for part in (Path(path), Path(str(path) + '.data')):
        if part.is_file():
            with open(part, 'rb') as stream:
                for block in iter(lambda: stream.read(1 << 24), b''):
                    digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(checkpoint: os.PathLike, components: Sequence[str] = ('unet', 'vae'),
                        sample: int = 65536) -> str:
    """Return a hex digest identifying the weights of a checkpoint folder's UNet and VAE.

    Hashes every weight file's name, size and first and last `sample` bytes (the
    safetensors header and both ends of the data), so telling two fine-tunes of one
    architecture apart takes milliseconds even for gigabyte files. '' when the folder
    holds no weight files (e.g. models built in memory).
    """
    digest = hashlib.sha256()
    found = False
    for component in components:
        folder = Path(checkpoint) / component
        files = sorted(p for p in folder.glob('*') if p.suffix in ('.safetensors', '.bin'))
        for path in files:
            size = path.stat().st_size
            digest.update(f'{component}/{path.name}:{size}'.encode())
            with open(path, 'rb') as handle:
                digest.update(handle.read(sample))
                handle.seek(max(0, size - sample))
                digest.update(handle.read(sample))
            found = True
    return digest.hexdigest() if found else ''
