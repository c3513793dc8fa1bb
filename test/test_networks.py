"""Stereo/mono multi-task networks: output contract, cross-task links, cost volume, steering head."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fixtures_networks import random_images, tiny_mono_config, tiny_stereo_config

from mtl_perception.config import ConfigError
from mtl_perception.contract import SEMANTIC_OUTPUTS, STEREO_OUTPUTS
from mtl_perception.data.labels import NUM_CLASSES
from mtl_perception.networks import (
    DeployModel,
    MonoNetConfig,
    SteeringHead,
    StereoNetConfig,
    build_model,
    model_config_from_dict,
)
from mtl_perception.networks.heads import grid_embedding, softmax_confidence, upsample
from mtl_perception.networks.matching import (
    DisparityConv,
    correlation_cost_volume,
    group_correlation_volume,
    interleave_half_candidates,
    match_distribution,
)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_config_from_dict_picks_network_by_mode_and_refuses_bad_values():
    assert isinstance(model_config_from_dict({}), StereoNetConfig)
    mono = model_config_from_dict({"mode": "mono", "input_size": [128, 256], "max_depth": 50})
    assert isinstance(mono, MonoNetConfig)
    assert mono.input_size == (128, 256)
    assert mono.max_depth == 50.0
    assert StereoNetConfig().num_classes == NUM_CLASSES
    with pytest.raises(ConfigError, match="max_disparity"):
        model_config_from_dict({"max_disparity": 30})
    with pytest.raises(ConfigError, match="multiple of 32"):
        model_config_from_dict({"input_size": [250, 512]})
    with pytest.raises(ConfigError, match="unknown key"):
        model_config_from_dict({"mode": "mono", "max_disparity": 64})
    with pytest.raises(ConfigError, match="mode"):
        model_config_from_dict({"mode": "trinocular"})


def test_stereo_outputs_follow_the_contract():
    torch.manual_seed(0)
    config = tiny_stereo_config()
    model = build_model(config).eval()
    left, right = random_images(2)
    with torch.no_grad():
        out = model(left, right)
    n, (h, w) = 2, config.input_size
    assert out["semantic_logits"].shape == (n, config.num_classes, h, w)
    assert out["coarse_semantic_logits"].shape[:2] == (n, config.num_classes)
    assert out["disparity"].shape == (n, 1, h, w)
    assert out["disparity_log_scale"].shape == (n, 1, h, w)
    assert out["embedding"].shape == (n, model.embedding_dim)
    assert (out["disparity"] >= 0).all()
    assert all(torch.isfinite(v).all() for v in out.values())


def test_mono_outputs_follow_the_contract_and_depth_stays_in_range():
    torch.manual_seed(0)
    config = tiny_mono_config(min_depth=1.0, max_depth=40.0)
    model = build_model(config).eval()
    (image,) = random_images(1)
    with torch.no_grad():
        out = model(image * 4.0)  # out-of-range input pushes the depth sigmoid towards its ends
    h, w = config.input_size
    assert set(out) == {"semantic_logits", "depth", "depth_log_scale", "embedding"}
    assert out["semantic_logits"].shape == (2, config.num_classes, h, w)
    assert out["depth"].shape == out["depth_log_scale"].shape == (2, 1, h, w)
    assert out["embedding"].shape == (2, model.embedding_dim)
    assert (out["depth"] >= 1.0 - 1e-4).all()
    assert (out["depth"] <= 40.0 + 1e-3).all()


@pytest.mark.parametrize("make_config", [tiny_stereo_config, tiny_mono_config])
def test_deploy_outputs_have_exported_names_types_and_ranges(make_config):
    torch.manual_seed(0)
    config = make_config()
    deploy = DeployModel(build_model(config).train())
    assert not deploy.model.training  # the deploy wrapper is inference-only
    inputs = random_images(len(deploy.input_names))
    with torch.no_grad():
        outputs = dict(zip(deploy.output_names, deploy(*inputs), strict=True))
    geometry = "disparity" if config.mode == "stereo" else "depth"
    expected = [
        "semantic",
        "semantic_uncertainty",
        "semantic_confidence",
        geometry,
        f"{geometry}_uncertainty",
    ]
    expected.append("embedding")
    assert list(outputs) == expected
    h, w = config.input_size
    assert outputs["semantic"].dtype == torch.int32
    assert outputs["semantic"].shape == (2, h, w)
    assert 0 <= int(outputs["semantic"].min()) <= int(outputs["semantic"].max()) < config.num_classes
    assert ((outputs["semantic_uncertainty"] >= 0) & (outputs["semantic_uncertainty"] <= 1)).all()
    # Top-class probability of C classes lies in [1/C, 1].
    confidence = outputs["semantic_confidence"]
    assert ((confidence >= 1 / config.num_classes - 1e-6) & (confidence <= 1)).all()
    assert outputs[geometry].shape == outputs[f"{geometry}_uncertainty"].shape == (2, h, w)
    assert (outputs[f"{geometry}_uncertainty"] > 0).all()
    assert outputs["embedding"].shape == (2, deploy.model.embedding_dim)


def test_laplace_uncertainty_is_sqrt2_times_gaussian_for_the_same_weights():
    torch.manual_seed(0)
    model = build_model(tiny_stereo_config(uncertainty_distribution="gaussian")).eval()
    inputs = random_images(2)
    index = STEREO_OUTPUTS.index("disparity_uncertainty")
    with torch.no_grad():
        gaussian = DeployModel(model)(*inputs)[index]
        model.config = tiny_stereo_config(uncertainty_distribution="laplace")
        laplace = DeployModel(model)(*inputs)[index]
    torch.testing.assert_close(laplace, gaussian * 2**0.5)


def test_cross_task_links_change_the_graph_and_every_variant_trains():
    variants = {
        "none": tiny_stereo_config(link_seg_to_disparity=False, link_attention=False),
        "seg_to_disp": tiny_stereo_config(link_seg_to_disparity=True, link_attention=False),
        "both": tiny_stereo_config(link_seg_to_disparity=True, link_attention=True),
    }
    left, right = random_images(2)
    counts = {}
    for name, config in variants.items():
        torch.manual_seed(0)
        model = build_model(config).train()
        out = model(left, right)
        loss = sum(v.float().mean() for v in out.values())
        loss.backward()
        # DDP needs every parameter in the graph; a dead branch would break multi-GPU training.
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, f"{name}: parameters without gradient: {unused}"
        counts[name] = _count(model)
    assert counts["none"] < counts["seg_to_disp"] < counts["both"]


def test_attention_link_uses_disparity_features():
    torch.manual_seed(0)
    model = build_model(tiny_stereo_config(link_attention=True)).eval()
    left, right = random_images(2)
    with torch.no_grad():
        base = model(left, right)["semantic_logits"]
        model.disparity_to_seg.weight.mul_(3.0)
        changed = model(left, right)["semantic_logits"]
    assert not torch.allclose(base, changed)


@pytest.mark.parametrize("shift", [0, 3, 7])
def test_cost_volume_peaks_at_the_shift_between_views(shift):
    generator = torch.Generator().manual_seed(shift)
    left = torch.nn.functional.normalize(torch.randn(1, 8, 6, 40, generator=generator), dim=1)
    # The right view sees every scene point `shift` pixels further left: right[x] = left[x + shift].
    right = torch.zeros_like(left)
    right[..., : left.shape[-1] - shift] = left[..., shift:]
    cost = correlation_cost_volume(left, right, num_disparities=10)
    assert cost.shape == (1, 10, 6, 40)
    peak = cost[..., shift:].argmax(dim=1)  # columns left of `shift` have no match in the right view
    assert (peak == shift).all()


def test_cost_volume_equals_the_shift_and_mean_definition():
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 2, 5, 3, 24, generator=generator)
    num_disparities = 7
    expected = torch.zeros(2, num_disparities, 3, 24)
    for d in range(num_disparities):  # the docstring's formula, zero where x - d < 0
        expected[:, d, :, d:] = (left[..., d:] * right[..., : 24 - d]).mean(dim=1)
    torch.testing.assert_close(correlation_cost_volume(left, right, num_disparities), expected)


@pytest.mark.parametrize(
    ("make_config", "inputs"),
    [(tiny_stereo_config, 2), (lambda: tiny_stereo_config(tasks=("semantic",)), 1), (tiny_mono_config, 1)],
    ids=["stereo", "semantic_only", "mono"],
)
def test_native_semantic_logits_are_the_quarter_resolution_source_of_the_full_ones(make_config, inputs):
    torch.manual_seed(0)
    config = make_config()
    model = build_model(config).eval()
    images = random_images(inputs)
    with torch.no_grad():
        full = model(*images)
        native = model(*images, upsample_semantic_logits=False)
    stride = model.SEMANTIC_LOGITS_STRIDE
    h, w = config.input_size
    assert native["semantic_logits"].shape == (2, config.num_classes, h // stride, w // stride)
    torch.testing.assert_close(upsample(native["semantic_logits"], stride), full["semantic_logits"])
    for key in full.keys() - {"semantic_logits"}:
        torch.testing.assert_close(native[key], full[key])


@pytest.mark.parametrize("make_config", [tiny_stereo_config, tiny_mono_config])
def test_deploy_takes_class_ids_at_full_resolution_and_entropy_at_native_resolution(make_config):
    torch.manual_seed(0)
    config = make_config()
    model = build_model(config).eval()
    deploy = DeployModel(model)
    images = random_images(len(deploy.input_names))
    with torch.no_grad():
        outputs = dict(zip(deploy.output_names, deploy(*images), strict=True))
        native = model(*images, upsample_semantic_logits=False)["semantic_logits"]
    stride = model.SEMANTIC_LOGITS_STRIDE
    full = upsample(native, stride)
    torch.testing.assert_close(outputs["semantic"], full.argmax(dim=1).to(torch.int32))
    probabilities = torch.softmax(native, dim=1)
    entropy = -(probabilities * probabilities.log()).sum(dim=1, keepdim=True) / math.log(config.num_classes)
    torch.testing.assert_close(outputs["semantic_uncertainty"], upsample(entropy, stride).squeeze(1))
    top = probabilities.max(dim=1, keepdim=True).values
    torch.testing.assert_close(outputs["semantic_confidence"], upsample(top, stride).squeeze(1))


def test_group_correlation_volumes_sum_to_the_full_correlation():
    generator = torch.Generator().manual_seed(1)
    left, right = torch.randn(2, 2, 8, 4, 32, generator=generator)
    groups = group_correlation_volume(left, right, num_disparities=6, groups=4)
    assert groups.shape == (2, 4, 6, 4, 32)
    # Each group is a mean over its 2 channels; the full volume a mean over all 8.
    torch.testing.assert_close(groups.mean(dim=1), correlation_cost_volume(left, right, 6))


@pytest.mark.parametrize("dilation", [1, 2])
def test_disparity_conv_is_a_zero_padded_conv3d(dilation):
    torch.manual_seed(dilation)
    conv = DisparityConv(3, 4, dilation=dilation)
    volume = torch.randn(2, 3, 7, 5, 6)  # N x C x D x H x W
    # The same kernel as a Conv3d weight: tap k of the 2D conv is the 3D kernel's disparity index k.
    weight = conv.conv.weight.reshape(3, 4, 3, 3, 3).permute(1, 2, 0, 3, 4)
    expected = torch.nn.functional.conv3d(volume, weight, padding=dilation, dilation=dilation)
    slices = volume.transpose(1, 2).reshape(-1, 3, 5, 6)
    got = conv(slices, 7).reshape(2, 7, 4, 5, 6).transpose(1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("coarse_peak", [0, 2, 5])
def test_interleaved_candidates_keep_the_disparity_of_the_coarse_ones(coarse_peak):
    coarse = torch.full((1, 6, 1, 1), -20.0)
    coarse[:, coarse_peak] = 20.0
    fine = interleave_half_candidates(coarse)
    assert fine.shape == (1, 12, 1, 1)
    # Coarse candidate j is 2 * COST_VOLUME_STRIDE px, fine candidate 2j the same disparity.
    assert fine[0, :, 0, 0].argmax() == 2 * coarse_peak
    ramp = torch.arange(6.0).view(1, 6, 1, 1)
    torch.testing.assert_close(interleave_half_candidates(ramp)[0, :11, 0, 0], torch.arange(11.0) / 2)


def test_a_match_at_the_last_coarse_candidate_stays_centred_on_it():
    coarse = -4.0 * (torch.arange(6.0) - 5.0).view(1, 6, 1, 1) ** 2  # peak at the last candidate
    fine = interleave_half_candidates(coarse)[0, :, 0, 0]
    assert fine.argmax() == 10
    assert fine[11] == fine[9]  # the candidates either side of the peak are equal
    mean = match_distribution(fine.view(1, 12, 1, 1))[1].item()
    assert abs(mean - 10.0) < 0.05, mean


def test_match_distribution_reports_spread_and_peak():
    logits = torch.full((1, 5, 1, 1), -30.0)
    logits[:, 1] = logits[:, 3] = 30.0  # two equal modes: mean between them, spread 1, peak 1/2
    probabilities, mean, spread, peak = match_distribution(logits)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1, 1, 1))
    torch.testing.assert_close(mean, torch.full((1, 1, 1, 1), 2.0))
    torch.testing.assert_close(spread, torch.ones(1, 1, 1, 1))
    torch.testing.assert_close(peak, torch.full((1, 1, 1, 1), 0.5))


def test_soft_argmin_returns_the_expected_candidate():
    def soft_argmin(logits: torch.Tensor) -> torch.Tensor:
        return match_distribution(logits)[1]

    logits = torch.full((1, 5, 2, 2), -30.0)
    logits[:, 3] = 30.0
    assert torch.allclose(soft_argmin(logits), torch.full((1, 1, 2, 2), 3.0))
    assert torch.allclose(soft_argmin(torch.zeros(1, 5, 1, 1)), torch.tensor(2.0))


def test_steering_head_order_matters_only_via_positions_and_the_newest_frame():
    torch.manual_seed(0)
    head = SteeringHead(12, window=16).eval()
    embeddings = torch.randn(3, 16, 12)
    older = torch.cat([torch.randperm(15), torch.tensor([15])])  # the newest frame stays last
    permuted = embeddings[:, older]
    with torch.no_grad():
        steering = head(embeddings)
        assert steering.shape == (3,)
        assert not torch.allclose(steering, head(permuted))
        head.position.zero_()
        torch.testing.assert_close(head(embeddings), head(permuted))  # attention pooling is a set op
        newest = embeddings.clone()
        newest[:, -1] = torch.randn(3, 12)
        assert not torch.allclose(head(embeddings), head(newest))


def test_grid_embedding_keeps_where_the_features_are():
    """A bright left half and a bright right half pool to the same global mean but not the same grid."""
    left, right = torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 4, 8)
    left[..., :4], right[..., 4:] = 1.0, 1.0
    assert torch.equal(left.mean(dim=(2, 3)), right.mean(dim=(2, 3)))
    grid_left, grid_right = grid_embedding(left, (2, 4)), grid_embedding(right, (2, 4))
    assert grid_left.shape == (1, 2 * 8)
    assert not torch.equal(grid_left, grid_right)
    # Channel-major: channel 0's eight cells first, row by row (cols 0-1 of 4 are the left half).
    assert grid_left[0, :8].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize("size", [(8, 16), (3, 5), (2, 7)])
def test_grid_embedding_is_adaptive_average_pooling(size):
    features = torch.randn(2, 3, *size)
    expected = F.adaptive_avg_pool2d(features, (2, 4)).flatten(1)
    torch.testing.assert_close(grid_embedding(features, (2, 4)), expected)


def test_softmax_confidence_spans_its_range():
    certain = torch.full((1, 4, 1, 1), -50.0)
    certain[:, 2] = 50.0
    confidence, entropy = softmax_confidence(certain, 4)
    assert entropy.item() == pytest.approx(0.0, abs=1e-6) and confidence.item() == pytest.approx(1.0)
    confidence, entropy = softmax_confidence(torch.zeros(1, 4, 2, 2), 4)
    assert entropy.allclose(torch.ones(1, 2, 2)) and confidence.allclose(torch.full((1, 2, 2), 0.25))


@pytest.mark.parametrize(
    ("tasks", "inputs", "keys", "deploy_outputs"),
    [
        (
            ("semantic", "disparity"),
            ("left", "right"),
            {"semantic_logits", "coarse_semantic_logits", "disparity", "disparity_log_scale", "embedding"},
            (*SEMANTIC_OUTPUTS, "disparity", "disparity_uncertainty", "embedding"),
        ),
        (
            ("semantic",),
            ("left",),
            {"semantic_logits", "coarse_semantic_logits", "embedding"},
            (*SEMANTIC_OUTPUTS, "embedding"),
        ),
        (
            ("disparity",),
            ("left", "right"),
            {"disparity", "disparity_log_scale"},
            ("disparity", "disparity_uncertainty"),
        ),
    ],
)
def test_task_switch_builds_each_task_set_with_its_outputs(tasks, inputs, keys, deploy_outputs):
    torch.manual_seed(0)
    config = tiny_stereo_config(tasks=tasks)
    model = build_model(config).train()
    out = model(*random_images(len(inputs)))
    assert set(out) == keys
    sum(v.float().mean() for v in out.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"{tasks}: parameters without gradient: {unused}"
    deploy = DeployModel(model)
    assert deploy.input_names == inputs
    assert deploy.output_names == deploy_outputs
    with torch.no_grad():
        outputs = deploy(*random_images(len(inputs), batch=1))
    assert len(outputs) == len(deploy_outputs)


def test_single_task_configs_turn_links_off_and_drop_the_other_heads():
    semantic_only = tiny_stereo_config(tasks=("semantic",))
    disparity_only = tiny_stereo_config(tasks=["disparity"])
    for config in (semantic_only, disparity_only):
        assert not config.link_seg_to_disparity and not config.link_attention
    assert tiny_stereo_config(tasks=("disparity", "semantic")).tasks == ("semantic", "disparity")
    module_names = {name.split(".")[0] for name, _ in build_model(disparity_only).named_parameters()}
    assert not {"seg_decoder", "refined_head", "embedding", "attention"} & module_names
    module_names = {name.split(".")[0] for name, _ in build_model(semantic_only).named_parameters()}
    assert not {"matching_decoder", "aggregation", "refine", "attention"} & module_names
    with pytest.raises(ConfigError, match="tasks"):
        model_config_from_dict({"tasks": ["semantic", "optical_flow"]})
    with pytest.raises(ConfigError, match="tasks"):
        model_config_from_dict({"tasks": []})


def test_semantic_outputs_do_not_depend_on_the_right_view_without_links():
    torch.manual_seed(0)
    model = build_model(tiny_stereo_config(link_seg_to_disparity=False, link_attention=False)).eval()
    left, right, other = random_images(3)
    with torch.no_grad():
        first, second = model(left, right), model(left, other)
    torch.testing.assert_close(first["semantic_logits"], second["semantic_logits"])
    assert not torch.allclose(first["disparity"], second["disparity"])


def test_info_reports_parameters_and_flops_of_a_checkpoint(tmp_path: Path) -> None:
    import json

    from mtl_perception.cli import main
    from mtl_perception.networks import build_model, save_checkpoint
    from mtl_perception.networks.cost import model_cost

    config = tiny_stereo_config()
    model = build_model(config)
    save_checkpoint(tmp_path / "m.pt", model, config, step=7)
    assert main(["info", str(tmp_path / "m.pt"), "--json", str(tmp_path / "info.json")]) == 0
    report = json.loads((tmp_path / "info.json").read_text())
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert report["meta"]["step"] == 7
    # FLOPs grow with the input area: a 2x wider input costs about twice as much.
    wide = build_model(tiny_stereo_config(input_size=(64, 256)))
    ratio = model_cost(wide).flops / (report["gflops"] * 1e9)
    assert 1.8 < ratio < 2.2
