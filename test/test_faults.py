"""Fault handling of the depth node: lost inputs, clock jumps, failing models, signals.

Most tests run the node in this process over real rclpy (see `node_rig`); the signal
tests run it in a process of its own with a model whose inference takes 30 s. The safe
loading tests check the node refuses pickle weights and the package source never enables
remote code or unsafe unpickling.
"""

import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import threading
import time
from typing import List

from densepred_ros import encode
from densepred_ros.diagnostics import ERROR, NodeStatistics, WARN
from densepred_ros.domain_ids import reserve_domain_id
from densepred_ros.feeder import wait_for
from densepred_ros.params import ConfigError, MAX_PROCESSING_RESOLUTION, NodeConfig
from densepred_ros.testing import write_tiny_lotus
from lifecycle_msgs.msg import State as StateMsg
from node_rig import (
    DEADLINE, diagnostic_statuses, diagnostics, extrinsic_parameter, feed_other_process, HEIGHT,
    OraclePredictor, stamp_header, state_id, WIDTH)
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import Header

ROOT = Path(__file__).resolve().parents[1]
SUBPROCESS_DOMAIN_IDS = (reserve_domain_id(), reserve_domain_id())
ERROR_LEVEL = b'\x02'


@pytest.fixture
def oracle_rig(make_rig, checkpoint, frame, monkeypatch):
    """Return an active node whose 'model' gives the true depth (exact metric depth)."""
    monkeypatch.setattr('densepred_ros.models.load_predictor',
                        lambda *args, **kwargs: OraclePredictor(frame))
    rig = make_rig({'model.path': checkpoint,
                    'alignment.extrinsic': extrinsic_parameter(frame.T_cam_lidar)})
    assert rig.node.start()
    rig.subscribe(['depth/image', 'depth/relative', 'depth/camera_info'])
    rig.wait_inputs_matched()
    assert wait_for(lambda: rig.lidar_pub.get_subscription_count() > 0, DEADLINE)
    return rig


def publish_and_wait(rig, frame, **kwargs) -> Header:
    """Publish one frame and wait until its depth/relative comes back."""
    before = rig.count('depth/relative')
    header = rig.publish(frame, **kwargs)
    assert wait_for(lambda: rig.count('depth/relative') > before, 10.0)
    return header


def last_diag(rig, predicate=lambda v: True, timeout: float = 3.0) -> dict:
    """Wait for a /diagnostics status whose values satisfy predicate and return them."""
    assert wait_for(lambda: any(predicate(v) for v in diagnostics(rig)), timeout), \
        diagnostics(rig)[-1:]
    return [v for v in diagnostics(rig) if predicate(v)][-1]


# Statistics behind the fault reports ----------------------------------------------------

class FakeClock:
    """A settable monotonic clock, seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_statistics_report_faults_gaps_and_jumps() -> None:
    clock = FakeClock()
    stats = NodeStatistics(clock=clock)
    stats.record_input(replaced=False)
    stats.record_output(latency=0.1, inference_time=0.05)
    assert [stats.record_processing_error() for _ in range(2)] == [1, 2]
    stats.record_output(latency=None, inference_time=0.05)  # stamp ahead of the clock
    assert stats.consecutive_failures == 0 and len(stats.latency) == 1
    stats.record_scan()
    clock.now += 4.0
    stats.record_alignment(False, 'no lidar scan within 0.1 s of the image')
    summary = stats.summary('active')
    values = dict(summary.values)
    assert summary.level == WARN and 'last scan 4.00 s ago' in summary.message
    assert values['time since last camera_info (s)'] == 'never'
    stats.record_clock_jump()
    assert stats.clock_jumps == 1 and len(stats.latency) == 0
    stats.set_fault('stopped after 3 consecutive failed frames')
    for state in ('active', 'inactive'):
        summary = stats.summary(state)
        assert summary.level == ERROR and 'consecutive' in summary.message
    stats.set_fault('')
    assert stats.summary('inactive').level == WARN


# Lost and changing inputs --------------------------------------------------------------

def test_lidar_stops_relative_depth_goes_on(oracle_rig, frame) -> None:
    rig = oracle_rig
    assert rig.feed_until(frame, lambda: rig.count('depth/image') > 0)
    # The lidar stops: every later frame still gives relative depth, no metric depth.
    publish_and_wait(rig, frame, lidar=False)
    time.sleep(0.3)  # let any metric output of the earlier frames arrive
    metric_before, relative_before = rig.count('depth/image'), rig.count('depth/relative')
    for _ in range(3):
        publish_and_wait(rig, frame, lidar=False)
    assert rig.count('depth/relative') == relative_before + 3
    assert rig.count('depth/image') == metric_before
    values = last_diag(rig, lambda v: v['alignment'].startswith('no lidar scan'))
    assert float(values['time since last scan (s)']) > 0.0
    status = [s for s in diagnostic_statuses(rig)
              if 'no lidar scan' in s.message][-1]
    assert status.level == b'\x01' and 'last scan' in status.message
    # The lidar comes back: metric depth resumes.
    assert rig.feed_until(frame, lambda: rig.count('depth/image') > metric_before)


def test_camera_info_stops_or_changes_resolution(oracle_rig, frame) -> None:
    rig = oracle_rig
    assert rig.feed_until(frame, lambda: rig.count('depth/image') > 0)
    # camera_info stops: the last one keeps being used.
    before = rig.count('depth/camera_info')
    for _ in range(2):
        publish_and_wait(rig, frame, info=False)
    assert wait_for(lambda: rig.count('depth/camera_info') >= before + 2, DEADLINE)
    values = last_diag(rig, lambda v: float(v['time since last camera_info (s)']) > 0.3)
    assert values['decode errors'] == '0'

    # camera_info for a 2× larger sensor mode: scaled to the delivered image.
    big = frame.camera.scaled_to(2 * WIDTH, 2 * HEIGHT)
    big_info = encode.camera_info_for(big, Header(), 2 * WIDTH, 2 * HEIGHT)
    metric = rig.count('depth/image')
    publish_and_wait(rig, frame, camera_info=big_info)
    assert wait_for(lambda: rig.count('depth/image') > metric, DEADLINE)
    info = rig.latest('depth/camera_info')
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), frame.camera.K, rtol=1e-9)
    depth_msg = rig.latest('depth/image')
    depth = np.frombuffer(depth_msg.data, dtype=np.float32).reshape(HEIGHT, WIDTH)
    both = np.isfinite(depth) & np.isfinite(frame.depth)
    rel_error = np.abs(depth[both] - frame.depth[both]) / frame.depth[both]
    assert np.median(rel_error) < 0.02

    # An unusable camera_info (zero size): counted, relative depth goes on, no metric.
    bad = encode.camera_info_for(frame.camera, Header(), WIDTH, HEIGHT)
    bad.width = bad.height = 0
    errors, metric = rig.node.stats.decode_errors, rig.count('depth/image')
    publish_and_wait(rig, frame, camera_info=bad)
    assert rig.node.stats.decode_errors == errors + 1
    time.sleep(0.2)
    assert rig.count('depth/image') == metric
    last_diag(rig, lambda v: v['alignment'] == 'no usable camera_info')
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_ACTIVE


def test_stamps_jumping_back_reset_pairing(oracle_rig, frame) -> None:
    """A bag replayed in a loop: the second pass repeats the stamps of the first."""
    rig = oracle_rig
    start = rig.node.get_clock().now().nanoseconds
    stamps = [start + i * 100_000_000 for i in range(4)]
    for ns in stamps:
        metric = rig.count('depth/image')
        publish_and_wait(rig, frame, header=stamp_header(ns))
        assert wait_for(lambda: rig.count('depth/image') > metric, DEADLINE)
    assert rig.node.stats.clock_jumps == 0
    # Second pass without the lidar: the first pass's scans carry the same stamps, but
    # they come from before the jump and must not be paired.
    metric = rig.count('depth/image')
    for ns in stamps:
        publish_and_wait(rig, frame, header=stamp_header(ns), lidar=False)
    time.sleep(0.2)
    assert rig.count('depth/image') == metric
    assert rig.node.stats.clock_jumps == 1  # one jump, reported once
    values = last_diag(rig, lambda v: v['clock jumps'] == '1'
                       and v['alignment'].startswith('no lidar scan'))
    p50 = float(values['latency p50 (s)'])
    assert 0.0 <= p50 < 5.0 or np.isnan(p50)
    # Third pass with the lidar: pairing works again.
    for ns in stamps[:2]:
        publish_and_wait(rig, frame, header=stamp_header(ns))
    assert rig.node.stats.clock_jumps == 2
    assert wait_for(lambda: rig.count('depth/image') > metric, DEADLINE)
    latencies = rig.node.stats.latency.get(0, 100)
    assert all(0.0 <= x < 5.0 for x in latencies), latencies


# Failing model -------------------------------------------------------------------------

class FailingPredict:
    """Wrap a predictor's predict to raise on chosen calls (1-based) or on all calls."""

    def __init__(self, predict, fail_on=(), always: bool = False) -> None:
        self.predict = predict
        self.fail_on = set(fail_on)
        self.always = always
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        if self.always or self.calls in self.fail_on:
            raise RuntimeError(f'injected failure on call {self.calls}')
        return self.predict(rgb)


def test_one_bad_frame_is_skipped_and_counted(make_rig, checkpoint, frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'alignment.enabled': False,
                    'max_consecutive_failures': 2})
    assert rig.node.start()
    predictor = rig.node._pipeline.predictor
    failing = FailingPredict(predictor.predict, fail_on=(2, 4))
    predictor.predict = failing
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched()
    # Failures on calls 2 and 4 are never two in a row: the node stays active.
    assert rig.feed_until(frame, lambda: failing.calls >= 6 and rig.count('depth/relative') >= 4,
                          timeout=30.0)
    assert rig.node.stats.processing_errors == 2
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_ACTIVE
    values = last_diag(rig, lambda v: v['processing errors'] == '2'
                       and v['consecutive failures'] == '0')
    assert values['fault'] == ''


def test_repeated_failures_deactivate_with_an_error(make_rig, checkpoint, frame) -> None:
    rig = make_rig({'model.path': checkpoint, 'alignment.enabled': False,
                    'max_consecutive_failures': 3})
    assert rig.node.start()
    predictor = rig.node._pipeline.predictor
    real_predict = predictor.predict
    failing = FailingPredict(real_predict, always=True)
    predictor.predict = failing
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: state_id(rig.node)
                          == StateMsg.PRIMARY_STATE_INACTIVE, timeout=30.0)
    assert failing.calls == 3  # no frame is tried after the third failure
    assert rig.node.stats.processing_errors == 3
    assert 'stopped after 3 consecutive failed frames' in rig.node.last_error
    assert 'injected failure' in rig.node.last_error
    assert wait_for(lambda: rig.image_pub.get_subscription_count() == 0, DEADLINE)
    assert wait_for(lambda: any(s.level == ERROR_LEVEL and 'consecutive' in s.message
                                for s in diagnostic_statuses(rig)), 3.0)
    assert rig.count('depth/relative') == 0
    # The operator fixes the cause and activates again: the fault is cleared.
    predictor.predict = real_predict
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') > 0)
    assert rig.node.stats.fault == ''
    assert wait_for(lambda: diagnostic_statuses(rig)[-1].level != ERROR_LEVEL, DEADLINE)


# Signals during a slow inference -------------------------------------------------------

SLOW_NODE = """
import sys
import time
import torch  # loaded as in a real node: its clean-up at exit is part of the 2 s budget
import densepred_ros.models as models

class SlowPredictor:
    device = sys.argv.pop(1)  # 'cuda' makes the node overlap its two stages
    spec = models.ModelSpec(family='lotus', variant='g', space='depth',
                            default_processing_resolution=0, source='slow')

    def predict(self, rgb):
        print('slow inference started', flush=True)
        time.sleep(30.0)  # like a long forward pass: a thread off the GIL, not done soon
        raise RuntimeError('the slow inference should never finish')

    def close(self):
        pass

models.load_predictor = lambda *args, **kwargs: SlowPredictor()
from densepred_ros.node import main
main()
"""


@pytest.mark.parametrize('signum, device', [
    (signal.SIGINT, 'cpu'), (signal.SIGTERM, 'cpu'),
    (signal.SIGINT, 'cuda'),  # inference overlapped: two worker threads to stop
])
def test_signal_during_slow_inference_exits_within_2_s(frame, signum, device) -> None:
    domain_id = SUBPROCESS_DOMAIN_IDS[0]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED='1',
               RCUTILS_LOGGING_BUFFERED_STREAM='0')
    command = [sys.executable, '-c', SLOW_NODE, device, '--ros-args',
               '-p', 'model.path:=/slow-model', '-p', 'model.device:=cpu',
               '-p', 'autostart:=true', '-p', 'alignment.enabled:=false',
               '-p', 'qos.input_reliability:=reliable', '-r', '__ns:=/slow']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, cwd=ROOT, text=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any(line.rstrip().endswith(': active') for line in lines)
                        or process.poll() is not None, 90.0), ''.join(lines)
        assert feed_other_process(
            frame, domain_id, '/slow', lambda: any('slow inference started' in line
                                                   for line in lines),
            timeout=30.0, period=0.2), ''.join(lines)
        time.sleep(0.2)
        sent = time.monotonic()
        process.send_signal(signum)
        rc = process.wait(timeout=10.0)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=2.0)
    output = ''.join(lines)
    assert rc == 0, output
    assert 'Traceback' not in output, output
    assert 'should never finish' not in output, output
    assert ('inference overlapped with post-processing' in output) == (device == 'cuda')
    assert elapsed < 2.0, (elapsed, output)


# Safe loading ----------------------------------------------------------------------------

def make_pickle_only(path: Path) -> Path:
    """Turn a tiny checkpoint into one whose weights are only pickle-based .bin files."""
    import safetensors.torch
    import torch
    for component in ('unet', 'vae', 'text_encoder'):
        folder = path / component
        for file in list(folder.glob('*.safetensors')):
            name = ('pytorch_model.bin' if component == 'text_encoder'
                    else 'diffusion_pytorch_model.bin')
            torch.save(safetensors.torch.load_file(str(file)), str(folder / name))
            file.unlink()
    return path


def test_pickle_only_checkpoint_is_refused_unless_allowed(make_rig, tmp_path) -> None:
    path = make_pickle_only(write_tiny_lotus(tmp_path / 'pickled', processing_resolution=64))
    rig = make_rig({'model.path': str(path), 'alignment.enabled': False})
    assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_UNCONFIGURED
    assert 'pickle' in rig.node.last_error and 'allow_pickle' in rig.node.last_error
    # Allowed explicitly, the same files load: the refusal was the only obstacle.
    rig.node.set_parameters([Parameter('model.allow_pickle', value=True)])
    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS, \
        rig.node.last_error
    assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS


def call_arguments(text: str, start: int) -> str:
    """Return the text between the parenthesis opening at start and its match."""
    depth = 0
    for i in range(start, len(text)):
        depth += {'(': 1, ')': -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i]
    raise AssertionError(f'unbalanced call at offset {start}')


def test_package_source_never_unpickles_or_trusts_remote_code() -> None:
    sources = sorted((ROOT / 'densepred_ros').rglob('*.py'))
    assert len(sources) > 10
    problems = []
    torch_loads = 0
    for path in sources:
        text = path.read_text()
        name = path.relative_to(ROOT)
        if re.search(r'trust_remote_code\s*=\s*True', text):
            problems.append(f'{name}: trust_remote_code=True')
        if re.search(r'\bpickle\.loads?\(|\bdill\.load|\bjoblib\.load', text):
            problems.append(f'{name}: unpickling')
        for match in re.finditer(r'\btorch\.load\(', text):
            torch_loads += 1
            arguments = call_arguments(text, match.end() - 1)
            if not re.search(r'weights_only\s*=\s*True', arguments):
                problems.append(f'{name}: torch.load({arguments}) without weights_only=True')
    assert not problems, problems
    # The scan itself works: the checker flags a bad call and accepts a good one.
    bad = 'x = torch.load(open(p), map_location="cpu")'
    assert 'weights_only' not in call_arguments(bad, bad.index('('))
    good = 'torch.load(f(p), weights_only=True)'
    assert re.search(r'weights_only\s*=\s*True', call_arguments(good, good.index('(')))


# Parameters that would exhaust memory ----------------------------------------------------

@pytest.mark.parametrize('name, value, words', [
    ('model.processing_resolution', 100_000, 'outside'),
    ('model.processing_resolution', MAX_PROCESSING_RESOLUTION + 1, 'outside'),
    ('model.processing_resolution', -2, 'outside'),
    ('output.points_stride', 0, 'outside'),
    ('qos.depth', 0, 'outside'),
    ('qos.depth', 10_000, 'outside'),
    ('max_consecutive_failures', -1, 'outside'),
    ('output.points_stride', 1.5, 'integer'),
])
def test_memory_exhausting_parameters_are_rejected(name, value, words) -> None:
    with pytest.raises(ConfigError, match=re.escape(name)) as info:
        NodeConfig.from_parameters({'model.path': '/models/x', name: value})
    assert words in str(info.value)


def test_out_of_range_parameter_is_rejected_by_the_node(make_rig, checkpoint) -> None:
    rig = make_rig({'model.path': checkpoint})
    result = rig.node.set_parameters([
        Parameter('model.processing_resolution', value=100_000)])[0]
    assert not result.successful
    result = rig.node.set_parameters([Parameter('output.points_stride', value=0)])[0]
    assert not result.successful
    assert rig.node.get_parameter('output.points_stride').value == 1


def test_out_of_range_parameter_on_the_command_line_exits_1() -> None:
    env = dict(os.environ, ROS_DOMAIN_ID=str(SUBPROCESS_DOMAIN_IDS[1]))
    command = [sys.executable, '-m', 'densepred_ros.node', '--ros-args',
               '-p', 'model.path:=/nonexistent', '-p', 'output.points_stride:=0']
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=60.0)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'output.points_stride' in result.stderr
    assert 'Traceback' not in result.stderr + result.stdout


def test_non_finite_model_output_is_a_counted_failure_naming_the_component(
        make_rig, checkpoint, frame, monkeypatch) -> None:
    from densepred_ros.models import load_predictor
    from densepred_ros.models.backends import NonFiniteError

    class NanUnet:
        """The real tiny model, whose UNet 'returns NaN' on every other frame."""

        def __init__(self, *args, **kwargs) -> None:
            self.inner = load_predictor(*args, **kwargs)
            self.spec = self.inner.spec
            self.calls = 0

        def predict(self, rgb):
            self.calls += 1
            if self.calls % 2:
                raise NonFiniteError('unet', 'unet produced 12 non-finite values')
            return self.inner.predict(rgb)

        def close(self) -> None:
            self.inner.close()

    monkeypatch.setattr('densepred_ros.models.load_predictor', NanUnet)
    rig = make_rig({'model.path': checkpoint, 'max_consecutive_failures': 0,
                    'alignment.extrinsic': extrinsic_parameter(frame.T_cam_lidar)})
    assert rig.node.start()
    rig.subscribe(['depth/relative'])
    rig.wait_inputs_matched()
    assert rig.feed_until(frame, lambda: rig.count('depth/relative') >= 2)
    values = last_diag(rig, lambda v: v['non-finite model outputs'].startswith('unet: '))
    failed = int(values['non-finite model outputs'].split(': ')[1])
    assert failed >= 1 and int(values['processing errors']) >= failed
    assert state_id(rig.node) == StateMsg.PRIMARY_STATE_ACTIVE
