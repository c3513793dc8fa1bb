"""The steering window follows stamps: only T consecutive frames give a steering value.

``ConstantBackend`` gives embedding[1] = its call number and ``SumSteeringBackend`` weights the window
1..T oldest first, so each expected value below names exactly which frames the window held.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fixtures_runtime import ConstantBackend, SumSteeringBackend, fake_info

from mtl_perception.runtime.pipeline import Pipeline, SteeringBuffer

EPOCH = 1_700_000_000.0  # realistic header stamps (s): the gaps must survive float64 rounding
PERIOD = 0.1
LEFT, RIGHT = (np.full((64, 128, 3), v, np.uint8) for v in (40, 90))


def window_sum(*calls: int) -> float:
    """The steering of a window holding the frames of these call numbers, oldest first."""
    return float(sum(weight * call for weight, call in enumerate(calls, start=1)))


def run(pipeline: Pipeline, stamps: list[float | None]) -> list[float | None]:
    return [pipeline.process(LEFT, RIGHT, stamp=stamp).steering for stamp in stamps]


def pipeline(window: int = 3, **kwargs: float) -> Pipeline:
    return Pipeline(ConstantBackend(fake_info()), steering_backend=SumSteeringBackend(window), **kwargs)


def test_a_missing_frame_restarts_the_window_until_t_new_frames() -> None:
    ticks = [0, 1, 2, 3, 5, 6, 7, 8]  # frame 4 never came
    stamps = [EPOCH + PERIOD * tick for tick in ticks]
    steering = run(pipeline(window=3), stamps)
    # Calls 1..8: the window [3, 4, 5] would span the gap, so 5 and 6 give nothing.
    assert steering == [None, None, window_sum(1, 2, 3), window_sum(2, 3, 4), None, None,
                        window_sum(5, 6, 7), window_sum(6, 7, 8)]  # fmt: skip


def test_time_going_back_or_standing_still_restarts_the_window() -> None:
    p = pipeline(window=2)
    results = [p.process(LEFT, RIGHT, stamp=EPOCH + PERIOD * t) for t in (0, 1, 2)]
    looped = p.process(LEFT, RIGHT, stamp=EPOCH)  # a bag played again from its start
    after = p.process(LEFT, RIGHT, stamp=EPOCH + PERIOD)
    repeated = p.process(LEFT, RIGHT, stamp=EPOCH + PERIOD)
    assert [r.steering for r in results] == [None, window_sum(1, 2), window_sum(2, 3)]
    assert all(r.steering_restart is None for r in results)
    assert looped.steering is None and looped.steering_restart == "stamp went back 0.200 s"
    assert after.steering == window_sum(4, 5) and after.steering_restart is None
    assert repeated.steering is None and repeated.steering_restart == "stamp repeated"


def test_an_early_gap_is_caught_once_the_period_is_known() -> None:
    # The first gap is all the estimate has when it arrives; by the time the window is full the
    # median says 0.1 s, so the 0.2 s gap keeps the window incomplete until it has left it.
    stamps = [EPOCH + PERIOD * t for t in (0, 2, 3, 4, 5)]
    assert run(pipeline(window=4), stamps) == [None, None, None, None, window_sum(2, 3, 4, 5)]


def test_a_fixed_max_gap_replaces_the_estimate() -> None:
    p = pipeline(window=2, steering_max_gap=0.25)
    stamps = [EPOCH + t for t in (0.0, 0.2, 0.45, 0.75, 0.8)]
    results = [p.process(LEFT, RIGHT, stamp=s) for s in stamps]
    assert [r.steering for r in results] == [None, window_sum(1, 2), window_sum(2, 3), None,
                                             window_sum(4, 5)]  # fmt: skip
    assert results[3].steering_restart == "gap 0.300 s > 0.250 s (a frame is missing)"
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="steering_max_gap"):
            p.steering_max_gap = bad
    p.steering_max_gap = None  # back to the estimate: 1.5 x the median gap
    assert p.steering.gap_limit() == pytest.approx(1.5 * np.median([0.2, 0.25, 0.3, 0.05]))


def test_a_faster_camera_is_thinned_to_the_period_the_head_was_trained_on() -> None:
    head = SumSteeringBackend(3, frame_period=PERIOD)  # trained on 10 Hz windows
    p = Pipeline(ConstantBackend(fake_info()), steering_backend=head)
    steering = run(p, [EPOCH + k / 30.0 for k in range(12)])  # a 30 Hz camera
    # Every third frame (calls 1, 4, 7, 10) joins; the frames between repeat the window's answer.
    assert steering == [None] * 6 + [window_sum(1, 4, 7)] * 3 + [window_sum(4, 7, 10)] * 3
    assert head.calls == 2  # the head runs only when its window changed
    # A slower camera than the head's period is not thinned (every frame joins).
    slow = Pipeline(ConstantBackend(fake_info()), steering_backend=SumSteeringBackend(2, frame_period=PERIOD))
    assert run(slow, [EPOCH + 0.2 * k for k in range(3)]) == [None, window_sum(1, 2), window_sum(2, 3)]


def test_frames_without_stamps_keep_extending_the_window() -> None:
    assert run(pipeline(window=2), [None, None, None]) == [None, window_sum(1, 2), window_sum(2, 3)]


def test_reset_empties_the_window_and_keeps_the_period() -> None:
    p = pipeline(window=2)
    run(p, [EPOCH + PERIOD * t for t in range(4)])
    p.reset()
    assert p.steering.frames == 0
    # The frame after a reset has no previous stamp to compare with: it starts the window.
    restarted = run(p, [EPOCH + 10.0, EPOCH + 10.1, EPOCH + 10.4])
    assert restarted == [None, window_sum(5, 6), None]  # 0.3 s > 1.5 x 0.1 s: the period was kept


def test_the_buffer_is_a_view_and_push_reports_nothing_without_stamps() -> None:
    buffer = SteeringBuffer(window=3, dim=2)
    for value in range(5):
        assert buffer.push(np.full(2, value, np.float32)) is None
    first = buffer.ordered()
    buffer.push(np.full(2, 9, np.float32))
    assert np.shares_memory(first, buffer.ordered())  # no copy per frame
    np.testing.assert_array_equal(buffer.ordered()[0, :, 0], [3, 4, 9])
