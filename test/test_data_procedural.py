"""Procedural layered stereo pairs: exact disparity (a classical matcher agrees), far backdrop as a
real label, the same sample contract as every loader, and in the training mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from mtl_perception.baselines.sgbm import sgbm_disparity, sgbm_matcher
from mtl_perception.data.augment import AugmentConfig
from mtl_perception.data.labels import IGNORE_INDEX
from mtl_perception.data.procedural import ProceduralConfig, ProceduralStereoDataset, layered_pair

SMALL = ProceduralConfig(size=(96, 192), max_disparity=40.0, layers=(3, 6))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgbm_recovers_the_labelled_disparity(seed):
    """The right view really is the left one seen from a camera to its right: an independent
    matcher finds the label (a wrong warp direction or a shifted label fails this)."""
    config = ProceduralConfig(size=(128, 256), max_disparity=60.0, flat_texture_probability=0.0)
    left, right, truth = layered_pair(config, np.random.default_rng(seed), photos=[])
    found = sgbm_disparity(sgbm_matcher(64), left, right)
    scored = np.isfinite(found) & (found > 0) & (truth > 0)
    assert scored.mean() > 0.4
    error = np.abs(found[scored] - truth[scored])
    assert np.median(error) < 0.5
    assert (error > 3).mean() < 0.1


def test_far_backdrop_is_disparity_zero_and_the_views_agree_there():
    config = ProceduralConfig(size=(64, 128), layers=(0, 0), far_backdrop_probability=1.0)
    left, right, truth = layered_pair(config, np.random.default_rng(0), photos=[])
    assert (truth == 0).all()
    np.testing.assert_array_equal(left, right)


def test_shapes_are_nearer_than_the_backdrop_and_inside_the_range():
    for seed in range(10):
        _, _, truth = layered_pair(SMALL, np.random.default_rng(seed), photos=[])
        assert truth.min() >= 0 and truth.max() < SMALL.max_disparity


def test_samples_have_the_loader_contract_and_collate_with_each_other():
    torch.manual_seed(0)
    dataset = ProceduralStereoDataset(4, SMALL, augment=AugmentConfig(crop_size=(64, 128)), photos=[])
    batch = default_collate([dataset[0], dataset[1]])
    assert batch["left"].shape == batch["right"].shape == (2, 3, 64, 128)
    assert (batch["semantic"] == IGNORE_INDEX).all() and not batch["has_semantic"].any()
    assert batch["disparity_valid"].all() and not batch["depth_valid"].any()
    assert batch["has_depth"].all()  # geometry is labelled: the disparity loss reads it


def test_fixed_seed_gives_the_same_scene_and_no_seed_fresh_ones():
    fixed = ProceduralStereoDataset(2, SMALL, photos=[], seed=5)
    torch.testing.assert_close(fixed[1]["left"], fixed[1]["left"])
    assert not torch.equal(fixed[0]["left"], fixed[1]["left"])
    fresh = ProceduralStereoDataset(2, SMALL, photos=[])
    assert not torch.equal(fresh[0]["left"], fresh[0]["left"])


def test_photo_textures_are_used_when_given():
    photo = np.zeros((50, 50, 3), np.uint8)
    photo[..., 1] = 255  # pure green appears only if a layer is textured by the photo
    config = ProceduralConfig(size=(64, 128), photo_probability=1.0, flat_texture_probability=0.0)
    left, _, _ = layered_pair(config, np.random.default_rng(0), photos=[photo])
    assert ((left[..., 1] == 255) & (left[..., 0] == 0)).mean() > 0.5


def _layer_colour_spread(config: ProceduralConfig, seeds: range) -> float:
    """Mean over scenes of the spread (std across layers) of each visible layer's mean colour."""
    spreads = []
    for seed in seeds:
        left, _, truth = layered_pair(config, np.random.default_rng(seed), photos=[])
        layers = [truth == level for level in np.unique(truth)]
        means = [left[layer].mean(axis=0) for layer in layers if layer.sum() > 200]
        spreads.append(np.std(means, axis=0).mean())
    return float(np.mean(spreads))


def test_camouflaged_layers_share_one_look_and_a_matcher_still_solves_them():
    """With camouflage every layer wears the same texture look, so the left view alone does not
    outline the layers (their colours no longer differ), yet the pair is still exactly matchable."""
    plain = ProceduralConfig(size=(128, 256), max_disparity=60.0, layers=(3, 6), max_slant=0.0)
    camouflaged = ProceduralConfig(
        size=(128, 256), max_disparity=60.0, layers=(3, 6), max_slant=0.0, camouflage_probability=1.0
    )
    assert _layer_colour_spread(camouflaged, range(8)) < 0.4 * _layer_colour_spread(plain, range(8))
    errors, coverage = [], []
    for seed in range(4):
        left, right, truth = layered_pair(camouflaged, np.random.default_rng(seed), photos=[])
        found = sgbm_disparity(sgbm_matcher(64), left, right)
        scored = np.isfinite(found) & (found > 0) & (truth > 0)  # a far backdrop (0) is not scored
        errors.append(np.abs(found[scored] - truth[scored]))
        coverage.append(scored.mean())
    errors = np.concatenate(errors)
    assert np.mean(coverage) > 0.4
    assert np.median(errors) < 0.5 and (errors > 3).mean() < 0.05
