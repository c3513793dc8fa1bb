"""ROS-free inference pipeline: numpy image(s) in, resized/scaled outputs and metric depth out."""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from mtl_perception.contract import (
    ENCODINGS,
    INPUT_ENCODINGS,
    OutputPolicy,
    mono_maps,
    resize_image,
    stereo_maps,
    to_rgb,
)
from mtl_perception.model_info import STEERING_MODE, ModelInfo
from mtl_perception.runtime.backend import Backend

OUTPUT_RESOLUTIONS = ("input", "model")
RESIZE_MODES = ("stretch", "letterbox")
# A gap above this many frame periods means at least one frame is missing from the stream.
STEERING_GAP_FACTOR = 1.5
# Frame gaps the period is estimated from (their median: a few drops or a pause do not move it).
PERIOD_HISTORY = 32
# A steering graph that states its training frame period gets frames about that far apart: a frame
# joins the window once this share of the period has passed since the last one (a 30 Hz camera
# feeds a 10 Hz head every third frame, a 20 Hz one every second).
PERIOD_SHARE_TO_JOIN = 0.75


class InputError(ValueError):
    """An image the pipeline cannot use (dtype, shape, encoding, stereo mismatch)."""


@dataclass(frozen=True)
class CameraModel:
    """Pinhole focal length (pixels, at the INPUT image resolution), stereo baseline (meters) and
    the right view's principal point minus the left's (pixels, input resolution; 0 usually)."""

    fx: float
    baseline: float = 0.0
    principal_offset: float = 0.0


@dataclass
class PipelineResult:
    """All outputs of one frame at the output resolution (see ``Pipeline``)."""

    semantic: np.ndarray  # uint8 HxW class ids
    semantic_uncertainty: np.ndarray  # float32 HxW, 0..1
    embedding: np.ndarray  # float32 (D,)
    semantic_confidence: np.ndarray | None = None  # float32 HxW top-class probability (newer models)
    # The maps as published (mtl_perception.contract): NaN = unknown/invalid, depth +Inf = too far.
    disparity: np.ndarray | None = None  # float32 HxW pixels of the output image
    disparity_uncertainty: np.ndarray | None = None
    depth: np.ndarray | None = None  # float32 HxW meters (REP-118)
    depth_uncertainty: np.ndarray | None = None  # float32 HxW meters
    min_disparity: float = 0.0  # the range the map was masked with (output pixels; policy's)
    max_disparity: float = 0.0  # the disparity range reported with the map (output pixels)
    steering: float | None = None  # radians, positive = left; None until the window is full
    # Why this frame restarted the steering window (its stamp; see SteeringBuffer), else None.
    steering_restart: str | None = None
    scale_x: float = 1.0  # output width / input width (focal lengths scale by this)
    scale_y: float = 1.0
    disparity_scale: float = 1.0  # output pixels per model pixel, horizontally
    timings: dict[str, float] = field(default_factory=dict)  # pre_ms, infer_ms, post_ms
    palette: np.ndarray | None = field(default=None, repr=False)
    _color: np.ndarray | None = field(default=None, repr=False)

    def semantic_color(self) -> np.ndarray:
        """HxWx3 uint8 RGB rendering of ``semantic`` (computed on first call, then cached)."""
        if self._color is None:
            if self.palette is None:
                raise ValueError("this result has no class palette")
            self._color = self.palette[self.semantic]
        return self._color


def class_palette(info: ModelInfo) -> np.ndarray:
    """(256, 3) uint8 colour per class id from the model's own class table; unknown ids are black."""
    colors = np.zeros((256, 3), dtype=np.uint8)
    for entry in info.classes:
        colors[int(entry["id"])] = entry["color"]
    return colors


class SteeringBuffer:
    """The last T embeddings in time order, and whether they are T consecutive frames.

    Each embedding is written twice (rows i and i+T of a 2T buffer), so rows [i+1, i+1+T) are always
    the last T frames in order: a view, no np.roll. Their stamps are kept the same way.

    A frame with a stamp (seconds) restarts the window when the stamp is not after the previous one
    (time went back: a bag loop, a restarted clock) or is more than ``gap_limit()`` after it (a frame
    is missing). ``max_gap`` sets that limit in seconds; None estimates it as ``STEERING_GAP_FACTOR``
    x the frame period, the median of the last ``PERIOD_HISTORY`` gaps. Early in a stream that
    estimate rests on a few gaps, so ``full`` checks the window's gaps again against the current
    limit: a gap that turns out too long keeps the window incomplete until it has left it. Frames
    without a stamp extend the window unchecked.

    ``frame_period`` (seconds; the steering graph's training period) thins a faster stream: ``joins``
    says whether a frame belongs in the window at all.
    """

    def __init__(
        self, window: int, dim: int, max_gap: float | None = None, frame_period: float | None = None
    ) -> None:
        self.window = window
        self.max_gap = max_gap
        self.frame_period = frame_period
        self._rows = np.zeros((2 * window, dim), dtype=np.float32)
        self._stamps = np.full(2 * window, np.nan)  # NaN: a frame without a stamp
        self._gaps: deque[float] = deque(maxlen=PERIOD_HISTORY)
        self._last_stamp: float | None = None
        self._next = 0
        self._count = 0

    def joins(self, stamp: float | None) -> bool:
        """Whether a frame at ``stamp`` enters the window: not when it comes sooner after the last
        one than ``PERIOD_SHARE_TO_JOIN`` x ``frame_period`` (a stamp that goes back does: it
        restarts the window)."""
        if self.frame_period is None or stamp is None or self._last_stamp is None or self._count == 0:
            return True
        gap = stamp - self._last_stamp
        return gap <= 0 or gap >= PERIOD_SHARE_TO_JOIN * self.frame_period

    def push(self, embedding: np.ndarray, stamp: float | None = None) -> str | None:
        """Add a frame; returns why it restarted the window (None when it continued it)."""
        restart = None if stamp is None else self._check_stamp(stamp)
        if restart is not None:
            self._count = 0
        stamp_value = math.nan if stamp is None else stamp
        self._rows[self._next] = embedding
        self._rows[self._next + self.window] = embedding
        self._stamps[self._next] = self._stamps[self._next + self.window] = stamp_value
        self._next = (self._next + 1) % self.window
        self._count = min(self._count + 1, self.window)
        return restart

    def _check_stamp(self, stamp: float) -> str | None:
        previous, self._last_stamp = self._last_stamp, stamp
        if previous is None:
            return None
        gap = stamp - previous
        if gap <= 0:
            return "stamp repeated" if gap == 0 else f"stamp went back {-gap:.3f} s"
        self._gaps.append(gap)
        limit = self.gap_limit()
        if gap > limit:
            return f"gap {gap:.3f} s > {limit:.3f} s (a frame is missing)"
        return None

    def gap_limit(self) -> float:
        """The longest gap (seconds) between consecutive frames: ``max_gap`` or the estimate."""
        if self.max_gap is not None:
            return self.max_gap
        if not self._gaps:
            return math.inf
        return STEERING_GAP_FACTOR * statistics.median(self._gaps)

    @property
    def frames(self) -> int:
        """Frames in the current window (0 after ``clear``, at most ``window``)."""
        return self._count

    @property
    def full(self) -> bool:
        if self._count < self.window:
            return False
        # T-1 subtractions: cheap, and NaN gaps (frames without a stamp) compare False.
        gaps = np.diff(self._stamps[self._next : self._next + self.window])
        return not bool((gaps > self.gap_limit()).any())

    def ordered(self) -> np.ndarray:
        """(1, T, D) view of the last T embeddings, oldest first."""
        return self._rows[self._next : self._next + self.window][None]

    def clear(self) -> None:
        """Empty the window; the next frame starts a new one. The period estimate is kept: the
        camera's rate does not change with a pause."""
        self._count = 0
        self._next = 0
        self._last_stamp = None
        self._stamps[:] = math.nan


class Pipeline:
    """Pre-process, infer and post-process one frame (stereo pair or mono image).

    ``output_resolution="input"`` returns every map at the input image size, ``"model"`` at the
    model's size (letterbox padding cropped). Class ids resize nearest, continuous maps bilinear;
    disparity is multiplied by the horizontal scale; depth = fx * B / disparity at the output
    resolution (fx scaled with it). ``policy`` (assignable between frames) decides what is valid,
    too far or unknown, as ``mtl_perception.contract`` defines: the node publishes these maps as
    they are.

    Steering (with ``steering_backend``) comes from the last T frames and only from T consecutive
    ones: ``process(..., stamp=...)`` restarts the window when the stamp goes back or jumps by more
    than ``steering_max_gap`` seconds (None: 1.5 x the median frame period; see SteeringBuffer), and
    ``result.steering`` stays None until T new frames have arrived. A steering graph that states its
    training frame period sees a faster stream thinned to about that period; the frames in between
    repeat the last steering value (their window is the same).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        output_resolution: str = "input",
        resize_mode: str = "stretch",
        steering_window: int = 16,
        steering_backend: Backend | None = None,
        steering_max_gap: float | None = None,
        policy: OutputPolicy | None = None,
    ) -> None:
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(
                f"output_resolution must be one of {OUTPUT_RESOLUTIONS}, got {output_resolution!r}"
            )
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.backend = backend
        self.info = backend.info
        if self.info.mode == STEERING_MODE:
            raise ValueError("the pipeline's backend must hold the perception model, not the steering graph")
        self.output_resolution = output_resolution
        self.resize_mode = resize_mode
        self.policy = policy or OutputPolicy()
        self.steering_backend = steering_backend
        if steering_backend is not None:
            steering_info = steering_backend.info
            if steering_info.mode != STEERING_MODE:
                raise ValueError("steering_backend must hold a steering graph (<name>.steering.onnx)")
            if steering_info.embedding_dim != self.info.embedding_dim:
                raise ValueError(
                    f"steering graph expects embedding_dim {steering_info.embedding_dim}, "
                    f"the model gives {self.info.embedding_dim}"
                )
            steering_window = steering_info.window
        frame_period = steering_backend.info.frame_period if steering_backend is not None else None
        self.steering = SteeringBuffer(steering_window, self.info.embedding_dim, frame_period=frame_period)
        self._last_steering: float | None = None
        self.steering_max_gap = steering_max_gap  # checked by the setter
        self.palette = class_palette(self.info)
        height, width = self.info.input_size
        self._input_names = list(self.info.inputs)
        # Preallocated model-size buffers: one uint8 HxWx3 canvas and one float NCHW tensor per view.
        self._canvas = {n: np.zeros((height, width, 3), np.uint8) for n in self._input_names}
        self._tensors = {n: np.zeros((1, 3, height, width), np.float32) for n in self._input_names}

    @property
    def steering_max_gap(self) -> float | None:
        """Longest gap (s) between frames of one steering window; None: 1.5 x the median period."""
        return self.steering.max_gap

    @steering_max_gap.setter
    def steering_max_gap(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError(f"steering_max_gap must be positive seconds or None, got {seconds}")
        self.steering.max_gap = seconds

    def reset(self) -> None:
        """Forget the steering window (e.g. after a pause, or frames lost before the pipeline)."""
        self.steering.clear()
        self._last_steering = None

    def warm_up(self, runs: int = 2) -> float:
        """Run the model ``runs`` times on blank inputs; returns the last run's milliseconds.

        The first calls of a backend allocate its buffers and, on a GPU, set up CUDA and pick kernels,
        which can take many times the steady-state latency; doing that before the first real frame
        keeps it out of the frames a robot (or a replay) measures.
        """
        elapsed_ms = 0.0
        for _ in range(max(runs, 1)):
            start = time.perf_counter()
            self.backend.infer(self._tensors)
            if self.steering_backend is not None:
                self.steering_backend.infer({"embeddings": self.steering.ordered()})
            elapsed_ms = (time.perf_counter() - start) * 1e3
        return elapsed_ms

    def process(
        self,
        image_left: np.ndarray,
        image_right: np.ndarray | None = None,
        *,
        encoding: str = "rgb8",
        camera: CameraModel | None = None,
        stamp: float | None = None,
    ) -> PipelineResult:
        """Run one frame. ``image_left`` is the mono image for mono models. Raises InputError.

        ``stamp``: the frame's capture time in seconds (header stamp, bag or simulation time; any
        epoch, one per stream). With it the steering window holds consecutive frames only (see the
        class docstring); without it every frame extends the window.
        """
        start = time.perf_counter()
        images = self._check_inputs(image_left, image_right, encoding)
        in_h, in_w = image_left.shape[:2]
        content = self._content_box(in_h, in_w)
        feeds = {name: self._prepare(name, image, encoding, content) for name, image in images.items()}
        after_pre = time.perf_counter()
        outputs = self.backend.infer(feeds)
        after_infer = time.perf_counter()
        result = self._postprocess(outputs, content, in_h, in_w, camera, stamp)
        result.timings = {
            "pre_ms": (after_pre - start) * 1e3,
            "infer_ms": (after_infer - after_pre) * 1e3,
            "post_ms": (time.perf_counter() - after_infer) * 1e3,
        }
        return result

    # -- pre-processing -------------------------------------------------------------------------

    def _check_inputs(
        self, left: np.ndarray, right: np.ndarray | None, encoding: str
    ) -> dict[str, np.ndarray]:
        if encoding not in INPUT_ENCODINGS:
            raise InputError(
                f"unsupported image encoding {encoding!r}; supported: {', '.join(INPUT_ENCODINGS)}"
            )
        if self.info.is_stereo and right is None:
            raise InputError("this is a stereo model: pass both the left and the right image")
        if not self.info.is_stereo and right is not None:
            raise InputError("this is a mono model: pass one image, not a stereo pair")
        images = [left] if right is None else [left, right]
        for label, image in zip(("left", "right"), images, strict=False):
            _check_image(image, encoding, label)
        if right is not None and right.shape != left.shape:
            raise InputError(f"stereo images differ in size: left {left.shape}, right {right.shape}")
        return dict(zip(self._input_names, images, strict=True))

    def _content_box(self, in_h: int, in_w: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the image inside the model canvas."""
        height, width = self.info.input_size
        if self.resize_mode == "stretch":
            return 0, 0, width, height
        scale = min(width / in_w, height / in_h)
        w, h = max(1, round(in_w * scale)), max(1, round(in_h * scale))
        return (width - w) // 2, (height - h) // 2, w, h

    def _prepare(
        self, name: str, image: np.ndarray, encoding: str, content: tuple[int, int, int, int]
    ) -> np.ndarray:
        x, y, w, h = content
        target = self._canvas[name][y : y + h, x : x + w]
        # Resize first, in the source encoding, then convert at model size: channel reordering,
        # alpha dropping and grey replication commute with resizing, and cost ~10x less there.
        if image.shape[:2] != (h, w):
            image = resize_image(image, w, h)
        # cv2 writes in place only into contiguous rows: the canvas in stretch mode.
        if target.flags.c_contiguous and ENCODINGS[encoding].to_rgb is not None:
            to_rgb(image, encoding, dst=target)
        else:
            target[...] = to_rgb(image, encoding)
        # The canvas as a 0..1 float NCHW tensor (the graph normalises further).
        tensor = self._tensors[name]
        np.multiply(self._canvas[name].transpose(2, 0, 1), np.float32(1.0 / 255.0), out=tensor[0])
        return tensor

    # -- post-processing ------------------------------------------------------------------------

    def _postprocess(
        self,
        outputs: dict[str, np.ndarray],
        content: tuple[int, int, int, int],
        in_h: int,
        in_w: int,
        camera: CameraModel | None,
        stamp: float | None,
    ) -> PipelineResult:
        x, y, w, h = content
        out_h, out_w = (in_h, in_w) if self.output_resolution == "input" else (h, w)

        def resized(name: str, interpolation: int) -> np.ndarray | None:
            if name not in outputs:
                return None
            cropped = outputs[name][0, y : y + h, x : x + w]
            if (h, w) == (out_h, out_w):
                return np.array(cropped)
            return cv2.resize(cropped, (out_w, out_h), interpolation=interpolation)

        semantic_ids = outputs["semantic"][0, y : y + h, x : x + w].astype(np.uint8)
        if (h, w) != (out_h, out_w):
            semantic_ids = cv2.resize(semantic_ids, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
        result = PipelineResult(
            semantic=semantic_ids,
            semantic_uncertainty=resized("semantic_uncertainty", cv2.INTER_LINEAR),
            semantic_confidence=resized("semantic_confidence", cv2.INTER_LINEAR),
            embedding=np.array(outputs["embedding"], np.float32).reshape(-1),  # copy: backends reuse buffers
            scale_x=out_w / in_w,
            scale_y=out_h / in_h,
            disparity_scale=out_w / w,
            palette=self.palette,
        )
        if self.info.is_stereo:
            disparity = resized("disparity", cv2.INTER_LINEAR)
            disparity_uncertainty = resized("disparity_uncertainty", cv2.INTER_LINEAR)
            disparity *= result.disparity_scale
            if disparity_uncertainty is not None:
                disparity_uncertainty *= result.disparity_scale
            policy = self.policy  # read once: the node may assign a new one between frames
            focal_baseline, offset = None, 0.0
            if camera is not None and camera.baseline > 0:
                focal_baseline = camera.fx * result.scale_x * camera.baseline
                offset = camera.principal_offset * result.scale_x
            result.disparity, result.depth, result.depth_uncertainty = stereo_maps(
                disparity, disparity_uncertainty, focal_baseline, policy, offset
            )
            result.disparity_uncertainty = disparity_uncertainty
            result.min_disparity = policy.min_disparity
            result.max_disparity = policy.max_disparity or self.info.max_disparity * result.disparity_scale
        else:
            depth = resized("depth", cv2.INTER_LINEAR)
            if depth is not None:
                result.depth, result.depth_uncertainty = mono_maps(
                    depth,
                    resized("depth_uncertainty", cv2.INTER_LINEAR),
                    self.policy,
                    self._mono_focal_ratio(camera, w, in_w),
                )
        if not self.steering.joins(stamp):
            result.steering = self._last_steering  # the window is unchanged, so is its answer
            return result
        result.steering_restart = self.steering.push(result.embedding, stamp)
        self._last_steering = None
        if self.steering_backend is not None and self.steering.full:
            steering = self.steering_backend.infer({"embeddings": self.steering.ordered()})["steering"]
            result.steering = self._last_steering = float(np.asarray(steering).reshape(-1)[0])
        return result

    def _mono_focal_ratio(self, camera: CameraModel | None, content_w: int, in_w: int) -> float:
        """Mono depth scale for this camera: its focal length as the model saw it (after the resize
        to ``content_w`` of the canvas) over the one the model learned depth for (metadata)."""
        learned = self.info.focal_length
        if camera is None or learned is None:
            return 1.0
        return camera.fx * content_w / in_w / learned


def _check_image(image: object, encoding: str, label: str) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"{label} image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{label} image must be uint8 for {encoding}, got {image.dtype}")
    channels = ENCODINGS[encoding].channels
    expected_ndim = (2, 3) if channels == 1 else (3,)
    if image.ndim not in expected_ndim or image.size == 0:
        raise InputError(
            f"{label} image has shape {image.shape}; {encoding} needs HxW{'' if channels == 1 else 'xC'}"
        )
    if image.ndim == 3 and image.shape[2] != channels:
        raise InputError(f"{label} image has {image.shape[2]} channels; {encoding} needs {channels}")
