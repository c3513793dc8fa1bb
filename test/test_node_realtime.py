"""The inference worker never waits on publishing, and every processed frame's stages are timed."""

from __future__ import annotations

import threading
from pathlib import Path

import fixtures_ros
from rclpy.context import Context
from test_ros_node import STEREO_INPUTS, running_node, send_camera_info, send_pair

from mtl_perception.ros.diagnostics import STAGES

ros_context = fixtures_ros.ros_context
tiny_models = fixtures_ros.tiny_models
FRAMES = 6


def test_a_stuck_publisher_does_not_stop_inference(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        release, entered = threading.Event(), threading.Event()
        publish = node._publish

        def stuck(*args: object) -> None:  # a middleware write that blocks until released
            entered.set()
            release.wait(timeout=30)
            publish(*args)

        node._publish = stuck
        inferred = []
        process = node._pipeline.process

        def counted(*args: object, **kwargs: object) -> object:
            inferred.append(1)
            return process(*args, **kwargs)

        node._pipeline.process = counted
        stats = node.statistics
        send_pair(harness, 1_000_000_000)
        assert harness.wait_for(entered.is_set)
        # The publisher thread is stuck on frame 0; each new frame is still inferred, and replaces
        # the inferred-but-unsent one (counted as dropped) instead of waiting for the middleware.
        for index in range(1, FRAMES):
            send_pair(harness, 1_000_000_000 + index * 100_000_000, index)
            # Inferred while frame 0 is still being "published": the worker did not wait.
            assert harness.wait_for(lambda n=index: len(inferred) >= n + 1)
            assert harness.wait_for(lambda: stats.frames_in == stats.frames_out + stats.frames_dropped + 2)
        assert (
            stats.frames_out == 0 and stats.frames_dropped == FRAMES - 2
        )  # the 1st is stuck, the last waits
        release.set()
        assert harness.wait_for(lambda: stats.frames_out == 2)  # frame 0 and the newest
        assert stats.frames_in == stats.frames_out + stats.frames_dropped + stats.frames_rejected


def test_stage_timings_cover_every_processed_frame(
    ros_context: Context, tiny_models: dict[str, Path]
) -> None:
    with running_node(ros_context, tiny_models["stereo"], STEREO_INPUTS) as (node, harness):
        send_camera_info(harness)
        for index in range(3):
            send_pair(harness, 1_000_000_000 + index * 100_000_000, index)
            assert harness.wait_for(lambda n=index: node.statistics.frames_out >= n + 1)
        percentiles = node.statistics.stage_percentiles()
        assert set(percentiles) == set(STAGES)
        for stage, (p50, p95, top) in percentiles.items():
            assert 0 <= p50 <= p95 <= top, stage
        infer_p50 = percentiles["infer"][0]
        assert infer_p50 > 0 and infer_p50 >= percentiles["decode"][0]
        status = harness.wait_for(lambda: harness.latest_status() is not None) and harness.latest_status()
        keys = {kv.key for kv in status.values}
        assert "stage infer mean/max (ms)" in keys and "stage publish mean/max (ms)" in keys


def test_stage_percentiles_are_nearest_rank_over_the_run() -> None:
    from mtl_perception.ros.diagnostics import NodeStatistics, format_stages

    stats = NodeStatistics("n", "hw")
    for value in range(1, 101):  # 1..100 ms
        stats.stages({"infer": float(value), "queue": 0.0})
    percentiles = stats.stage_percentiles()
    assert percentiles["infer"] == (50.0, 95.0, 100.0)
    assert percentiles["queue"] == (0.0, 0.0, 0.0) and "publish" not in percentiles
    # In pipeline order (STAGES), whatever order the frame reported them in.
    assert format_stages(percentiles) == "stage p50/p95/max ms: queue 0.0/0.0/0.0, infer 50.0/95.0/100.0"
