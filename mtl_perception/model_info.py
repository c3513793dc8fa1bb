"""What the runtime knows about a model, read from the exported file's metadata (one place)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mtl_perception.errors import UserError

PERCEPTION_MODES = ("stereo", "mono")
# Mono models: metadata key of the focal length (px at the input width) their metric depth is for.
FOCAL_LENGTH_KEY = "focal_length"
UNCERTAINTY_DISTRIBUTION_KEY = "uncertainty_distribution"
FRAME_PERIOD_KEY = "frame_period"  # steering graphs: seconds between the frames of a training window
STEERING_MODE = "steering"


def steering_path_for(model_path: str | Path) -> Path:
    """``<name>.onnx`` (or ``.pt``) -> ``<name>.steering.onnx``: the steering graph exported beside it."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.steering.onnx")


class ModelFileError(UserError):
    """A model file is missing, corrupt or lacks the metadata the runtime needs."""


@dataclass(frozen=True)
class ModelInfo:
    """Static description of an exported graph.

    ``mode`` is ``stereo`` or ``mono`` for the perception network and ``steering`` for the small
    steering graph; ``inputs`` maps each input name to its static shape (batch 1).
    """

    mode: str
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]
    version: str
    embedding_dim: int
    input_size: tuple[int, int] = (0, 0)  # (H, W); perception graphs only
    max_disparity: float = 0.0  # stereo only
    classes: tuple[dict[str, object], ...] = ()
    window: int = 0  # steering only: frames per steering prediction
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_stereo(self) -> bool:
        return self.mode == "stereo"

    @property
    def focal_length(self) -> float | None:
        """Mono: the focal length (px at the input width) the depth is learned for; None if unstated."""
        value = self.extra.get(FOCAL_LENGTH_KEY)
        return float(value) if value is not None else None

    @property
    def uncertainty_distribution(self) -> str:
        """What the ``*_uncertainty`` standard deviations describe (laplace | gaussian); files written
        before it was recorded came from Laplace heads, every shipped config's."""
        return self.extra.get(UNCERTAINTY_DISTRIBUTION_KEY, "laplace")

    @property
    def frame_period(self) -> float | None:
        """Steering: seconds between the frames of the windows it was trained on; None if unstated."""
        value = self.extra.get(FRAME_PERIOD_KEY)
        return float(value) if value is not None else None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` strings that ``from_metadata`` reads back."""
        props = {
            "mode": self.mode,
            "version": self.version,
            "embedding_dim": str(self.embedding_dim),
        }
        if self.mode in PERCEPTION_MODES:
            props["input_size"] = json.dumps(list(self.input_size))
            props["classes"] = json.dumps(list(self.classes))
            props["max_disparity"] = repr(float(self.max_disparity))
        else:
            props["window"] = str(self.window)
        props.update(self.extra)
        return props

    @classmethod
    def from_metadata(
        cls,
        props: dict[str, str],
        inputs: dict[str, tuple[int, ...]],
        outputs: tuple[str, ...],
        source: str = "model",
    ) -> ModelInfo:
        """Parse ``metadata_props`` (plus the graph's input/output signature) into a ModelInfo."""
        try:
            mode = props["mode"]
            known = {"mode", "version", "embedding_dim", "input_size", "classes", "max_disparity", "window"}
            common = {
                "mode": mode,
                "inputs": dict(inputs),
                "outputs": tuple(outputs),
                "version": props["version"],
                "embedding_dim": int(props["embedding_dim"]),
                "extra": {k: v for k, v in props.items() if k not in known},
            }
            if mode in PERCEPTION_MODES:
                height, width = json.loads(props["input_size"])
                return cls(
                    **common,
                    input_size=(int(height), int(width)),
                    max_disparity=float(props["max_disparity"]),
                    classes=tuple(json.loads(props["classes"])),
                )
            if mode == STEERING_MODE:
                return cls(**common, window=int(props["window"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(
                f"{source}: metadata is missing or malformed ({exc!r}); re-export it with "
                "`mtl-perception export`"
            ) from exc
        raise ModelFileError(
            f"{source}: unknown model mode {mode!r}; re-export it with `mtl-perception export`"
        )


def read_model_info(onnx_path: str | Path) -> ModelInfo:
    """Read the ModelInfo of an exported ONNX file (with onnxruntime, present in every install)."""
    import onnxruntime as ort

    path = check_model_file(onnx_path, ".onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise ModelFileError(
            f"{path}: not a readable ONNX model ({exc}); re-export it with `mtl-perception export`"
        ) from exc
    props = session.get_modelmeta().custom_metadata_map
    try:
        inputs = {i.name: tuple(int(d) for d in i.shape) for i in session.get_inputs()}
    except (TypeError, ValueError) as exc:  # a symbolic dimension: not one of our static exports
        raise ModelFileError(
            f"{path}: inputs must have static shapes; re-export it with `mtl-perception export`"
        ) from exc
    outputs = tuple(o.name for o in session.get_outputs())
    return ModelInfo.from_metadata(props, inputs, outputs, source=str(path))


def check_model_file(path: str | Path, *suffixes: str) -> Path:
    """The path as a Path if it is an existing file with one of ``suffixes``; else ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model file not found: {path}; pass an exported model (`mtl-perception export`) or a checkpoint"
        )
    if suffixes and path.suffix not in suffixes:
        raise ModelFileError(
            f"{path}: expected a {' or '.join(suffixes)} file, got {path.suffix or 'no suffix'}"
        )
    return path
