"""densepred bag / evaluate-bag / demo --bag on generated rosbag2 recordings (rosbags)."""

import argparse
import shutil

from densepred_ros import bag, bag_cli, bag_eval, cli, encode
from densepred_ros.bag import BagError
from densepred_ros.synthetic import make_sequence
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image

START = 1_700_000_000.0
OUTPUTS = ('/densepred/depth/relative', '/densepred/depth/camera_info')


@pytest.fixture(scope='module')
def frames():
    """Return three generated 64×48 street frames with a 16-beam lidar, 10 Hz."""
    return make_sequence(7, 3, width=64, height=48, beams=16, start_stamp=START)


@pytest.fixture(scope='module')
def street(frames, tmp_path_factory):
    """Return the folder of an MCAP recording of the frames (as `demo --bag` writes)."""
    return bag.write_sequence_bag(tmp_path_factory.mktemp('bags') / 'street', frames)


def _messages(path, topic=None):
    """Return [(topic, log_ns, rclpy message)] of a bag, read with rosbags alone."""
    out = []
    with Reader(path) as reader:
        conns = [c for c in reader.connections if topic is None or c.topic == topic]
        for conn, log_ns, raw in reader.messages(connections=conns):
            out.append((conn.topic, log_ns, conn.msgtype, raw))
    return out


def _bag_args(checkpoint, *extra):
    return ['bag', *extra[:2], '--model', str(checkpoint), '--device', 'cpu',
            '--no-progress', *extra[2:]]


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip(frames, checkpoints, tmp_path, storage, capsys):
    source = bag.write_sequence_bag(tmp_path / 'in', frames, storage=storage)
    out = tmp_path / 'out'
    code = cli.main(_bag_args(checkpoints['lotus_g'], str(source), str(out), '--storage',
                              storage, '--json', str(tmp_path / 'summary.json')))
    assert code == 0, capsys.readouterr()
    files = sorted(p.name for p in out.iterdir())
    assert files == ['metadata.yaml', f'out.{"mcap" if storage == "mcap" else "db3"}']
    assert not list(tmp_path.glob('.out.partial*'))
    inputs = _messages(source)
    outputs = _messages(out)
    # Every input message is copied byte for byte, at its log time.
    copied = [(t, n, bytes(r)) for t, n, _, r in outputs if not t.startswith('/densepred')]
    assert sorted(copied) == sorted((t, n, bytes(r)) for t, n, _, r in inputs)
    images = {n: bag.to_ros(r, m) for t, n, m, r in inputs
              if t == '/camera/image_raw/compressed'}
    assert len(images) == len(frames)
    for topic in OUTPUTS:
        written = [(n, bag.to_ros(r, m)) for t, n, m, r in outputs if t == topic]
        assert [n for n, _ in written] == sorted(images), topic  # image log times
        for log_ns, msg in written:
            assert msg.header.stamp == images[log_ns].header.stamp
            assert msg.header.frame_id == 'camera_optical_frame'
    relative = [bag.to_ros(r, m) for t, _, m, r in outputs if t == OUTPUTS[0]]
    assert all(isinstance(m, Image) and (m.height, m.width) == (48, 64) for m in relative)
    summary = capsys.readouterr().out
    assert f'frames read {len(frames)}, processed {len(frames)}' in summary
    # Log times never go backwards in the written bag.
    assert [n for _, n, _, _ in outputs] == sorted(n for _, n, _, _ in outputs)


def test_no_copy_every_start_duration(street, checkpoints, tmp_path):
    out = tmp_path / 'out'
    args = cli.build_parser().parse_args(_bag_args(
        checkpoints['lotus_g'], str(street), str(out), '--no-copy', '--every', '2'))
    summary = bag_cli.process_bag(args)
    assert (summary.frames_read, summary.frames_selected, summary.processed) == (3, 2, 2)
    with Reader(out) as reader:
        declared = {c.topic for c in reader.connections}
    assert declared == {'/densepred/depth/relative', '/densepred/depth/camera_info',
                        '/densepred/depth/image', '/densepred/normals/image',
                        '/densepred/points'}
    assert {t for t, *_ in _messages(out)} == set(OUTPUTS)  # a random model never aligns
    args = cli.build_parser().parse_args(_bag_args(
        checkpoints['lotus_g'], str(street), str(tmp_path / 'window'), '--start', '0.05',
        '--duration', '0.1', '--namespace', '/x'))
    summary = bag_cli.process_bag(args)
    assert (summary.frames_read, summary.processed) == (1, 1)
    stamps = [bag.to_ros(r, m).header.stamp.nanosec for t, _, m, r in
              _messages(tmp_path / 'window', '/x/depth/relative')]
    assert stamps == [100_000_000]


def test_alignment_uses_the_tf_chain(street, frames):
    reader = bag.open_bag(street)
    tf = bag.read_tf(reader)
    reader.close()
    T = tf.lookup('camera_optical_frame', 'lidar', START)
    np.testing.assert_allclose(T, frames[0].T_cam_lidar, atol=1e-9)
    np.testing.assert_allclose(tf.lookup('lidar', 'camera_optical_frame', START),
                               np.linalg.inv(frames[0].T_cam_lidar), atol=1e-9)
    with pytest.raises(LookupError, match="'map'.*base_link, camera_optical_frame, lidar"):
        tf.lookup('map', 'lidar', START)


def test_dynamic_tf_uses_the_nearest_sample():
    from types import SimpleNamespace as NS

    def tf_msg(stamp, x):
        return NS(transforms=[NS(header=NS(frame_id='odom', stamp=NS(sec=stamp, nanosec=0)),
                                 child_frame_id='base_link',
                                 transform=NS(translation=NS(x=x, y=0.0, z=0.0),
                                              rotation=NS(x=0.0, y=0.0, z=0.0, w=1.0)))])

    tree = bag.TfTree()
    tree.add(tf_msg(10, 1.0), static=False)
    tree.add(tf_msg(11, 2.0), static=False)
    assert tree.lookup('odom', 'base_link', 10.9)[0, 3] == 2.0
    assert tree.lookup('base_link', 'odom', 10.2)[0, 3] == -1.0
    with pytest.raises(LookupError, match='within 0.5 s'):
        tree.lookup('odom', 'base_link', 20.0)


def test_topic_discovery():
    types = {'/cam/image_raw/compressed': bag.COMPRESSED, '/cam/camera_info': bag.CAMERA_INFO,
             '/truth/depth': bag.IMAGE, '/lidar/points': bag.POINTCLOUD2}
    found = bag.discover_topics(types)
    assert found == bag.BagTopics('/cam/image_raw/compressed', bag.COMPRESSED,
                                  '/cam/camera_info', '/lidar/points')
    assert bag.camera_info_topic_for('/a/b/image_raw') == '/a/b/camera_info'
    two = dict(types, **{'/left/image_raw': bag.IMAGE, '/left/camera_info': bag.CAMERA_INFO})
    with pytest.raises(BagError, match='3 Image or CompressedImage topics.*--image-topic: '
                                       '/cam/image_raw/compressed, /left/image_raw, '
                                       '/truth/depth'):
        bag.discover_topics(two)
    assert bag.discover_topics(two, image='/left/image_raw').camera_info == '/left/camera_info'
    with pytest.raises(BagError, match='--image-topic /cam/camera_info is sensor_msgs/msg/'
                                       'CameraInfo, expected'):
        bag.discover_topics(types, image='/cam/camera_info')
    with pytest.raises(BagError, match='--lidar-topic /nope: no such topic'):
        bag.discover_topics(types, lidar='/nope')
    clouds = dict(types, **{'/radar': bag.POINTCLOUD2})
    with pytest.raises(BagError, match='2 PointCloud2 topics.*--lidar-topic: /lidar/points, '
                                       '/radar'):
        bag.discover_topics(clouds)


@pytest.mark.parametrize('missing, message', [
    ('lidar', 'no PointCloud2 topic for the lidar; its topics: /camera/camera_info'),
    ('camera_info', 'no camera_info for /camera/image_raw/compressed: expected a CameraInfo '
                    'topic /camera/camera_info'),
])
def test_bag_without_lidar_or_camera_info(frames, checkpoints, tmp_path, capsys, missing,
                                          message):
    source = bag.write_sequence_bag(tmp_path / 'in', frames, **{missing: False})
    code = cli.main(_bag_args(checkpoints['lotus_g'], str(source), str(tmp_path / 'out'),
                              '--image-topic', '/camera/image_raw/compressed'))
    err = capsys.readouterr().err
    assert code == 2 and message in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'out').exists()


def test_lidar_pose_from_extrinsic_when_the_bag_has_no_tf(frames, checkpoints, tmp_path,
                                                          capsys):
    from densepred_ros.camera import xyz_quat_from_extrinsic
    source = bag.write_sequence_bag(tmp_path / 'in', frames, tf=False)
    code = cli.main(_bag_args(checkpoints['lotus_g'], str(source), str(tmp_path / 'out')))
    err = capsys.readouterr().err
    assert code == 2 and 'the lidar pose is unknown' in err and '--extrinsic' in err
    assert '/tf_static' in err
    extrinsic = [str(v) for v in xyz_quat_from_extrinsic(frames[0].T_cam_lidar)]
    code = cli.main(_bag_args(checkpoints['lotus_g'], str(source), str(tmp_path / 'out'),
                              '--extrinsic', *extrinsic))
    assert code == 0
    assert 'no lidar scan' not in capsys.readouterr().out


def test_interrupted_run_leaves_no_output(street, checkpoints, tmp_path, monkeypatch):
    calls = []
    original = bag_cli.process_frame

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(bag_cli, 'process_frame', interrupted)
    # The CLI's Ctrl-C policy (cli_errors): one line and exit code 130.
    code = cli.main(_bag_args(checkpoints['lotus_g'], str(street), str(tmp_path / 'out')))
    assert code == 130 and len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_refuses_an_existing_output_and_a_corrupt_bag(street, checkpoints, tmp_path, capsys):
    (tmp_path / 'exists').mkdir()
    assert cli.main(_bag_args(checkpoints['lotus_g'], str(street), str(tmp_path / 'exists'))) \
        == 2
    assert 'exists already' in capsys.readouterr().err
    broken = tmp_path / 'broken'
    shutil.copytree(street, broken)
    mcap = broken / 'street.mcap'
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 3])
    code = cli.main(_bag_args(checkpoints['lotus_g'], str(broken), str(tmp_path / 'out')))
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.err
    if code == 2:
        assert captured.err.startswith('densepred bag: error: ')
        assert len(captured.err.splitlines()) == 1
    else:  # what could be read was processed, and the summary says the input ended early
        assert 'the input ended early' in captured.out
        assert (tmp_path / 'out' / 'metadata.yaml').is_file()
    assert not list(tmp_path.glob('.out.partial*'))
    assert cli.main(_bag_args(checkpoints['lotus_g'], str(tmp_path / 'none'),
                              str(tmp_path / 'o2'))) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_compressed_frame_that_fails_to_decode_is_counted(frames, checkpoints, tmp_path):
    source = bag.write_sequence_bag(tmp_path / 'in', frames, jpeg_quality=90,
                                    corrupt_frames=(1,))
    args = cli.build_parser().parse_args(_bag_args(
        checkpoints['lotus_g'], str(source), str(tmp_path / 'out')))
    summary = bag_cli.process_bag(args)
    assert summary.processed == 2
    assert dict(summary.failed) == {'image cannot be decoded': 1}


def _write_scored_bag(path, frames, factor):
    """Write depth = factor·truth (Image) and the lidar as a cloud truth, with camera_info."""
    with bag.OutputBag(path) as out:
        for topic, msgtype in [('/est/depth/image', bag.IMAGE), ('/est/depth/camera_info',
                               bag.CAMERA_INFO), ('/truth/depth', bag.IMAGE),
                               ('/truth/points', bag.POINTCLOUD2),
                               ('/tf_static', bag.TF_MESSAGE)]:
            out.add_topic(topic, msgtype)
        out.queue('/tf_static', bag._stamp_ns(START), bag._tf_static(
            bag.typestore(), START, [('camera_optical_frame', 'lidar', frames[0].T_cam_lidar)]))
        for frame in frames:
            header = bag._header(frame.stamp, 'camera_optical_frame')
            log_ns = bag._stamp_ns(frame.stamp)
            out.queue('/est/depth/image', log_ns,
                      bag.to_raw(encode.depth_to_image(frame.depth * factor, header)))
            out.queue('/est/depth/camera_info', log_ns, bag.to_raw(
                encode.camera_info_for(frame.camera, header, 64, 48)))
            out.queue('/truth/depth', log_ns,
                      bag.to_raw(encode.depth_to_image(frame.depth, header)))
            out.queue('/truth/points', log_ns, bag.to_raw(encode.points_to_pointcloud2(
                frame.lidar_points, bag._header(frame.stamp, 'lidar'))))
        return out.commit()


def test_evaluate_bag_against_image_and_cloud_truth(frames, tmp_path, capsys):
    from densepred_ros.camera import project_points, transform_points
    from densepred_ros.metrics import depth_metrics
    path = _write_scored_bag(tmp_path / 'scored', frames, 1.1)
    result = bag_eval.evaluate_bag(path, '/est/depth/image', '/truth/depth')
    assert result['scored'] == 3
    # The package's metric rule: truth beyond the node's far limit is not evaluated.
    far = bag_eval.node_far_limit()
    finite = np.isfinite(frames[0].depth) & (frames[0].depth <= far)
    z = frames[0].depth[finite].astype(np.float64)
    expected_rmse = float(np.sqrt(np.mean((np.minimum(1.1 * z, far) - z) ** 2)))
    assert result['frames'][0]['rmse'] == pytest.approx(expected_rmse, rel=1e-5)
    expected_abs_rel = np.mean([np.mean(np.abs(np.minimum(1.1 * z, far) - z) / z) for z in (
        f.depth[np.isfinite(f.depth) & (f.depth <= far)].astype(np.float64) for f in frames)])
    assert 0.09 < expected_abs_rel <= 0.1   # 10 % off, less where clipped at the far limit
    assert result['overall']['abs_rel'] == pytest.approx(expected_abs_rel, rel=1e-5)
    assert result['overall']['delta1'] == 1.0 and result['overall']['coverage'] == 1.0
    # The lidar as truth, placed with the bag's tf and camera_info: the same numbers as
    # projecting it here with the generator's own T_cam_lidar and camera.
    cloud = bag_eval.evaluate_bag(path, '/est/depth/image', '/truth/points')
    assert cloud['scored'] == 3
    expected = []
    for frame in frames:
        uv, z = project_points(transform_points(frame.lidar_points, frame.T_cam_lidar),
                               frame.camera)
        truth = np.full(frame.depth.shape, np.nan, np.float32)
        truth[uv[:, 1], uv[:, 0]] = z
        expected.append(depth_metrics(frame.depth * 1.1, truth, far)['abs_rel'])
    assert cloud['overall']['abs_rel'] == pytest.approx(np.mean(expected), rel=1e-5)
    assert cloud['overall']['abs_rel'] > 0.1   # lidar noise and edge pixels add to the 10 %
    assert cli.main(['evaluate-bag', str(path), '--depth-topic', '/est/depth/image',
                     '--truth-topic', '/truth/depth', '--json']) == 0
    assert '"abs_rel"' in capsys.readouterr().out
    assert cli.main(['evaluate-bag', str(path), '--depth-topic', '/est/depth/camera_info',
                     '--truth-topic', '/truth/depth']) == 2
    assert 'is sensor_msgs/msg/CameraInfo, expected' in capsys.readouterr().err


def test_demo_bag_then_bag_then_evaluate(tmp_path, capsys):
    """The two-command walk-through on generated data with the bundled demo model."""
    from densepred_ros.demo import DEMO_MODELS
    street = tmp_path / 'street'
    assert cli.main(['demo', '--bag', str(street), '--frames', '2', '--width', '128',
                     '--height', '96', '--beams', '16', '--storage', 'sqlite3']) == 0
    with Reader(street) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
    assert types == {'/camera/image_raw/compressed': bag.COMPRESSED,
                     '/camera/camera_info': bag.CAMERA_INFO,
                     '/lidar/points': bag.POINTCLOUD2, '/tf_static': bag.TF_MESSAGE,
                     '/truth/depth': bag.IMAGE}
    with Reader(street) as reader:
        tf_static = next(c for c in reader.connections if c.topic == '/tf_static')
    assert tf_static.ext.offered_qos_profiles[0].durability.name == 'TRANSIENT_LOCAL'
    info = next(bag.to_ros(r, m) for t, _, m, r in _messages(street, '/camera/camera_info'))
    assert isinstance(info, CameraInfo) and (info.width, info.height) == (128, 96)
    params = _params_file(tmp_path, '    model:\n      processing_resolution: 128\n')
    assert cli.main(_bag_args(DEMO_MODELS / 'lotus-depth-demo', str(street),
                              str(tmp_path / 'depth'), '--params', str(params))) == 0
    assert 'aligned 2, declined 0' in capsys.readouterr().out
    assert cli.main(['evaluate-bag', str(tmp_path / 'depth'), '--depth-topic',
                     '/densepred/depth/image', '--truth-topic', '/truth/depth', '--json']) == 0
    import json
    result = json.loads(capsys.readouterr().out)
    # The same numbers computed here from the messages, independently of evaluate-bag.
    depth = {n: bag.to_ros(r, mt) for tp, n, mt, r in _messages(tmp_path / 'depth')
             if tp == '/densepred/depth/image'}
    truth = {n: bag.to_ros(r, mt) for tp, n, mt, r in _messages(street, '/truth/depth')}
    from densepred_ros.decode import image_to_depth
    abs_rel = []
    for log_ns, msg in depth.items():
        d = image_to_depth(msg)
        t = image_to_depth(next(m for n, m in truth.items()
                                if m.header.stamp == msg.header.stamp))
        far = bag_eval.node_far_limit()   # truth beyond it is not evaluated, +inf counts as it
        ok = np.isfinite(t) & (t > 0) & (t <= far) & ~np.isnan(d) & (d > 0)
        d = np.minimum(d, far)
        abs_rel.append(np.mean(np.abs(d[ok] - t[ok]) / t[ok]))
    assert result['scored'] == 2
    assert result['overall']['abs_rel'] == pytest.approx(np.mean(abs_rel), rel=1e-6)
    assert result['overall']['abs_rel'] < 0.5   # metric depth, not random numbers


def _params_file(tmp_path, extra=''):
    path = tmp_path / 'params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    alignment:\n      max_time_offset: 0.05\n'
                    '    output:\n      points_stride: 4\n' + extra)
    return path


def test_params_file_is_read_like_the_node(tmp_path):
    values = bag_cli.read_params_file(_params_file(tmp_path))
    assert values == {'alignment.max_time_offset': 0.05, 'output.points_stride': 4}
    args = argparse.Namespace(params=str(_params_file(tmp_path)), model='m', normals_model='',
                              device='', extrinsic=None)
    config, extrinsic = bag_cli.node_config(args)
    assert config.alignment.max_time_offset == 0.05 and extrinsic is None
    (tmp_path / 'bad.yaml').write_text('densepred:\n  ros__parameters:\n    max_age: nope\n')
    args.params = str(tmp_path / 'bad.yaml')
    with pytest.raises(BagError, match='max_age'):
        bag_cli.node_config(args)


def test_relative_depth_only_without_lidar(frames, checkpoints, tmp_path):
    source = bag.write_sequence_bag(tmp_path / 'in', frames, lidar=False)
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    alignment:\n      enabled: false\n')
    args = cli.build_parser().parse_args(_bag_args(
        checkpoints['lotus_g'], str(source), str(tmp_path / 'out'), '--params', str(params),
        '--image-topic', '/camera/image_raw/compressed'))
    summary = bag_cli.process_bag(args)
    assert (summary.processed, summary.aligned) == (3, 0)
    assert dict(summary.declined) == {'alignment disabled': 3}
    assert summary.output_counts['/densepred/depth/relative'] == 3
