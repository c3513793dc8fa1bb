"""Pipeline geometry, encodings, letterboxing, steering buffer and input validation (numpy backend)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_runtime import ConstantBackend, SumSteeringBackend, fake_info

from mtl_perception.data.labels import colorize
from mtl_perception.runtime.pipeline import CameraModel, InputError, Pipeline, SteeringBuffer


def stereo_pair(height: int = 96, width: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2))


def test_disparity_scales_with_width_and_depth_is_resolution_independent() -> None:
    left, right = stereo_pair(96, 384)  # model 64x128: x scale 1/3
    camera = CameraModel(fx=300.0, baseline=0.5)
    at_input = Pipeline(ConstantBackend(fake_info(), value=10.0, sigma=0.5)).process(
        left, right, camera=camera
    )
    assert at_input.semantic.shape == (96, 384)
    np.testing.assert_allclose(at_input.disparity, 30.0, rtol=1e-6)
    np.testing.assert_allclose(at_input.depth, 300.0 * 0.5 / 30.0, rtol=1e-6)
    # sigma_Z = Z^2 / (f B) * sigma_d, with sigma_d scaled like disparity (0.5 * 3).
    np.testing.assert_allclose(at_input.depth_uncertainty, 5.0**2 / 150.0 * 1.5, rtol=1e-5)

    at_model = Pipeline(ConstantBackend(fake_info()), output_resolution="model").process(
        left, right, camera=camera
    )
    assert at_model.disparity.shape == (64, 128)
    np.testing.assert_allclose(at_model.disparity, 10.0)
    assert at_model.scale_x == pytest.approx(1 / 3)
    np.testing.assert_allclose(at_model.depth, at_input.depth[0, 0], rtol=1e-6)


def test_zero_disparity_is_too_far_and_no_camera_gives_no_depth() -> None:
    left, right = stereo_pair()
    result = Pipeline(ConstantBackend(fake_info(), value=0.0)).process(
        left, right, camera=CameraModel(300.0, 0.5)
    )
    # REP-118: a zero disparity is infinitely far (+Inf), never unknown and never a finite depth.
    assert np.isposinf(result.depth).all()
    np.testing.assert_array_equal(result.disparity, 0.0)
    assert Pipeline(ConstantBackend(fake_info())).process(left, right).depth is None


def test_class_ids_resize_nearest_and_colorize_lazily() -> None:
    left, right = stereo_pair(64, 256)
    result = Pipeline(ConstantBackend(fake_info())).process(left, right)
    assert result.semantic.dtype == np.uint8
    # Model columns 0..127 map to ids col % 10; doubling width repeats each column twice, no new ids.
    np.testing.assert_array_equal(result.semantic[0, :8], [0, 0, 1, 1, 2, 2, 3, 3])
    assert result._color is None
    np.testing.assert_array_equal(result.semantic_color(), colorize(result.semantic))
    assert result.semantic_color() is result.semantic_color()


@pytest.mark.parametrize(
    ("encoding", "convert"),
    [
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.zeros(rgb.shape[:2], np.uint8)])),
    ],
)
def test_encodings_feed_the_same_rgb_tensor(encoding: str, convert) -> None:
    left, right = stereo_pair(64, 128)
    reference = ConstantBackend(fake_info())
    Pipeline(reference).process(left, right)
    backend = ConstantBackend(fake_info())
    Pipeline(backend).process(convert(left), convert(right), encoding=encoding)
    for name in ("left", "right"):
        np.testing.assert_array_equal(backend.last_inputs[name], reference.last_inputs[name])
    np.testing.assert_allclose(reference.last_inputs["left"][0].transpose(1, 2, 0) * 255, left, atol=1e-3)


def test_mono8_is_replicated_to_three_channels() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (64, 128), dtype=np.uint8)
    backend = ConstantBackend(fake_info("mono"))
    result = Pipeline(backend).process(gray, encoding="mono8")
    tensor = backend.last_inputs["image"][0]
    np.testing.assert_array_equal(tensor[0], tensor[2])
    np.testing.assert_allclose(tensor[1] * 255, gray, atol=1e-3)
    assert result.disparity is None
    np.testing.assert_allclose(result.depth, 10.0)


def test_letterbox_pads_and_crops_back() -> None:
    left, right = stereo_pair(100, 400)  # scale min(128/400, 64/100) = 0.32 -> 128x32 content
    backend = ConstantBackend(fake_info(), value=8.0)
    pipeline = Pipeline(backend, resize_mode="letterbox")
    result = pipeline.process(left, right, camera=CameraModel(fx=200.0, baseline=0.3))
    padded = backend.last_inputs["left"][0]
    assert not padded[:, :16].any() and not padded[:, 48:].any()
    assert padded[:, 16:48].any()
    assert result.semantic.shape == (100, 400)
    np.testing.assert_allclose(result.disparity, 8.0 * 400 / 128, rtol=1e-6)
    model_res = Pipeline(ConstantBackend(fake_info()), resize_mode="letterbox", output_resolution="model")
    assert model_res.process(left, right).semantic.shape == (32, 128)


def test_steering_waits_for_a_full_window_in_time_order() -> None:
    left, right = stereo_pair(64, 128)
    pipeline = Pipeline(ConstantBackend(fake_info()), steering_backend=SumSteeringBackend(window=3))
    results = [pipeline.process(left, right) for _ in range(5)]
    assert [r.steering is None for r in results] == [True, True, False, False, False]
    # Frames k-2, k-1, k carry embedding[1] = their call number; weights 1, 2, 3 oldest first.
    assert results[2].steering == pytest.approx(1 * 1 + 2 * 2 + 3 * 3)
    assert results[4].steering == pytest.approx(3 * 1 + 4 * 2 + 5 * 3)
    pipeline.reset()
    assert pipeline.process(left, right).steering is None


def test_warm_up_runs_the_model_at_its_size_and_leaves_no_steering_history() -> None:
    backend = ConstantBackend(fake_info())
    pipeline = Pipeline(backend, steering_backend=SumSteeringBackend(window=3))
    assert pipeline.warm_up(runs=2) >= 0.0
    assert backend.calls == 2
    assert {k: v.shape for k, v in backend.last_inputs.items()} == {
        name: (1, 3, *backend.info.input_size) for name in backend.info.inputs
    }
    left, right = stereo_pair(64, 128)
    results = [pipeline.process(left, right) for _ in range(3)]
    # a full window of real frames is still needed: warm-up embeddings never enter the buffer
    assert [r.steering is None for r in results] == [True, True, False]
    assert results[2].steering == pytest.approx(3 * 1 + 4 * 2 + 5 * 3)


def test_steering_buffer_orders_oldest_first() -> None:
    buffer = SteeringBuffer(window=4, dim=1)
    for value in range(1, 7):
        buffer.push(np.array([value], np.float32))
    np.testing.assert_array_equal(buffer.ordered()[0, :, 0], [3, 4, 5, 6])


@pytest.mark.parametrize(
    ("left", "right", "encoding", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32), "rgb8", "uint8"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "rgb8", "shape"),
        (np.zeros((0, 8, 3), np.uint8), np.zeros((0, 8, 3), np.uint8), "rgb8", "shape"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), "rgb8", "differ"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), "yuv422", "encoding"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), "rgba8", "channels"),
        (np.zeros((8, 8, 3), np.uint8), None, "rgb8", "stereo"),
        ([[0]], np.zeros((8, 8, 3), np.uint8), "rgb8", "numpy"),
    ],
)
def test_bad_inputs_raise_input_error(left, right, encoding: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Pipeline(ConstantBackend(fake_info())).process(left, right, encoding=encoding)
    assert issubclass(InputError, ValueError)


def test_timings_are_reported() -> None:
    left, right = stereo_pair(64, 128)
    result = Pipeline(ConstantBackend(fake_info())).process(left, right)
    assert set(result.timings) == {"pre_ms", "infer_ms", "post_ms"}
    assert all(v >= 0 for v in result.timings.values())
