"""Where ONNX Runtime spends its time in an exported model: kernel time per operator type.

    python benchmarks/ort_profile.py models/stereo_default.onnx models/stereo_default.int8.onnx \
        --threads 2 --runs 12 --json benchmarks/results/ort_profile_stereo_default.json

Uses ONNX Runtime's own profiler (CPU execution provider) on random inputs of the model's static
shapes; the first run is a warm-up and not counted. Prints the top operator types per model and writes
every operator type's mean milliseconds per run to JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort


def profile(model: Path, threads: int, runs: int) -> dict[str, float]:
    """Mean kernel milliseconds per run for each operator type, largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.random(i.shape, dtype=np.float32) for i in session.get_inputs()}
        for _ in range(runs + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Each run is one "model_run" event; kernels of the first (warm-up) run end before it does.
    first_run = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm_up_end = first_run["ts"] + first_run["dur"]
    per_op: Counter[str] = Counter()
    kernels = (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))
    for event in kernels:
        if event["ts"] > warm_up_end:
            per_op[event["args"]["op_name"]] += event["dur"]
    return {op: micros / runs / 1000 for op, micros in per_op.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="+", help="exported .onnx files")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--runs", type=int, default=12, help="profiled runs per model")
    parser.add_argument("--top", type=int, default=8, help="operator types printed per model")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file (default: print only)")
    args = parser.parse_args()
    report = {"threads": args.threads, "runs": args.runs, "models": {}}
    for model in args.models:
        per_op = profile(model, args.threads, args.runs)
        total = sum(per_op.values())
        report["models"][str(model)] = {"kernel_ms_per_run": total, "per_op_ms": per_op}
        print(f"{model}: {total:.1f} ms of kernels per run")
        for op, ms in list(per_op.items())[: args.top]:
            print(f"  {op:24s} {ms:7.2f} ms  {ms / total:6.1%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
