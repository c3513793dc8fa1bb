"""The package builds the way users install it: colcon (ament_python) and a pip wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (
    "package.xml",
    "launch/stereo.launch.py",
    "launch/mono.launch.py",
    "config/stereo.yaml",
    "config/mono.yaml",
    "config/mtl_perception.rviz",
    "config/fastdds_large_images.xml",
    "config/train/stereo.yaml",
)


def _source_copy(tmp_path: Path) -> Path:
    """Tracked files only, as a clean checkout has them (no venv, data or build outputs)."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    source = tmp_path / "src" / "mtl_perception"
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    return source


def test_colcon_build_installs_ament_resources_launch_config_and_executable(tmp_path: Path) -> None:
    colcon = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    if not Path(colcon).exists():
        pytest.fail("colcon is missing: install the dev extras (pip install -e '.[dev]')")
    _source_copy(tmp_path)
    subprocess.run(
        [colcon, "build", "--packages-select", "mtl_perception"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    prefix = tmp_path / "install" / "mtl_perception"
    assert (prefix / "share/ament_index/resource_index/packages/mtl_perception").is_file()
    for name in SHARED:
        assert (prefix / "share/mtl_perception" / name).is_file(), name
    # launch_ros finds executables in lib/<package>/ (setup.cfg's script_dir).
    assert (prefix / "lib/mtl_perception/mtl-perception").is_file()


def test_pip_wheel_carries_the_data_files_and_the_console_entry(tmp_path: Path) -> None:
    source = _source_copy(tmp_path)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("mtl_perception-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in SHARED:
        assert any(n.endswith(f"data/share/mtl_perception/{name}") for n in names), name
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mtl-perception = mtl_perception.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
