"""Node-mode replay bookkeeping without DDS: when a frame counts as done or dropped, and deferred scoring."""

from __future__ import annotations

import numpy as np

from mtl_perception.replay.bag_source import ReplayFrame
from mtl_perception.replay.node_replay import _DeferredResults, _OutputCollector, _settled

REQUIRED = {"semantic", "depth"}


def _frame(index: int, pixels: int = 4) -> ReplayFrame:
    return ReplayFrame(
        index=index,
        stamp=1_000 + index,
        log_time=index * 100_000_000,
        left=np.zeros((pixels, pixels, 3), np.uint8),
        encoding="rgb8",
    )


def _collector(count: int) -> _OutputCollector:
    collector = _OutputCollector()
    for index in range(count):
        collector.expect(_frame(index))
    return collector


def _outputs(collector: _OutputCollector, index: int, keys: set[str]) -> None:
    for key in keys:
        collector.add(key, 1_000 + index, np.zeros((2, 2), np.float32))


def _settle(
    collector: _OutputCollector, now: float, steering: int | None = None, final: bool = False
) -> list:
    return [
        (frame.index, prediction is not None)
        for frame, prediction, _ in _settled(collector, REQUIRED, steering, now, final)
    ]


def test_frames_settle_in_order_and_a_skipped_frame_is_dropped_once_a_later_one_is_done() -> None:
    collector = _collector(3)
    now = collector.sent[1_000].wall
    assert _settle(collector, now) == []  # nothing arrived yet: wait
    _outputs(collector, 2, REQUIRED)  # the node skipped frames 0 and 1 for the newer frame 2
    assert _settle(collector, now) == [(0, False), (1, False), (2, True)]


def test_a_partly_published_frame_waits_for_the_timeout() -> None:
    collector = _collector(2)
    _outputs(collector, 0, {"semantic"})
    _outputs(collector, 1, REQUIRED)
    start = collector.sent[1_000].wall
    assert _settle(collector, start) == []  # frame 0 was processed; its depth may still come
    assert _settle(collector, start + collector.drop_timeout + 0.1) == [(0, False), (1, True)]


def test_steering_is_awaited_once_the_nodes_window_is_full() -> None:
    collector = _collector(3)
    now = collector.sent[1_000].wall
    _outputs(collector, 0, REQUIRED)
    assert _settle(collector, now, steering=2) == [(0, True)]  # first processed frame: window not full
    _outputs(collector, 1, REQUIRED)
    assert _settle(collector, now, steering=2) == []  # second: the node will publish its steering
    _outputs(collector, 1, {"steering"})
    assert _settle(collector, now, steering=2) == [(1, True)]
    _outputs(collector, 2, REQUIRED)
    assert _settle(collector, now, steering=2, final=True) == [(2, True)]  # playback over: no more waiting
    collector = _collector(1)
    _outputs(collector, 0, REQUIRED)
    assert _settle(collector, now, steering=None) == [(0, True)]  # no steering graph


def test_deferred_results_are_held_until_drained_unless_over_budget() -> None:
    results = [(_frame(i, pixels=8), None, None) for i in range(5)]  # 192 bytes each
    deferred = _DeferredResults(budget_bytes=3 * 192)
    deferred.extend(iter(results[:3]))
    assert list(deferred.overflow()) == []
    deferred.extend(iter(results[3:]))
    assert [r[0].index for r in deferred.overflow()] == [0, 1]  # the oldest, down to the budget
    assert [r[0].index for r in deferred.drain()] == [2, 3, 4]
    assert list(deferred.drain()) == []
