"""The command-line dispatcher: a missing optional dependency names the pip extra to install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mtl_perception.cli import missing_dependency_message

# Runs the CLI in a fresh interpreter where `import torch` fails, like a runtime-only install.
WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from mtl_perception.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_replay_without_torch_gets_to_the_bag(tmp_path: Path) -> None:
    """Replay needs no torch (a robot scores bags with '.[ros]'): the missing bag is the error.

    test_replay_without_torch.py replays a whole bag with torch blocked, and checks that only
    ``--backend torch`` names the [train] extra.
    """
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "replay", str(tmp_path / "bag"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "mtl-perception replay: error: bag not found" in done.stderr
    assert "[train]" not in done.stderr and "Traceback" not in done.stderr


def test_only_known_optional_modules_are_translated() -> None:
    assert "[ros]" in (missing_dependency_message("run", ModuleNotFoundError(name="sensor_msgs.msg")) or "")
    assert "[sim]" in (missing_dependency_message("generate", ModuleNotFoundError(name="pybullet")) or "")
    assert missing_dependency_message("run", ModuleNotFoundError(name="mtl_perception.nothing")) is None


def test_the_node_starts_without_torch(tmp_path: Path) -> None:
    """A robot installs `.[ros]` only: `run` must never import torch (shipped ONNX model, ORT)."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(100 + os.getpid() % 100)}
    process = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_TORCH, "run", "stereo", "--ros-args", "-p", "backend:=onnxruntime"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        output = ""
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline and "stereo perception" not in output:
            line = process.stdout.readline()
            if not line:
                break
            output += line
        assert "stereo perception with backend onnxruntime" in output, output
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output + rest
