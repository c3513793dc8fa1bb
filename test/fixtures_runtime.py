"""Numpy stand-ins for a Backend with known outputs, so pipeline geometry can be checked exactly."""

from __future__ import annotations

import numpy as np

from mtl_perception.contract import MONO_OUTPUTS, STEREO_OUTPUTS
from mtl_perception.data.labels import class_table
from mtl_perception.model_info import FRAME_PERIOD_KEY, ModelInfo


def fake_info(mode: str = "stereo", size: tuple[int, int] = (64, 128), embedding_dim: int = 4) -> ModelInfo:
    names = ("left", "right") if mode == "stereo" else ("image",)
    return ModelInfo(
        mode=mode,
        inputs={n: (1, 3, *size) for n in names},
        outputs=STEREO_OUTPUTS if mode == "stereo" else MONO_OUTPUTS,
        version="test",
        embedding_dim=embedding_dim,
        input_size=size,
        max_disparity=32.0 if mode == "stereo" else 0.0,
        classes=tuple(class_table()),
    )


class ConstantBackend:
    """Constant disparity/depth and sigma; class id = column index mod 10; records its last inputs."""

    name = "constant"

    def __init__(self, info: ModelInfo, value: float = 10.0, sigma: float = 0.5) -> None:
        self.info = info
        self.value = value
        self.sigma = sigma
        self.last_inputs: dict[str, np.ndarray] = {}
        self.calls = 0

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.last_inputs = {k: v.copy() for k, v in inputs.items()}
        height, width = self.info.input_size
        columns = np.broadcast_to(np.arange(width) % 10, (1, height, width)).astype(np.int64)
        first = next(iter(inputs.values()))
        maps = {
            "semantic": columns,
            "semantic_uncertainty": np.full((1, height, width), 0.25, np.float32),
            "semantic_confidence": np.full((1, height, width), 0.8, np.float32),
            "embedding": np.full((1, self.info.embedding_dim), float(self.calls), np.float32),
        }
        prefix = "disparity" if self.info.is_stereo else "depth"
        maps[prefix] = np.full((1, height, width), self.value, np.float32)
        maps[f"{prefix}_uncertainty"] = np.full((1, height, width), self.sigma, np.float32)
        maps["embedding"][0, 0] = first.mean()
        return maps

    def close(self) -> None:
        pass


class SumSteeringBackend:
    """Steering = weighted sum over time of embedding[:, 0] (weights 1..T): order-sensitive."""

    name = "sum"

    def __init__(self, window: int, embedding_dim: int = 4, frame_period: float | None = None) -> None:
        self.calls = 0
        self.info = ModelInfo(
            mode="steering",
            inputs={"embeddings": (1, window, embedding_dim)},
            outputs=("steering",),
            version="test",
            embedding_dim=embedding_dim,
            window=window,
            extra={} if frame_period is None else {FRAME_PERIOD_KEY: repr(frame_period)},
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        embeddings = inputs["embeddings"]
        weights = np.arange(1, embeddings.shape[1] + 1, dtype=np.float32)
        return {"steering": (embeddings[:, :, 1] * weights).sum(axis=1)}

    def close(self) -> None:
        pass
