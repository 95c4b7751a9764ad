"""The one-slot holder, the stamped buffer and the node statistics (no ROS)."""

import threading
import time

from densepred_ros.diagnostics import NodeStatistics, OK, Percentiles, RateMeter, WARN
from densepred_ros.holder import LatestHolder, StampedBuffer, TwoStageWorker
from densepred_ros.scheduler import FrameScheduler
import pytest


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_holder_keeps_only_the_newest_and_counts_overwrites() -> None:
    holder = LatestHolder()
    assert holder.put('a') is False
    assert holder.put('b') is True
    assert holder.put('c') is True
    assert holder.overwritten == 2
    assert holder.put_count == 3
    assert holder.take(timeout=0) == 'c'
    assert holder.take(timeout=0) is None
    assert holder.put('d') is False  # the slot was emptied by take
    assert holder.overwritten == 2


def test_holder_take_waits_for_a_put_from_another_thread() -> None:
    holder = LatestHolder()
    timer = threading.Timer(0.05, holder.put, args=('late',))
    timer.start()
    start = time.monotonic()
    assert holder.take(timeout=2.0) == 'late'
    assert time.monotonic() - start < 1.5
    timer.join()


def test_holder_take_times_out_empty() -> None:
    holder = LatestHolder()
    start = time.monotonic()
    assert holder.take(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def test_holder_close_wakes_a_waiting_taker_and_reopen_restores() -> None:
    holder = LatestHolder()
    result = []
    taker = threading.Thread(target=lambda: result.append(holder.take(timeout=5.0)))
    taker.start()
    time.sleep(0.05)
    holder.close()
    taker.join(timeout=1.0)
    assert not taker.is_alive()
    assert result == [None]
    holder.put('x')
    assert holder.take(timeout=0) is None  # closed: nothing is handed out
    holder.reopen()
    assert not holder.closed
    holder.put('y')
    assert holder.take(timeout=0) == 'y'


def test_holder_clear_and_none_rejected() -> None:
    holder = LatestHolder()
    assert holder.clear() is False
    holder.put(1)
    assert holder.clear() is True
    assert holder.take(timeout=0) is None
    with pytest.raises(ValueError):
        holder.put(None)


def test_holder_many_producers_lose_nothing_uncounted() -> None:
    holder = LatestHolder()
    taken = []

    def produce(base: int) -> None:
        for i in range(500):
            holder.put(base + i)

    def consume() -> None:
        while not holder.closed:
            item = holder.take(timeout=0.01)
            if item is not None:
                taken.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    time.sleep(0.05)
    holder.close()
    consumer.join()
    leftover = 1 if holder.clear() else 0
    # Every put is either taken, overwritten or still held: nothing disappears silently.
    assert len(taken) + holder.overwritten + leftover == 1500
    assert len(set(taken)) == len(taken)


def test_stamped_buffer_nearest_within_offset() -> None:
    buffer = StampedBuffer(capacity=3)
    for stamp in (1.0, 1.1, 1.2, 1.3):
        buffer.add(stamp, f'scan{stamp}')
    assert len(buffer) == 3  # 1.0 was pushed out
    assert buffer.nearest(1.24, 0.05) == (1.2, 'scan1.2')
    assert buffer.nearest(1.27, 0.05) == (1.3, 'scan1.3')
    assert buffer.nearest(1.0, 0.05) is None  # the matching scan was dropped
    assert buffer.nearest(2.0, 0.5) is None
    assert buffer.nearest(1.25, 0.1) == (1.3, 'scan1.3')  # tie: the newer wins
    buffer.clear()
    assert buffer.nearest(1.2, 1.0) is None
    with pytest.raises(ValueError):
        StampedBuffer(0)


def test_rate_meter_counts_events_in_window() -> None:
    clock = FakeClock()
    meter = RateMeter(window=2.0, clock=clock)
    assert meter.rate() == 0.0
    for _ in range(11):
        meter.tick()
        clock.now += 0.1
    assert meter.rate() == pytest.approx(10.0)
    clock.now += 5.0
    assert meter.rate() == 0.0  # everything left the window


def test_percentiles() -> None:
    window = Percentiles(size=100)
    assert all(v != v for v in window.get(50, 95))  # NaN when empty
    for v in range(1, 201):
        window.add(v)
    assert len(window) == 100  # only the last 100 (101..200) are kept
    p50, p95 = window.get(50, 95)
    assert p50 == pytest.approx(150.5)
    assert p95 == pytest.approx(195.05)


def test_statistics_summary_levels_and_counts() -> None:
    clock = FakeClock()
    stats = NodeStatistics(clock=clock)
    assert stats.summary('inactive').level == WARN
    stats.record_input(replaced=False)
    clock.now += 0.1
    stats.record_input(replaced=True)
    summary = stats.summary('active')
    assert summary.level == WARN and 'nothing published' in summary.message
    stats.record_stale()
    stats.record_decode_error()
    stats.record_output(latency=0.2, inference_time=0.1)
    stats.record_alignment(True, '', n_points=100, n_inliers=90, median_rel_error=0.01,
                           correction='declined', correction_gain=0.01)
    stats.record_alignment(True, '', n_points=100, n_inliers=90, median_rel_error=0.01,
                           correction='local', correction_spread=0.08, support_fraction=0.4,
                           correction_gain=0.6)
    summary = stats.summary('active', backend='torch', device='cpu')
    values = dict(summary.values)
    assert summary.level == OK
    assert stats.dropped == 2
    assert values['dropped (overwritten)'] == '1'
    assert values['dropped (stale)'] == '1'
    assert values['decode errors'] == '1'
    assert values['alignment'] == 'ok'
    assert values['alignment inliers'] == '90'
    assert values['local correction'] == 'local'
    assert values['local correction frames'] == 'declined: 1, local: 1'
    assert values['local correction spread p95'] == '0.0800'
    assert values['local correction held-out gain'] == '0.600'
    assert values['latency p50 (s)'] == '0.200'
    assert values['backend'] == 'torch' and values['device'] == 'cpu'
    stats.record_alignment(False, 'too few points')
    summary = stats.summary('active')
    assert summary.level == WARN and 'too few points' in summary.message
    assert stats.summary('active', alignment_wanted=False).level == OK


def test_put_when_empty_waits_for_the_slot_and_never_replaces() -> None:
    holder = LatestHolder()
    assert holder.put_when_empty('a', timeout=0)
    assert not holder.put_when_empty('b', timeout=0.05)  # full: not replaced
    taker = threading.Timer(0.1, holder.take)
    taker.start()
    start = time.monotonic()
    assert holder.put_when_empty('c', timeout=5.0)  # stored once 'a' was taken
    assert 0.05 < time.monotonic() - start < 5.0
    assert holder.overwritten == 0 and holder.take(timeout=0) == 'c'
    holder.put('d')
    threading.Timer(0.1, holder.close).start()
    assert not holder.put_when_empty('e')  # close wakes the waiting put
    taker.join()


def run_two_stages(overlap: bool, items: int = 4, wait: float = 2.0) -> list:
    """Return (item, whether stage 1 of the next item started during its stage 2)."""
    source = LatestHolder()
    started = [threading.Event() for _ in range(items)]
    finished = []

    def first(item):
        started[item].set()
        if item + 1 < items:
            source.put(item + 1)  # the next frame arrives while this one is inferred
        return item

    def second(item):
        overlapped = item + 1 == items or started[item + 1].wait(wait)
        finished.append((item, overlapped))

    worker = TwoStageWorker(source, first, second, lambda exc: False, overlap=overlap,
                            poll=0.01)
    worker.start()
    source.put(0)
    deadline = time.monotonic() + 10.0
    while len(finished) < items and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop(timeout=2.0)
    return finished


def test_two_stage_worker_overlaps_the_stages() -> None:
    assert run_two_stages(overlap=True) == [(i, True) for i in range(4)]


def test_one_stage_worker_runs_them_one_after_the_other() -> None:
    # The same check fails without overlap: stage 2 of a frame ends before the next starts.
    assert run_two_stages(overlap=False, items=2, wait=0.2) == [(0, False), (1, True)]


def test_two_stage_worker_reports_errors_and_stops_on_request() -> None:
    source = LatestHolder()
    seen = []
    calls = []

    def first(item):
        calls.append(item)
        if item == 'bad':
            raise RuntimeError('bad item')
        return item

    def on_error(exc):
        seen.append(str(exc))
        return len(seen) < 2  # the second error ends the thread

    worker = TwoStageWorker(source, first, lambda item: None, on_error, poll=0.01)
    worker.start()
    for count, item in enumerate(('bad', 'good', 'bad', 'late'), 1):
        source.put(item)
        deadline = time.monotonic() + 0.5
        while len(calls) < count and time.monotonic() < deadline:
            time.sleep(0.005)
    time.sleep(0.1)
    assert seen == ['bad item', 'bad item']
    assert calls == ['bad', 'good', 'bad']  # the first stage ended after the second error
    start = time.monotonic()
    assert worker.stop(timeout=2.0) and time.monotonic() - start < 1.0
    assert worker.stopping


def test_lanes_run_the_first_stage_of_two_items_at_once() -> None:
    source = FrameScheduler(['a', 'b'], max_batch=1, lanes=2)
    together = threading.Barrier(2, timeout=5.0)
    done, finished = [], []

    def first(batch):
        together.wait()   # breaks (raises) unless both lanes are in stage 1 at once
        return batch

    worker = TwoStageWorker(source, first, finished.append, lambda exc: False, overlap=False,
                            poll=0.01, lanes=2, done=done.append)
    worker.start()
    source.put('a', 1)
    source.put('b', 1)
    deadline = time.monotonic() + 5.0
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop(timeout=2.0)
    assert sorted(finished) == [[('a', 1)], [('b', 1)]] and not together.broken
    assert sorted(done) == sorted(finished)


def test_done_follows_every_item_whatever_the_stages_did() -> None:
    source = LatestHolder()
    done, errors = [], []

    def first(item):
        if item == 'bad':
            raise RuntimeError('bad')
        return None if item == 'ends' else item

    def second(item):
        if item == 'bad late':
            raise RuntimeError('bad late')

    worker = TwoStageWorker(source, first, second, lambda exc: errors.append(exc) or True,
                            overlap=False, poll=0.01, done=done.append)
    worker.start()
    for item in ('bad', 'ends', 'bad late', 'good'):
        source.put(item)
        deadline = time.monotonic() + 2.0
        while item not in done and time.monotonic() < deadline:
            time.sleep(0.005)
    assert worker.stop(timeout=2.0)
    assert done == ['bad', 'ends', 'bad late', 'good'] and len(errors) == 2


def test_lanes_do_not_combine_with_overlap() -> None:
    worker = TwoStageWorker(LatestHolder(), lambda i: i, lambda i: None, lambda e: False,
                            overlap=True, lanes=2)
    with pytest.raises(ValueError, match='overlap'):
        worker.start()


def test_statistics_report_stage_percentiles_in_stage_order() -> None:
    stats = NodeStatistics(clock=FakeClock(), stages=('decode', 'predict', 'normals'))
    for i in range(1, 101):
        stats.record_output(0.1, 0.05, {'predict': i / 1000, 'decode': 0.002, 'extra': 0.5})
    values = stats.summary('active').values
    keys = [k for k, _ in values if k.startswith('stage ')]
    # Stages no frame ran (normals) are left out; unnamed ones follow the named ones.
    assert keys == ['stage decode p50 (s)', 'stage decode p95 (s)', 'stage predict p50 (s)',
                    'stage predict p95 (s)', 'stage extra p50 (s)', 'stage extra p95 (s)']
    found = dict(values)
    assert float(found['stage predict p50 (s)']) == pytest.approx(0.0505, abs=1e-4)
    assert float(found['stage predict p95 (s)']) == pytest.approx(0.09505, abs=1e-4)
