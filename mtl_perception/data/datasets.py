"""One entry point to every dataset layout: ``build_dataset(kind, root, split, augment)``."""

from __future__ import annotations

from pathlib import Path

from mtl_perception.data.augment import AugmentConfig
from mtl_perception.data.base import StereoDataset
from mtl_perception.data.cityscapes import CityscapesDataset
from mtl_perception.data.kitti2015 import Kitti2015Dataset
from mtl_perception.data.middlebury import MiddleburyDataset
from mtl_perception.data.synthetic import SyntheticDataset
from mtl_perception.errors import UserError

DATASET_KINDS: dict[str, type[StereoDataset]] = {
    "synthetic": SyntheticDataset,
    "cityscapes": CityscapesDataset,
    "kitti2015": Kitti2015Dataset,
    "middlebury": MiddleburyDataset,
}


def dataset_class(kind: str) -> type[StereoDataset]:
    """The loader class of a layout name (one of ``DATASET_KINDS``)."""
    if kind not in DATASET_KINDS:
        raise UserError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    return DATASET_KINDS[kind]


def available_splits(kind: str, root: str | Path) -> list[str]:
    """The split names present in a dataset root of the given layout."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset root not found; pass the folder that holds the dataset")
    return dataset_class(kind).available_splits(root)


def build_dataset(
    kind: str,
    root: str | Path,
    split: str,
    augment: AugmentConfig | None = None,
    eval_size: tuple[int, int] | None = None,
) -> StereoDataset:
    """A torch Dataset of sample dicts for one split.

    Training passes ``augment`` (random zoom/crop/jitter; set ``crop_size`` so samples batch);
    validation passes ``eval_size`` = (H, W) to resize every sample to the model input (disparity
    and fx scale with the width) or neither to get original-size samples.
    """
    return dataset_class(kind)(root, split, augment=augment, eval_size=eval_size)
