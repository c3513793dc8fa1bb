"""The output contract's validity policy against hand-computed maps, and the one encodings table."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_runtime import ConstantBackend, fake_info

from mtl_perception.contract import (
    ENCODINGS,
    INPUT_ENCODINGS,
    OutputPolicy,
    disparity_from_message_values,
    disparity_message_values,
    mono_maps,
    resize_image,
    stereo_maps,
    to_rgb,
)
from mtl_perception.runtime import CameraModel, InputError, Pipeline

NAN, INF = np.float32(np.nan), np.float32(np.inf)


def test_stereo_maps_known_answer() -> None:
    # f*B = 100: d 10 -> 10 m, d 50 -> 2 m; d 1.5 is below min_disparity 2 (too far); d 0 too far;
    # NaN unknown; d 4 -> 25 m with sigma_d 1 -> sigma_Z = 625/100 = 6.25 m > threshold 5 -> unknown.
    disparity = np.array([[10.0, 50.0, 1.5, 0.0, np.nan, 4.0]], np.float32)
    sigma = np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 1.0]], np.float32)
    policy = OutputPolicy(min_disparity=2.0, confidence_threshold=5.0)
    published, depth, depth_sigma = stereo_maps(disparity, sigma, 100.0, policy)
    np.testing.assert_array_equal(published, [[10.0, 50.0, NAN, NAN, NAN, 4.0]])
    np.testing.assert_allclose(depth, [[10.0, 2.0, INF, INF, NAN, NAN]], rtol=1e-6)
    np.testing.assert_allclose(depth_sigma, [[0.1, 0.004, NAN, NAN, NAN, 6.25]], rtol=1e-5)
    assert not np.isfinite(depth[published != published]).any()  # never a finite depth where invalid
    # The inputs are left alone (backends reuse their buffers).
    assert disparity[0, 2] == np.float32(1.5) and np.isnan(disparity[0, 4])


def test_threshold_zero_keeps_every_measurable_depth() -> None:
    disparity = np.array([[4.0]], np.float32)
    _, depth, _ = stereo_maps(disparity, np.array([[100.0]], np.float32), 100.0, OutputPolicy())
    assert depth[0, 0] == pytest.approx(25.0)


def test_no_calibration_gives_no_depth() -> None:
    published, depth, sigma = stereo_maps(np.ones((2, 2), np.float32), None, None, OutputPolicy())
    np.testing.assert_array_equal(published, 1.0)
    assert depth is None and sigma is None


def test_mono_maps_known_answer() -> None:
    depth = np.array([[5.0, 0.0, -1.0, np.nan, 40.0, np.inf]], np.float32)
    sigma = np.array([[1.0, 1.0, 1.0, 1.0, 9.0, 1.0]], np.float32)
    published, published_sigma = mono_maps(depth, sigma, OutputPolicy(confidence_threshold=8.0))
    np.testing.assert_array_equal(published, [[5.0, NAN, NAN, NAN, NAN, INF]])
    np.testing.assert_array_equal(published_sigma, [[1.0, NAN, NAN, NAN, 9.0, NAN]])
    assert depth[0, 1] == 0.0 and sigma[0, 4] == 9.0  # inputs left alone


@pytest.mark.parametrize(
    "policy",
    [
        {"min_disparity": -1.0},
        {"confidence_threshold": -0.5},
        {"min_disparity": 10.0, "max_disparity": 5.0},
        {"min_disparity": float("nan")},
    ],
)
def test_policy_refuses_bad_values(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OutputPolicy(**policy)


def test_disparity_message_round_trip() -> None:
    published = np.array([[3.0, NAN, 7.5]], np.float32)
    values = disparity_message_values(published, min_disparity=2.0)
    np.testing.assert_array_equal(values, [[3.0, 1.0, 7.5]])  # invalid -> min_disparity - 1
    np.testing.assert_array_equal(disparity_from_message_values(values, 2.0), published)


def test_pipeline_applies_the_policy_it_is_given() -> None:
    rng = np.random.default_rng(0)
    left, right = (rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2))
    camera = CameraModel(fx=100.0, baseline=1.0)
    pipeline = Pipeline(ConstantBackend(fake_info(), value=4.0, sigma=1.0), output_resolution="model")
    baseline = pipeline.process(left, right, camera=camera)
    np.testing.assert_allclose(baseline.depth, 25.0)
    pipeline.policy = OutputPolicy(confidence_threshold=5.0)  # sigma_Z = 6.25 m
    assert np.isnan(pipeline.process(left, right, camera=camera).depth).all()
    pipeline.policy = OutputPolicy(min_disparity=5.0)
    result = pipeline.process(left, right, camera=camera)
    assert np.isnan(result.disparity).all() and np.isposinf(result.depth).all()
    pipeline.policy = OutputPolicy(max_disparity=40.0)
    assert pipeline.process(left, right, camera=camera).max_disparity == 40.0
    pipeline.policy = OutputPolicy()
    assert pipeline.process(left, right, camera=camera).max_disparity == fake_info().max_disparity


def test_one_encodings_table_for_every_reader() -> None:
    from mtl_perception.data import rosbag_io
    from mtl_perception.runtime import pipeline

    assert set(INPUT_ENCODINGS) <= set(ENCODINGS)
    assert pipeline.ENCODINGS is ENCODINGS and rosbag_io.ENCODINGS is ENCODINGS
    with pytest.raises(InputError, match="mono16"):
        Pipeline(ConstantBackend(fake_info("mono"))).process(np.zeros((8, 8), np.uint8), encoding="mono16")


def test_to_rgb_of_every_input_encoding() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    alpha = np.full((4, 5, 1), 9, np.uint8)
    samples = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }
    assert set(samples) | {"mono8"} == set(INPUT_ENCODINGS)
    for encoding, image in samples.items():
        np.testing.assert_array_equal(to_rgb(image, encoding), rgb, err_msg=encoding)
    np.testing.assert_array_equal(to_rgb(rgb[..., 0], "mono8"), np.repeat(rgb[..., :1], 3, axis=2))


def test_resize_image_averages_when_shrinking_and_interpolates_when_growing() -> None:
    checker = np.indices((8, 8)).sum(axis=0) % 2 * 255
    image = np.repeat(checker.astype(np.uint8)[..., None], 3, axis=2)
    # Area averaging of a 1-px checkerboard by 2 is flat grey (nearest/bilinear would alias).
    np.testing.assert_array_equal(resize_image(image, 4, 4), 128)
    grown = resize_image(np.array([[[0] * 3, [100] * 3]], np.uint8), 4, 1)
    np.testing.assert_array_equal(grown[0, :, 0], [0, 25, 75, 100])


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8"])
def test_pipeline_resizes_every_encoding_to_the_same_tensor(encoding: str) -> None:
    """Resizing happens before the colour conversion: the model must still see the rgb8 pixels."""
    rgb = np.random.default_rng(3).integers(0, 256, (150, 300, 3), dtype=np.uint8)  # model is 64x128
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    alpha = np.full((*rgb.shape[:2], 1), 200, np.uint8)
    image = {
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "mono8": rgb[..., 0],
    }[encoding]
    for resize_mode in ("stretch", "letterbox"):
        reference, backend = ConstantBackend(fake_info()), ConstantBackend(fake_info())
        Pipeline(reference, resize_mode=resize_mode).process(rgb, rgb)
        Pipeline(backend, resize_mode=resize_mode).process(image, image, encoding=encoding)
        np.testing.assert_array_equal(backend.last_inputs["left"], reference.last_inputs["left"])


def test_mono_depth_follows_the_camera_focal_length() -> None:
    """DESIGN, Geometry: a model that learned depth for focal length f0 gives depth * fx / f0 for fx."""
    import dataclasses

    info = dataclasses.replace(fake_info("mono"), extra={"focal_length": "100.0"})  # 64x128 model
    image = np.random.default_rng(4).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    pipeline = Pipeline(ConstantBackend(info, value=10.0, sigma=1.0), output_resolution="model")
    for fx, expected in ((100.0, 10.0), (200.0, 20.0), (2000.0, 200.0)):
        result = pipeline.process(image, camera=CameraModel(fx))
        np.testing.assert_allclose(result.depth, expected, rtol=1e-6)
        np.testing.assert_allclose(result.depth_uncertainty, expected / 10.0, rtol=1e-6)
    # fx is the input image's: at twice the resolution the same lens has twice the focal length.
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    np.testing.assert_allclose(pipeline.process(big, camera=CameraModel(200.0)).depth, 10.0, rtol=1e-6)
    # A model without the metadata (older files) and a call without camera keep the raw depth.
    assert np.allclose(Pipeline(ConstantBackend(fake_info("mono"), value=10.0)).process(image).depth, 10.0)


def test_depth_uses_the_principal_point_offset_of_the_rectified_pair() -> None:
    """Z = f B / (d + cx_right - cx_left): Middlebury's doffs, stereo_image_proc's Q matrix."""
    disparity = np.array([[10.0, 2.0, -3.0, -6.0]], np.float32)
    _, depth, sigma = stereo_maps(disparity, np.ones_like(disparity), 100.0, OutputPolicy(), 5.0)
    # d + o = 15, 7 -> finite; d = -3 is below the disparity range (too far), as is d + o <= 0.
    np.testing.assert_allclose(depth, [[100 / 15, 100 / 7, INF, INF]], rtol=1e-6)
    np.testing.assert_allclose(sigma[0, :2], [(100 / 15) ** 2 / 100, (100 / 7) ** 2 / 100], rtol=1e-5)


def test_pipeline_scales_the_principal_offset_with_the_output() -> None:
    rng = np.random.default_rng(6)
    left, right = (rng.integers(0, 256, (128, 256, 3), dtype=np.uint8) for _ in range(2))  # model 64x128
    pipeline = Pipeline(ConstantBackend(fake_info(), value=10.0, sigma=1.0))
    camera = CameraModel(fx=200.0, baseline=0.5, principal_offset=20.0)  # input pixels
    result = pipeline.process(left, right, camera=camera)
    # Output at input size: disparity 20 px, offset 20 px -> Z = 200 * 0.5 / 40.
    np.testing.assert_allclose(result.depth, 2.5, rtol=1e-6)
    at_model = Pipeline(ConstantBackend(fake_info(), value=10.0), output_resolution="model")
    np.testing.assert_allclose(at_model.process(left, right, camera=camera).depth, 2.5, rtol=1e-6)


def test_a_result_carries_the_range_it_was_masked_with() -> None:
    """The node publishes on another thread: the message's min_disparity must be the frame's own."""
    rng = np.random.default_rng(7)
    left, right = (rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2))
    pipeline = Pipeline(ConstantBackend(fake_info(), value=4.0), output_resolution="model")
    pipeline.policy = OutputPolicy(min_disparity=3.0)
    result = pipeline.process(left, right)
    pipeline.policy = OutputPolicy(min_disparity=9.0)  # changed before the frame is published
    assert result.min_disparity == 3.0 and np.isfinite(result.disparity).all()
