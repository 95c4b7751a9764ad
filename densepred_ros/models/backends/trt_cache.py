"""The TensorRT engine cache: keys, file names, locks and atomic writes (no TensorRT needed).

An engine is named `<component>_<size>_<precision>_<gpu>_sm<cc>_<digest>.plan`, where the
digest covers the whole key (ONNX content hash, shapes, precision, GPU model, memory size
and SM count, TensorRT version, build recipe), so two models of the same size keep two
files. Builds hold an exclusive `fcntl.flock` on `<stem>.lock`, reads a shared one, and
files are written to a temporary name and moved into place (`os.replace`).
"""

from contextlib import contextmanager
from dataclasses import asdict, dataclass
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from densepred_ros.models.backends.chain import LOG
from densepred_ros.models.base import ENGINE_PRECISIONS
from densepred_ros.models.export_format import component_entry, onnx_hash

DEFAULT_CACHE = os.path.join('~', '.cache', 'densepred_ros', 'tensorrt')
DEFAULT_WORKSPACE_GIB = 4.0
#: Version of `trt_runtime.build_engine`'s recipe (flags, parser options); raise it when
#: the recipe changes so that cached engines are rebuilt.
BUILD_RECIPE_VERSION = 2
MIN_WORKSPACE_BYTES = 256 << 20


def workspace_bytes(total_memory: int, cap_gib: float = DEFAULT_WORKSPACE_GIB) -> int:
    """Return the TensorRT builder workspace for a device with `total_memory` bytes.

    An eighth of the device's memory (1 GiB on an 8 GB Jetson, whose memory the CPU
    shares), at least 256 MiB, at most `cap_gib`. Derived from the total, not the free
    memory, so that the engine key stays the same from one start to the next.
    """
    return int(min(cap_gib * (1 << 30), max(MIN_WORKSPACE_BYTES, total_memory // 8)))


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on; any change means another engine.

    Attributes:
        component: 'vae_encoder', 'unet' or 'vae_decoder'.
        gpu_name: e.g. 'NVIDIA H100 80GB HBM3' or 'Orin'.
        compute_capability: e.g. '9.0' or '8.7'.
        trt_version: `tensorrt.__version__`.
        input_shapes: ((name, (dims...)), ...) of the static profile.
        precision: 'fp32' or 'fp16' (as requested).
        onnx_sha256: hash of the ONNX file (and its external data): the weights.
        builder: builder settings that change the engine (opt level, workspace), as text.
        gpu_memory_mib: the device's total memory, MiB (tells Orin modules apart).
        sm_count: the device's streaming multiprocessors.
        recipe: BUILD_RECIPE_VERSION of the code that built it.
    """

    component: str
    gpu_name: str
    compute_capability: str
    trt_version: str
    input_shapes: Tuple[Tuple[str, Tuple[int, ...]], ...]
    precision: str
    onnx_sha256: str
    builder: str = ''
    gpu_memory_mib: int = 0
    sm_count: int = 0
    recipe: int = BUILD_RECIPE_VERSION

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

    def slot(self) -> str:
        """Return the readable part of the name: component, size, precision and GPU."""
        sizes = [s for _, s in self.input_shapes if len(s) == 4]
        size = f'{sizes[0][2]}x{sizes[0][3]}' if sizes else 'any'
        gpu = ''.join(c if c.isalnum() else '-' for c in self.gpu_name).strip('-').lower()
        cc = self.compute_capability.replace('.', '')
        return f'{self.component}_{size}_{self.precision}_{gpu}_sm{cc}'

    def file_stem(self) -> str:
        """Return the engine's file stem: the slot and the first 16 hex digits of the digest."""
        return f'{self.slot()}_{self.digest()[:16]}'


class EngineCache:
    """Engines on disk: `<root>/<stem>.plan` with the full key in `<stem>.json` beside it.

    An engine is used only when its sidecar holds exactly the requested key and the plan
    has the recorded size. Writers hold the exclusive lock of the key, readers the
    shared one, so no reader sees an engine that is being replaced.
    """

    def __init__(self, root: os.PathLike) -> None:
        self.root = Path(os.path.expanduser(str(root)))

    def paths(self, key: EngineKey) -> Tuple[Path, Path, Path]:
        """Return (engine, sidecar, lock) paths for a key."""
        stem = self.root / key.file_stem()
        return (stem.with_suffix('.plan'), stem.with_suffix('.json'),
                stem.with_suffix('.lock'))

    def lookup(self, key: EngineKey) -> Optional[Path]:
        """Return the engine path when a complete engine with exactly this key is cached.

        Not locked: use `load` to read an engine.
        """
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

    def load(self, key: EngineKey) -> Optional[bytes]:
        """Return the cached engine's bytes read under the shared lock, or None."""
        if not self.root.is_dir():
            return None
        with self.locked(key, shared=True):
            plan = self.lookup(key)
            return plan.read_bytes() if plan is not None else None

    def mismatch(self, key: EngineKey) -> List[str]:
        """Return the fields in which the cached sidecar differs from `key` (for the log)."""
        _, sidecar, _ = self.paths(key)
        try:
            stored = json.loads(sidecar.read_text())['key']
        except (OSError, ValueError, KeyError, TypeError):
            return ['no readable sidecar']
        return [k for k, v in key.to_json().items() if stored.get(k) != v]

    @contextmanager
    def locked(self, key: EngineKey, shared: bool = False) -> Iterator[None]:
        """Hold the key's lock: exclusive for writers, shared for readers (blocks)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _, _, lock = self.paths(key)
        with open(lock, 'a+') as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def store(self, key: EngineKey, engine, extra: Optional[Dict] = None) -> Path:
        """Write an engine (bytes or any buffer) and its sidecar atomically; return its path.

        The caller holds the key's exclusive lock (as `fetch` does).
        """
        view = memoryview(engine)
        if view.nbytes == 0:
            raise ValueError('refusing to cache an empty engine')
        plan, sidecar, _ = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(plan, view)
        record = {'key': key.to_json(), 'bytes': view.nbytes, 'digest': key.digest()}
        record.update(extra or {})
        _atomic_write(sidecar, memoryview((json.dumps(record, indent=2) + '\n').encode()))
        self.prune_outdated(key)
        return plan

    def fetch(self, key: EngineKey, build: Callable[[], object], force: bool = False,
              log: logging.Logger = LOG) -> Tuple[Path, object, bool]:
        """Return (engine path, engine buffer, built now?), building under the lock if needed.

        Args:
            key: the engine's key.
            build: returns the serialized engine (a buffer; called at most once, under the
                exclusive lock).
            force: rebuild even when a matching engine is cached.
        """
        if not force:
            data = self.load(key)
            if data is not None:
                return self.paths(key)[0], data, False
        with self.locked(key):
            plan = self.lookup(key)
            if not force and plan is not None:   # another process built it meanwhile
                return plan, plan.read_bytes(), False
            if force:
                log.warning('rebuilding TensorRT engine %s on request', key.file_stem())
            engine = build()
            return self.store(key, engine), engine, True

    def get_or_build(self, key: EngineKey, build: Callable[[], object],
                     force: bool = False, log: logging.Logger = LOG) -> Tuple[Path, bool]:
        """Return (engine path, built now?); see `fetch`."""
        path, _, built = self.fetch(key, build, force=force, log=log)
        return path, built

    def invalidate(self, key: EngineKey) -> None:
        """Remove a cached engine and its sidecar (e.g. after it failed to deserialize)."""
        plan, sidecar, _ = self.paths(key)
        with self.locked(key):
            for path in (plan, sidecar):
                path.unlink(missing_ok=True)

    def prune_outdated(self, key: EngineKey) -> List[Path]:
        """Remove engines of the same slot and ONNX file built by another TensorRT or recipe.

        They can never be used again. Engines of other ONNX files (other weights) stay. An
        engine whose lock is held (being read or written) is left alone.
        """
        removed = []
        for sidecar in self.root.glob(f'{key.slot()}_*.json'):
            try:
                stored = EngineKey.from_json(json.loads(sidecar.read_text())['key'])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if stored == key or stored.onnx_sha256 != key.onnx_sha256:
                continue
            plan, _, lock = self.paths(stored)
            with open(lock, 'a+') as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    plan.unlink(missing_ok=True)
                    sidecar.unlink(missing_ok=True)
                    removed.append(plan)
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return removed


def _atomic_write(path: Path, data: memoryview) -> None:
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
               workspace_gib: float = DEFAULT_WORKSPACE_GIB, opt_level: int = 3,
               gpu_memory_mib: int = 0, sm_count: int = 0) -> EngineKey:
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
                     builder=f'opt{opt_level}_ws{workspace_gib:g}_onnx{meta.get("precision")}',
                     gpu_memory_mib=int(gpu_memory_mib), sm_count=int(sm_count))
