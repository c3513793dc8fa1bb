"""A robot scores a bag with `pip install '.[ros]'`: replay and its gates must not need torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_replay import FRAMES, tiny_bag, tiny_model

from mtl_perception.cli import main
from mtl_perception.ros.resources import shipped_file

__all__ = ["tiny_bag", "tiny_model"]  # session fixtures used by name

# The CLI in a fresh interpreter where the [train] extra's packages are absent: a meta path finder
# refuses them as a missing package would (ModuleNotFoundError), so optional imports behave as on a
# robot, and the run fails if any of them was imported some other way.
WITHOUT_TRAIN_EXTRA = """
import sys
BLOCKED = {"torch", "torchvision", "torchmetrics", "timm"}

class BlockTrainExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

assert not BLOCKED & set(sys.modules), "imported before the block"
sys.meta_path.insert(0, BlockTrainExtra())
from mtl_perception.cli import main
code = main(sys.argv[1:])
assert not BLOCKED & {m.partition(".")[0] for m in sys.modules}
sys.exit(code)
"""


def run_without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *args], capture_output=True, text=True, timeout=300
    )


def test_replay_and_gates_run_without_torch(tiny_bag: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Same numbers as a replay in this (torch) process; gates set from those numbers hold."""
    args = ["replay", str(tiny_bag), "--model", str(tiny_model), "--backend", "onnxruntime"]
    assert main([*args, "--out", str(tmp_path / "reference")]) == 0
    reference = json.loads((tmp_path / "reference" / "metrics.json").read_text())["accuracy"]
    gates = [
        "--fail-below",
        f"miou={reference['miou'] - 1e-9}",
        "--fail-above",
        f"epe={reference['epe'] + 1e-9}",
        f"abs_rel={reference['abs_rel'] + 1e-9}",
    ]
    done = run_without_torch(*args, "--out", str(tmp_path / "out"), *gates)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 3 gate(s) passed" in done.stdout
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["frames"]["processed"] == FRAMES
    for key in ("miou", "pixel_accuracy", "d1_all", "epe", "abs_rel", "seg_ause", "disparity_ause"):
        assert summary["accuracy"][key] == pytest.approx(reference[key], rel=1e-9), key
    assert (tmp_path / "out" / "report.html").is_file()


def test_the_torch_backend_without_torch_names_the_train_extra(tiny_bag: Path, tmp_path: Path) -> None:
    done = run_without_torch(
        "replay",
        str(tiny_bag),
        "--model",
        str(shipped_file("models/stereo_default.onnx")),  # has a .pt beside it for the torch backend
        "--out",
        str(tmp_path / "out"),
        "--backend",
        "torch",
    )
    assert done.returncode == 2, done.stderr
    assert "`replay` needs the Python package `torch`" in done.stderr and "[train]" in done.stderr
    assert "Traceback" not in done.stderr
