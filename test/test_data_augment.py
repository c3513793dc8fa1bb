"""Joint stereo augmentation: geometry moves views and labels together, disparity follows zoom."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_perception.config import ConfigError, from_dict
from mtl_perception.data.augment import AugmentConfig, augment_stereo, resize_stereo
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.data.sample import StereoArrays, empty_semantic

H, W = 32, 64
NO_JITTER = {
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "gamma": 0.0,
    "blur_probability": 0.0,
}


def geometry_only(**kwargs: object) -> AugmentConfig:
    return from_dict(AugmentConfig, {**NO_JITTER, **kwargs})


def coordinate_sample() -> StereoArrays:
    """Every array encodes its own (y, x) so any misalignment between them is visible."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([y * 4, x * 4, np.full_like(y, 7)], axis=-1).astype(np.uint8)
    return StereoArrays(
        left=image,
        right=image.copy(),
        semantic=(x % 10).astype(np.uint8),
        disparity=(1 + y * 100 + x).astype(np.float32),
        depth=(1000 + y * 100 + x).astype(np.float32),
        disparity_valid=coordinate_mask(y, x),
        depth_valid=~coordinate_mask(y, x),
        fx=50.0,
        baseline=0.5,
        has_semantic=True,
        has_depth=True,
    )


def coordinate_mask(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A validity pattern that is a known function of the source pixel (y, x)."""
    return (y + 2 * x) % 3 != 0


def random_sample(seed: int = 0, invalid_fraction: float = 0.3, far_fraction: float = 0.0) -> StereoArrays:
    """Random labels: ``invalid_fraction`` unknown, ``far_fraction`` far (valid, d = 0, z = +inf)."""
    rng = np.random.default_rng(seed)
    disparity = rng.uniform(1, 40, (H, W)).astype(np.float32)
    draw = rng.random((H, W))
    unknown = draw < invalid_fraction
    far = (draw >= invalid_fraction) & (draw < invalid_fraction + far_fraction)
    disparity[unknown | far] = 0
    depth = np.where(disparity > 0, 25.0 / np.maximum(disparity, 1e-6), 0).astype(np.float32)
    depth[far] = np.inf
    return StereoArrays(
        left=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        right=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        semantic=rng.integers(0, 10, (H, W), dtype=np.uint8),
        disparity=disparity,
        depth=depth,
        disparity_valid=~unknown,
        depth_valid=~unknown,
        fx=50.0,
        baseline=0.5,
        has_semantic=True,
        has_depth=True,
    )


def test_crop_keeps_views_and_labels_aligned() -> None:
    out = augment_stereo(coordinate_sample(), geometry_only(crop_size=[16, 24]), np.random.default_rng(3))
    assert out.left.shape == (16, 24, 3) and out.semantic.shape == (16, 24)
    y, x = out.left[..., 0].astype(int) // 4, out.left[..., 1].astype(int) // 4
    assert (y.max() - y.min(), x.max() - x.min()) == (15, 23)  # one contiguous window
    np.testing.assert_array_equal(out.right, out.left)
    np.testing.assert_array_equal(out.semantic, x % 10)
    np.testing.assert_array_equal(out.disparity, 1 + y * 100 + x)  # crop never changes disparity values
    np.testing.assert_array_equal(out.depth, 1000 + y * 100 + x)
    assert out.fx == 50.0


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_zoom_multiplies_disparity_at_corresponding_pixels(factor: float) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.uniform(1, 30, (H // 2, W // 2)).astype(np.float32)
    # 2x2 blocks: with exact factor 2 or 1/2 every output pixel maps into one constant block.
    sample = random_sample().replace(disparity=np.kron(coarse, np.ones((2, 2), np.float32)))
    zoomed_size = (round(H * factor), round(W * factor))
    out = augment_stereo(sample, geometry_only(zoom_range=[factor, factor], crop_size=list(zoomed_size)), rng)
    y, x = np.mgrid[0 : zoomed_size[0], 0 : zoomed_size[1]]
    source = coarse[(y / factor).astype(int) // 2, (x / factor).astype(int) // 2]
    np.testing.assert_allclose(out.disparity, source * factor, rtol=1e-6)
    assert out.fx == pytest.approx(50.0 * factor)


def test_zoom_keeps_invalid_disparity_zero_and_depth_metric() -> None:
    sample = random_sample(invalid_fraction=0.4)
    out = augment_stereo(sample, geometry_only(zoom_range=[1.37, 1.37]), np.random.default_rng(1))
    scale = round(W * 1.37) / W
    valid_sources = sample.disparity[sample.disparity > 0]
    resized = out.disparity[out.disparity > 0] / scale
    # No value lies between an invalid 0 and a valid one: each is a source value times the scale.
    assert np.abs(resized[:, None] - valid_sources[None, :]).min(axis=1).max() < 1e-4
    assert 0.3 < (out.disparity == 0).mean() < 0.5
    assert np.isin(out.depth, sample.depth).all()  # depth values are resampled, never rescaled
    np.testing.assert_array_equal(out.depth == 0, out.disparity == 0)


def test_zoom_out_pads_with_ignore_and_zero() -> None:
    out = augment_stereo(random_sample(), geometry_only(zoom_range=[0.5, 0.5]), np.random.default_rng(2))
    assert out.size == (H, W)
    padded = np.ones((H, W), bool)
    rows, cols = np.nonzero(out.left.sum(axis=-1) > 0)
    padded[rows.min() : rows.min() + H // 2, cols.min() : cols.min() + W // 2] = False
    assert padded.sum() == H * W * 3 // 4
    assert (out.semantic[padded] == IGNORE_INDEX).all()
    assert (out.disparity[padded] == 0).all() and (out.depth[padded] == 0).all()
    assert (out.left[padded] == 0).all() and (out.right[padded] == 0).all()
    assert (out.semantic[~padded] != IGNORE_INDEX).all()


@pytest.mark.parametrize("zoom", [0.6, 1.0, 1.7])
def test_masks_stay_aligned_with_labels_through_zoom_and_crop(zoom: float) -> None:
    sample = coordinate_sample()
    config = geometry_only(zoom_range=[zoom, zoom], crop_size=[24, 40])
    out = augment_stereo(sample, config, np.random.default_rng(5))
    scale = out.fx / sample.fx
    filled = out.depth > 0  # padding has depth 0
    source = np.rint(out.depth[filled] - 1000).astype(int)
    y, x = source // 100, source % 100
    np.testing.assert_array_equal(out.disparity_valid[filled], coordinate_mask(y, x))
    np.testing.assert_array_equal(out.depth_valid[filled], ~coordinate_mask(y, x))
    np.testing.assert_allclose(out.disparity[filled] / scale, 1 + source, rtol=1e-5)
    # Padding is unknown: no label and no validity.
    assert not out.disparity_valid[~filled].any() and not out.depth_valid[~filled].any()
    if zoom < 1:
        assert (~filled).any()


def test_far_pixels_stay_far_and_unknown_stays_unknown() -> None:
    sample = random_sample(invalid_fraction=0.2, far_fraction=0.2)
    far_in = sample.disparity_valid & (sample.disparity == 0)
    assert np.isinf(sample.depth[far_in]).all() and far_in.mean() > 0.1
    out = augment_stereo(sample, geometry_only(zoom_range=[1.37, 1.37]), np.random.default_rng(1))
    far = out.disparity_valid & (out.disparity == 0)
    assert 0.1 < far.mean() < 0.3
    assert np.isposinf(out.depth[far]).all()  # far is +inf depth, never a finite one
    np.testing.assert_array_equal(out.depth_valid, out.disparity_valid)
    unknown = ~out.disparity_valid
    assert (out.disparity[unknown] == 0).all() and (out.depth[unknown] == 0).all()
    assert (out.disparity[out.disparity_valid & ~far] > 0).all()


def test_jitter_changes_images_never_labels() -> None:
    sample = random_sample()
    config = AugmentConfig(
        brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1, gamma=0.3, blur_probability=1.0
    )
    out = augment_stereo(sample, config, np.random.default_rng(4))
    assert not np.array_equal(out.left, sample.left) and not np.array_equal(out.right, sample.right)
    np.testing.assert_array_equal(out.semantic, sample.semantic)
    np.testing.assert_array_equal(out.disparity, sample.disparity)
    np.testing.assert_array_equal(out.depth, sample.depth)


@pytest.mark.parametrize("same", [True, False])
def test_same_on_both_views_controls_shared_jitter(same: bool) -> None:
    sample = random_sample()
    sample = sample.replace(right=sample.left.copy())
    config = AugmentConfig(brightness=0.5, contrast=0.5, hue=0.1, same_on_both_views=same)
    out = augment_stereo(sample, config, np.random.default_rng(5))
    assert np.array_equal(out.left, out.right) == same


def test_augmentation_is_deterministic_given_the_generator() -> None:
    config = AugmentConfig(zoom_range=(0.7, 1.4), crop_size=(24, 40), blur_probability=0.5)
    first = augment_stereo(random_sample(), config, np.random.default_rng(9))
    second = augment_stereo(random_sample(), config, np.random.default_rng(9))
    third = augment_stereo(random_sample(), config, np.random.default_rng(10))
    for name in ("left", "right", "semantic", "disparity", "depth"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not np.array_equal(first.left, third.left)


def test_resize_scales_disparity_and_fx_by_width_only() -> None:
    sample = random_sample()
    out = resize_stereo(sample, (H // 2, W * 2))
    assert out.left.shape == (H // 2, W * 2, 3)
    np.testing.assert_allclose(
        out.disparity[0, ::2], sample.disparity[1, :] * 2
    )  # NEAREST_EXACT rows 1, 3, ...
    assert out.fx == pytest.approx(100.0) and out.baseline == 0.5


def test_config_from_yaml_mapping_is_strict() -> None:
    config = from_dict(AugmentConfig, {"crop_size": [256, 512], "zoom_range": [0.8, 1.25]}, "augmentation")
    assert config.crop_size == (256, 512) and config.zoom_range == (0.8, 1.25)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(AugmentConfig, {"horizontal_flip": True})
    with pytest.raises(ConfigError, match="zoom_range"):
        from_dict(AugmentConfig, {"zoom_range": [1.5, 0.5]})
    with pytest.raises(ConfigError, match="crop_size"):
        from_dict(AugmentConfig, {"crop_size": [0, 64]})


def test_right_view_occlusion_and_vertical_shift_leave_the_left_view_and_labels_alone():
    sample = coordinate_sample()
    config = geometry_only(right_occlusion_probability=1.0, max_vertical_shift=2.0)
    out = augment_stereo(sample, config, np.random.default_rng(3))
    np.testing.assert_array_equal(out.left, sample.left)
    np.testing.assert_array_equal(out.disparity, sample.disparity)
    np.testing.assert_array_equal(out.disparity_valid, sample.disparity_valid)
    np.testing.assert_array_equal(out.semantic, sample.semantic)
    assert not np.array_equal(out.right, sample.right)


def test_vertical_shift_moves_the_right_view_by_the_drawn_rows():
    sample = coordinate_sample()  # channel 0 of a view is 4 * row
    out = augment_stereo(sample, geometry_only(max_vertical_shift=2.0), np.random.default_rng(0))
    rows = out.right[4:-4, :, 0].astype(np.float32) / 4 - np.arange(4, H - 4)[:, None]
    shift = float(np.median(rows))
    assert 0.05 < abs(shift) <= 2.0
    np.testing.assert_allclose(rows, shift, atol=0.26)  # one uint8 step of 4 * row


def test_without_right_view_steps_the_right_view_is_untouched():
    sample = coordinate_sample()
    out = augment_stereo(sample, geometry_only(), np.random.default_rng(0))
    np.testing.assert_array_equal(out.right, sample.right)


def _ramp_arrays(height: int = 64, width: int = 128) -> StereoArrays:
    """A frame whose red and green channels are its pixel centres' x and y as fractions (x 255)."""
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(height) + 0.5) / height
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.round(255 * u)[None, :]
    image[..., 1] = np.round(255 * v)[:, None]
    zeros = np.zeros((height, width), np.float32)
    return StereoArrays(
        left=image, right=image.copy(), semantic=empty_semantic(height, width), disparity=zeros, depth=zeros,
        disparity_valid=zeros > 0, depth_valid=zeros > 0, fx=100.0, baseline=0.1,
        has_semantic=False, has_depth=False,
    )  # fmt: skip


@pytest.mark.parametrize("zoom", [1.3, 0.8])
def test_source_region_says_which_part_of_the_frame_an_augmented_image_shows(zoom: float) -> None:
    """Zoom in (random crop) and zoom out (padding): every image pixel's colour is where the region
    says it came from, to within the resize's rounding."""
    config = geometry_only(zoom_range=(zoom, zoom), crop_size=(64, 128))
    arrays = augment_stereo(_ramp_arrays(), config, np.random.default_rng(3))
    left, top, right, bottom = arrays.source_region
    assert right - left == pytest.approx(1 / zoom, rel=0.02)
    assert bottom - top == pytest.approx(1 / zoom, rel=0.03)
    u = left + (right - left) * (np.arange(128) + 0.5) / 128
    v = top + (bottom - top) * (np.arange(64) + 0.5) / 64
    # Away from the frame's own border (where the resize clamps) and from any padding.
    cols, rows = (u > 0.03) & (u < 0.97), (v > 0.03) & (v < 0.97)
    assert cols.sum() > 60 and rows.sum() > 30
    red = arrays.left[..., 0].astype(np.float64)[np.ix_(rows, cols)]
    green = arrays.left[..., 1].astype(np.float64)[np.ix_(rows, cols)]
    assert np.abs(red - 255 * u[cols][None, :]).max() <= 3.0
    assert np.abs(green - 255 * v[rows][:, None]).max() <= 3.0
