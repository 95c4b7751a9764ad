"""The depth node end to end over real rclpy, with tiny checkpoints and generated scenes.

Every test runs the node and a helper node in this process (one executor thread), each
test in its own namespace; the module uses its own ROS domain id to avoid cross-talk with
other test runs. All QoS is reliable, so no test depends on best-effort luck.
"""

import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import List

from densepred_ros import decode, encode
from densepred_ros.alignment import TemporalAligner
from densepred_ros.domain_ids import reserve_domain_id
from densepred_ros.feeder import wait_for
from densepred_ros.geometry import unpack_rgb
from densepred_ros.messages import decode_camera_and_scan, encode_outputs
from densepred_ros.params import NodeConfig
from densepred_ros.pipeline import DepthPipeline, OUTPUTS
from densepred_ros.testing import write_tiny_lotus
from lifecycle_msgs.msg import State as StateMsg
from node_rig import (
    assert_header, DEADLINE, diagnostics, extrinsic_parameter, feed_other_process, FRAME_ID,
    HEIGHT, OraclePredictor, state_id, WIDTH)
import numpy as np
from precision import fp32_bound
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

ROOT = Path(__file__).resolve().parents[1]
SUBPROCESS_DOMAIN_ID = reserve_domain_id()


@pytest.fixture(scope='module')
def normals_checkpoint(tmp_path_factory) -> str:
    """Write a tiny random-weight Lotus-G normals model."""
    path = tmp_path_factory.mktemp('node') / 'lotus-normals-g'
    return str(write_tiny_lotus(path, variant='g', space='normals', processing_resolution=64))


def test_tiny_checkpoint_end_to_end(make_rig, checkpoint, frame) -> None:
    extrinsic = extrinsic_parameter(frame.T_cam_lidar)
    rig = make_rig({'model.path': checkpoint, 'alignment.extrinsic': extrinsic})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_ACTIVE
    rig.subscribe()
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0
                          and rig.count('depth/camera_info') > 0
                          and rig.count('depth/color') > 0)
    relative = rig.latest('depth/relative')
    header = relative.header
    assert header.frame_id == FRAME_ID
    assert relative.encoding == '32FC1'
    assert (relative.height, relative.width) == (HEIGHT, WIDTH)
    values = np.frombuffer(relative.data, dtype=np.float32)
    assert values.size == WIDTH * HEIGHT
    assert np.isfinite(values).all() and 0.0 <= values.min() and values.max() <= 1.0
    info = rig.latest('depth/camera_info')
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), frame.camera.K, rtol=1e-9)
    color = rig.latest('depth/color')
    assert color.encoding == 'rgb8' and (color.height, color.width) == (HEIGHT, WIDTH)
    # Every output of one frame carries that frame's header.
    for topic in ('depth/camera_info', 'depth/color'):
        matching = [m for m in rig.messages(topic)
                    if (m.header.stamp.sec, m.header.stamp.nanosec)
                    == (header.stamp.sec, header.stamp.nanosec)]
        assert matching, topic
    assert wait_for(lambda: any(int(v['frames out']) >= 1 for v in diagnostics(rig)), DEADLINE)
    values = [v for v in diagnostics(rig) if int(v['frames out']) >= 1][-1]
    assert values['backend'] == 'vae_encoder=torch/cpu,unet=torch/cpu,vae_decoder=torch/cpu'
    # Where the time goes, per stage (seconds): the stages this frame ran.
    for stage in ('decode', 'predict', 'colour maps', 'encode'):
        p50, p95 = float(values[f'stage {stage} p50 (s)']), float(values[f'stage {stage} p95 (s)'])
        assert 0.0 <= p50 <= p95 < 60.0, (stage, p50, p95)
    assert float(values['stage predict p50 (s)']) > 0.0
    assert values['device'] == 'cpu'
    assert values['state'] == 'active'
    assert values['alignment'] != 'no frame yet'  # the random model's fit status is shown

    assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert wait_for(lambda: rig.image_pub.get_subscription_count() == 0, DEADLINE)
    assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_UNCONFIGURED


def test_metric_outputs_with_an_oracle_model(make_rig, checkpoint, frame, monkeypatch) -> None:
    oracle = OraclePredictor(frame)
    monkeypatch.setattr('densepred_ros.models.load_predictor',
                        lambda *args, **kwargs: oracle)
    stride = 2
    rig = make_rig({'model.path': checkpoint, 'output.points_stride': stride,
                    'alignment.extrinsic': extrinsic_parameter(frame.T_cam_lidar)})
    assert rig.node.start()
    rig.subscribe()
    rig.wait_inputs_matched()
    assert wait_for(lambda: rig.lidar_pub.get_subscription_count() > 0, DEADLINE)
    assert rig.feed_until(frame, lambda: all(rig.count(t) > 0 for t in OUTPUTS)), \
        {t: rig.count(t) for t in OUTPUTS}

    depth_msg = rig.latest('depth/image')
    assert depth_msg.encoding == '32FC1' and (depth_msg.height, depth_msg.width) == \
        (HEIGHT, WIDTH)
    depth = np.frombuffer(depth_msg.data, dtype=np.float32).reshape(HEIGHT, WIDTH)
    truth = frame.depth
    both = np.isfinite(depth) & np.isfinite(truth)
    assert both.mean() > 0.9
    rel_error = np.abs(depth[both] - truth[both]) / truth[both]
    assert np.median(rel_error) < 0.02, np.median(rel_error)
    assert not np.any(depth == 0.0)  # REP 118: never 0 for invalid

    normals_msg = rig.latest('normals/image')
    assert normals_msg.encoding == '32FC3'
    normals = np.frombuffer(normals_msg.data, dtype=np.float32).reshape(HEIGHT, WIDTH, 3)
    valid = np.isfinite(normals).all(axis=-1)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-4)
    assert rig.latest('normals/color').encoding == 'rgb8'

    cloud = rig.latest('points')
    assert_header(cloud, depth_msg.header)
    assert (cloud.height, cloud.width) == (math.ceil(HEIGHT / stride),
                                           math.ceil(WIDTH / stride))
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == \
        [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('rgb', 16, 7)]
    assert cloud.point_step == 32 and cloud.row_step == 32 * cloud.width
    table = np.frombuffer(cloud.data, dtype=np.float32).reshape(cloud.height, cloud.width, 8)
    z = table[..., 2]
    np.testing.assert_allclose(z[np.isfinite(z)], depth[::stride, ::stride][np.isfinite(z)])
    colours = unpack_rgb(np.ascontiguousarray(table[..., 4]))
    np.testing.assert_array_equal(colours, frame.rgb[::stride, ::stride])

    assert wait_for(lambda: any(v['alignment'] == 'ok' and int(v['alignment inliers']) >= 20
                                and v['local correction'] in ('local', 'declined', 'skipped')
                                and v['local correction frames']
                                for v in diagnostics(rig)), 3.0)
    rig.node.trigger_deactivate()
    rig.node.trigger_cleanup()
    assert oracle.closed  # cleanup frees the model


def test_onnxruntime_backend_through_the_node(make_rig, checkpoint, frame, tmp_path) -> None:
    pytest.importorskip('onnxruntime')
    from densepred_ros.models import load_predictor, PredictorOptions
    from densepred_ros.models.export import export_lotus
    # The tiny checkpoint runs at longest edge 64: the 96×72 camera is processed at 64×48.
    export_lotus(checkpoint, 48, 64, tmp_path / 'onnx', log=lambda *_: None)
    rig = make_rig({'model.path': checkpoint, 'model.backend': 'onnxruntime',
                    'model.export_dir': str(tmp_path / 'onnx'), 'alignment.enabled': False})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.subscribe()
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0)
    relative = rig.latest('depth/relative')
    values = np.frombuffer(relative.data, dtype=np.float32).reshape(HEIGHT, WIDTH)
    reference = load_predictor(checkpoint, PredictorOptions(device='cpu', dtype='fp32'))
    expected = reference.predict(frame.rgb).values
    assert expected.std() > 1e-3
    assert np.abs(values - expected).max() <= fp32_bound(checkpoint, frame.rgb, device='cpu')
    assert wait_for(lambda: any(int(v['frames out']) >= 1 for v in diagnostics(rig)), DEADLINE)
    label = [v for v in diagnostics(rig) if int(v['frames out']) >= 1][-1]['backend']
    assert label == ('vae_encoder=onnxruntime/cpu,unet=onnxruntime/cpu,'
                     'vae_decoder=onnxruntime/cpu')


def test_one_component_falling_back_through_the_node(make_rig, checkpoint, frame,
                                                     tmp_path) -> None:
    """unet=tensorrt without TensorRT: the UNet falls back, the VAE stays on torch.

    Logging one fallback (warning) and one plain choice (info) used to fail the configure
    (rclpy fixes a call site's severity at its first call).
    """
    pytest.importorskip('onnxruntime')
    from densepred_ros.models.export import export_lotus
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed: the UNet would not fall back')
    except ImportError:
        pass
    export_lotus(checkpoint, 48, 64, tmp_path / 'onnx', log=lambda *_: None)
    rig = make_rig({'model.path': checkpoint, 'model.backend': 'unet=tensorrt',
                    'model.export_dir': str(tmp_path / 'onnx'), 'alignment.enabled': False})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, \
        rig.node.last_error
    choices = rig.node._pipeline.predictor.backend_choices
    assert choices['unet'].skipped and not choices['vae_decoder'].skipped
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0)
    values = np.frombuffer(rig.latest('depth/relative').data, dtype=np.float32)
    assert np.isfinite(values).all() and values.std() > 1e-3
    assert wait_for(lambda: any(int(v['frames out']) >= 1 for v in diagnostics(rig)), DEADLINE)
    label = [v for v in diagnostics(rig) if int(v['frames out']) >= 1][-1]['backend']
    assert f"unet={choices['unet'].backend}/cpu" in label and 'unet=tensorrt' not in label
    assert 'vae_decoder=torch/cpu' in label


def test_a_failed_configure_says_why_and_frees_the_model(make_rig, checkpoint, frame,
                                                         monkeypatch) -> None:
    oracle = OraclePredictor(frame)
    monkeypatch.setattr('densepred_ros.models.load_predictor',
                        lambda *args, **kwargs: oracle)
    rig = make_rig({'model.path': checkpoint})

    def no_timer(*args, **kwargs):
        raise RuntimeError('no timers today')

    monkeypatch.setattr(rig.node, 'create_timer', no_timer)
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert 'no timers today' in rig.node.last_error
    assert oracle.closed and rig.node._pipeline is None
    monkeypatch.undo()
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS


def test_unsupported_encoding_is_skipped_and_counted(make_rig, checkpoint, frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'alignment.enabled': False})
    assert rig.node.start()
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched()
    yuv = Image(height=HEIGHT, width=WIDTH, encoding='yuv422', step=2 * WIDTH,
                data=bytes(2 * WIDTH * HEIGHT))
    assert rig.feed_until(frame, lambda: rig.node.stats.decode_errors >= 2,
                          encoding_image=yuv)
    assert rig.count('depth/relative') == 0
    # The node keeps running and processes the next good frame.
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0)
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_ACTIVE


def test_stale_frames_are_dropped(make_rig, checkpoint, frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'max_age': 0.5, 'alignment.enabled': False})
    assert rig.node.start()
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.node.stats.dropped_stale >= 2, age=3.0)
    assert rig.count('depth/relative') == 0
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0)


def test_idle_without_subscribers_then_resumes(make_rig, checkpoint, frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'alignment.enabled': False})
    assert rig.node.start()
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.node.stats.idle_no_subscribers)
    assert rig.node.stats.frames_out == 0
    rig.subscribe(['depth/color'])
    assert rig.feed_until(frame, lambda: rig.count('depth/color') > 0)
    assert not rig.node.stats.idle_no_subscribers


def test_failed_configure_then_recovery(make_rig, checkpoint, normals_checkpoint,
                                        tmp_path) -> None:
    rig = make_rig({'model.path': str(tmp_path / 'missing')})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_UNCONFIGURED
    # A normals checkpoint where the depth model belongs is refused too.
    rig.node.set_parameters([Parameter('model.path', value=normals_checkpoint)])
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    rig.node.set_parameters([Parameter('model.backend', value='tensorrt')])
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    rig.node.set_parameters([Parameter('model.backend', value='torch'),
                             Parameter('model.path', value=checkpoint)])
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_INACTIVE
    assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS


def process_messages(pipeline, image, camera_info, scan=None, T_cam_lidar=None):
    """Run one frame's messages through the pipeline as the node does; return messages."""
    inputs = decode_camera_and_scan(camera_info, scan, pipeline.aligner is not None)
    result = pipeline.process(decode.image_to_rgb(image), inputs.camera, inputs.lidar_points,
                              T_cam_lidar, no_points_reason=inputs.no_points_reason)
    result.input_errors[:0] = inputs.errors
    return encode_outputs(result, image.header), result


def test_pipeline_without_camera_info_or_lidar(checkpoint, frame) -> None:
    from densepred_ros.models import load_predictor, PredictorOptions
    predictor = load_predictor(checkpoint, PredictorOptions(device='cpu'))
    config = NodeConfig.from_parameters({'model.path': checkpoint})
    try:
        pipeline = DepthPipeline(predictor, config.output, aligner=None)
        header = Header(frame_id=FRAME_ID)
        messages, out = process_messages(pipeline, encode.rgb_to_image(frame.rgb, header),
                                         None)
        assert set(messages) == {'depth/relative', 'depth/color'}
        assert out.alignment_reason == 'alignment disabled'
        assert out.inference_time > 0
        assert set(out.timings) >= {'predict', 'colour maps', 'encode'}

        # An uncalibrated camera_info (K = 0) and a scan without x/y/z are reported, and
        # the frame still yields its relative depth.
        pipeline.aligner = TemporalAligner('depth')
        uncalibrated = CameraInfo(width=WIDTH, height=HEIGHT)
        messages, out = process_messages(pipeline, encode.rgb_to_image(frame.rgb, header),
                                         uncalibrated, PointCloud2(), np.eye(4))
        assert 'depth/relative' in messages and 'depth/image' not in messages
        assert 'camera_info unusable' in out.input_errors[0]
        good_info = encode.camera_info_for(frame.camera, header, WIDTH, HEIGHT)
        messages, out = process_messages(pipeline, encode.rgb_to_image(frame.rgb, header),
                                         good_info, PointCloud2(header=header), np.eye(4))
        assert 'lidar scan unusable' in out.input_errors[0]
        assert out.alignment_reason == 'lidar scan unusable'
        assert 'depth/camera_info' in messages
    finally:
        predictor.close()


@pytest.mark.parametrize('signum, autostart, ready', [
    (signal.SIGINT, True, ': active'),  # loaded model, worker running
    (signal.SIGTERM, False, 'waiting for lifecycle transitions'),  # light: nothing loaded
])
def test_process_exits_cleanly_on_signal(checkpoint, frame, signum, autostart,
                                         ready) -> None:
    env = dict(os.environ, ROS_DOMAIN_ID=str(SUBPROCESS_DOMAIN_ID), PYTHONUNBUFFERED='1',
               RCUTILS_LOGGING_BUFFERED_STREAM='0')
    command = [sys.executable, '-m', 'densepred_ros.node', '--ros-args',
               '-p', f'model.path:={checkpoint}', '-p', 'model.device:=cpu',
               '-p', f'autostart:={str(autostart).lower()}', '-r', '__ns:=/signal_test']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, cwd=ROOT, text=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any(line.rstrip().endswith(ready) for line in lines)
                        or process.poll() is not None, 60.0), ''.join(lines)
        assert process.poll() is None, ''.join(lines)
        if autostart:
            # Shut down after image traffic, when a plain rclpy.spin may miss SIGINT.
            assert feed_other_process(frame, SUBPROCESS_DOMAIN_ID, '/signal_test'), ''.join(lines)
        time.sleep(0.5)
        process.send_signal(signum)
        rc = process.wait(timeout=5.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=2.0)
    output = ''.join(lines)
    assert rc == 0, output
    assert 'Traceback' not in output, output


def test_normals_from_a_normals_model(make_rig, checkpoint, normals_checkpoint,
                                      frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'model.normals_path': normals_checkpoint,
                    'alignment.enabled': False})
    assert rig.node.start()
    rig.subscribe(['normals/image', 'normals/color'])
    rig.wait_inputs_matched()
    # No lidar, so no metric depth: these normals can only come from the normals model.
    assert rig.feed_until(frame, lambda: rig.count('normals/image') > 0
                          and rig.count('normals/color') > 0)
    msg = rig.latest('normals/image')
    assert msg.encoding == '32FC3' and (msg.height, msg.width) == (HEIGHT, WIDTH)
    normals = np.frombuffer(msg.data, dtype=np.float32).reshape(HEIGHT, WIDTH, 3)
    valid = np.isfinite(normals).all(axis=-1)
    assert valid.mean() > 0.9
    np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-3)
