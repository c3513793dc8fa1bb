"""A tiny exported stereo model (random weights, with steering graph) and tiny generated bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_networks import tiny_stereo_config

from mtl_perception.data import rosbag_io
from mtl_perception.data.frames import procedural_frames
from mtl_perception.export.onnx_export import export_deploy_model, export_steering_head
from mtl_perception.model_info import steering_path_for
from mtl_perception.networks import DeployModel, SteeringHead, build_model

SIZE = (64, 128)  # model input and bag image size (H, W)
FRAMES = 6
STEERING_WINDOW = 2
START_NS = 1_700_000_000_000_000_000
# procedural_frames' right view is the left warped by this disparity (0 above the horizon: sky).
_ROWS = np.arange(SIZE[0], dtype=np.float32)[:, None]
GROUND_DISPARITY = np.repeat(
    np.clip((_ROWS - 0.4 * SIZE[0]) / (0.6 * SIZE[0]), 0.0, 1.0) * (0.1 * SIZE[1]), SIZE[1], axis=1
).astype(np.float32)
TINY_STEREO = tiny_stereo_config(input_size=SIZE)


def camera_infos(width: int = SIZE[1], height: int = SIZE[0], fx: float = 64.0, baseline: float = 0.3):
    """Left/right camera_info dicts of a rectified pair (P[0,3] = -fx * B on the right)."""

    def info(frame: str, tx: float) -> dict:
        k = [fx, 0.0, width / 2, 0.0, fx, height / 2, 0.0, 0.0, 1.0]
        p = [fx, 0.0, width / 2, tx, 0.0, fx, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        return {
            "header_frame_id": frame,
            "width": width,
            "height": height,
            "distortion_model": "plumb_bob",
            "d": [0.0] * 5,
            "k": k,
            "r": identity,
            "p": p,
        }

    return info("left_optical", 0.0), info("right_optical", -fx * baseline)


def tiny_frames(frames: int = FRAMES, ground_truth: bool = True) -> list[dict]:
    """What ``write_tiny_bag`` writes, frame by frame: stamp, views (RGB) and the ground truth.

    Tests compare what replay reads against this, not against the bag reader's own output.
    """
    rng = np.random.default_rng(0)
    out = []
    for index, (left, right) in enumerate(procedural_frames(SIZE, frames, seed=1)):
        frame = {"stamp": START_NS + index * 100_000_000, "left": left, "right": right}
        if ground_truth:
            frame["truth"] = {
                "semantic": rng.integers(0, 3, SIZE, dtype=np.uint8),
                "disparity": GROUND_DISPARITY,
                "depth": np.where(GROUND_DISPARITY > 0, 64.0 * 0.3 / np.maximum(GROUND_DISPARITY, 1e-6), 0.0),
                "steering": 0.01 * index,
            }
        out.append(frame)
    return out


def write_tiny_bag(
    path: Path, frames: int = FRAMES, storage: str = "mcap", ground_truth: bool = True
) -> Path:
    """Procedural stereo frames (rosbag_io's writer) at 10 Hz with constant-disparity ground truth."""
    left_info, right_info = camera_infos()
    with rosbag_io.BagWriter(path, storage) as writer:
        for frame in tiny_frames(frames, ground_truth):
            rosbag_io.write_stereo_frame(
                writer,
                frame["stamp"],
                frame["left"],
                frame["right"],
                left_info,
                right_info,
                **frame.get("truth", {}),
            )
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny stereo ONNX model with its steering graph beside it."""
    root = tmp_path_factory.mktemp("replay_model")
    torch.manual_seed(0)
    model = build_model(TINY_STEREO)
    result = export_deploy_model(
        DeployModel(model), TINY_STEREO, root / "tiny.onnx", simplify=False, parity_frames=1
    )
    export_steering_head(
        SteeringHead.for_model(model, window=STEERING_WINDOW), steering_path_for(result.onnx_path)
    )
    return result.onnx_path


@pytest.fixture(scope="session")
def tiny_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-frame stereo bag with semantic, disparity, depth and steering ground truth."""
    return write_tiny_bag(tmp_path_factory.mktemp("replay_bag") / "bag")
