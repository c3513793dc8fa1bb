"""Speed benchmark presets: the README figures (2 CPU threads, ONNX Runtime + PyTorch, 256x512).

Usage: python benchmarks/speed.py [--data ROOT] [extra `mtl-perception benchmark` options]
Writes benchmarks/results/speed_<host>.json; the measurement code is `mtl_perception.runtime.benchmark`.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from mtl_perception.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    preset = [
        "benchmark",
        "--sizes", "256x512", "128x256",
        "--backends", "onnxruntime", "torch",
        "--threads", "2",
        "--frames", "50",
        "--json", str(RESULTS / f"speed_{platform.node() or 'host'}.json"),
    ]  # fmt: skip
    sys.exit(main(preset + sys.argv[1:]))
