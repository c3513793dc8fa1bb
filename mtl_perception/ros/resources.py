"""Where the shipped models and parameter files live, in a ROS install and in a pip install."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from mtl_perception.errors import UserError

PACKAGE = "mtl_perception"


def share_directories() -> list[Path]:
    """Candidate share directories, most specific first.

    1. the ament index (a colcon/ROS install: AMENT_PREFIX_PATH is set);
    2. ``<sys.prefix>/share/mtl_perception`` (setup.py's data_files in a pip install);
    3. the source tree next to the package (editable install, running from a checkout).
    """
    candidates: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        # OSError: AMENT_PREFIX_PATH unset (no ROS environment sourced).
        with contextlib.suppress(PackageNotFoundError, OSError):
            candidates.append(Path(get_package_share_directory(PACKAGE)))
    except ImportError:  # a pip install without the ROS wheels
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    candidates.append(Path(__file__).resolve().parents[2])
    return candidates


def shipped_file(relative: str) -> Path:
    """The first existing ``relative`` path (e.g. ``models/stereo_default.onnx``) in the share dirs."""
    tried = [directory / relative for directory in share_directories()]
    for path in tried:
        if path.is_file():
            return path
    raise UserError(
        f"{relative} is not installed (looked in {', '.join(str(p.parent) for p in tried)}); "
        "reinstall the package or pass the file's path explicitly"
    )


def default_model_path(mode: str) -> Path:
    """The shipped default model for ``mode`` ('stereo' or 'mono')."""
    return shipped_file(f"models/{mode}_default.onnx")


def default_params_file(mode: str) -> Path:
    """The shipped ROS parameter file for ``mode``."""
    return shipped_file(f"config/{mode}.yaml")
