"""Hypothesis selection (networks/selection.py): warping, ZNCC, the pick, its loss, edge-keeping
upsampling, and the windowed soft-argmin that goes with it.

Known answers: the right view decides which matched disparity a pixel takes (the same left image and
smeared matches give different picks for different right views), and a net with the selection
computes exactly the segmentation and embedding of the net it was added to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_networks import random_images, tiny_stereo_config

from mtl_perception.networks import build_model
from mtl_perception.networks.heads import upsample
from mtl_perception.networks.matching import match_distribution
from mtl_perception.networks.selection import (
    HYPOTHESIS_OFFSETS,
    ZNCC_WINDOWS,
    HypothesisSelection,
    pick_log_scale,
    shift_map,
    source_difference,
    upsample_keeping_edges,
    warp_right,
    zncc,
)
from mtl_perception.training.losses import hypothesis_choice_loss


def test_shift_map_reads_the_neighbour_and_replicates_the_border():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    torch.testing.assert_close(shift_map(x, 0, 2)[0, 0, 1], torch.tensor([7.0, 8.0, 9.0, 9.0, 9.0]))
    torch.testing.assert_close(shift_map(x, -1, 0)[0, 0, :, 0], torch.tensor([0.0, 0.0, 5.0, 10.0]))


@pytest.mark.parametrize("d", [0, 3, 9])
def test_warping_by_the_true_disparity_rebuilds_the_left_view_and_its_zncc_is_one(d: int):
    texture = torch.rand(1, 1, 24, 64 + d, generator=torch.Generator().manual_seed(d))
    left, right = texture[..., :64], texture[..., d:]  # left[x] shows what right[x - d] shows
    hypotheses = torch.tensor([float(d), d + 3.0, max(d - 3.0, 0.0)]).view(1, 3, 1, 1).expand(1, 3, 24, 64)
    warped = warp_right(right, hypotheses)
    torch.testing.assert_close(warped[:, 0, :, d:], left[:, 0, :, d:])
    interior = (slice(None), slice(None), slice(4, -4), slice(d + 8, -4))
    score = zncc(left, warped, 5)[interior]
    assert score[:, 0].min() > 0.999
    assert score[:, 1].mean() < 0.3 and (d < 3 or score[:, 2].mean() < 0.3)


def test_zncc_ignores_gain_and_offset_between_the_views():
    left = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(zncc(left, 0.5 * left + 0.2, 5), torch.ones(1, 1, 16, 16), atol=1e-3, rtol=0)


def test_source_difference_is_zero_inside_a_surface_and_the_colour_step_across_an_outline():
    left = torch.zeros(1, 3, 12, 24)
    left[..., 12:] = torch.tensor([0.9, 0.3, 0.6]).view(1, 3, 1, 1)  # mean step 0.6 at x = 12
    difference = source_difference(left)[0]
    assert difference.shape == (len(HYPOTHESIS_OFFSETS), 12, 24)
    assert difference[0].abs().max() == 0  # the pixel's own disparity
    for k, (dy, dx) in enumerate(HYPOTHESIS_OFFSETS):
        crosses = torch.zeros(24, dtype=torch.bool)
        if dx:
            source_column = (torch.arange(24) + dx).clamp(0, 23)
            crosses = (source_column >= 12) != (torch.arange(24) >= 12)
        torch.testing.assert_close(difference[k, 6], crosses.float() * 0.6, msg=str((dy, dx)))


def _zncc_only_selection() -> HypothesisSelection:
    """A selection whose logit is 20 x the 5-px ZNCC: the matching evidence alone, no learned prior."""
    selection = HypothesisSelection(channels=1)
    first, _, second, _, last = selection.score
    with torch.no_grad():
        for conv in (first, second, last):
            conv.weight.zero_()
            conv.bias.zero_()
        first.weight[0, ZNCC_WINDOWS.index(5)] = 1.0
        first.bias[0] = 1.0  # ZNCC >= -1: stays positive through the ReLUs
        second.weight[0, 0] = 1.0
        last.weight[0, 0] = 20.0
    return selection


def test_the_pick_follows_the_right_view_where_the_matching_smeared_the_edge():
    """One left image and one smeared disparity map (edge at x = 64), two right views with
    the depth edge 12 px apart: the ZNCC-only pick puts the edge where each right view has it; the
    plain upsampling, the same for both, cannot."""
    selection = _zncc_only_selection()
    left = torch.rand(1, 1, 64, 128, generator=torch.Generator().manual_seed(0)).expand(1, 3, 64, 128)
    errors, plain_errors = [], []
    # The matching put the edge at 64 and blurred it over 4 pixels either side.
    matched = torch.where(torch.arange(128) < 64, 12.0, 4.0).view(1, 1, 128)
    smeared = F.avg_pool1d(matched, 9, stride=1, padding=4, count_include_pad=False)
    smeared = smeared.view(1, 1, 1, 128).expand(1, 1, 64, 128)
    for edge in (58, 70):
        truth = torch.where(torch.arange(128) < edge, 12.0, 4.0).expand(64, 128)
        right = torch.rand(1, 1, 64, 128, generator=torch.Generator().manual_seed(edge))
        # right[x - d(x)] = left[x] for every left pixel (nearer layers written last win).
        for layer in (4.0, 12.0):
            columns = torch.nonzero(truth[0] == layer).squeeze(1)
            right[..., (columns - int(layer)).clamp_min(0)] = left[:, :1, :, columns]
        right = right.expand(1, 3, 64, 128)
        quality = torch.zeros(1, 2, 64, 128)
        with torch.no_grad():
            hypotheses, logits = selection(smeared, left, right, quality, 1 / 48)
        picked = hypotheses.gather(1, logits.argmax(1, keepdim=True))[0, 0]
        band = slice(edge - 16, edge + 16)  # all visible: the near layer is left of its edge
        errors.append(float(((picked - truth).abs() > 1.5)[8:-8, band].float().mean()))
        plain_errors.append(float(((hypotheses[0, 0] - truth).abs() > 1.5)[8:-8, band].float().mean()))
    assert min(plain_errors) > 0.25, plain_errors  # the smear the selection has to undo
    assert max(errors) < 0.08, errors  # what is left: a pixel or two at the edge itself


def test_choice_loss_rewards_the_mass_on_every_right_hypothesis_and_skips_pixels_with_none():
    hypotheses = torch.tensor([2.0, 2.0, 7.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    target = torch.tensor([[[4.0, 4.0, 30.0, 30.0]]]).expand(1, 2, 4)  # 1/2 res: 2 and 15 px
    valid = torch.ones(1, 2, 4, dtype=torch.bool)
    # Pixel 0 of the 1/2-res row: hypotheses 0 and 1 are right; pixel 1: none (15 px) -> not scored.
    equal = torch.zeros(1, 3, 1, 2)
    assert hypothesis_choice_loss(hypotheses, equal, target, valid, 0.2).item() == pytest.approx(np.log(1.5))
    confident = torch.tensor([0.0, 0.0, -20.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    assert hypothesis_choice_loss(hypotheses, confident, target, valid, 0.2).item() < 1e-8
    wrong = torch.tensor([-20.0, -20.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    assert hypothesis_choice_loss(hypotheses, wrong, target, valid, 0.2).item() > 19
    assert hypothesis_choice_loss(hypotheses, wrong, target, torch.zeros_like(valid), 0.2).item() == 0.0


@pytest.mark.parametrize("balance", [0.2, 0.5])
def test_choice_loss_gives_the_pixels_whose_own_match_is_wrong_their_share_whatever_their_count(balance):
    hypotheses = torch.tensor([2.0, 9.0]).view(1, 2, 1, 1).expand(1, 2, 1, 4)
    # 1/2-res truth: three pixels at 2 (own match right), one at 9 (own match wrong).
    target = torch.tensor([4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 18.0, 18.0]).expand(1, 2, 8)
    valid = torch.ones(1, 2, 8, dtype=torch.bool)
    logits = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 1, 4)  # always prefers its own match
    own_right, own_wrong = np.log1p(np.exp(-1.0)), np.log1p(np.exp(1.0))
    loss = hypothesis_choice_loss(hypotheses, logits, target, valid, balance).item()
    assert loss == pytest.approx((1 - balance) * own_right + balance * own_wrong)
    # Pixels where every hypothesis is right (plain sky, open road) have nothing to choose: any
    # number of them leaves the loss as it is.
    uncontested = torch.tensor([2.0, 2.0]).view(1, 2, 1, 1).expand(1, 2, 1, 12)
    padded = hypothesis_choice_loss(
        torch.cat([hypotheses, uncontested], dim=-1),
        torch.cat([logits, logits[..., :1].expand(1, 2, 1, 12)], dim=-1),
        torch.cat([target, torch.full((1, 2, 24), 4.0)], dim=-1),
        torch.ones(1, 2, 32, dtype=torch.bool),
        balance,
    ).item()
    assert padded == pytest.approx(loss)


@pytest.mark.parametrize(
    ("distribution", "widened"), [("laplace", 0.5 + 4.0), ("gaussian", (0.25 + 32.0) ** 0.5)]
)
def test_the_scale_widens_by_the_choice_distributions_distance_from_the_pick(distribution, widened):
    hypotheses = torch.tensor([2.0, 10.0]).view(1, 2, 1, 1)
    log_scale = torch.full((1, 1, 1, 1), np.log(0.5))
    picked = hypotheses[:, :1]
    sure = torch.tensor([30.0, 0.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(pick_log_scale(log_scale, hypotheses, sure, picked, distribution), log_scale)
    torn = torch.zeros(1, 2, 1, 1)  # half the mass 8 px from the pick
    got = pick_log_scale(log_scale, hypotheses, torn, picked, distribution)
    assert got.exp().item() == pytest.approx(widened)


def test_upsampling_keeps_depth_jumps_and_interpolates_surfaces():
    jump = torch.tensor([[4.0, 4.0, 20.0, 20.0]]).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    up = upsample_keeping_edges(jump, 2)[0, 0, 0]
    assert set(up.tolist()) == {8.0, 40.0}  # no value between the two surfaces
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 3, 8) * 0.4  # a slanted surface
    torch.testing.assert_close(upsample_keeping_edges(ramp, 2), upsample(ramp, 2) * 2)


def test_windowed_soft_argmin_stays_on_the_stronger_mode():
    logits = torch.full((1, 12, 1, 1), -30.0)
    logits[:, 2], logits[:, 9] = 5.0, 4.0  # two modes: the full mean lands between them
    _, full, spread, _ = match_distribution(logits)
    _, windowed, windowed_spread, _ = match_distribution(logits, radius=2)
    assert 3.0 < full.item() < 8.0
    assert windowed.item() == pytest.approx(2.0, abs=1e-8)
    torch.testing.assert_close(windowed_spread, spread)  # the uncertainty still sees both modes


def test_selection_leaves_segmentation_and_embedding_as_they_were_and_exposes_its_choice():
    torch.manual_seed(0)
    plain = build_model(tiny_stereo_config()).eval()
    selecting = build_model(tiny_stereo_config(hypothesis_selection=True, soft_argmin_radius=1)).eval()
    missing, unexpected = selecting.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("hypothesis_selection.") for name in missing)
    left, right = random_images(2)
    with torch.no_grad():
        before, after = plain(left, right), selecting(left, right)
    for name in ("semantic_logits", "coarse_semantic_logits", "embedding"):
        torch.testing.assert_close(after[name], before[name], msg=name)
    assert not torch.equal(after["disparity"], before["disparity"])
    count = len(HYPOTHESIS_OFFSETS)
    assert after["disparity_hypotheses"].shape == after["hypothesis_logits"].shape == (2, count, 32, 64)


def test_config_refuses_a_window_beyond_the_candidates():
    with pytest.raises(ValueError, match="soft_argmin_radius"):
        tiny_stereo_config(soft_argmin_radius=-1)


def test_the_selection_temperature_changes_the_uncertainty_only():
    torch.manual_seed(0)
    plain = build_model(tiny_stereo_config(soft_argmin_radius=1)).eval()
    nets = {
        temperature: build_model(
            tiny_stereo_config(
                hypothesis_selection=True, soft_argmin_radius=1, selection_temperature=temperature
            )
        ).eval()
        for temperature in (1e-8, 1.0)
    }
    nets[1.0].load_state_dict(plain.state_dict(), strict=False)
    nets[1e-8].load_state_dict(nets[1.0].state_dict())
    left, right = random_images(2, batch=1)
    with torch.no_grad():
        base, sure, soft = plain(left, right), nets[1e-8](left, right), nets[1.0](left, right)
    for name in ("disparity", "semantic_logits", "hypothesis_logits"):
        torch.testing.assert_close(sure[name], soft[name], msg=name)
    # All the mass on the pick: the refinement's own scale; spread over the hypotheses: wider.
    torch.testing.assert_close(sure["disparity_log_scale"], base["disparity_log_scale"])
    assert (soft["disparity_log_scale"] >= base["disparity_log_scale"] - 1e-6).all()
    assert (soft["disparity_log_scale"] > base["disparity_log_scale"] + 1e-3).any()
    with pytest.raises(ValueError, match="selection_temperature"):
        tiny_stereo_config(hypothesis_selection=True, selection_temperature=0.0)
