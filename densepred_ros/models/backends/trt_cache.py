"""The TensorRT engine cache: keys, file names, locks and atomic writes (no TensorRT needed)."""

from contextlib import contextmanager
from dataclasses import asdict, dataclass
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

from densepred_ros.models.backends.chain import LOG
from densepred_ros.models.base import ENGINE_PRECISIONS
from densepred_ros.models.export_format import component_entry, onnx_hash

DEFAULT_CACHE = os.path.join('~', '.cache', 'densepred_ros', 'tensorrt')
DEFAULT_WORKSPACE_GIB = 4.0


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on; any change means a rebuild.

    Attributes:
        component: 'vae_encoder', 'unet' or 'vae_decoder'.
        gpu_name: e.g. 'NVIDIA H100 80GB HBM3' or 'Orin'.
        compute_capability: e.g. '9.0' or '8.7'.
        trt_version: `tensorrt.__version__`.
        input_shapes: ((name, (dims...)), ...) of the static profile.
        precision: 'fp32' or 'fp16'.
        onnx_sha256: hash of the ONNX file (and its external data).
        builder: builder settings that change the engine (opt level, workspace), as text.
    """

    component: str
    gpu_name: str
    compute_capability: str
    trt_version: str
    input_shapes: Tuple[Tuple[str, Tuple[int, ...]], ...]
    precision: str
    onnx_sha256: str
    builder: str = ''

    def to_json(self) -> Dict:
        """Return the key as a JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data['input_shapes'] = [[n, list(s)] for n, s in self.input_shapes]
        return data

    @classmethod
    def from_json(cls, data: Dict) -> 'EngineKey':
        """Rebuild a key from `to_json` output."""
        data = dict(data)
        data['input_shapes'] = tuple((str(n), tuple(int(d) for d in s))
                                     for n, s in data['input_shapes'])
        return cls(**data)

    def digest(self) -> str:
        """Return a hex SHA-256 of the key (stable across runs)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def file_stem(self) -> str:
        """Return the engine's file stem: component, size, precision and GPU.

        Two keys that differ only in TensorRT version or ONNX hash share a stem, so a
        stale engine is replaced rather than kept beside the new one.
        """
        sizes = [s for _, s in self.input_shapes if len(s) == 4]
        size = f'{sizes[0][2]}x{sizes[0][3]}' if sizes else 'any'
        gpu = ''.join(c if c.isalnum() else '-' for c in self.gpu_name).strip('-').lower()
        cc = self.compute_capability.replace('.', '')
        return f'{self.component}_{size}_{self.precision}_{gpu}_sm{cc}'


class EngineCache:
    """Engines on disk: `<root>/<stem>.plan` with the full key in `<stem>.json` beside it.

    An engine is used only when its sidecar holds exactly the requested key; otherwise
    it is rebuilt. Builds happen under an exclusive `fcntl.flock` on `<stem>.lock`, so two
    processes never build the same engine at once, and files are written to a temporary
    name and moved into place (`os.replace`), so a reader never sees half a file.
    """

    def __init__(self, root: os.PathLike) -> None:
        self.root = Path(os.path.expanduser(str(root)))

    def paths(self, key: EngineKey) -> Tuple[Path, Path, Path]:
        """Return (engine, sidecar, lock) paths for a key."""
        stem = self.root / key.file_stem()
        return (stem.with_suffix('.plan'), stem.with_suffix('.json'),
                stem.with_suffix('.lock'))

    def lookup(self, key: EngineKey) -> Optional[Path]:
        """Return the engine path when a complete engine with exactly this key is cached."""
        plan, sidecar, _ = self.paths(key)
        if not plan.is_file() or plan.stat().st_size == 0 or not sidecar.is_file():
            return None
        try:
            stored = json.loads(sidecar.read_text())
            if EngineKey.from_json(stored['key']) != key:
                return None
            if stored.get('bytes') != plan.stat().st_size:
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return plan

    def mismatch(self, key: EngineKey) -> List[str]:
        """Return the fields in which the cached sidecar differs from `key` (for the log)."""
        _, sidecar, _ = self.paths(key)
        try:
            stored = json.loads(sidecar.read_text())['key']
        except (OSError, ValueError, KeyError, TypeError):
            return ['no readable sidecar']
        return [k for k, v in key.to_json().items() if stored.get(k) != v]

    @contextmanager
    def locked(self, key: EngineKey):
        """Hold the exclusive build lock of a key's engine (blocks until it is free)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _, _, lock = self.paths(key)
        with open(lock, 'a+') as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def store(self, key: EngineKey, engine: bytes, extra: Optional[Dict] = None) -> Path:
        """Write an engine and its sidecar atomically; return the engine path."""
        if not engine:
            raise ValueError('refusing to cache an empty engine')
        plan, sidecar, _ = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(plan, bytes(engine))
        record = {'key': key.to_json(), 'bytes': len(engine), 'digest': key.digest()}
        record.update(extra or {})
        _atomic_write(sidecar, (json.dumps(record, indent=2) + '\n').encode())
        return plan

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes],
                     force: bool = False, log: logging.Logger = LOG) -> Tuple[Path, bool]:
        """Return (engine path, built now?), building under the lock when needed.

        Args:
            key: the engine's key.
            build: returns the serialized engine (called at most once, under the lock).
            force: rebuild even when a matching engine is cached.
        """
        if not force:
            hit = self.lookup(key)
            if hit is not None:
                return hit, False
        with self.locked(key):
            if not force:
                hit = self.lookup(key)   # another process may have built it meanwhile
                if hit is not None:
                    return hit, False
                plan, _, _ = self.paths(key)
                if plan.exists():
                    log.warning('rebuilding TensorRT engine %s: cached key differs in %s',
                                plan.name, ', '.join(self.mismatch(key)))
            else:
                log.warning('rebuilding TensorRT engine %s on request', key.file_stem())
            return self.store(key, build()), True

    def invalidate(self, key: EngineKey) -> None:
        """Remove a cached engine and its sidecar (e.g. after it failed to deserialize)."""
        plan, sidecar, _ = self.paths(key)
        with self.locked(key):
            for path in (plan, sidecar):
                path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def engine_key(component: str, meta: Dict, folder: Path, precision: str,
               gpu_name: str, compute_capability: str, trt_version: str,
               workspace_gib: float = DEFAULT_WORKSPACE_GIB, opt_level: int = 3) -> EngineKey:
    """Return the cache key of one component's engine (plain data: no TensorRT needed)."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f'engine precision must be one of {ENGINE_PRECISIONS}, '
                         f'got {precision!r}')
    entry = component_entry(meta, component, folder)
    shapes = tuple((n, tuple(int(d) for d in s)) for n, s in entry['inputs'].items())
    return EngineKey(component=component, gpu_name=gpu_name,
                     compute_capability=compute_capability, trt_version=str(trt_version),
                     input_shapes=shapes, precision=precision,
                     onnx_sha256=onnx_hash(folder, entry),
                     builder=f'opt{opt_level}_ws{workspace_gib:g}_onnx{meta.get("precision")}')
