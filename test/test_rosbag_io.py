"""rosbag2 round trip: what the sim writes is what the replay tools read back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mtl_perception.data import rosbag_io as rb
from mtl_perception.sim.rig import StereoRig


def _frame(rng: np.random.Generator, h: int = 8, w: int = 12) -> dict[str, np.ndarray]:
    depth = rng.uniform(2.0, 50.0, (h, w)).astype(np.float32)
    depth[0, :3] = 0.0  # invalid pixels -> NaN in the bag (REP-118)
    return {
        "left": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "right": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "semantic": rng.integers(0, 10, (h, w), dtype=np.uint8),
        "disparity": rng.uniform(0.0, 40.0, (h, w)).astype(np.float32),
        "depth": depth,
    }


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sequence_bag_round_trip(tmp_path: Path, storage: str) -> None:
    rig = StereoRig(width=12, height=8)
    left_info, right_info = rig.camera_info("left"), rig.camera_info("right")
    rng = np.random.default_rng(0)
    frames = [_frame(rng) for _ in range(3)]
    stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(3)]
    with rb.BagWriter(tmp_path / "bag", storage) as writer:
        for i, (frame, stamp) in enumerate(zip(frames, stamps, strict=True)):
            rb.write_stereo_frame(
                writer, stamp, left_info=left_info, right_info=right_info, steering=0.1 * i, **frame
            )

    messages = list(rb.read_bag(tmp_path / "bag"))
    assert {m.topic: m.msgtype for m in messages} == rb.SEQUENCE_TOPICS
    by_topic: dict[str, list[rb.BagMessage]] = {}
    for m in messages:
        by_topic.setdefault(m.topic, []).append(m)
    for topic, items in by_topic.items():
        assert [m.log_time for m in items] == stamps, topic
        assert [rb.stamp_ns(m.msg.header) for m in items] == stamps, topic
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(
            rb.message_to_numpy(rb.IMAGE, by_topic[rb.LEFT_IMAGE][i].msg), frame["left"]
        )
        np.testing.assert_array_equal(
            rb.message_to_numpy(rb.IMAGE, by_topic[rb.RIGHT_IMAGE][i].msg), frame["right"]
        )
        np.testing.assert_array_equal(rb.image_to_numpy(by_topic[rb.GT_SEMANTIC][i].msg), frame["semantic"])
        disparity_msg = by_topic[rb.GT_DISPARITY][i].msg
        np.testing.assert_array_equal(rb.message_to_numpy(rb.DISPARITY, disparity_msg), frame["disparity"])
        assert disparity_msg.f == pytest.approx(rig.fx) and disparity_msg.t == pytest.approx(rig.baseline)
        depth = rb.image_to_numpy(by_topic[rb.GT_DEPTH][i].msg)
        assert np.isnan(depth[0, :3]).all()
        np.testing.assert_array_equal(depth[frame["depth"] > 0], frame["depth"][frame["depth"] > 0])
        assert rb.message_to_numpy(rb.JOINT_STATE, by_topic[rb.GT_STEERING][i].msg) == pytest.approx(0.1 * i)
        assert list(by_topic[rb.GT_STEERING][i].msg.name) == ["steering"]
        assert rb.camera_info_to_dict(by_topic[rb.RIGHT_INFO][i].msg) == right_info
    assert by_topic[rb.LEFT_IMAGE][0].msg.header.frame_id == "stereo_left_optical_frame"
    assert by_topic[rb.RIGHT_IMAGE][0].msg.header.frame_id == "stereo_right_optical_frame"
    assert by_topic[rb.LEFT_IMAGE][0].msg.encoding == "rgb8"
    assert by_topic[rb.GT_DEPTH][0].msg.encoding == "32FC1"


def test_image_conversion_rejects_mismatched_encoding() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        rb.image_msg(np.zeros((4, 4), np.uint8), "rgb8", 0, "f")
    assert math.isclose(rb.stamp_ns(rb.header(1_500_000_001, "x")), 1_500_000_001)
