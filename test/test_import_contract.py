"""DESIGN's arrows as an import rule: each part imports only from the layers below it.

Read from the source (every ``import``, lazy ones inside functions included), so a cycle such as
export <-> runtime or data <-> sim fails here before it tangles the stages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mtl_perception"
# Lowest first. A module may import its own layer's modules and any lower layer's, never a higher one.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "errors", "config", "contract", "model_info", "image_codec"}),
    frozenset({"data", "metrics"}),  # layouts, loaders, rosbag I/O, frames; metrics read the class table
    frozenset({"sim", "networks", "baselines"}),
    frozenset({"runtime"}),  # backends (incl. the TensorRT engine cache) and the pipeline
    frozenset({"training", "export", "probes"}),  # probes: known-answer stereo tests of any matcher
    frozenset({"ros"}),
    frozenset({"replay"}),
    frozenset({"commands", "cli"}),
)
# What a robot installs (`pip install '.[ros]'`): these import no torch at module level.
TORCH_FREE = (
    "mtl_perception.contract",
    "mtl_perception.metrics",
    "mtl_perception.model_info",
    "mtl_perception.runtime",
    "mtl_perception.replay.session",
    "mtl_perception.replay.gates",
    "mtl_perception.ros.conversions",
)


def _layer_of(part: str) -> int:
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"mtl_perception.{part} is in no layer of test_import_contract.LAYERS; place it")


def _part(path: Path, package: Path = PACKAGE) -> str:
    """The top-level part a file belongs to: a subpackage name or a top-level module name."""
    return path.relative_to(package).with_suffix("").parts[0]


def _imported_parts(path: Path) -> set[str]:
    parts: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mtl_perception":
                names = [alias.name for alias in node.names]
            elif node.module.startswith("mtl_perception."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("mtl_perception.")]
        parts.update(names)
    return parts


def _violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        source = _part(path, package)
        for target in _imported_parts(path) - {source}:
            if target == "__version__":
                target = "__init__"
            if _layer_of(target) > _layer_of(source):
                found.append(f"{path.relative_to(package.parent)} imports {target} (a higher layer)")
    return found


def test_every_part_imports_only_lower_layers() -> None:
    assert _violations() == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """A planted cycle half (runtime -> export, lazily inside a function) is reported."""
    package = tmp_path / "mtl_perception"
    (package / "runtime").mkdir(parents=True)
    (package / "export").mkdir()
    (package / "export" / "onnx_export.py").write_text("from mtl_perception.runtime import pipeline\n")
    (package / "runtime" / "engine.py").write_text("def build():\n    from mtl_perception.export import x\n")
    assert _violations(package) == ["mtl_perception/runtime/engine.py imports export (a higher layer)"]


def test_every_part_has_a_layer() -> None:
    parts = {_part(path) for path in PACKAGE.rglob("*.py")}
    for part in parts:
        _layer_of(part)


def test_robot_modules_import_without_torch() -> None:
    # A finder that refuses torch (and what needs it) stands in for a machine without `[train]`.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'torchmetrics'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for module in {TORCH_FREE!r}:\n"
        "    __import__(module)\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
