"""The one class table every dataset and model maps into (Cityscapes names and colours).

Lane markings are labelled ``road`` and curbs ``sidewalk``, as Cityscapes does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class SemanticClass:
    id: int
    name: str
    color: tuple[int, int, int]


CLASSES: tuple[SemanticClass, ...] = (
    SemanticClass(0, "road", (128, 64, 128)),
    SemanticClass(1, "sidewalk", (244, 35, 232)),
    SemanticClass(2, "building", (70, 70, 70)),
    SemanticClass(3, "pole", (153, 153, 153)),
    SemanticClass(4, "traffic sign", (220, 220, 0)),
    SemanticClass(5, "vegetation", (107, 142, 35)),
    SemanticClass(6, "terrain", (152, 251, 152)),
    SemanticClass(7, "sky", (70, 130, 180)),
    SemanticClass(8, "person", (220, 20, 60)),
    SemanticClass(9, "car", (0, 0, 142)),
)
NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_ID: dict[str, int] = {c.name: c.id for c in CLASSES}

# Cityscapes label ids (gtFine *_labelIds.png) of the classes in the table; all others -> ignore.
CITYSCAPES_ID_TO_NAME: dict[int, str] = {
    7: "road",
    8: "sidewalk",
    11: "building",
    17: "pole",
    20: "traffic sign",
    21: "vegetation",
    22: "terrain",
    23: "sky",
    24: "person",
    26: "car",
}


def lookup_table(source_to_name: dict[int, str]) -> np.ndarray:
    """A 256-entry uint8 table mapping a source dataset's ids to ours (unknown -> 255)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for source_id, name in source_to_name.items():
        table[source_id] = CLASS_ID[name]
    return table


def palette() -> np.ndarray:
    """(256, 3) uint8 colour per class id; ignore and unknown ids are black."""
    colors = np.zeros((256, 3), dtype=np.uint8)
    for c in CLASSES:
        colors[c.id] = c.color
    return colors


def colorize(labels: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 RGB image."""
    return palette()[labels]


def class_table() -> list[dict[str, object]]:
    """JSON-ready class table (for manifests, model metadata and ROS users)."""
    return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES]
