"""scheduler.FrameScheduler: batches, round-robin, no starvation, max-min fairness."""

import math
import threading

from densepred_ros.scheduler import fair_shares, FrameScheduler
import pytest


def test_batch_takes_the_newest_frame_of_every_camera() -> None:
    s = FrameScheduler(['front', 'left', 'right'], max_batch=3)
    assert not s.put('front', 1)
    assert s.put('front', 2)          # replaced the untaken 1
    s.put('right', 7)
    assert s.take(0.0) == [('front', 2), ('right', 7)]
    assert s.take(0.01) is None       # nothing left: timeout
    assert s.overwritten == {'front': 1, 'left': 0, 'right': 0}
    assert s.served == {'front': 1, 'left': 0, 'right': 1}


def test_round_robin_serves_every_camera_in_turn() -> None:
    s = FrameScheduler(['a', 'b', 'c'], max_batch=1)
    order = []
    for _ in range(6):
        for name in 'abc':
            s.put(name, name)
        order.append(s.take(0.0)[0][0])
    assert order == ['a', 'b', 'c', 'a', 'b', 'c']   # a always has a frame, yet waits its turn


def test_close_wakes_a_waiting_take_and_reopen_empties() -> None:
    s = FrameScheduler(['a'], max_batch=1)
    got = []
    thread = threading.Thread(target=lambda: got.append(s.take(5.0)))
    thread.start()
    s.close()
    thread.join(2.0)
    assert got == [None] and s.closed
    s.put('a', 1)
    s.reopen()
    assert s.take(0.0) is None and not s.closed


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        FrameScheduler([], 1)
    with pytest.raises(ValueError):
        FrameScheduler(['a', 'a'], 1)
    with pytest.raises(ValueError):
        FrameScheduler(['a'], 0)
    with pytest.raises(ValueError):
        FrameScheduler(['a'], 1).put('a', None)


def test_fair_shares_water_filling() -> None:
    assert fair_shares({'f': 30, 'l': 5, 'r': 5}, 15) == {'f': 5, 'l': 5, 'r': 5}
    assert fair_shares({'f': 30, 'l': 5, 'r': 5}, 20) == {'f': 10, 'l': 5, 'r': 5}
    assert fair_shares({'f': 30, 'l': 5, 'r': 5}, 9) == {'f': 3, 'l': 3, 'r': 3}
    assert fair_shares({'f': 30, 'l': 5, 'r': 5}, 100) == {'f': 30, 'l': 5, 'r': 5}


def _simulate(rates, max_batch, batch_seconds, duration=60.0):
    """Run a scheduler against cameras publishing at rates (Hz) on a simulated clock.

    One worker takes a batch, spends batch_seconds(len) on it, and takes the next; a frame
    published while it works waits in its camera's slot (replacing an older one).
    """
    s = FrameScheduler(list(rates), max_batch)
    arrivals = sorted((k / rate + 1e-9 * i, name) for i, (name, rate) in enumerate(rates.items())
                      for k in range(int(duration * rate)))
    now, index, processed = 0.0, 0, dict.fromkeys(rates, 0)
    while now < duration:
        while index < len(arrivals) and arrivals[index][0] <= now:
            s.put(arrivals[index][1], arrivals[index][0])
            index += 1
        batch = s.take(0.0)
        if batch is None:
            now = arrivals[index][0] if index < len(arrivals) else duration
            continue
        for name, _ in batch:
            processed[name] += 1
        now += batch_seconds(len(batch))
    return {name: count / duration for name, count in processed.items()}


@pytest.mark.parametrize('capacity', [9.0, 15.0, 20.0, 40.0])
@pytest.mark.parametrize('batched', [False, True])
def test_one_fast_two_slow_cameras_each_get_their_fair_share(capacity, batched) -> None:
    rates = {'front': 30.0, 'left': 5.0, 'right': 5.0}
    per_frame = 1.0 / capacity
    got = _simulate(rates, 3 if batched else 1, lambda n: n * per_frame)
    shares = fair_shares(rates, capacity)
    for name in rates:
        assert got[name] >= 0.8 * shares[name], (name, got, shares)
    assert sum(got.values()) <= capacity * 1.01
    # the fast camera does not take the slow ones' turns, nor they its leftover
    assert math.isclose(sum(got.values()), min(capacity, sum(rates.values())), rel_tol=0.25)


def test_the_scheduler_needs_no_ros() -> None:
    from test_core_without_ros import run_with_ros_blocked
    result = run_with_ros_blocked(['densepred_ros.scheduler'])
    assert result.returncode == 0, result.stderr[-3000:]
