"""Generator domains: the training world ("default") and a held-out target domain ("unseen").

"unseen" is what changes between the simulator the models learn from and a robot they are run on,
committed before any model was trained or adapted on it:

- textures: another family (pale worn concrete with cracks and patches, red brick pavers, dry ochre
  grass, earth-tone siding, autumn leaves, pale bark, dark clothing; ``textures.restyle``);
- lighting: a low warm sun (3-14 deg, training 17-74 deg), dim ambient light, an orange horizon
  (``Lighting.dusk``);
- rig: one fixed robot rig for every sequence, outside the training ranges where the geometry
  allows (54 deg field of view, training 60-110; 4 deg roll, training +-3; 0.12 m baseline,
  0.9 m high, 6 deg down);
- camera: ``SensorModel`` (warm white-balance cast, vignetting, motion blur, shot + read noise,
  a darker tone curve; each camera with its own small white-balance and vignetting differences).

Scene layout, actors, drive and labels come from the same code as training. Sequence seeds are
``layout.sequence_seed(seed, split, index) + HELD_OUT_SEED_OFFSET``: disjoint from every
training/val/test seed of the default domain for base seeds below 700 000.

Use (issues 12 and 14; never for training or model selection): ``test`` is the out-of-distribution
evaluation set and the adaptation target's scoring set (its ground truth is used only to score);
``train`` holds unlabelled recordings (rosbags) that `adapt` may learn from, never its labels.
The committed set, 4 + 4 sequences x 20 frames at 512x256, all as rosbags too:

    mtl-perception generate --domain unseen --out data/unseen
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mtl_perception.sim.rig import StereoRig

if TYPE_CHECKING:
    from mtl_perception.sim.camera import Lighting
    from mtl_perception.sim.world import Restyle

HELD_OUT_SEED_OFFSET = 1_000_000
# Flying-family sequences (sim/flying.py) are shifted too, so that none shares a seed (and so a rig)
# with a driving or held-out sequence.
FLYING_SEED_OFFSET = 2_000_000


@dataclass(frozen=True)
class RigSpec:
    """A rig's geometry without its image size (the generator's width and height complete it)."""

    hfov_deg: float
    baseline: float
    mount_height: float
    pitch_deg: float
    roll_deg: float

    def rig(self, width: int, height: int) -> StereoRig:
        return StereoRig(
            width=width,
            height=height,
            hfov_deg=self.hfov_deg,
            baseline=self.baseline,
            mount_height=self.mount_height,
            pitch_deg=self.pitch_deg,
            roll_deg=self.roll_deg,
        ).with_far_limit()


@dataclass(frozen=True)
class Domain:
    """How a domain's sequences differ from the default world (which has every field off)."""

    name: str
    seed_offset: int = 0
    rig: RigSpec | None = None  # one rig for every sequence; None: the config's rig preset
    dusk: bool = False  # Lighting.dusk instead of Lighting.random
    restyle: bool = False  # textures.restyle on every texture
    sensor: bool = False  # SensorModel instead of CameraEffects
    # The committed set's counts per split (the `generate` defaults for this domain); None: the CLI's.
    sequences: dict[str, int] | None = None
    frames: dict[str, int] | None = None
    bag_sequences: dict[str, int] | None = None

    def lighting(self, rng: np.random.Generator) -> Lighting:
        from mtl_perception.sim.camera import Lighting

        return Lighting.dusk(rng) if self.dusk else Lighting.random(rng)

    def texture_restyle(self, seed: int) -> Restyle | None:
        """The texture replacement of the sequence with ``seed`` (its own stream ``[seed, 4]``)."""
        if not self.restyle:
            return None
        from mtl_perception.sim.textures import restyle

        rng = np.random.default_rng([seed, 4])
        return lambda kind, image: restyle(kind, image, rng)

    def camera_effects(self, seed: int, rig: StereoRig) -> Any:
        """An object with ``apply_pair(left, right, frame_rng)`` for the sequence with ``seed``."""
        from mtl_perception.sim.camera import CameraEffects, SensorModel

        if not self.sensor:
            return CameraEffects()
        return SensorModel().cameras(np.random.default_rng([seed, 5]), rig.height, rig.width)


UNSEEN = Domain(
    name="unseen",
    seed_offset=HELD_OUT_SEED_OFFSET,
    rig=RigSpec(hfov_deg=54.0, baseline=0.12, mount_height=0.9, pitch_deg=6.0, roll_deg=-4.0),
    dusk=True,
    restyle=True,
    sensor=True,
    sequences={"train": 4, "val": 0, "test": 4},
    frames={"train": 20, "val": 20, "test": 20},
    bag_sequences={"train": 4, "val": 0, "test": 4},
)

DOMAINS: dict[str, Domain] = {"default": Domain("default"), "unseen": UNSEEN}


def domain_named(name: str) -> Domain:
    """The domain called ``name``; KeyError lists the known ones."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise KeyError(f"unknown domain {name!r}; choose from {list(DOMAINS)}") from None
