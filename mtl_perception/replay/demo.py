"""What `mtl-perception demo` needs besides replay: a cached synthetic bag and a model to run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mtl_perception.errors import UserError

log = logging.getLogger(__name__)
SEQUENCE = "test_0000"  # the generator's first test sequence, the one written as a bag


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mtl_perception/demo`` (``~/.cache/...`` when unset)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mtl_perception" / "demo"


def demo_bag(cache: Path, frames: int, width: int, height: int) -> Path:
    """The demo's synthetic stereo bag for these settings, rendered on first use and then reused."""
    from mtl_perception.sim import layout
    from mtl_perception.sim.generator import GeneratorConfig, generate_dataset

    root = cache / f"sim_{width}x{height}_{frames}f"
    bag = layout.bag_dir(root, SEQUENCE)
    if (bag / "metadata.yaml").is_file():
        log.info("reusing the demo bag %s", bag)
        return bag
    config = GeneratorConfig(
        width=width,
        height=height,
        sequences={"test": 1},
        frames={"test": frames},
        bag_sequences={"test": 1},
    )
    print(f"rendering a {frames}-frame {width}x{height} synthetic stereo bag into {root} (once)")
    generate_dataset(config, root, workers=min(2, os.cpu_count() or 1), overwrite=True)
    if not (bag / "metadata.yaml").is_file():
        raise UserError(f"the generator wrote no bag at {bag}; check `mtl-perception generate`")
    return bag


def demo_model(model: Path | None, cache: Path) -> Path:
    """``model``, else the shipped default, else (clearly announced) an untrained network.

    The untrained fallback lets the demo show the whole path (sim -> node -> report) before a
    trained model is shipped; its accuracy figures mean nothing and the message says so.
    """
    from mtl_perception.ros.resources import default_model_path

    if model is not None:
        if not model.is_file():
            raise UserError(f"model file not found: {model}")
        return model
    try:
        return default_model_path("stereo")
    except UserError as exc:
        print(
            f"NOTE: {exc}.\n      Running the demo with an UNTRAINED network (ImageNet backbone, random "
            "heads): the pipeline runs end to end but its accuracy figures are meaningless.\n"
            "      Pass --model PATH with a trained ONNX model for real results."
        )
    path = cache / "untrained_stereo.onnx"
    if not path.is_file():
        _export_untrained(path)
    return path


def _export_untrained(path: Path) -> None:
    import torch

    from mtl_perception.export.onnx_export import export_deploy_model
    from mtl_perception.networks import DeployModel, StereoNetConfig, build_model

    torch.manual_seed(0)
    config = StereoNetConfig()
    tmp = path.with_name(f".{path.name}.tmp.onnx")
    export_deploy_model(DeployModel(build_model(config)), config, tmp, simplify=False, parity_frames=1)
    tmp.replace(path)  # only a complete export is ever reused
