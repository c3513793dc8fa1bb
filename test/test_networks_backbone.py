"""Backbone: the packaged EfficientNet-Lite0 ImageNet weights really load into timm, from a local file."""

from __future__ import annotations

import pytest
import timm
import torch

from mtl_perception.errors import UserError
from mtl_perception.networks.backbone import (
    PACKAGED_WEIGHTS_MEAN,
    PACKAGED_WEIGHTS_STD,
    Backbone,
    load_weights_by_position,
    map_state_dict_by_position,
    packaged_lite0_weights_path,
    read_state_dict,
)

# Top-5 ImageNet classes and logits of timm efficientnet_lite0 with the mapped packaged weights on
# `_pattern_image()`; recorded once from this implementation (782 "screen", 851 "television").
REFERENCE_TOP5_CLASSES = [782, 851, 59, 527, 73]
REFERENCE_TOP5_LOGITS = [5.2218, 3.8924, 3.6956, 3.6511, 3.6127]


def _pattern_image() -> torch.Tensor:
    """Deterministic 1x3x224x224 RGB 0..1: two ramps and a sine checker."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 224), torch.linspace(0, 1, 224), indexing="ij")
    return torch.stack([xs, ys, (torch.sin(12 * xs) * torch.cos(9 * ys) + 1) / 2]).unsqueeze(0)


def _classify(model: torch.nn.Module) -> torch.Tensor:
    mean = torch.tensor(PACKAGED_WEIGHTS_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PACKAGED_WEIGHTS_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()((_pattern_image() - mean) / std)[0]


def test_packaged_weights_reproduce_the_reference_imagenet_logits():
    torch.manual_seed(0)
    classifier = timm.create_model("efficientnet_lite0", num_classes=1000, pretrained=False)
    random_logits = _classify(classifier)
    weights = read_state_dict(packaged_lite0_weights_path())
    assert next(iter(weights)).startswith("_conv_stem")  # lukemelas names, so mapping is by position
    load_weights_by_position(classifier, weights, "packaged lite0")
    logits = _classify(classifier)
    top = logits.topk(5)
    assert top.indices.tolist() == REFERENCE_TOP5_CLASSES
    torch.testing.assert_close(top.values, torch.tensor(REFERENCE_TOP5_LOGITS), atol=1e-3, rtol=0)
    assert random_logits.topk(5).indices.tolist() != REFERENCE_TOP5_CLASSES
    assert (logits - random_logits).abs().max() > 1.0


def test_backbone_loads_the_packaged_weights_and_normalises_in_graph():
    backbone = Backbone(pretrained=True).eval()
    weights = read_state_dict(packaged_lite0_weights_path())
    torch.testing.assert_close(backbone.body.conv_stem.weight, weights["_conv_stem.weight"])
    torch.testing.assert_close(
        backbone.body.blocks[6][0].bn3.running_var, weights["_blocks.15._bn2.running_var"]
    )
    features = backbone(torch.rand(1, 3, 64, 96))
    assert [f.shape[-2:] for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in features] == backbone.channels == [24, 40, 112, 320]


def test_other_timm_backbone_takes_a_local_timm_state_dict(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = Backbone("resnet18", pretrained=True, pretrained_path=str(path))
    torch.testing.assert_close(backbone.body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert backbone.channels == [64, 128, 256, 512]
    with pytest.raises(UserError, match="pretrained_path"):
        Backbone("resnet18", pretrained=True)


def test_mismatched_or_unreadable_weights_fail_loudly(tmp_path):
    lite0 = read_state_dict(packaged_lite0_weights_path())
    resnet = timm.create_model("resnet18", features_only=True, pretrained=False)
    with pytest.raises(UserError, match="does not fit"):
        map_state_dict_by_position(lite0, resnet.state_dict(), "lite0")
    lite0_features = Backbone(pretrained=False).body.state_dict()
    truncated = dict(list(lite0.items())[:10])
    with pytest.raises(UserError, match="wrong architecture"):
        map_state_dict_by_position(truncated, lite0_features, "short")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"corrupt\.pth"):
        Backbone(pretrained=True, pretrained_path=str(corrupt))
    with pytest.raises(UserError, match="not found"):
        Backbone(pretrained=True, pretrained_path=str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="timm"):
        Backbone("no_such_net", pretrained=False)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_shallow_forward_then_extend_equals_the_full_pyramid(name):
    torch.manual_seed(0)
    backbone = Backbone(name, pretrained=False).eval()
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        full = backbone(image)
        shallow = backbone(image, levels=2)
        extended = backbone.extend(shallow)
    assert len(shallow) == 2
    assert len(extended) == len(full) == 4
    for want, got in zip(full, extended, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_max_levels_drops_the_deep_stages_after_loading_weights():
    full = Backbone(pretrained=True).eval()
    shallow = Backbone(pretrained=True, max_levels=3).eval()
    assert sum(p.numel() for p in shallow.parameters()) < sum(p.numel() for p in full.parameters())
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = shallow(image)
        expected = full(image, levels=3)
    assert len(features) == 3
    for want, got in zip(expected, features, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
