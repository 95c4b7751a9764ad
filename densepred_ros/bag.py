"""rosbag2 recordings without a ROS distro: reading, topic discovery, tf, writing.

Bags are read and written with the `rosbags` library (pure Python, MCAP and sqlite3).
sensor_msgs messages are read into the real rclpy message classes with
``rclpy.serialization`` (so the node's decode/encode code runs on them unchanged) and
written with rosbags' CDR serializer (`to_raw`, the same bytes, much faster on large
arrays); tf2_msgs/TFMessage, which has no wheel here, uses rosbags' own types.
Everything wrong with the input raises :class:`BagError` with a one-line message.
"""

import array
from dataclasses import dataclass, field
import functools
import heapq
import importlib
import itertools
from pathlib import Path
import queue
import shutil
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from densepred_ros.camera import extrinsic_from_xyz_quat, xyz_quat_from_extrinsic
from densepred_ros.cli_errors import UserError
import numpy as np

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
TF_TOPICS = ('/tf_static', '/tf')
STORAGES = ('mcap', 'sqlite3')
#: Calls that may wait for `OutputBag`'s writer thread (about 5 frames of outputs).
BACKGROUND_JOBS = 64
THREAD_JOIN_TIMEOUT = 30.0


class BagError(UserError, ValueError):
    """A bag cannot be used as asked; the message says why in one line (exit code 2)."""


class OutputError(BagError):
    """The output bag cannot be written (disk full, permissions, a failed serialization)."""


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """Return rosbags' type store of ROS 2 Jazzy (message definitions for writing)."""
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.ROS2_JAZZY)


def ros_class(msgtype: str) -> Any:
    """Return the rclpy message class of 'pkg/msg/Name' (sensor_msgs, std_msgs, ...)."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


def to_ros(raw: Any, msgtype: str) -> Any:
    """Deserialize the CDR bytes of a bag message into the rclpy message object.

    Raises:
        BagError: the bytes are not a valid message of that type.
    """
    from rclpy.serialization import deserialize_message
    try:
        return deserialize_message(bytes(raw), ros_class(msgtype))
    except Exception as exc:  # rclpy raises RuntimeError/TypeError on bad CDR
        raise BagError(f'a {msgtype} message cannot be deserialized: {exc}') from exc


def msgtype_of(msg: Any) -> str:
    """Return the 'pkg/msg/Name' type of an rclpy message object."""
    return f'{type(msg).__module__.split(".")[0]}/msg/{type(msg).__name__}'


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> Tuple[str, ...]:
    return tuple(cls.get_fields_and_field_types())


def _store_value(value: Any) -> Any:
    if hasattr(value, 'get_fields_and_field_types'):
        return to_store(value)
    if isinstance(value, array.array):
        return np.frombuffer(value, dtype=value.typecode)  # a view: nothing is copied
    if isinstance(value, bytes) and len(value) == 1:  # rclpy's octet; rosbags wants an int
        return value[0]
    if isinstance(value, list) and value:
        if hasattr(value[0], 'get_fields_and_field_types'):
            return [to_store(item) for item in value]
        if isinstance(value[0], bytes):  # octet arrays
            return np.frombuffer(b''.join(value), dtype=np.uint8)
    return value


def to_store(msg: Any) -> Any:
    """Return an rclpy message as the same message of rosbags' type store.

    Arrays are not copied: primitive sequences (``array.array``) become numpy views of
    them, fixed-size arrays are numpy already.
    """
    cls = typestore().types[msgtype_of(msg)]
    return cls(**{name: _store_value(getattr(msg, name)) for name in _field_names(type(msg))})


def to_raw(msg: Any) -> memoryview:
    """Serialize an rclpy message to CDR bytes, as a rosbag2 stores them.

    rosbags' serializer writes each array with one copy; rclpy's ``serialize_message``
    gives the same bytes (test_bag_serialize.py) but took ~4 ms for a 2.4 MB PointCloud2
    (docs/recordings.md).
    """
    return typestore().serialize_cdr(to_store(msg), msgtype_of(msg))


# Reading ----------------------------------------------------------------------------------

def open_bag(path: Any) -> Any:
    """Open a rosbag2 (folder, .mcap or .db3 file) for reading; return the open Reader.

    Raises:
        BagError: missing path, unknown storage, unreadable or corrupt metadata or file.
    """
    from rosbags.rosbag2 import Reader
    path = Path(path)
    if not path.exists():
        raise BagError(f'input bag {path} does not exist')
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # ReaderError, yaml, sqlite and struct errors alike
        raise BagError(f'cannot open {path} as a rosbag2 (MCAP or sqlite3): '
                       f'{type(exc).__name__}: {exc}') from exc
    return reader


def topic_types(reader: Any) -> Dict[str, str]:
    """Return topic → message type of an open Reader."""
    return {conn.topic: conn.msgtype for conn in reader.connections}


def camera_info_topic_for(image_topic: str) -> str:
    """Return the CameraInfo topic image_transport puts beside an image topic.

    '/cam/image_raw' and '/cam/image_raw/compressed' both give '/cam/camera_info'.
    """
    topic = image_topic.rstrip('/')
    if topic.endswith('/compressed'):
        topic = topic[:-len('/compressed')]
    parent = topic.rsplit('/', 1)[0]
    return f'{parent}/camera_info'


@dataclass(frozen=True)
class BagTopics:
    """The input topics of a bag: image (raw or compressed), its camera_info, the lidar."""

    image: str
    image_type: str
    camera_info: str
    lidar: Optional[str]


def _only(types: Dict[str, str], wanted: Sequence[str], what: str, option: str) -> str:
    found = sorted(topic for topic, msgtype in types.items() if msgtype in wanted)
    if len(found) == 1:
        return found[0]
    kinds = ' or '.join(t.rsplit('/', 1)[-1] for t in wanted)
    if not found:
        listing = ', '.join(f'{t} ({m})' for t, m in sorted(types.items())) or 'none'
        raise BagError(f'the bag has no {kinds} topic for the {what}; its topics: {listing}')
    raise BagError(f'the bag has {len(found)} {kinds} topics, choose the {what} with '
                   f'{option}: {", ".join(found)}')


def check_topic_type(types: Dict[str, str], topic: str, wanted: Sequence[str],
                     option: str) -> None:
    """Raise BagError unless topic is in the bag with one of the wanted types."""
    if topic not in types:
        raise BagError(f'{option} {topic}: no such topic in the bag (topics: '
                       f'{", ".join(sorted(types)) or "none"})')
    if types[topic] not in wanted:
        raise BagError(f'{option} {topic} is {types[topic]}, expected '
                       f'{" or ".join(wanted)}')


def discover_topics(types: Dict[str, str], image: Optional[str] = None,
                    camera_info: Optional[str] = None, lidar: Optional[str] = None,
                    need_lidar: bool = True) -> BagTopics:
    """Choose the image, camera_info and lidar topics of a bag.

    The image is the bag's only Image or CompressedImage topic (of several, the only one
    with a CameraInfo topic beside it) unless given; its
    camera_info is the CameraInfo topic beside it (`camera_info_topic_for`), else the
    bag's only CameraInfo topic; the lidar is the only PointCloud2 topic.

    Args:
        types: topic → message type of the bag.
        image, camera_info, lidar: topics chosen by the user (checked), or None.
        need_lidar: raise when no lidar topic can be chosen (else lidar is None).

    Raises:
        BagError: a given topic is missing or of the wrong type, or the choice is
            ambiguous or impossible; the message lists the candidates.
    """
    if image is None:
        images = {t: m for t, m in types.items() if m in (IMAGE, COMPRESSED)}
        beside = {t: m for t, m in images.items()
                  if types.get(camera_info_topic_for(t)) == CAMERA_INFO}
        # Several images (e.g. a depth ground truth): the camera is the one with a
        # camera_info beside it, when exactly one has.
        image = _only(beside if len(images) > 1 and len(beside) == 1 else images,
                      (IMAGE, COMPRESSED), 'camera image', '--image-topic')
    else:
        check_topic_type(types, image, (IMAGE, COMPRESSED), '--image-topic')
    if camera_info is None:
        beside = camera_info_topic_for(image)
        if types.get(beside) == CAMERA_INFO:
            camera_info = beside
        else:
            infos = sorted(t for t, m in types.items() if m == CAMERA_INFO)
            if len(infos) != 1:
                raise BagError(
                    f'no camera_info for {image}: expected a CameraInfo topic {beside}; '
                    f'CameraInfo topics in the bag: {", ".join(infos) or "none"} '
                    f'(choose one with --camera-info-topic)')
            camera_info = infos[0]
    else:
        check_topic_type(types, camera_info, (CAMERA_INFO,), '--camera-info-topic')
    if lidar is None:
        clouds = sorted(t for t, m in types.items() if m == POINTCLOUD2)
        if len(clouds) == 1:
            lidar = clouds[0]
        elif need_lidar and not clouds:
            listing = ', '.join(sorted(types))
            raise BagError(f'the bag has no PointCloud2 topic for the lidar; its topics: '
                           f'{listing} (without a lidar set alignment.enabled: false in '
                           f'--params for relative depth only)')
        elif need_lidar:
            _only(types, (POINTCLOUD2,), 'lidar', '--lidar-topic')
    else:
        check_topic_type(types, lidar, (POINTCLOUD2,), '--lidar-topic')
    return BagTopics(image, types[image], camera_info, lidar)


# tf -------------------------------------------------------------------------------------

def _frame(name: str) -> str:
    return str(name).lstrip('/')


@dataclass
class TfTree:
    """Transforms from a bag's /tf_static and /tf, composed along the frame tree.

    Static transforms hold at all times; for a dynamic edge the sample nearest in time is
    used (no interpolation), within ``max_gap`` seconds.
    """

    max_gap: float = 0.5
    static: Dict[str, Tuple[str, np.ndarray]] = field(default_factory=dict)
    dynamic: Dict[str, Tuple[str, List[Tuple[float, np.ndarray]]]] = field(
        default_factory=dict)

    def add(self, msg: Any, static: bool) -> None:
        """Add every TransformStamped of a tf2_msgs/TFMessage (any object with its fields)."""
        for tf in msg.transforms:
            parent, child = _frame(tf.header.frame_id), _frame(tf.child_frame_id)
            t, q = tf.transform.translation, tf.transform.rotation
            T = extrinsic_from_xyz_quat(t.x, t.y, t.z, q.x, q.y, q.z, q.w)
            if static:
                self.static[child] = (parent, T)
            else:
                stamp = tf.header.stamp.sec + tf.header.stamp.nanosec * 1e-9
                self.dynamic.setdefault(child, (parent, []))[1].append((stamp, T))

    @property
    def frames(self) -> List[str]:
        """Every frame named by a transform."""
        names = set()
        for child, (parent, _) in itertools.chain(self.static.items(), self.dynamic.items()):
            names.update((child, parent))
        return sorted(names)

    def _edge(self, child: str, stamp: float) -> Tuple[str, np.ndarray]:
        if child in self.static:
            return self.static[child]
        parent, samples = self.dynamic[child]
        t, T = min(samples, key=lambda s: abs(s[0] - stamp))
        if abs(t - stamp) > self.max_gap:
            raise LookupError(f'no /tf sample {parent} <- {child} within {self.max_gap} s of '
                              f'{stamp:.3f} (nearest at {t:.3f})')
        return parent, T

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        """Return the 4×4 T_target_source (points in source → target) at stamp (s).

        Raises:
            LookupError: the two frames are not connected (the message names them).
        """
        target, source = _frame(target), _frame(source)
        edges = itertools.chain(self.dynamic.items(), self.static.items())
        parents = {child: parent for child, (parent, _) in edges}

        def chain(frame: str) -> List[str]:
            path = [frame]
            while path[-1] in parents and len(path) <= len(parents):
                path.append(parents[path[-1]])
            return path

        up_source, up_target = chain(source), chain(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise LookupError(f'no tf chain from {source!r} to {target!r} (frames in the '
                              f"bag's tf: {', '.join(self.frames) or 'none'})")
        T_common_source = np.eye(4)
        for frame in up_source[:up_source.index(common)]:
            _, T = self._edge(frame, stamp)
            T_common_source = T @ T_common_source
        T_common_target = np.eye(4)
        for frame in up_target[:up_target.index(common)]:
            _, T = self._edge(frame, stamp)
            T_common_target = T @ T_common_target
        return np.linalg.inv(T_common_target) @ T_common_source


def read_tf(reader: Any) -> TfTree:
    """Read every /tf_static and /tf message of an open Reader into a TfTree.

    Raises:
        BagError: a tf message cannot be read.
    """
    tree = TfTree()
    connections = [c for c in reader.connections
                   if c.topic in TF_TOPICS and c.msgtype == TF_MESSAGE]
    if not connections:
        return tree
    store = typestore()
    try:
        for conn, _, raw in reader.messages(connections=connections):
            tree.add(store.deserialize_cdr(raw, TF_MESSAGE), static=conn.topic == '/tf_static')
    except Exception as exc:
        raise BagError(f'cannot read the tf of the bag: {type(exc).__name__}: {exc}') from exc
    return tree


def first_messages(reader: Any, topics: Iterable[str]) -> Dict[str, Tuple[int, Any]]:
    """Return topic → (log time ns, rclpy message) of the first message of each topic."""
    wanted = set(topics)
    connections = [c for c in reader.connections if c.topic in wanted]
    found: Dict[str, Tuple[int, Any]] = {}
    for conn, log_ns, raw in reader.messages(connections=connections):
        if conn.topic not in found:
            found[conn.topic] = (log_ns, to_ros(raw, conn.msgtype))
        if len(found) == len(wanted):
            break
    return found


# Writing --------------------------------------------------------------------------------

def _latched_qos() -> Any:
    """Return the QoS tf2 offers on /tf_static: reliable, transient local, depth 1."""
    from rosbags.interfaces import (
        Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
    never = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL, deadline=never, lifespan=never,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
               avoid_ros_namespace_conventions=False)


class _Sync:
    """A writer-thread job whose caller waits for it: runs even after a failure."""

    def __init__(self, function: Any, args: Tuple[Any, ...]) -> None:
        self.function, self.args = function, args
        self.done = threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def __call__(self) -> None:
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # handed to the waiting caller
            self.error = exc
        finally:
            self.done.set()


class OutputBag:
    """A rosbag2 written under a temporary name and renamed into place by `commit`.

    Messages are queued and written in log-time order; `release(until_ns)` writes those
    logged before ``until_ns``. An interrupted run (`abort`, or an exception inside a
    ``with`` block) removes the temporary folder, so no bag that looks complete is left
    under the final name.

    With ``background=True`` one writer thread owns the rosbags Writer (sqlite3 allows no
    other) and does the serializing (`queue_message`), the ordering and the writing, in
    the order the calls were made, so the bag is the same; the caller goes on meanwhile
    (the model runs while the previous frame is written). At most `BACKGROUND_JOBS` calls
    wait; a failure in the thread is raised as `OutputError` by the next call, `flush` or
    `commit`, and the thread only drains what is left.

    Args:
        path: the final bag folder; it must not exist.
        storage: 'mcap' or 'sqlite3'.
        background: write in a thread.
    """

    def __init__(self, path: Any, storage: str = 'mcap', background: bool = False) -> None:
        """Open the writer in ``.<name>.partial/`` beside the final path."""
        if storage not in STORAGES:
            raise BagError(f'--storage must be one of {", ".join(STORAGES)}, got {storage!r}')
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f'output {self.path} exists already; choose a new name')
        if not self.path.parent.is_dir():
            raise BagError(f'the folder of the output, {self.path.parent}, does not exist')
        self.partial = self.path.parent / f'.{self.path.name}.partial'
        if self.partial.exists():  # left by an interrupted earlier run: ours by name
            shutil.rmtree(self.partial)
        self.partial.mkdir()
        self._connections: Dict[str, Any] = {}
        self._queue: List[Tuple[int, int, str, Any]] = []
        self._order = itertools.count()
        self.counts: Dict[str, int] = {}
        self._writer: Any = None
        self._jobs: Optional[queue.Queue] = None
        self._thread: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None
        self._stopping = False
        if background:
            self._jobs = queue.Queue(maxsize=BACKGROUND_JOBS)
            self._thread = threading.Thread(target=self._work, name='densepred-bag-writer',
                                            daemon=True)
            self._thread.start()
        try:
            self._wait(self._open, storage)
        except Exception as exc:
            self._stop_thread()
            shutil.rmtree(self.partial, ignore_errors=True)
            raise BagError(f'cannot write {self.path}: {exc}') from exc

    def _open(self, storage: str) -> None:
        from rosbags.rosbag2 import StoragePlugin

        from densepred_ros.bag_mcap import writer_class
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        writer = writer_class()(self.partial / self.path.name, version=9, storage_plugin=plugin)
        writer.open()
        self._writer = writer

    def add_topic(self, topic: str, msgtype: str, like: Any = None) -> None:
        """Declare a topic; ``like`` is an input Connection whose definition and QoS are kept.

        Raises:
            BagError: the topic's message definition is unknown.
        """
        if topic in self._connections:
            return
        try:
            conn = self._wait(self._add_connection, topic, msgtype, like)
        except OutputError:
            raise
        except Exception as exc:
            raise BagError(f'cannot write topic {topic} ({msgtype}): {exc}') from exc
        self._connections[topic] = conn
        self.counts[topic] = 0

    def _add_connection(self, topic: str, msgtype: str, like: Any) -> Any:
        if like is not None and like.msgdef.data and like.digest:
            return self._writer.add_connection(
                topic, msgtype, msgdef=like.msgdef.data, rihs01=like.digest,
                serialization_format=like.ext.serialization_format,
                offered_qos_profiles=like.ext.offered_qos_profiles)
        qos = like.ext.offered_qos_profiles if like is not None else ()
        if not qos and topic == '/tf_static':
            qos = [_latched_qos()]
        return self._writer.add_connection(topic, msgtype, typestore=typestore(),
                                           offered_qos_profiles=qos)

    def queue(self, topic: str, log_ns: int, raw: Any) -> None:
        """Queue a serialized message of a declared topic at log time ``log_ns``.

        ``raw`` (bytes or a buffer) is kept, not copied, until it is written: it must not
        change afterwards.
        """
        self._call(self._push, topic, int(log_ns), raw)

    def queue_message(self, topic: str, log_ns: int, msg: Any) -> None:
        """Queue an rclpy message; the writer serializes it (`to_raw`).

        The message must not change afterwards (in the background it is read later).
        """
        self._call(self._push_message, topic, int(log_ns), msg)

    def release(self, until_ns: Optional[int] = None) -> None:
        """Write the queued messages logged before ``until_ns`` (all when None)."""
        self._call(self._release, until_ns)

    def flush(self) -> None:
        """Wait until every call so far is done (the writer thread's work included).

        Raises:
            OutputError: writing failed.
        """
        self._wait(self._raise_failure)

    def commit(self) -> Path:
        """Write what is queued, close the bag and rename it to the final path.

        Raises:
            OutputError: writing failed (the temporary folder is left to `abort`).
        """
        self.release()
        self.flush()
        try:
            self._wait(self._writer.close)
        except Exception as exc:
            raise OutputError(f'cannot write {self.path}: {type(exc).__name__}: {exc}') from exc
        self._stop_thread()
        (self.partial / self.path.name).rename(self.path)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary folder."""
        self._stopping = True  # the thread skips the writes still waiting
        try:
            self._wait(self._writer.abort)
        except OutputError:
            pass  # aborting anyway; the folder goes below
        finally:
            self._stop_thread()
            shutil.rmtree(self.partial, ignore_errors=True)

    def _push(self, topic: str, log_ns: int, raw: Any) -> None:
        heapq.heappush(self._queue, (log_ns, next(self._order), topic, raw))

    def _push_message(self, topic: str, log_ns: int, msg: Any) -> None:
        self._push(topic, log_ns, to_raw(msg))

    def _release(self, until_ns: Optional[int]) -> None:
        while self._queue and (until_ns is None or self._queue[0][0] < until_ns):
            log_ns, _, topic, raw = heapq.heappop(self._queue)
            self._writer.write(self._connections[topic], log_ns, raw)
            self.counts[topic] += 1

    def _call(self, job: Any, *args: Any) -> None:
        """Run job(*args) now, or hand it to the writer thread without waiting."""
        if self._jobs is None:
            try:
                job(*args)
            except Exception as exc:
                raise OutputError(
                    f'cannot write {self.path}: {type(exc).__name__}: {exc}') from exc
            return
        self._raise_failure()
        self._put((job, args))

    def _wait(self, function: Any, *args: Any) -> Any:
        """Return function(*args), run by the writer thread when there is one."""
        if self._jobs is None:
            return function(*args)
        job = _Sync(function, args)
        self._put((job, ()))
        while not job.done.wait(0.1):
            if not self._thread.is_alive():
                raise OutputError(f'cannot write {self.path}: the writer thread stopped')
        if job.error is not None:
            raise job.error
        return job.result

    def _put(self, item: Any) -> None:
        while True:
            if not self._thread.is_alive():
                raise OutputError(f'cannot write {self.path}: the writer thread stopped')
            try:
                self._jobs.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        """Run the calls in order (the writer thread); after a failure only drain them."""
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, args = item
            if isinstance(job, _Sync):
                job()
            elif self._failure is None and not self._stopping:
                try:
                    job(*args)
                except BaseException as exc:  # kept for the caller; the thread drains on
                    self._failure = exc

    def _stop_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._put(None)
            self._thread.join(THREAD_JOIN_TIMEOUT)

    def _raise_failure(self) -> None:
        exc = self._failure
        if exc is not None:
            raise OutputError(f'cannot write {self.path}: {type(exc).__name__}: {exc}') from exc

    def __enter__(self) -> 'OutputBag':
        """Return self."""
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Abort on any exception (including KeyboardInterrupt); the caller commits."""
        if exc_type is not None:
            self.abort()


# Generated recordings ---------------------------------------------------------------------

@dataclass(frozen=True)
class DemoTopics:
    """Topic and frame names of the bag written by `write_sequence_bag`."""

    image: str = '/camera/image_raw/compressed'
    camera_info: str = '/camera/camera_info'
    lidar: str = '/lidar/points'
    truth: str = '/truth/depth'
    base_frame: str = 'base_link'
    camera_frame: str = 'camera_optical_frame'
    lidar_frame: str = 'lidar'


def _stamp_ns(stamp: float) -> int:
    """Return a generated stamp (s) as integer ns, rounded to the microsecond."""
    return int(round(stamp * 1e6)) * 1000


def _header(stamp: float, frame_id: str) -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    sec, nanosec = divmod(_stamp_ns(stamp), 10**9)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _tf_static(store: Any, stamp: float, transforms: Sequence[Tuple[str, str, np.ndarray]]
               ) -> bytes:
    """Serialize a tf2_msgs/TFMessage of (parent, child, T_parent_child) with rosbags."""
    names = store.types
    Time, Header = names['builtin_interfaces/msg/Time'], names['std_msgs/msg/Header']
    Vector3, Quaternion = names['geometry_msgs/msg/Vector3'], names['geometry_msgs/msg/Quaternion']
    Transform = names['geometry_msgs/msg/Transform']
    TransformStamped = names['geometry_msgs/msg/TransformStamped']
    sec, nanosec = divmod(_stamp_ns(stamp), 10**9)
    items = []
    for parent, child, T in transforms:
        x, y, z, qx, qy, qz, qw = xyz_quat_from_extrinsic(T)
        items.append(TransformStamped(
            header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=parent),
            child_frame_id=child,
            transform=Transform(translation=Vector3(x=x, y=y, z=z),
                                rotation=Quaternion(x=qx, y=qy, z=qz, w=qw))))
    return bytes(store.serialize_cdr(names[TF_MESSAGE](transforms=items), TF_MESSAGE))


def write_sequence_bag(path: Any, frames: Sequence[Any], storage: str = 'mcap',
                       jpeg_quality: int = 95, topics: DemoTopics = DemoTopics(),
                       lidar: bool = True, camera_info: bool = True, tf: bool = True,
                       corrupt_frames: Sequence[int] = ()) -> Path:
    """Write generated frames (`synthetic.make_sequence`) as a rosbag2 recording.

    Topics: JPEG CompressedImages ('rgb8; jpeg compressed bgr8'), CameraInfo, the lidar
    as PointCloud2 in its own frame, /tf_static (base_link → camera optical frame and
    base_link → lidar, so the lidar pose is a two-link chain) and the exact depth as a
    32FC1 Image (metres, +inf where nothing is hit) on the truth topic. Stamps are the
    frames' stamps; log time = stamp.

    Args:
        path: the bag folder to create (must not exist).
        frames: SyntheticFrame objects of one rig.
        storage: 'mcap' or 'sqlite3'.
        jpeg_quality: 1..100.
        topics: topic and frame names.
        lidar, camera_info, tf: leave these topics out when False (to make faulty bags).
        corrupt_frames: indices of frames whose JPEG is cut in half (faulty bags).

    Returns:
        The bag folder.
    """
    import io

    from PIL import Image as PilImage
    from sensor_msgs.msg import CompressedImage

    from densepred_ros import encode

    if not frames:
        raise ValueError('no frames to write')
    store = typestore()
    T_cam_lidar = frames[0].T_cam_lidar
    # base_link: x forward, y left, z up at the camera; the optical frame is z forward.
    T_base_cam = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    T_base_lidar = T_base_cam @ T_cam_lidar
    with OutputBag(path, storage) as bag:
        if tf:
            bag.add_topic('/tf_static', TF_MESSAGE)
        bag.add_topic(topics.image, COMPRESSED)
        bag.add_topic(topics.truth, IMAGE)
        if camera_info:
            bag.add_topic(topics.camera_info, CAMERA_INFO)
        if lidar:
            bag.add_topic(topics.lidar, POINTCLOUD2)
        first = float(frames[0].stamp)
        if tf:
            bag.queue('/tf_static', _stamp_ns(first), _tf_static(store, first, [
                (topics.base_frame, topics.camera_frame, T_base_cam),
                (topics.base_frame, topics.lidar_frame, T_base_lidar)]))
        for index, frame in enumerate(frames):
            log_ns = _stamp_ns(float(frame.stamp))
            header = _header(float(frame.stamp), topics.camera_frame)
            if lidar:
                bag.queue(topics.lidar, log_ns, to_raw(encode.points_to_pointcloud2(
                    frame.lidar_points, _header(float(frame.stamp), topics.lidar_frame))))
            if camera_info:
                height, width = frame.rgb.shape[:2]
                bag.queue(topics.camera_info, log_ns, to_raw(
                    encode.camera_info_for(frame.camera, header, width, height)))
            buffer = io.BytesIO()
            PilImage.fromarray(frame.rgb).save(buffer, format='JPEG', quality=jpeg_quality)
            compressed = CompressedImage(header=header, format='rgb8; jpeg compressed bgr8')
            data = buffer.getvalue()
            compressed.data = data[:len(data) // 2] if index in corrupt_frames else data
            bag.queue(topics.image, log_ns + 1, to_raw(compressed))
            bag.queue(topics.truth, log_ns + 1, to_raw(encode.depth_to_image(frame.depth,
                                                                             header)))
        return bag.commit()
