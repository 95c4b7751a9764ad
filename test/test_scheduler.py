"""scheduler.FrameScheduler: batches, round-robin, no starvation, max-min fairness, lanes."""

import math
import random
import threading
import time

from densepred_ros.scheduler import fair_shares, FrameScheduler, LaneSwitch, parallel_lanes
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
        batch = s.take(0.0)
        order.append(batch[0][0])
        s.done(batch)
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


def test_a_camera_in_flight_waits_until_its_batch_is_done() -> None:
    s = FrameScheduler(['a', 'b'], max_batch=1, lanes=2)
    s.put('a', 1)
    s.put('b', 1)
    first = s.take(0.0)
    assert first == [('a', 1)]
    s.put('a', 2)                       # a's next frame arrives while a is in flight
    assert s.take(0.0) == [('b', 1)]    # so b goes next, not a again
    assert s.take(0.01) is None         # a has a frame but is still in flight
    got = []
    waiter = threading.Thread(target=lambda: got.append(s.take(5.0)))
    waiter.start()
    time.sleep(0.05)
    s.done(first)                       # wakes the waiting take
    waiter.join(2.0)
    assert got == [[('a', 2)]]


def _settle(s: FrameScheduler, rounds: int = 3, period: float = 0.2) -> None:
    """Let every camera publish a few frames together, period seconds apart."""
    for _ in range(rounds):
        for name in s.names:
            s.put(name, 0)
        s.done(s.take(0.0))
        time.sleep(period)


def test_a_turn_waits_briefly_for_the_cameras_due_now() -> None:
    s = FrameScheduler(['a', 'b', 'c'], max_batch=3, gather=0.3)
    _settle(s)
    s.put('a', 1)
    late = threading.Timer(0.03, lambda: [s.put('b', 1), s.put('c', 1)])
    late.start()
    start = time.monotonic()
    batch = s.take(1.0)
    late.join()
    assert sorted(batch) == [('a', 1), ('b', 1), ('c', 1)]   # one batch, not [a] alone
    assert time.monotonic() - start < 0.3


def test_a_turn_does_not_wait_for_a_camera_gone_quiet() -> None:
    s = FrameScheduler(['a', 'b', 'c'], max_batch=3, gather=0.3)
    _settle(s)
    time.sleep(0.5)           # b and c are over two periods late: given up on
    s.put('a', 1)
    start = time.monotonic()
    assert s.take(1.0) == [('a', 1)]
    assert time.monotonic() - start < 0.1


def test_reopen_forgets_the_batches_in_flight() -> None:
    s = FrameScheduler(['a'], max_batch=1)
    s.put('a', 1)
    assert s.take(0.0) == [('a', 1)]
    s.close()
    s.reopen()
    s.put('a', 2)
    assert s.take(0.0) == [('a', 2)]


def test_lanes_never_hold_one_camera_twice_and_keep_its_order() -> None:
    names = ['a', 'b', 'c', 'd', 'e']
    s = FrameScheduler(names, max_batch=2, lanes=3)
    held, order, errors = set(), {n: [] for n in names}, []
    lock = threading.Lock()
    stop = threading.Event()

    def lane(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            batch = s.take(0.05)
            if batch is None:
                continue
            with lock:
                for name, item in batch:
                    if name in held:
                        errors.append(f'{name} in two lanes')
                    held.add(name)
                    order[name].append(item)
            time.sleep(rng.uniform(0.0, 0.003))
            with lock:
                held.difference_update(name for name, _ in batch)
            s.done(batch)

    lanes = [threading.Thread(target=lane, args=(i,)) for i in range(3)]
    for thread in lanes:
        thread.start()
    rng = random.Random(7)
    for k in range(600):
        s.put(rng.choice(names), k)
        time.sleep(0.0002)
    time.sleep(0.1)
    stop.set()
    for thread in lanes:
        thread.join(2.0)
    assert not errors, errors[:3]
    assert all(order[n] == sorted(order[n]) for n in names)   # each camera in order
    assert sum(map(len, order.values())) > 100


@pytest.mark.parametrize('args, lanes, adaptive', [
    ((0, 1, 'cpu', 'auto', '', 8), 1, False),            # one camera: one lane
    ((0, 3, 'cpu', 'auto', '', 2), 2, True),             # CPU auto: up to one per core
    ((0, 3, 'cpu', 'auto', '', 8), 3, True),             # ... and per camera
    ((0, 3, 'cpu', 'auto', '', 1), 1, False),
    ((0, 3, 'cuda', 'auto', '', 8), 1, False),           # CUDA: one batch per turn
    ((0, 3, 'cpu', 'off', '', 8), 1, False),             # batching off: in turn
    ((2, 3, 'cpu', 'auto', '', 8), 2, False),            # asked for: fixed
    ((5, 3, 'cpu', 'auto', '', 8), 3, False),            # no more lanes than cameras
    ((2, 3, 'cuda', 'auto', '', 8), 2, False),
    ((2, 3, 'cpu', 'auto', 'unet on TensorRT', 8), 1, False),   # the models refuse
])
def test_parallel_lanes(args, lanes, adaptive) -> None:
    got, switch, why = parallel_lanes(*args)
    assert (got, switch) == (lanes, adaptive) and why


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(switch: LaneSwitch, clock: Clock, arrive_hz: float, lane_hz: float,
          seconds: float) -> None:
    """Frames arrive at arrive_hz; each lane alone processes lane_hz per busy second."""
    step, arrivals, done = 0.01, 0.0, 0.0
    for _ in range(int(seconds / step)):
        clock.now += step
        arrivals += arrive_hz * step
        while arrivals >= 1.0:
            switch.arrived()
            arrivals -= 1.0
        done += min(arrive_hz, lane_hz * switch.active) * step
        if done >= 1.0:
            frames = int(done)
            switch.served(frames, frames / lane_hz)
            done -= frames


def test_the_lane_switch_follows_the_load() -> None:
    clock = Clock()
    switch = LaneSwitch(2, window=1.0, clock=clock)
    _feed(switch, clock, 30.0, 35.0, 3.0)       # one lane keeps up: stays at one
    assert switch.active == 1 and switch.switches == 0
    assert switch.capacity == pytest.approx(35.0, rel=0.05)
    _feed(switch, clock, 60.0, 35.0, 1.5)       # it does not: all lanes
    assert switch.active == 2
    _feed(switch, clock, 60.0, 35.0, 3.0)       # and stays there while the load lasts
    assert switch.active == 2 and switch.switches == 1
    _feed(switch, clock, 10.0, 35.0, 2.5)       # the load falls: back to one
    assert switch.active == 1 and switch.switches == 2


def test_a_scheduler_with_a_switch_runs_one_batch_of_all_until_it_falls_behind() -> None:
    clock = Clock()
    switch = LaneSwitch(2, window=1.0, clock=clock)
    s = FrameScheduler(['a', 'b', 'c'], max_batch=3, lanes=2, switch=switch)
    for name in 'abc':
        s.put(name, 1)
    first = s.take(0.0)
    assert len(first) == 3 and s.take(0.01) is None   # one lane: one batch in flight
    s.done(first)
    switch.active = 2                                 # as after a window behind
    for name in 'abc':
        s.put(name, 2)
    one, two = s.take(0.0), s.take(0.0)
    assert (len(one), len(two)) == (2, 1)             # two lanes, ceil(3 / 2) each
    assert s.lanes_label().startswith('2 of 2')


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
        s.done(batch)
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
