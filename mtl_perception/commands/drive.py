"""`mtl-perception drive`: closed-loop lane keeping in the pybullet world, per policy and seed.

Writes ``<out>/<policy>/seed_<seed>.json`` (settings + metrics) and ``.png`` (top-down plot) per
run, and ``<out>/drive.json`` (every run and the aggregate per policy); prints a markdown table. A
run whose JSON holds the same settings is reused, so an interrupted command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtl_perception import __version__
from mtl_perception.errors import UserError
from mtl_perception.sim.closed_loop import CLOSED_LOOP_SEED

if TYPE_CHECKING:
    from mtl_perception.sim.closed_loop import ModelPolicy, Policy
    from mtl_perception.sim.generator import Scene
    from mtl_perception.sim.recording import DriveRecorder

POLICIES = ("model", "straight", "expert")
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `drive`."""
    parser.add_argument(
        "--model", type=Path, help="ONNX model; its steering graph <name>.steering.onnx must sit beside it"
    )
    parser.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="model (the ONNX model + steering graph), straight (always 0) or expert (pure pursuit from "
        "the true pose); repeatable (default: all three with --model, else straight and expert)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per policy, one seed each (default 3)")
    parser.add_argument("--distance", type=float, default=300.0, help="metres per run (default 300)")
    parser.add_argument(
        "--seed",
        type=int,
        default=CLOSED_LOOP_SEED,
        help=f"seed of the first run; run i uses seed + i (default {CLOSED_LOOP_SEED}: no dataset split "
        "holds these scenes)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--speed",
        type=float,
        help="ego speed, m/s (default: per seed, drawn from the dataset's range as the generator draws it)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        help="delay every command by this much (default: the measured wall time of each policy call)",
    )
    parser.add_argument("--width", type=int, default=512, help="rendered image width (default 512)")
    parser.add_argument("--height", type=int, default=256, help="rendered image height (default 256)")
    parser.add_argument(
        "--backend", default="auto", help="model backend: auto | tensorrt | onnxruntime (default auto)"
    )
    parser.add_argument("--threads", type=int, help="CPU threads of the model backend")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="also write the model's drives to DIR as driving sequences labelled with the expert's "
        "command at every frame (DAgger data for steering.data.recorded; one process per DIR)",
    )


@contextlib.contextmanager
def model_policy(model: Path, backend: str = "auto", threads: int | None = None) -> Iterator[ModelPolicy]:
    """``ModelPolicy`` over a ``Pipeline`` with ``model`` and its steering graph (backends closed on exit).

    Raises UserError when the steering graph is missing.
    """
    from mtl_perception.runtime import CameraModel, Pipeline, create_backend
    from mtl_perception.sim.closed_loop import ModelPolicy

    steering_path = _steering_graph(model)
    perception = create_backend(backend, model, threads=threads)
    steering = None
    try:
        steering = create_backend("onnxruntime", steering_path, threads=threads)
        pipeline = Pipeline(perception, output_resolution="input", steering_backend=steering)
        pipeline.warm_up()  # first-call set-up must not count as the first commands' latency
        yield ModelPolicy(
            pipeline,
            lambda camera: CameraModel(fx=camera.fx, baseline=camera.baseline),
            stereo=perception.info.is_stereo,
        )
    finally:
        perception.close()
        if steering is not None:
            steering.close()


def _steering_graph(model: Path) -> Path:
    """The steering graph beside ``model``; UserError when there is none."""
    from mtl_perception.model_info import steering_path_for

    path = steering_path_for(model)
    if not path.is_file():
        raise UserError(
            f"no steering graph at {path}: the model policy needs <name>.steering.onnx beside "
            f"{model.name} (`mtl-perception export --steering HEAD.pt` writes it)"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: an interrupted write never leaves a JSON that looks finished."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _policy_names(args: argparse.Namespace) -> list[str]:
    names = list(dict.fromkeys(args.policy or (POLICIES if args.model else ("straight", "expert"))))
    if "model" in names and args.model is None:
        raise UserError("--policy model needs --model X.onnx")
    return names


def _check(args: argparse.Namespace) -> None:
    if args.runs < 1:
        raise UserError(f"--runs must be at least 1, got {args.runs}")
    if not args.distance > 0:
        raise UserError(f"--distance must be positive, got {args.distance}")
    if args.speed is not None and not args.speed > 0:
        raise UserError(f"--speed must be positive, got {args.speed}")
    if args.latency_ms is not None and args.latency_ms < 0:
        raise UserError(f"--latency-ms must not be negative, got {args.latency_ms}")
    if args.seed < CLOSED_LOOP_SEED:
        log.warning(
            "seeds from %d are dataset scenes (train 0.., val 100000.., test 200000..): a model may have "
            "trained on them; use --seed %d or above for held-out roads",
            args.seed,
            CLOSED_LOOP_SEED,
        )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mtl_perception.sim.closed_loop import aggregate_metrics, open_scene
    from mtl_perception.sim.generator import GeneratorConfig

    names = _policy_names(args)
    _check(args)
    config = GeneratorConfig(width=args.width, height=args.height)
    config.rig()  # a clear error for an unusable image size
    common = {
        "version": __version__,
        "distance_m": args.distance,
        "width": args.width,
        "height": args.height,
        "rate_hz": config.rate_hz,
        "speed_mps": args.speed if args.speed is not None else "dataset",
        "latency_ms": args.latency_ms if args.latency_ms is not None else "measured",
        "takeover": "expert",  # who steers while the model has no command (``_drive``)
    }
    model_settings: dict[str, Any] = {}
    if "model" in names:
        from mtl_perception.model_info import check_model_file

        model_path = check_model_file(args.model, ".onnx")
        steering_path = _steering_graph(model_path)
        model_settings = {
            "model": str(model_path),
            "model_sha256": _sha256(model_path),
            "steering_sha256": _sha256(steering_path),
            "backend": args.backend,
            "threads": args.threads,
        }
    seeds = [args.seed + i for i in range(args.runs)]
    recorder = None
    if args.record is not None:
        if "model" not in names:
            raise UserError("--record records the model's drives: add --policy model")
        from mtl_perception.sim.recording import DriveRecorder

        source = {k: model_settings[k] for k in ("model_sha256", "steering_sha256")}
        recorder = DriveRecorder(args.record, config, source | {"latency_ms": common["latency_ms"]})

    def settings(name: str, seed: int) -> dict[str, Any]:
        return {"policy": name, "seed": seed, **common, **(model_settings if name == "model" else {})}

    def run_path(name: str, seed: int) -> Path:
        return args.out / name / f"seed_{seed}.json"

    results: dict[tuple[str, int], dict[str, Any]] = {}
    for name in names:
        for seed in seeds:
            saved = _finished(run_path(name, seed), settings(name, seed))
            unrecorded = name == "model" and recorder is not None and not recorder.has_run(seed)
            if saved is not None and not unrecorded:
                results[name, seed] = saved
    todo = [(n, s) for s in seeds for n in names if (n, s) not in results]
    if results:
        print(f"reusing {len(results)} finished run(s) from {args.out}")
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        model = None
        if any(n == "model" for n, _ in todo):
            model = stack.enter_context(model_policy(model_path, args.backend, args.threads))
        bar = stack.enter_context(
            tqdm(
                total=len(todo) * args.distance,
                desc="driving",
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} m [{elapsed}<{remaining}{postfix}]",
            )
        )
        for seed in seeds:
            pending = [n for n in names if (n, seed) in todo]
            if not pending:
                continue
            start = time.perf_counter()
            with open_scene(config, seed, args.distance) as scene:
                build_s = time.perf_counter() - start
                for name in pending:
                    bar.set_postfix_str(f"{name}, seed {seed}")
                    policy = model if name == "model" else _baseline(name, scene, args.speed)
                    assert policy is not None
                    results[name, seed] = _drive(
                        scene,
                        policy,
                        args,
                        run_path(name, seed),
                        settings(name, seed),
                        build_s,
                        bar.update,
                        recorder if name == "model" else None,
                    )
    summary = {
        name: {
            "runs": [results[name, s] for s in seeds],
            "aggregate": aggregate_metrics([results[name, s]["metrics"] for s in seeds]),
        }
        for name in names
    }
    _write_json(args.out / "drive.json", summary)
    print(markdown_table({name: summary[name]["aggregate"] for name in names}))
    print(f"wrote {args.out / 'drive.json'} and a plot per run under {args.out}/<policy>/")
    return 0


def _finished(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The saved run at ``path`` if it was made with ``settings``, else None (to be driven again)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("settings") != settings or "metrics" not in saved:
        return None
    return saved


def _baseline(name: str, scene: Scene, speed: float | None) -> Policy:
    from mtl_perception.sim.closed_loop import ExpertPolicy, StraightPolicy

    if name == "straight":
        return StraightPolicy()
    return ExpertPolicy(scene.road, scene.speed if speed is None else speed)


def _drive(
    scene: Scene,
    policy: Policy,
    args: argparse.Namespace,
    path: Path,
    settings: dict[str, Any],
    build_s: float,
    progress: Any,
    recorder: DriveRecorder | None = None,
) -> dict[str, Any]:
    """Drive one run, save its plot then its JSON (the JSON last: it marks the run finished), then
    add its frames to ``recorder`` (a run interrupted before that is driven again)."""
    from mtl_perception.sim.closed_loop import drive_scene, plot_run, run_metrics
    from mtl_perception.sim.recording import RecordingPolicy

    speed = scene.speed if args.speed is None else args.speed
    latency = None if args.latency_ms is None else args.latency_ms / 1e3
    # The safety driver: it steers while the model's window fills (at the start, after each
    # intervention), as a test driver does until the system engages; the metrics leave those frames out.
    takeover = _baseline("expert", scene, args.speed)
    recording = None
    if recorder is not None:
        recording = recorder.start_run(scene.seed, scene.rig)
        policy = RecordingPolicy(policy, takeover, recording)
    start = time.perf_counter()
    try:
        trajectory = drive_scene(
            scene, policy, args.distance, speed=speed, latency=latency, takeover=takeover, progress=progress
        )
    except BaseException:
        if recording is not None:
            recorder.discard(recording)
        raise
    metrics = run_metrics(trajectory)
    metrics |= {
        "speed_mps": speed,
        "wall_s": time.perf_counter() - start,
        "render_s": trajectory.render_seconds,
        "policy_s": trajectory.policy_seconds,
        "world_build_s": build_s,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    title = (
        f"{policy.name}, seed {scene.seed}: {metrics['interventions']} intervention(s) in {args.distance:g} m"
    )
    plot_run(scene.road, trajectory, path.with_suffix(".png"), title)
    record = {"settings": settings, "metrics": metrics, "plot": path.with_suffix(".png").name}
    _write_json(path, record)
    if recording is not None:
        recorder.add_run(recording)
    return record


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(aggregates: dict[str, dict[str, Any]]) -> str:
    """One row per policy. "engaged km" is the distance the policy steered (the rest, the safety
    driver while a model's window filled); offsets and rates are over it; "km/intervention" reads
    ">X" where none happened in X engaged km."""
    rows = [
        "| policy | runs | km | engaged km | mean abs offset (m) | RMS offset (m) | max abs offset (m) "
        "| frames > 1 m off | interventions | interventions/km | km/intervention | whiteness (deg/s) "
        "| latency (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in aggregates.items():
        per = m["km_per_intervention"]
        km_per = f">{m['engaged_km']:.2f}" if per is None else f"{per:.3f}"
        rows.append(
            f"| {name} | {m['runs']} | {m['distance_km']:.2f} | {m['engaged_km']:.2f} "
            f"| {m['mean_abs_offset_m']:.3f} | {m['rms_offset_m']:.3f} | {m['max_abs_offset_m']:.2f} "
            f"| {100 * m['share_frames_over_1m']:.1f} % "
            f"| {m['interventions']} | {m['interventions_per_km']:.1f} "
            f"| {km_per} "
            f"| {m['whiteness_deg_s']:.2f} | {_number(m['latency_ms'], 1)} |"
        )
    return "\n".join(rows)
