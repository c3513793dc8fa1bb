"""Class statistics: exact pixel shares and frame presence, JSON report, --require-all exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_data import HEIGHT, WIDTH, make_cityscapes, make_synthetic

from mtl_perception.cli import main
from mtl_perception.data.labels import CLASS_NAMES, NUM_CLASSES
from mtl_perception.data.stats import dataset_statistics, format_table


def test_synthetic_statistics_are_exact(tmp_path: Path) -> None:
    # train: 2 frames of stripes of classes 0 and 9 only (30 columns each, 4 ignore columns).
    make_synthetic(tmp_path, frames={"train": 2, "val": 1}, train_classes=[0, 9])
    train, val = dataset_statistics("synthetic", tmp_path)
    assert (train.split, train.frames, train.labelled_frames) == ("train", 2, 2)
    assert train.labelled_pixels == 2 * HEIGHT * (WIDTH - 4)
    share = train.pixel_share()
    assert share["road"] == pytest.approx(50.0) and share["car"] == pytest.approx(50.0)
    assert train.frame_presence()["car"] == 100.0 and train.frame_presence()["sky"] == 0.0
    assert train.missing_classes() == [n for n in CLASS_NAMES if n not in ("road", "car")]
    assert val.missing_classes() == [] and sum(val.pixel_share().values()) == pytest.approx(100.0)
    table = format_table([train, val])
    assert "train px% / frm%" in table and all(name in table for name in CLASS_NAMES)


def test_cityscapes_statistics_skip_unlabelled_frames(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    stats = {s.split: s for s in dataset_statistics("cityscapes", tmp_path)}
    assert stats["train_extra"].labelled_frames == 0 and stats["train_extra"].labelled_pixels == 0
    train = stats["train"]
    assert train.labelled_frames == 2
    assert set(train.missing_classes()) == set(CLASS_NAMES) - {"road", "car"}
    assert train.pixel_share()["road"] + train.pixel_share()["car"] == pytest.approx(100.0)


def test_stats_command_writes_json_and_checks_train_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "data"
    make_synthetic(root, frames={"train": 1, "val": 1}, train_classes=list(range(NUM_CLASSES - 1)))
    report_path = tmp_path / "out" / "stats.json"
    assert main(["stats", str(root), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["splits"]) == {"train", "val"}
    assert report["splits"]["train"]["classes"]["car"]["frames"] == 0
    assert report["splits"]["val"]["classes"]["car"]["frame_presence_percent"] == 100.0
    assert "road" in capsys.readouterr().out

    assert main(["stats", str(root), "--split", "val", "--require-all"]) == 1
    assert "never present in the train split: car" in capsys.readouterr().err


def test_stats_command_passes_when_every_class_is_present(tmp_path: Path) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    assert main(["stats", str(tmp_path), "--require-all"]) == 0


def test_stats_command_reports_bad_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_synthetic(tmp_path, frames={"train": 1})
    assert main(["stats", str(tmp_path), "--split", "nope"]) == 2
    assert "available splits: train" in capsys.readouterr().err
