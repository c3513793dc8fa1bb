"""What steering adds per frame on the CPU (issue 13 target: <= 2 ms).

    python benchmarks/steering_latency.py --model models/stereo_default.onnx \\
        --json benchmarks/results/steering_latency.json

Two figures, the perception model on ONNX Runtime with ``--threads`` threads (the steering graph
always runs on one, see ``runtime/onnxruntime_backend.py``):
- the steering graph alone (``<name>.steering.onnx`` on a full 16-frame window), median and p95 of
  ``--runs`` calls: the added inference;
- the whole pipeline per frame on the same stereo pair with and without the steering backend
  (window full, so every frame runs the head), median of ``--runs`` frames each, interleaved in
  blocks so drifting machine load hits both alike: the added cost end to end (buffer push included).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from mtl_perception.data.frames import procedural_frames
from mtl_perception.model_info import steering_path_for
from mtl_perception.runtime import Pipeline, create_backend


def time_ms(fn, runs: int) -> np.ndarray:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("models/stereo_default.onnx"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200, help="steering-graph calls; pipeline frames / 4")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/steering_latency.json"))
    args = parser.parse_args()

    steering = create_backend("onnxruntime", steering_path_for(args.model), threads=args.threads)
    window = np.random.default_rng(0).standard_normal(steering.info.inputs["embeddings"], dtype=np.float32)
    for _ in range(10):
        steering.infer({"embeddings": window})
    head_ms = time_ms(lambda: steering.infer({"embeddings": window}), args.runs)

    model = create_backend("onnxruntime", args.model, threads=args.threads)
    height, width = model.info.input_size
    left, right = procedural_frames((height, width), 1, seed=0)[0]
    with_head = Pipeline(model, steering_backend=steering)
    without = Pipeline(model)
    for pipeline in (with_head, without):
        for _ in range(steering.info.window):  # fill the window: every later frame runs the head
            pipeline.process(left, right)
    blocks, per_block = 5, max(1, args.runs // 4 // 5)
    pipeline_ms: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(blocks):
        for name, pipeline in (("with", with_head), ("without", without)):
            pipeline_ms[name] += time_ms(lambda p=pipeline: p.process(left, right), per_block).tolist()
    if with_head.process(left, right).steering is None:
        raise SystemExit("the pipeline gave no steering with a full window: nothing was measured")

    result = {
        "command": "python benchmarks/steering_latency.py",
        "model": str(args.model),
        "host": platform.node(),
        "threads": args.threads,
        "steering_graph_ms": {"median": float(np.median(head_ms)), "p95": float(np.percentile(head_ms, 95))},
        "pipeline_ms": {k: float(np.median(v)) for k, v in pipeline_ms.items()},
        "pipeline_frames": {k: len(v) for k, v in pipeline_ms.items()},
    }
    result["added_ms"] = result["pipeline_ms"]["with"] - result["pipeline_ms"]["without"]
    print(
        f"steering graph: median {result['steering_graph_ms']['median']:.3f} ms, "
        f"p95 {result['steering_graph_ms']['p95']:.3f} ms ({args.runs} calls; one thread, as every "
        "ONNX Runtime backend runs a steering graph)"
    )
    print(
        f"pipeline per frame: {result['pipeline_ms']['with']:.1f} ms with steering, "
        f"{result['pipeline_ms']['without']:.1f} ms without (median; difference {result['added_ms']:+.1f} ms)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
