"""The flying scene family (sim/flying.py): labels that fit the pair, far/unknown, layout, photos."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_data import dataset_files

from mtl_perception.data import layout
from mtl_perception.data.labels import CLASS_ID, IGNORE_INDEX
from mtl_perception.errors import UserError
from mtl_perception.sim.generator import FlyingRanges, GeneratorConfig, generate_dataset

pytest.importorskip("pybullet")

SKY = CLASS_ID["sky"]
SEEDS = (0, 1, 2, 3)


def _tiny(**overrides) -> GeneratorConfig:
    values = {
        "width": 128,
        "height": 64,
        "family": "flying",
        "sequences": {"train": 1},
        "frames": {"train": 2},
        "bag_sequences": {},
        "flying": FlyingRanges(objects=(4, 6)),
    }
    return GeneratorConfig(**(values | overrides))


@functools.cache
def _scene_frame(seed: int, frame: int = 0, width: int = 256, height: int = 128):
    """(scene, clean view) of a flying scene at 256x128, rendered once per test session."""
    import pybullet as p

    from mtl_perception.sim.flying import build_flying_scene

    config = GeneratorConfig(width=width, height=height, family="flying")
    client = p.connect(p.DIRECT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scene = build_flying_scene(config, seed, client, Path(tmp), frames=2)
            view, _, _ = scene.render(frame, *scene.camera.at(frame / config.rate_hz))
            return scene, view
    finally:
        p.disconnect(client)


def _matchable(view) -> np.ndarray:
    """Valid, measured, visible in the right view (z-buffer test), off depth edges and textured."""
    d, depth = view.disparity, view.depth
    h, w = d.shape
    rows, cols = np.nonzero(view.valid & (d > 0))
    target = np.rint(cols - d[rows, cols]).astype(int)
    inside = (target >= 1) & (target < w - 1)
    rows, cols, target = rows[inside], cols[inside], target[inside]
    right_depth = np.full((h, w), np.inf, dtype=np.float32)  # the left surface splatted to the right
    np.minimum.at(right_depth, (rows, target), depth[rows, cols])
    mask = np.zeros((h, w), dtype=bool)
    mask[rows, cols] = np.abs(right_depth[rows, target] - depth[rows, cols]) < 0.02 * depth[rows, cols]
    inverse = np.where(np.isfinite(depth), 1.0 / depth, 0.0).astype(np.float32)
    edges = np.abs(cv2.Laplacian(inverse, cv2.CV_32F)) > 1e-3 * inverse.max()
    mask &= cv2.dilate(edges.astype(np.uint8), np.ones((3, 3))) == 0
    grey = cv2.cvtColor(view.left, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return mask & (np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)) > 8)


def _warp_errors(view, disparity: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """|left - right sampled at x - disparity| (8-bit units, mean over RGB) on ``mask``."""
    h, w = disparity.shape
    u = np.arange(w, dtype=np.float32)[None, :] - disparity.astype(np.float32)
    v = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    warped = cv2.remap(view.right, u, v, cv2.INTER_LINEAR).astype(np.float32)
    return np.abs(warped - view.left.astype(np.float32)).mean(axis=2)[mask]


def test_label_disparity_warps_the_right_view_onto_the_left() -> None:
    """Known answer: the label fits the pair far better than the label + 3 px, 0 or its negation."""
    errors: dict[str, list[np.ndarray]] = {"label": [], "plus3": [], "zero": [], "negated": []}
    for seed in SEEDS:
        _, view = _scene_frame(seed)
        mask = _matchable(view)
        assert mask.sum() > 500, (seed, mask.sum())
        d = view.disparity
        for name, candidate in (("label", d), ("plus3", d + 3.0), ("zero", 0 * d), ("negated", -d)):
            errors[name].append(_warp_errors(view, candidate, mask))
    mean = {name: float(np.concatenate(e).mean()) for name, e in errors.items()}
    # Measured at 256x128, seeds 0-3: label 3.49, +3 px 12.36, zero 17.45, negated 20.64 (8-bit units;
    # the rest on the label is texture resampling and specular light, minimal at a 0 px shift).
    assert mean["label"] < 7.0, mean
    assert mean["label"] < 0.5 * min(mean["plus3"], mean["zero"], mean["negated"]), mean


def test_objects_span_a_wide_disparity_range() -> None:
    pooled = []
    for seed in SEEDS:
        scene, view = _scene_frame(seed)
        measured = view.disparity[view.valid & (view.disparity > 0)]
        # Not a constant or a single plane: near and far objects in every scene.
        assert np.ptp(measured) > 0.5 * scene.rig.max_disparity, (seed, np.ptp(measured))
        pooled.append(measured / scene.rig.max_disparity)
    pooled_all = np.concatenate(pooled)
    # A share of the pixels sits in the upper half of the labelled range (near objects).
    assert (pooled_all > 0.5).mean() > 0.05, (pooled_all > 0.5).mean()


def test_semantics_ignore_everything_but_the_sky_and_far_is_a_valid_zero() -> None:
    seen_far, seen_unknown = False, False
    for seed in SEEDS:
        scene, view = _scene_frame(seed)
        far = np.isinf(view.depth)
        assert set(np.unique(view.semantic)) <= {SKY, IGNORE_INDEX}
        np.testing.assert_array_equal(view.semantic == SKY, far)  # sky exactly where nothing is near
        assert (view.disparity[far] == 0).all() and view.valid[far].all()
        # Too near for the models' range: unknown, never clipped; everything else is labelled.
        np.testing.assert_array_equal(view.valid, view.disparity <= scene.rig.max_disparity)
        seen_far |= bool(far.any())
        seen_unknown |= bool((~view.valid).any())
    assert seen_far and seen_unknown


def test_real_photo_textures_are_drawn_and_only_texture_photos() -> None:
    from mtl_perception.data.real_photos import EVALUATION_PHOTOS, TEXTURE_PHOTOS
    from mtl_perception.sim.flying import texture_photos

    assert len(texture_photos()) == len(TEXTURE_PHOTOS)  # scikit-image ships every one
    sources = [s for seed in SEEDS for s in _scene_frame(seed)[0].texture_sources]
    photos = {s.split(":", 1)[1] for s in sources if s.startswith("photo:")}
    assert photos and photos <= {p.name for p in TEXTURE_PHOTOS}
    assert not photos & {p.name for p in EVALUATION_PHOTOS}
    assert any(not s.startswith("photo:") for s in sources)  # procedural ones as well


def test_without_photos_every_texture_is_procedural(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pybullet as p

    from mtl_perception.sim import flying

    monkeypatch.setattr(flying, "texture_photos", lambda: ())
    client = p.connect(p.DIRECT)
    try:
        scene = flying.build_flying_scene(_tiny(), 0, client, tmp_path, frames=2)
    finally:
        p.disconnect(client)
    assert scene.texture_sources and not [s for s in scene.texture_sources if s.startswith("photo")]


def test_flying_dataset_is_deterministic_moving_and_read_by_the_synthetic_loader(tmp_path: Path) -> None:
    from mtl_perception.data.datasets import build_dataset
    from mtl_perception.sim.domains import FLYING_SEED_OFFSET

    config = _tiny()
    generate_dataset(config, tmp_path / "a")
    generate_dataset(config, tmp_path / "b")
    a, b = dataset_files(tmp_path / "a"), dataset_files(tmp_path / "b")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    root = tmp_path / "a"
    assert not list(root.rglob(".tmp-*"))
    manifest = json.loads(layout.manifest_path(root).read_text())
    assert manifest["config"]["family"] == "flying" and manifest["config"]["flying"]["objects"] == [4, 6]
    entry = manifest["sequences"]["train_0000"]
    assert entry["seed"] == layout.sequence_seed(0, "train", 0) + FLYING_SEED_OFFSET
    assert sum(entry["textures"].values()) > 4
    steering = layout.steering_path(root, "train", "train_0000").read_text().splitlines()
    assert steering == [
        "frame,stamp_ns,steering_rad",
        "0,1700000000000000000,0.000000",
        "1,1700000000100000000,0.000000",
    ]
    # Objects and camera move: the labels of consecutive frames differ.
    d0, d1 = (
        cv2.imread(
            str(layout.frame_path(root, "train", "train_0000", layout.DISPARITY_DIR, f)), cv2.IMREAD_UNCHANGED
        )
        for f in (0, 1)
    )
    assert (d0 != d1).mean() > 0.05
    dataset = build_dataset("synthetic", root, "train")
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample["left"].shape == sample["right"].shape == (3, 64, 128)
    for key in ("semantic", "disparity", "depth", "disparity_valid", "depth_valid"):
        assert sample[key].shape == (64, 128), key
    assert sample["has_semantic"] and sample["has_depth"] and float(sample["steering"]) == 0.0
    semantic = sample["semantic"].numpy()
    far = sample["disparity_valid"].numpy() & (sample["disparity"].numpy() == 0)
    assert set(np.unique(semantic)) <= {SKY, IGNORE_INDEX}
    np.testing.assert_array_equal(semantic == SKY, far)
    assert np.isposinf(sample["depth"].numpy()[far]).all()


def test_family_is_validated_and_reaches_the_config_from_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtl_perception.sim.generator as generator
    from mtl_perception.cli import main

    with pytest.raises(UserError, match="scene family"):
        generate_dataset(_tiny(family="swimming"), tmp_path / "x")
    with pytest.raises(UserError, match="no held-out domain"):
        generate_dataset(_tiny(domain="unseen"), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

    class CapturedError(Exception):
        pass

    configs: list[GeneratorConfig] = []

    def capture(config: GeneratorConfig, *args, **kwargs) -> None:
        configs.append(config)
        raise CapturedError

    monkeypatch.setattr(generator, "generate_dataset", capture)
    with pytest.raises(CapturedError):
        main(["generate", "--family", "flying", "--out", str(tmp_path / "f")])
    assert [c.family for c in configs] == ["flying"]
    driving_manifest = generator.manifest_config(GeneratorConfig())
    assert "family" not in driving_manifest and "flying" not in driving_manifest
