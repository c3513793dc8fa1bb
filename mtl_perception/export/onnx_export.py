"""PyTorch -> ONNX: static batch-1 graphs named per DESIGN.md, metadata the runtime reads, parity."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import onnx
import torch

from mtl_perception import __version__
from mtl_perception.data.frames import frame_feeds, stereo_frames
from mtl_perception.export.parity import InferFn, ParityReport, ParityTolerance, check_parity
from mtl_perception.model_info import FRAME_PERIOD_KEY, STEERING_MODE, ModelInfo
from mtl_perception.networks.deploy import describe_deploy_model
from mtl_perception.networks.heads import SteeringHead
from mtl_perception.runtime.onnxruntime_backend import OnnxRuntimeBackend

OPSET = 17
log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    onnx_path: Path
    info: ModelInfo
    parity: ParityReport
    simplified: bool
    steering_path: Path | None = None


@dataclass
class Staging:
    """Exports written beside their targets under temporary names, moved into place only once verified.

    ``mtl-perception export`` writes every graph through this, so a failed parity check never
    overwrites a working model (nor lets an engine be built for a bad one). The staged names are in
    the target's directory, so promoting is an atomic rename. As a context manager it deletes what
    was neither promoted nor rejected (an exception, Ctrl-C).
    """

    staged: dict[Path, Path] = field(default_factory=dict)  # target -> staged file

    def path_for(self, target: str | Path) -> Path:
        """A fresh hidden name beside ``target`` with its suffix (tools check ``.onnx``)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.staged[target] = target.with_name(f".{target.stem}.{token}.staged{target.suffix}")
        return self.staged[target]

    def promote(self) -> list[Path]:
        """Rename every staged file onto its target, the first one staged last; returns the targets.

        The main model is staged first, so it is replaced after the files that go with it (its
        steering graph): whoever loads the new model finds the new companions already there.
        """
        for target, staged in reversed(self.staged.items()):
            staged.replace(target)
            rejected_path(target).unlink(missing_ok=True)  # from an earlier failed attempt
        promoted, self.staged = list(self.staged), {}
        return promoted

    def reject(self) -> list[Path]:
        """Keep the staged files for inspection as ``<target>.rejected``; the targets stay untouched."""
        kept = []
        for target, staged in self.staged.items():
            if staged.is_file():
                kept.append(staged.replace(rejected_path(target)))
        self.staged = {}
        return kept

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for staged in self.staged.values():
            staged.unlink(missing_ok=True)
        self.staged = {}


def rejected_path(target: str | Path) -> Path:
    """Where a failed export of ``target`` is kept: not ``*.onnx``, so no model glob picks it up."""
    return Path(f"{target}.rejected")


def torch_infer(module: torch.nn.Module, info: ModelInfo) -> InferFn:
    """The parity reference: ``module`` called on numpy feeds, outputs as numpy by name."""

    def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(feeds[name]) for name in info.inputs))
        outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
        return {name: out.numpy() for name, out in zip(info.outputs, outputs, strict=True)}

    return infer


def write_onnx(module: torch.nn.Module, info: ModelInfo, path: str | Path, opset: int = OPSET) -> Path:
    """Trace ``module`` to ``path`` with the names and static shapes of ``info``; add metadata; check."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = tuple(torch.zeros(shape) for shape in info.inputs.values())
    # The TorchScript exporter: static shapes, no onnxscript dependency (dynamo=True needs it).
    # Its tracer warnings are about shape-dependent Python values, which are constants here by
    # design (static input size); the parity check on real frames is what guards correctness.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(
            module.eval(),
            dummy,
            str(path),
            input_names=list(info.inputs),
            output_names=list(info.outputs),
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    set_metadata(model, info)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def set_metadata(model: onnx.ModelProto, info: ModelInfo) -> None:
    """Replace the model's metadata_props with ``info.metadata()``."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, info.metadata())


def simplify_if_equivalent(
    path: Path, info: ModelInfo, feeds: list[dict[str, np.ndarray]], tolerance: ParityTolerance
) -> bool:
    """Simplify ``path`` in place with onnxslim when the result matches the original on ``feeds``.

    Returns whether the simplified graph was kept; any failure keeps the original with a warning.
    """
    import onnxslim

    try:
        slim = onnxslim.slim(onnx.load(str(path)))
        set_metadata(slim, info)
        onnx.checker.check_model(slim, full_check=True)
        with tempfile.TemporaryDirectory() as tmp:
            slim_path = Path(tmp) / path.name
            onnx.save(slim, str(slim_path))
            original, candidate = OnnxRuntimeBackend(path), OnnxRuntimeBackend(slim_path)
            report = check_parity(original.infer, candidate.infer, feeds, tolerance)
    except Exception as exc:  # onnxslim and its checks can fail in many ways; the original stays valid
        log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
        return False
    if not report.passed:
        log.warning(
            "onnxslim changed the outputs (%s); keeping the unsimplified graph", "; ".join(report.failures)
        )
        return False
    onnx.save(slim, str(path))
    return True


def export_deploy_model(
    deploy: torch.nn.Module,
    config: object,
    output: str | Path,
    *,
    opset: int = OPSET,
    simplify: bool = True,
    data_root: str | Path | None = None,
    parity_frames: int = 4,
    tolerance: ParityTolerance | None = None,
) -> ExportResult:
    """Export a DeployModel to ONNX at ``output`` and check it against PyTorch on real frames.

    ``output`` is written whatever the verdict: the returned report says whether parity held and
    the caller decides what a failure means. To replace a model only when it passes, export to a
    ``Staging`` path and promote it (what ``mtl-perception export`` does).
    """
    tolerance = tolerance or ParityTolerance()
    deploy = deploy.eval()
    info = describe_deploy_model(deploy, config)
    path = write_onnx(deploy, info, output, opset)
    feeds = frame_feeds(stereo_frames(info.input_size, parity_frames, data_root), info)
    simplified = simplify and simplify_if_equivalent(path, info, feeds, tolerance)
    backend = OnnxRuntimeBackend(path)
    parity = check_parity(torch_infer(deploy, info), backend.infer, feeds, tolerance)
    backend.close()
    return ExportResult(onnx_path=path, info=info, parity=parity, simplified=simplified)


def export_steering_head(
    head: SteeringHead, output: str | Path, *, opset: int = OPSET, frame_period: float | None = None
) -> tuple[Path, ParityReport]:
    """Export the steering head (``embeddings`` 1xTxD -> ``steering``) and check it on random windows.

    ``frame_period``: seconds between the frames of its training windows, recorded in the metadata
    so the runtime thins a faster camera's stream to it (heads saved before it was recorded: None).
    """
    embedding_dim, window = head.embedding_dim, head.window
    info = ModelInfo(
        mode=STEERING_MODE,
        inputs={"embeddings": (1, window, embedding_dim)},
        outputs=("steering",),
        version=__version__,
        embedding_dim=embedding_dim,
        window=window,
        extra={} if frame_period is None else {FRAME_PERIOD_KEY: repr(float(frame_period))},
    )
    path = write_onnx(head.eval(), info, output, opset)
    rng = np.random.default_rng(0)
    feeds = [
        {"embeddings": rng.standard_normal((1, window, embedding_dim), dtype=np.float32)} for _ in range(4)
    ]
    backend = OnnxRuntimeBackend(path)
    report = check_parity(torch_infer(head, info), backend.infer, feeds)
    backend.close()
    return path, report
