"""OutputBag's writer thread: the same bag as without it, failures raised, never a hang."""

import threading

from densepred_ros import bag, bag_cli, cli, encode
from densepred_ros.synthetic import make_sequence
import numpy as np
import pytest
from rosbags.rosbag2 import Reader

START = 1_700_000_000.0


def _messages(path):
    with Reader(path) as reader:
        return [(c.topic, n, bytes(r)) for c, n, r in reader.messages()]


def _write(path, storage, background, frames):
    """Queue inputs and outputs out of log-time order, releasing as `densepred bag` does."""
    with bag.OutputBag(path, storage, background=background) as out:
        out.add_topic('/in/depth', bag.IMAGE)
        out.add_topic('/out/points', bag.POINTCLOUD2)
        out.add_topic('/out/info', bag.CAMERA_INFO)
        for index, frame in enumerate(frames):
            header = bag._header(frame.stamp, 'camera_optical_frame')
            log_ns = bag._stamp_ns(frame.stamp)
            out.release(log_ns - 50_000_000)
            out.queue('/in/depth', log_ns + 7, bag.to_raw(encode.depth_to_image(
                frame.depth, header)))
            out.queue_message('/out/points', log_ns, encode.points_to_pointcloud2(
                frame.lidar_points, header))
            out.queue_message('/out/info', log_ns - index, encode.camera_info_for(
                frame.camera, header, 32, 24))
        out.commit()
    return out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_background_writes_the_same_bag(tmp_path, storage):
    frames = make_sequence(3, 5, width=32, height=24, beams=16, start_stamp=START)
    plain = _write(tmp_path / 'plain', storage, False, frames)
    threaded = _write(tmp_path / 'threaded', storage, True, frames)
    written = _messages(tmp_path / 'threaded')
    assert written == _messages(tmp_path / 'plain')
    assert len(written) == 15 and plain.counts == threaded.counts
    assert [n for _, n, _ in written] == sorted(n for _, n, _ in written)
    assert not any(t.name == 'densepred-bag-writer' for t in threading.enumerate())


def test_a_failure_in_the_thread_is_raised_and_nothing_hangs(tmp_path):
    out = bag.OutputBag(tmp_path / 'out', background=True)
    out.add_topic('/a', bag.CAMERA_INFO)
    out.queue('/undeclared', 1, b'\0\1\0\0')  # fails in the thread, at its release
    out.release()
    with pytest.raises(bag.OutputError, match="cannot write .*out: KeyError: '/undeclared'"):
        out.flush()
    for _ in range(3 * bag.BACKGROUND_JOBS):  # the caller never blocks on a dead writer
        with pytest.raises(bag.OutputError):
            out.queue('/a', 2, b'\0\1\0\0')
    with pytest.raises(bag.OutputError):
        out.commit()
    out.abort()
    assert list(tmp_path.iterdir()) == []
    assert not any(t.name == 'densepred-bag-writer' for t in threading.enumerate())


def test_a_message_that_cannot_be_serialized_is_an_output_error(tmp_path):
    with pytest.raises(bag.OutputError, match='cannot write'):
        with bag.OutputBag(tmp_path / 'out', background=True) as out:
            out.add_topic('/a', bag.CAMERA_INFO)
            out.queue_message('/a', 1, object())
            out.commit()
    assert list(tmp_path.iterdir()) == []


def test_abort_with_work_waiting_removes_everything(tmp_path):
    out = bag.OutputBag(tmp_path / 'out', background=True)
    out.add_topic('/a', bag.IMAGE)
    big = bag.to_raw(encode.depth_to_image(np.zeros((480, 640), np.float32),
                                           bag._header(START, 'c')))
    for index in range(2 * bag.BACKGROUND_JOBS):
        out.queue('/a', index, big)
        out.release()
    out.abort()
    assert list(tmp_path.iterdir()) == []


def test_bag_tool_reports_a_write_failure_as_one_line(frames_bag, checkpoints, tmp_path,
                                                      capsys, monkeypatch):
    def broken(msg):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(bag, 'to_raw', broken)
    code = cli.main(['bag', str(frames_bag), str(tmp_path / 'out'), '--model',
                     str(checkpoints['lotus_g']), '--device', 'cpu', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith('densepred bag: error: cannot write') and 'No space left' in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def frames_bag(tmp_path_factory):
    """Return an MCAP recording of two generated 64×48 frames."""
    frames = make_sequence(7, 2, width=64, height=48, beams=16, start_stamp=START)
    return bag.write_sequence_bag(tmp_path_factory.mktemp('bags') / 'street', frames)


def test_summary_time_includes_the_writing(frames_bag, checkpoints, tmp_path):
    args = cli.build_parser().parse_args(
        ['bag', str(frames_bag), str(tmp_path / 'out'), '--model',
         str(checkpoints['lotus_g']), '--device', 'cpu', '--no-progress'])
    summary = bag_cli.process_bag(args)
    assert summary.processed == 2 and summary.seconds >= summary.pipeline_seconds
    assert sum(summary.output_counts.values()) == len(_messages(tmp_path / 'out'))


def test_fast_mcap_writer_writes_rosbags_file_byte_for_byte(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from densepred_ros.bag_mcap import writer_class
    fast = writer_class()
    assert fast is not Writer  # the pinned rosbags has the internals it builds on
    store = bag.typestore()
    for cls, name in ((Writer, 'rosbags'), (fast, 'fast')):
        rng = np.random.default_rng(0)
        writer = cls(tmp_path / name / 'x', version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        first = writer.add_connection('/a', bag.IMAGE, typestore=store)
        for index in range(30):  # small, large and chunk-crossing messages, a late topic
            size = int(rng.integers(0, 3 << 20)) if index % 3 == 0 else int(rng.integers(70000))
            writer.write(first, index, rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            if index == 10:
                second = writer.add_connection('/b', bag.POINTCLOUD2, typestore=store)
            if index > 10:
                data = bytearray(rng.integers(0, 256, 100000, dtype=np.uint8).tobytes())
                writer.write(second, index + 5, memoryview(data).toreadonly())
        writer.close()
    for file in ('x.mcap', 'metadata.yaml'):
        assert (tmp_path / 'fast' / 'x' / file).read_bytes() == \
            (tmp_path / 'rosbags' / 'x' / file).read_bytes(), file


def test_bag_tool_in_the_background_writes_the_same_bag(frames_bag, checkpoints, tmp_path,
                                                        monkeypatch):
    """`densepred bag` with the writer thread (its CUDA mode) gives the CPU mode's bag."""
    def run(name):
        args = cli.build_parser().parse_args(
            ['bag', str(frames_bag), str(tmp_path / name), '--model',
             str(checkpoints['lotus_g']), '--device', 'cpu', '--no-progress'])
        bag_cli.process_bag(args)
        return _messages(tmp_path / name)

    plain = run('plain')
    threads = []

    def background(path, storage, pipeline):
        out = bag.OutputBag(path, storage, background=True)
        threads.append(out._thread)
        return out

    monkeypatch.setattr(bag_cli, 'open_output', background)
    assert run('threaded') == plain and len(threads) == 1
    assert any(t.startswith('/densepred/') for t, _, _ in plain)
