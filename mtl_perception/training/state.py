"""Resumable training state on disk: atomic writes, newest-first discovery, RNG capture/restore.

Everything saved is tensors and plain Python values so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_perception.errors import UserError

STATE_DIR = "checkpoints"
_STATE_NAME = re.compile(r"step_(\d+)\.pt$")


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states, as weights_only-safe values."""
    # The legacy global numpy generator is saved because third-party code may still draw from it.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants nested tuples; serialisation may hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save via a temporary file + rename, so a kill mid-write never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def state_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / STATE_DIR / f"step_{step:08d}.pt"


def list_states(output_dir: str | Path) -> list[Path]:
    """Saved training states of a run, oldest first."""
    folder = Path(output_dir) / STATE_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _STATE_NAME.search(p.name)]
    return sorted(found, key=lambda p: int(_STATE_NAME.search(p.name).group(1)))  # type: ignore[union-attr]


def latest_state(output_dir: str | Path) -> Path | None:
    """The newest training state of a run, or None."""
    states = list_states(output_dir)
    return states[-1] if states else None


def prune_states(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest training states."""
    for old in list_states(output_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state (weights_only) or raise a UserError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling raises many types for a bad file
        raise UserError(
            f"{path}: unreadable training state ({exc}); delete it to resume from an older one"
        ) from exc
