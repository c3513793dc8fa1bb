"""benchmarks/sky_phantoms.py against oracle backends whose answers are known.

Frames are small hand-made scenes (upper rows sky, lower rows road at a known disparity); the oracle
answers each left view with the disparity the test chose, so the shares are known exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from fixtures_runtime import fake_info

from mtl_perception.data.labels import CLASS_ID, IGNORE_INDEX
from mtl_perception.runtime import Pipeline

SIZE = (12, 20)
FX, BASELINE = 256.0, 0.3  # f*B = 76.8: 20 px -> 3.84 m
SKY_ROWS = 5


def _script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sky_phantoms.py"
    spec = importlib.util.spec_from_file_location("sky_phantoms", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Frame:
    """The fields of a dataset frame the measurement reads."""

    left: np.ndarray
    right: np.ndarray
    semantic: np.ndarray
    disparity: np.ndarray  # the truth: road at 8 px, sky 0
    fx: float = FX
    baseline: float = BASELINE

    @property
    def size(self) -> tuple[int, int]:
        return self.left.shape[0], self.left.shape[1]


def frames(count: int = 3) -> list[Frame]:
    rng = np.random.default_rng(11)
    out = []
    for _ in range(count):
        semantic = np.full(SIZE, CLASS_ID["road"], np.uint8)
        semantic[:SKY_ROWS] = CLASS_ID["sky"]
        semantic[-1, :4] = IGNORE_INDEX  # unlabelled: counts in neither (a) nor (b)
        disparity = np.where(semantic == CLASS_ID["sky"], 0.0, 8.0).astype(np.float32)
        left, right = (rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(2))
        out.append(Frame(left, right, semantic, disparity))
    return out


class Oracle:
    """The true disparity of each left view, with ``sky_disparity`` in the sky and ``zero_off_sky``
    non-sky pixels per frame answered 0 (too far)."""

    name = "oracle"

    def __init__(self, scenes: list[Frame], sky_disparity: float = 0.0, zero_off_sky: int = 0) -> None:
        self.info = dataclasses.replace(
            fake_info(size=SIZE, embedding_dim=2), version="oracle", max_disparity=32.0
        )
        self.answers = {f.left.tobytes(): f for f in scenes}
        self.sky_disparity = sky_disparity
        self.zero_off_sky = zero_off_sky

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        left = np.rint(inputs["left"][0].transpose(1, 2, 0) * 255.0).astype(np.uint8)
        frame = self.answers[left.tobytes()]
        disparity = frame.disparity.copy()
        disparity[frame.semantic == CLASS_ID["sky"]] = self.sky_disparity
        disparity[-2, : self.zero_off_sky] = 0.0  # labelled road pixels
        maps = np.zeros((1, *SIZE), np.float32)
        return {
            "semantic": frame.semantic[None].astype(np.int64),
            "semantic_uncertainty": maps,
            "disparity": disparity[None],
            "disparity_uncertainty": maps + 0.5,
            "embedding": np.zeros((1, 2), np.float32),
        }

    def close(self) -> None:
        pass


def _measure(oracle: Oracle, scenes: list[Frame]) -> dict:
    script = _script()
    recorder = script.RecordingBackend(oracle)
    pipeline = Pipeline(recorder, output_resolution="model")
    return script.measure(pipeline, recorder, scenes, 30.0).summary()


def test_true_disparity_with_sky_at_zero_gives_no_phantom() -> None:
    scenes = frames()
    summary = _measure(Oracle(scenes), scenes)
    sky_pixels = 3 * SKY_ROWS * SIZE[1]
    assert summary["frames"] == 3 and summary["sky_pixels"] == sky_pixels
    a, raw, b = summary["a_published"], summary["a_raw_network"], summary["b_non_sky"]
    assert a["share_finite_below_near"] == 0.0 and a["median_depth_m_there"] is None
    assert a["share_inf"] == 1.0 and a["frames_with_phantoms"] == 0
    assert raw["share_below_near"] == 0.0
    assert b["pixels"] == 3 * ((SIZE[0] - SKY_ROWS) * SIZE[1] - 4)
    assert b["share_published_inf"] == 0.0 and b["within_limit"] is True


def test_twenty_pixels_in_the_sky_are_all_phantoms_at_f_b_over_20() -> None:
    scenes = frames()
    summary = _measure(Oracle(scenes, sky_disparity=20.0), scenes)
    a, raw = summary["a_published"], summary["a_raw_network"]
    assert a["share_finite_below_near"] == 1.0 and a["frames_with_phantoms"] == 3
    assert a["median_depth_m_there"] == pytest.approx(FX * BASELINE / 20.0, rel=1e-5)
    assert raw["share_below_near"] == 1.0
    assert raw["median_depth_m_there"] == pytest.approx(FX * BASELINE / 20.0, rel=1e-5)
    assert a["share_inf"] == 0.0


def test_a_far_but_finite_sky_is_no_phantom() -> None:
    scenes = frames(1)
    summary = _measure(Oracle(scenes, sky_disparity=2.0), scenes)  # 38.4 m: beyond 30 m
    assert summary["a_published"]["share_finite_below_near"] == 0.0
    assert summary["a_published"]["share_finite_at_or_beyond_near"] == 1.0


def test_non_sky_pixels_published_infinitely_far_are_counted() -> None:
    scenes = frames(2)
    summary = _measure(Oracle(scenes, zero_off_sky=3), scenes)
    b = summary["b_non_sky"]
    assert b["share_published_inf"] == pytest.approx(6 / b["pixels"])
    assert b["within_limit"] is False  # 6 of ~270 pixels is far above 0.1 %


def test_measure_refuses_a_pipeline_at_input_resolution() -> None:
    script = _script()
    scenes = frames(1)
    recorder = script.RecordingBackend(Oracle(scenes))
    with pytest.raises(ValueError, match="output_resolution='model'"):
        script.measure(Pipeline(recorder), recorder, scenes, 30.0)
