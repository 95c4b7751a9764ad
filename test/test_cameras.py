"""Several cameras on one model (``cameras`` parameter) over real rclpy.

Three cameras on one rig look at one generated scene from three yaw angles; one lidar
serves them all. Each camera's metric depth must equal what a single-camera node gives
for the same frame; a silent camera holds up nobody; bad configurations fail configure.
"""

from densepred_ros import decode, encode
from densepred_ros.feeder import Feeder, LIDAR_FRAME, wait_for
from densepred_ros.models import ModelSpec, Prediction
from densepred_ros.params import valid_camera_name
from densepred_ros.synthetic.frames import render_rig
from densepred_ros.synthetic.lidar import LidarConfig
from densepred_ros.synthetic.poses import (
    invert_transform, make_transform, rig_lidar_transform, rotation_from_ypr)
from densepred_ros.synthetic.render import make_camera
from densepred_ros.synthetic.scenes import make_scene
from lifecycle_msgs.msg import State as StateMsg
from node_rig import (
    DEADLINE, extrinsic_parameter, HEIGHT, Rig, state_id, WIDTH)
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from std_msgs.msg import Header

CAMERAS = {'front': 0.0, 'left': 0.6, 'right': -0.6}   # yaw on the rig, radians


@pytest.fixture(scope='module')
def frames():
    """Render the three cameras of one rig at one pose; the lidar stays where it is."""
    scene = make_scene(3, 'indoor')
    T_world_rig = scene.trajectory.pose(0.0)
    out = {}
    for name, yaw in CAMERAS.items():
        T_turn = make_transform(rotation_from_ypr(yaw), [0.0, 0.0, 0.0])
        out[name] = render_rig(
            scene, T_world_rig @ T_turn, make_camera(WIDTH, HEIGHT, 70.0),
            LidarConfig(beams=32), invert_transform(T_turn) @ rig_lidar_transform(), 0.0,
            np.random.default_rng([3, 0]))
    return out


class FramesOracle:
    """A 'model' that returns the true depth (normalised to [0, 1]) of whichever frame it sees.

    With it the alignment recovers metric depth exactly, so any mix-up between cameras
    (wrong extrinsic, wrong aligner, wrong publisher) shows.
    """

    def __init__(self, frames) -> None:
        """Precompute the normalised depth of every frame, keyed by its image bytes."""
        self.known = {}
        for frame in frames:
            depth = frame.depth.astype(np.float64)
            finite = np.isfinite(depth)
            lo, hi = depth[finite].min(), depth[finite].max()
            self.known[frame.rgb.tobytes()] = np.where(
                finite, (depth - lo) / (hi - lo), 1.0).astype(np.float32)
        self.spec = ModelSpec(family='lotus', variant='g', space='depth',
                              default_processing_resolution=0, source='oracle')

        self.batching_reason = ''
        self.concurrency_reason = ''   # may be called from several lanes at once
        self.batch_sizes = []

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Return the normalised true depth of a known frame."""
        return Prediction(space='depth', values=self.known[rgb.tobytes()].copy())

    def predict_batch(self, images) -> list:
        """Return the normalised true depth of each known frame; record the batch size."""
        self.batch_sizes.append(len(images))
        return [self.predict(rgb) for rgb in images]

    def close(self) -> None:
        """Nothing to free."""


def _scan(frame, header: Header):
    scan = encode.points_to_pointcloud2(frame.lidar_points, Header(frame_id=LIDAR_FRAME))
    scan.header.stamp = header.stamp
    return scan


class MultiRig:
    """A node serving several cameras plus one feeder per camera (in the camera's namespace)."""

    def __init__(self, namespace: str, overrides: dict, names) -> None:
        """Create the node (unconfigured) and the feeders."""
        self.rig = Rig(namespace, {'cameras': list(names), **overrides})
        self.feeders = {name: Feeder(f'{namespace}/{name}', node_name=f'feed_{name}')
                        for name in names}

    def publish(self, frames, scan_frame, names) -> Header:
        """Publish one scan, then each named camera's camera_info and image, one stamp."""
        header = self.rig.header()
        self.rig.lidar_pub.publish(_scan(scan_frame, header))
        wait_for(lambda: False, 0.02)
        for name in names:
            frame = frames[name]
            self.feeders[name].publish(frame.rgb, frame.camera, header=header)
        return header

    def close(self) -> None:
        """Close the feeders and the node."""
        for feeder in self.feeders.values():
            feeder.close()
        self.rig.close()


@pytest.fixture
def multi(ros, request):
    """Make MultiRigs namespaced after the test; close them afterwards."""
    made = []

    def make(overrides: dict, names=tuple(CAMERAS), suffix: str = '') -> MultiRig:
        rig = MultiRig(f'/{request.node.name}{suffix}'.replace('[', '_').replace(']', ''),
                       overrides, names)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


@pytest.mark.parametrize('batching, lanes', [('auto', 1), ('off', 1), ('auto', 2)],
                         ids=['auto', 'off', 'two_lanes'])
def test_each_camera_matches_a_single_camera_node(multi, checkpoint, frames, monkeypatch,
                                                  batching, lanes) -> None:
    """Each camera gets its own frame's metric depth back, batched or frame by frame.

    The oracle is exact whatever the batch, so this checks the wiring of both paths, and
    of two lanes running batches at once, within 1e-5; what batching does to a real
    model's numbers is test_batching's.
    """
    oracle = FramesOracle(frames.values())
    monkeypatch.setattr('densepred_ros.models.load_predictor', lambda *a, **k: oracle)
    extrinsics = {f'camera.{name}.extrinsic': extrinsic_parameter(frame.T_cam_lidar)
                  for name, frame in frames.items()}
    m = multi({'model.path': checkpoint, 'batching': batching, 'parallel_batches': lanes,
               **extrinsics})
    assert m.rig.node.start()
    assert m.rig.node._frames.scheduler.lanes == lanes
    for name, feeder in m.feeders.items():
        feeder.subscribe(['depth/image'], diagnostics=False)
    m.rig.subscribe([])
    assert wait_for(lambda: all(f.connected(lidar=False, topic='depth/image')
                                for f in m.feeders.values()), 10.0)
    assert wait_for(lambda: m.rig.lidar_pub.get_subscription_count() > 0, DEADLINE)

    def all_back() -> bool:
        return all(f.count('depth/image') > 0 for f in m.feeders.values())

    def batched() -> bool:   # until a turn held several cameras (auto) at least once
        return batching == 'off' or max(oracle.batch_sizes, default=0) > 1
    for _ in range(60):
        m.publish(frames, frames['front'], CAMERAS)
        if wait_for(lambda: all_back() and batched(), 0.4):
            break
    assert all_back(), {n: f.count('depth/image') for n, f in m.feeders.items()}
    assert batched(), oracle.batch_sizes
    if batching == 'off':
        assert oracle.batch_sizes == []
    got = {n: decode.image_to_depth(f.latest('depth/image')) for n, f in m.feeders.items()}
    assert not np.allclose(got['front'], got['left'], equal_nan=True)   # three views

    # The single-camera node, fed each camera's frame and the same scan.
    for name, frame in frames.items():
        single = Rig(f'/single_{name}', {
            'model.path': checkpoint,
            'alignment.extrinsic': extrinsic_parameter(frame.T_cam_lidar)})
        try:
            assert single.node.start()
            single.subscribe(['depth/image'])
            single.wait_inputs_matched()
            assert wait_for(lambda: single.lidar_pub.get_subscription_count() > 0, DEADLINE)

            def back() -> bool:
                return single.count('depth/image') > 0
            for _ in range(60):
                header = single.header()
                single.lidar_pub.publish(_scan(frames['front'], header))
                wait_for(lambda: False, 0.02)
                single.publish(frame, lidar=False, header=header)
                if wait_for(back, 0.4):
                    break
            expected = decode.image_to_depth(single.latest('depth/image'))
        finally:
            single.close()
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=1e-5, equal_nan=True)
        # and it is that camera's depth (the fit sees 2 cm lidar noise, hence not exact)
        finite = np.isfinite(frame.depth) & np.isfinite(got[name])
        assert finite.mean() > 0.9
        error = np.abs(got[name][finite] - frame.depth[finite]) / frame.depth[finite]
        assert np.median(error) < 0.02, (name, np.median(error))


def test_a_silent_camera_holds_up_nobody(multi, checkpoint, frames) -> None:
    m = multi({'model.path': checkpoint,
               'alignment.extrinsic': extrinsic_parameter(frames['front'].T_cam_lidar)})
    assert m.rig.node.start()
    m.feeders['front'].subscribe(['depth/relative'], diagnostics=False)
    m.feeders['left'].subscribe(['depth/relative'], diagnostics=False)
    m.rig.subscribe([])
    assert wait_for(lambda: m.feeders['front'].connected(lidar=False), 10.0)
    for _ in range(60):
        m.publish(frames, frames['front'], ['front'])
        if wait_for(lambda: m.feeders['front'].count('depth/relative') >= 3, 0.3):
            break
    assert m.feeders['front'].count('depth/relative') >= 3
    assert m.feeders['left'].count('depth/relative') == 0
    name = m.rig.node.get_fully_qualified_name()

    def latest(status_name: str) -> dict:
        statuses = [s for s in m.rig.diagnostic_statuses() if s.name == status_name]
        return {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}
    assert wait_for(lambda: int(latest(f'{name}: front').get('frames out', 0)) >= 3, DEADLINE)
    assert latest(f'{name}: left')['frames in'] == '0'
    assert latest(f'{name}: right')['camera'] == 'right'
    model = latest(f'{name}: model')
    assert int(model['batches']) >= 3 and model['batch size max'] == '1'
    assert model['batching'] == 'one batch'   # a torch model takes a batch
    assert state_id(m.rig.node) == StateMsg.PRIMARY_STATE_ACTIVE


class RefusesBatches(FramesOracle):
    """The oracle, except that every batched call fails."""

    def predict_batch(self, images) -> list:
        """Fail, as a model out of memory for a batch would."""
        self.batch_sizes.append(len(images))
        raise RuntimeError('batch refused')


def test_a_failed_batch_runs_again_frame_by_frame(multi, checkpoint, frames,
                                                  monkeypatch) -> None:
    oracle = RefusesBatches(frames.values())
    monkeypatch.setattr('densepred_ros.models.load_predictor', lambda *a, **k: oracle)
    m = multi({'model.path': checkpoint, 'alignment.enabled': False})
    assert m.rig.node.start()
    for feeder in m.feeders.values():
        feeder.subscribe(['depth/relative'], diagnostics=False)
    assert wait_for(lambda: all(f.connected(lidar=False) for f in m.feeders.values()), 10.0)

    def done() -> bool:
        return max(oracle.batch_sizes, default=0) > 1 and all(
            f.count('depth/relative') > 0 for f in m.feeders.values())
    for _ in range(60):
        for name in CAMERAS:
            m.feeders[name].publish(frames[name].rgb, frames[name].camera)
        if wait_for(done, 0.4):
            break
    assert done(), (oracle.batch_sizes, {n: f.count('depth/relative')
                                         for n, f in m.feeders.items()})
    for name in CAMERAS:
        assert m.rig.node.camera_stats(name).processing_errors == 0
    assert state_id(m.rig.node) == StateMsg.PRIMARY_STATE_ACTIVE


@pytest.mark.parametrize('overrides, reason', [
    ({'cameras': ['front', 'front']}, "cameras: 'front' is given twice"),
    ({'cameras': ['front', '1eft']}, "cameras: '1eft' is not a valid relative ROS name"),
    ({'cameras': ['front', 'le ft']}, "cameras: 'le ft' is not a valid relative ROS name"),
    ({'cameras': ['front'], 'camera.front.extrinsic': [0.0, 0.0, 1.0]},
     'camera.front.extrinsic must be 7 finite numbers'),
])
def test_bad_configuration_is_a_failure_with_the_reason(ros, checkpoint, request, overrides,
                                                        reason) -> None:
    rig = Rig(f'/bad_{abs(hash(request.node.name))}', {'model.path': checkpoint, **overrides})
    try:
        assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert reason in rig.node.last_error
        assert state_id(rig.node) == StateMsg.PRIMARY_STATE_UNCONFIGURED
    finally:
        rig.close()


@pytest.mark.parametrize('name', ['front', 'cam_1', 'rig/left', 'Left2', '1eft', '_front',
                                  'front_', 'a__b', 'le ft', 'front/', '/front', 'a//b', 'é',
                                  '', 'x-y', '~front', '{ns}'])
def test_camera_names_agree_with_rcl_topic_validation(name) -> None:
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name
    try:
        validate_topic_name(f'{name}/image')
        rcl_ok = bool(name)
    except InvalidTopicNameException:
        rcl_ok = False
    if valid_camera_name(name):
        assert rcl_ok, name        # never a name rcl refuses
    if not rcl_ok:
        assert not valid_camera_name(name)


def test_the_three_cameras_example_config_validates_and_points_the_cameras_sideways() -> None:
    from pathlib import Path
    from densepred_ros.bag_cli import read_params_file
    from densepred_ros.camera import extrinsic_from_xyz_quat
    from densepred_ros.params import NodeConfig
    values = read_params_file(Path(__file__).resolve().parents[1] / 'config'
                              / 'three_cameras.yaml')
    config = NodeConfig.from_parameters({'model.path': 'm', **values})
    assert config.cameras == ('front', 'left', 'right')
    to_left = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)   # lidar frame: x forward, y left
    for name, sign in (('left', 1.0), ('right', -1.0)):
        R = extrinsic_from_xyz_quat(*config.camera_extrinsics[name])[:3, :3]
        ahead = R @ (to_left * [1.0, sign, 1.0])    # 45° to that camera's side
        np.testing.assert_allclose(ahead, [0.0, 0.0, 1.0], atol=1e-4)   # its optical axis
