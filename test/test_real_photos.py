"""The real-photo lists (evaluation vs texture) and benchmarks/real_semantics.py's pieces."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import socket
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from fixtures_runtime import fake_info

from mtl_perception.data import real_photos
from mtl_perception.data.labels import CLASS_ID, CLASSES
from mtl_perception.data.real_photos import (
    EVALUATION,
    EVALUATION_PHOTOS,
    STEREO_BENCHMARK_FILES,
    STEREO_BENCHMARK_SHA256,
    TEXTURE,
    TEXTURE_PHOTOS,
    PackagePhoto,
    PhotoNotFoundError,
    load_listed_photos,
)
from mtl_perception.runtime import Pipeline

ALL = EVALUATION_PHOTOS + TEXTURE_PHOTOS


def test_lists_are_disjoint_by_name_file_and_content() -> None:
    for key in ("name", "path", "sha256"):
        evaluation = {getattr(p, key) for p in EVALUATION_PHOTOS}
        texture = {getattr(p, key) for p in TEXTURE_PHOTOS}
        assert len(evaluation) == len(EVALUATION_PHOTOS) and len(texture) == len(TEXTURE_PHOTOS), key
        assert not evaluation & texture, key
    # The same file name from two packages would still be the same picture: not across the lists.
    assert not {p.filename for p in EVALUATION_PHOTOS} & {p.filename for p in TEXTURE_PHOTOS}
    assert all(p.use == EVALUATION for p in EVALUATION_PHOTOS)
    assert all(p.use == TEXTURE for p in TEXTURE_PHOTOS)
    assert 3 <= len(EVALUATION_PHOTOS) <= 8


def test_no_stereo_benchmark_image_in_either_list() -> None:
    for photo in ALL:
        assert photo.filename not in STEREO_BENCHMARK_FILES, photo.name
        assert photo.sha256 not in STEREO_BENCHMARK_SHA256, photo.name
        assert "motorcycle" not in photo.path and photo.function != "stereo_motorcycle", photo.name
    assert all(len(p.sha256) == 64 and int(p.sha256, 16) >= 0 for p in ALL)


def test_listed_sha256_of_the_installed_motorcycle_pair() -> None:
    """The benchmark hashes are those of the files scikit-image ships (so a renamed copy is caught)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image not installed (pip install '.[eval]')")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = [data / n for n in ("motorcycle_left.png", "motorcycle_right.png") if (data / n).is_file()]
    if not found:
        pytest.skip("this scikit-image has no bundled Motorcycle pair")
    assert {real_photos.sha256_of(p) for p in found} <= STEREO_BENCHMARK_SHA256


def test_texture_photos_load_from_the_wheel_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("skimage") is None:
        assert real_photos.texture_photos() == []
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("texture_photos() tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    photos = real_photos.texture_photos()
    assert photos, "no texture photo bundled in this scikit-image"
    for image in photos:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 64


def _fake(tmp_path: Path, content: bytes) -> tuple[PackagePhoto, Path]:
    path = "usr/share/doc/fake/street.png"
    import hashlib

    photo = PackagePhoto(
        "fake", EVALUATION, "debian", "fake 1.0", path, hashlib.sha256(content).hexdigest(), "a test", "none"
    )
    return photo, tmp_path / path


def test_find_photo_checks_the_bytes_and_says_how_to_get_a_missing_one(tmp_path: Path) -> None:
    import cv2

    image = np.zeros((6, 8, 3), np.uint8)
    image[:, :, 0] = 200  # red in RGB
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    photo, path = _fake(tmp_path, encoded.tobytes())
    with pytest.raises(PhotoNotFoundError, match="apt-get download opencv-doc"):
        real_photos.find_photo(photo, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(encoded.tobytes())
    assert real_photos.find_photo(photo, tmp_path) == path
    assert np.array_equal(real_photos.load_photo(photo, tmp_path), image)
    path.write_bytes(encoded.tobytes() + b"\0")
    with pytest.raises(PhotoNotFoundError, match="sha256"):
        real_photos.find_photo(photo, tmp_path)


# -- benchmarks/real_semantics.py ---------------------------------------------------------------------


def _script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "real_semantics.py"
    spec = importlib.util.spec_from_file_location("real_semantics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SIZE = (16, 32)


class HalfSkyBackend:
    """A stereo 'model' that calls the upper half sky and the lower half road, and records its views."""

    name = "fake"

    def __init__(self) -> None:
        self.info = dataclasses.replace(
            fake_info(size=SIZE, embedding_dim=2), version="fake", max_disparity=8.0
        )
        self.views: list[tuple[np.ndarray, np.ndarray]] = []

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.views.append((inputs["left"].copy(), inputs["right"].copy()))
        semantic = np.full((1, *SIZE), CLASS_ID["road"], np.int64)
        semantic[0, : SIZE[0] // 2] = CLASS_ID["sky"]
        maps = np.zeros((1, *SIZE), np.float32)
        return {
            "semantic": semantic,
            "semantic_uncertainty": maps,
            "semantic_confidence": maps + 0.75,
            "disparity": maps,
            "disparity_uncertainty": maps,
            "embedding": np.zeros((1, 2), np.float32),
        }

    def close(self) -> None:
        pass


def test_real_semantics_panel_and_shares_on_a_fake_model(tmp_path: Path) -> None:
    script = _script()
    backend = HalfSkyBackend()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    photo = PackagePhoto(
        "synthetic", EVALUATION, "debian", "none", "x/synthetic.png", "0" * 64, "noise", "none"
    )
    report = script.evaluate_model(Pipeline(backend), "fake", {"synthetic": (photo, image)}, tmp_path)

    left, right = backend.views[0]
    assert np.array_equal(left, right)  # a stereo model gets the photo as both views
    entry = report["photos"]["synthetic"]
    shares = entry["class_shares"]
    assert shares["sky"] == pytest.approx(0.5) and shares["road"] == pytest.approx(0.5)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert entry["mean_confidence"] == pytest.approx(0.75) and entry["confidence"] == "top-class confidence"
    assert "semantics only" in report["input"]

    import cv2

    panel = cv2.imread(str(tmp_path / entry["panel"]))
    assert panel is not None and panel.shape[1] == 3 * script.TILE_WIDTH
    # The overlay tile's top half carries the sky colour over the photo, the bottom half the road's.
    tile_h = round(60 * script.TILE_WIDTH / 90)
    rows = panel.shape[0] - tile_h - script.legend(panel.shape[1]).shape[0]
    overlay = cv2.cvtColor(
        panel[rows : rows + tile_h, script.TILE_WIDTH : 2 * script.TILE_WIDTH], cv2.COLOR_BGR2RGB
    )
    top, bottom = (
        overlay[: tile_h // 3].reshape(-1, 3).mean(0),
        overlay[-tile_h // 3 :].reshape(-1, 3).mean(0),
    )
    sky, road = np.array(CLASSES[CLASS_ID["sky"]].color), np.array(CLASSES[CLASS_ID["road"]].color)
    alpha = script.OVERLAY_ALPHA
    assert np.abs(top - (alpha * sky + (1 - alpha) * 127.5)).max() < 12
    assert np.abs(bottom - (alpha * road + (1 - alpha) * 127.5)).max() < 12


def test_real_semantics_skips_missing_photos_with_the_reason(tmp_path: Path) -> None:
    photo, _ = _fake(tmp_path, b"never written")
    loaded, skipped = load_listed_photos(tmp_path, (photo,))
    assert loaded == {} and "not found" in skipped["fake"] and "--photos-dir" in skipped["fake"]


def test_real_semantics_json_of_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script()
    image = np.full((40, 40, 3), 90, np.uint8)
    photo = PackagePhoto("grey", EVALUATION, "debian", "none", "x/grey.png", "1" * 64, "grey", "none")
    monkeypatch.setattr(
        script, "load_listed_photos", lambda photos_dir: ({"grey": (photo, image)}, {"gone": "missing"})
    )
    monkeypatch.setattr(script, "create_backend", lambda kind, path, threads: HalfSkyBackend())
    out = tmp_path / "out"
    assert script.main(["--model", str(tmp_path / "fake.onnx"), "--out", str(out)]) == 0
    report = json.loads((out / "real_semantics.json").read_text())
    assert report["skipped"] == {"gone": "missing"}
    assert report["models"]["fake"]["photos"]["grey"]["class_shares"]["sky"] == pytest.approx(0.5)
    assert (out / "fake__grey.jpg").is_file()
