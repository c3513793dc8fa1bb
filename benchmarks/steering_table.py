"""Steering encoder comparison (issue 13): which encoder should the steering head read?

    python benchmarks/steering_table.py --config config/train/steering.yaml \\
        --json benchmarks/results/steering_table.json

Runs the steering config once per variant (the encoders of ``steering_data.ENCODERS`` and the
frozen multitask encoder seen as one global average per frame), each into
``<output_dir>_<variant>`` with its own ``--set`` overrides where given (``--set-finetuned`` for the
fine-tuned variant, whose step costs a CNN stage per frame):

- ``imagenet``: the same backbone with its ImageNet weights, frozen;
- ``multitask``: the shipped multi-task encoder, frozen (the head that ships);
- ``multitask_finetuned``: the shipped encoder with its 1/32 stage trained with the head;
- ``multitask_global``: the frozen multitask encoder, but the head sees the global average of the
  1/32 features per frame (the embedding before the grid): does the grid's "where" help?

Each row: k-fold cross-validation MSE over the training sequences (mean +- std of the held-out
folds: what selection may use) and the MSE on the test split (scored once), in deg^2 of the
front-wheel angle, beside the steer-straight and training-mean baselines. Every variant resumes
from its finished folds and encoded frames; a variant whose metrics exist for the same config and
the same data (manifest digest) is not rerun.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from mtl_perception.config import to_dict
from mtl_perception.training.config import read_training_yaml
from mtl_perception.training.steering import (
    METRICS_FILE,
    run_steering_training,
    steering_config_from_dict,
)
from mtl_perception.training.steering_data import ENCODERS, dataset_digest

GLOBAL_VARIANT = "multitask_global"
VARIANTS = (*ENCODERS, GLOBAL_VARIANT)


def variant_metrics(config_path: Path, variant: str, overrides: list[str]) -> dict[str, Any]:
    """``variant``: an encoder name, or ``multitask_global`` (the frozen multitask encoder seen
    through one global average per frame instead of the grid)."""
    raw = read_training_yaml(config_path)
    base = steering_config_from_dict(raw)
    output_dir = f"{base.output_dir}_{variant}"
    encoder = "multitask" if variant == GLOBAL_VARIANT else variant
    config = steering_config_from_dict(
        raw,
        [
            f"steering.encoder={encoder}",
            f"steering.global_average={variant == GLOBAL_VARIANT}",
            f"steering.output_dir={output_dir}",
            *overrides,
        ],
    )
    stored = Path(output_dir) / METRICS_FILE
    if stored.is_file():
        metrics = json.loads(stored.read_text())
        same_config = metrics.get("config") == json.loads(json.dumps(to_dict(config)))
        if same_config and metrics.get("dataset") == dataset_digest(Path(config.data.root)):
            return metrics
    return run_steering_training(config)


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| variant | k-fold val MSE (deg²) | test MSE (deg²) | test RMSE (deg) "
        "| steer straight | train mean |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, m in rows.items():
        cv, test, base = m["cross_validation"], m["test"], m["baselines"]
        lines.append(
            f"| {variant} | {cv['mse_deg2_mean']:.2f} ± {cv['mse_deg2_std']:.2f} "
            f"| {test['mse_deg2']:.2f} | {test['rmse_deg']:.2f} | {base['straight']['mse_deg2']:.2f} "
            f"| {base['train_mean']['mse_deg2']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("config/train/steering.yaml"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="override for every variant"
    )
    parser.add_argument(
        "--set-finetuned", action="append", default=[], help="override for the fine-tuned variant only"
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/steering_table.json"))
    args = parser.parse_args()
    rows = {}
    for variant in args.variants:
        extra = args.set_finetuned if variant == "multitask_finetuned" else []
        rows[variant] = variant_metrics(args.config, variant, [*args.overrides, *extra])
    table = markdown(rows)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/steering_table.py", "host": platform.node(), "rows": rows}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
