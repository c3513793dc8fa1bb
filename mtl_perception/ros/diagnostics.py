"""Frame statistics of the node and their diagnostic_msgs/DiagnosticStatus form.

Kept free of node logic so the numbers (rates, latency, accounting) can be unit-tested.
Hand-written because diagnostic_updater has no PyPI wheel.

Accounting (DESIGN.md, Node parameters): every image the node takes in ends in exactly one bucket.
A *frame* is what the worker runs on: a stereo pair, or one mono image. Once the counts settle
(the worker idle, nothing waiting for a partner):

    images in = views * frames in + images unmatched        (views: 2 stereo, 1 mono)
    frames in = frames processed + frames dropped + frames rejected

``images waiting`` (stereo images still hoping for a partner) and ``frames in progress`` (in the
worker's slot or being inferred) are the only in-between states, and both are published.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

# How long a bad-input reason (rejected frame, zero stamp, lost message) keeps the status at WARN.
WARN_HOLD_S = 5.0
# Where a processed frame's time goes, in order (DESIGN: find stalls by stage, not by guess):
# arrival = header stamp -> pair complete in the node (transport and waiting for the partner, node
# clock); queue = complete -> the worker takes it; decode = message -> array; pre / infer / post =
# the pipeline; publish = all output messages handed to the middleware.
STAGES = ("arrival", "queue", "decode", "pre", "infer", "post", "publish")
STAGE_HISTORY = 10_000  # frames kept for the shutdown percentiles (a few hundred KB)


@dataclass
class _Window:
    """Event times and values over the last ``span_s`` seconds (bounded by time, not count)."""

    span_s: float
    events: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, now: float, value: float = 0.0) -> None:
        self.events.append((now, value))
        self.trim(now)

    def trim(self, now: float) -> None:
        while self.events and now - self.events[0][0] > self.span_s:
            self.events.popleft()

    def rate(self, now: float) -> float:
        self.trim(now)
        return len(self.events) / self.span_s

    def mean(self) -> float:
        return sum(v for _, v in self.events) / len(self.events) if self.events else float("nan")

    def max(self) -> float:
        return max((v for _, v in self.events), default=float("nan"))


class NodeStatistics:
    """Counts and rolling windows the node updates from its callbacks and worker (thread-safe).

    ``views`` is 2 for a stereo node (a frame is a pair of images), 1 for mono. ``stale_after_s``:
    with no image for longer than this (and not paused) the status is STALE; 0 disables it.
    ``waiting_images`` reports how many images wait for a stereo partner (published as is).
    """

    def __init__(
        self,
        name: str,
        hardware_id: str,
        *,
        views: int = 1,
        window_s: float = 5.0,
        stale_after_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        waiting_images: Callable[[], int] = lambda: 0,
    ) -> None:
        self.name = name
        self.hardware_id = hardware_id
        self.backend = ""
        self.views = views
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._waiting_images = waiting_images
        self._lock = threading.Lock()
        self._inputs = _Window(window_s)
        self._outputs = _Window(window_s)
        self._latency_ms = _Window(window_s)
        self._infer_ms = _Window(window_s)
        self._stage_window = {stage: _Window(window_s) for stage in STAGES}
        self._stage_history: dict[str, deque[float]] = {s: deque(maxlen=STAGE_HISTORY) for s in STAGES}
        self.images_in = 0
        self.images_unmatched = 0
        self.frames_in = 0
        self.frames_out = 0  # processed: outputs published
        self.frames_dropped = 0
        self.frames_rejected = 0
        self.frames_zero_stamp = 0
        self.messages_lost = 0
        # With a steering graph: steering messages sent and restarts of its window (a frame missing,
        # dropped or rejected, a stamp going back, a pause), the last one's reason.
        self.steering = False
        self.steering_published = 0
        self.steering_restarts = 0
        self.last_steering_restart = ""
        self.last_problem = ""
        self._last_problem_time = -float("inf")
        self._last_zero_stamp_time = -float("inf")
        self._last_lost_time = -float("inf")
        self._last_image_time: float | None = None
        self._started = clock()
        # Lasting conditions (key -> WARN message) that hold until the node clears them.
        self._conditions: dict[str, str] = {}
        self._notes: dict[str, str] = {}
        self.paused = False

    # -- accounting ------------------------------------------------------------------------------

    def image_received(self) -> None:
        """An image was taken in (before any matching); also what keeps the status from STALE."""
        with self._lock:
            self.images_in += 1
            self._last_image_time = self._clock()

    def unmatched(self, count: int = 1) -> None:
        """Stereo images discarded because their partner never came (the synchronizer's callback)."""
        with self._lock:
            self.images_unmatched += count

    def input_received(self) -> None:
        """A frame (matched pair or mono image) was handed to the worker."""
        with self._lock:
            self.frames_in += 1
            self._inputs.add(self._clock())

    def dropped(self, count: int = 1) -> None:
        """Frames replaced by a newer one (or discarded by a pause or shutdown) before inference."""
        with self._lock:
            self.frames_dropped += count

    def rejected(self, reason: str) -> None:
        """A frame skipped because of bad input; ``reason`` is shown in diagnostics."""
        with self._lock:
            self.frames_rejected += 1
            self.last_problem = reason
            self._last_problem_time = self._clock()

    def published(self, latency_ms: float | None, infer_ms: float, steering: bool = False) -> None:
        """A frame's outputs went out (``steering``: its steering too); latency is from its header
        stamp (None: no usable stamp)."""
        with self._lock:
            now = self._clock()
            self.frames_out += 1
            self.steering_published += int(steering)
            self._outputs.add(now)
            if latency_ms is not None:
                self._latency_ms.add(now, latency_ms)
            self._infer_ms.add(now, infer_ms)

    def stages(self, stage_ms: dict[str, float]) -> None:
        """Per-stage milliseconds of one processed frame (keys of ``STAGES``; missing ones skipped)."""
        with self._lock:
            now = self._clock()
            for stage, value in stage_ms.items():
                self._stage_window[stage].add(now, value)
                self._stage_history[stage].append(value)

    def stage_percentiles(self) -> dict[str, tuple[float, float, float]]:
        """stage -> (p50, p95, max) ms over the frames kept (the whole run, up to STAGE_HISTORY)."""
        with self._lock:
            history = {stage: list(values) for stage, values in self._stage_history.items() if values}
        # Nearest rank (inverted CDF): every figure is one a frame really took.
        return {
            stage: (*(float(p) for p in np.percentile(v, [50, 95], method="inverted_cdf")), max(v))
            for stage, v in history.items()
        }

    def steering_restarted(self, reason: str) -> None:
        """The steering window was emptied: no steering until it holds a full window of new frames."""
        with self._lock:
            self.steering_restarts += 1
            self.last_steering_restart = reason

    # -- input health ----------------------------------------------------------------------------

    def zero_stamp(self) -> None:
        """A frame whose header stamp is 0: processed, but kept out of the latency statistics."""
        with self._lock:
            self.frames_zero_stamp += 1
            self._last_zero_stamp_time = self._clock()

    def lost(self, count: int) -> None:
        """Messages the middleware reports lost before they reached the node (message_lost event)."""
        with self._lock:
            self.messages_lost += count
            self._last_lost_time = self._clock()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume; a resume restarts the STALE clock (images were ignored meanwhile)."""
        with self._lock:
            if self.paused and not paused:
                self._started, self._last_image_time = self._clock(), None
            self.paused = paused

    def set_condition(self, key: str, message: str | None) -> None:
        """Hold WARN with ``message`` until called again with None (sync mismatch, QoS)."""
        with self._lock:
            if message is None:
                self._conditions.pop(key, None)
            else:
                self._conditions[key] = message

    def note(self, key: str, value: str) -> None:
        """An extra key/value shown in diagnostics (a record, e.g. the last incompatible QoS)."""
        with self._lock:
            self._notes[key] = value

    # -- reporting -------------------------------------------------------------------------------

    def to_status(self) -> DiagnosticStatus:
        """The current state as one DiagnosticStatus; the level is the worst of what is wrong."""
        waiting = self._waiting_images()  # outside our lock: the synchronizer calls into us under its own
        with self._lock:
            now = self._clock()
            in_progress = self.frames_in - self.frames_out - self.frames_dropped - self.frames_rejected
            values = {
                "backend": self.backend,
                "input rate (Hz)": f"{self._inputs.rate(now):.2f}",
                "output rate (Hz)": f"{self._outputs.rate(now):.2f}",
                "latency mean (ms)": f"{self._latency_ms.mean():.1f}",
                "latency max (ms)": f"{self._latency_ms.max():.1f}",
                "inference mean (ms)": f"{self._infer_ms.mean():.1f}",
                **{
                    f"stage {stage} mean/max (ms)": f"{window.mean():.1f} / {window.max():.1f}"
                    for stage, window in self._stage_window.items()
                    if window.events
                },
                "images in": str(self.images_in),
            }
            if self.views > 1:
                values["images unmatched"] = str(self.images_unmatched)
                values["images waiting"] = str(waiting)
            values |= {
                "frames in": str(self.frames_in),
                "frames processed": str(self.frames_out),
                "frames dropped": str(self.frames_dropped),
                "frames rejected": str(self.frames_rejected),
                "frames in progress": str(in_progress),
                "frames with zero stamp": str(self.frames_zero_stamp),
                "messages lost": str(self.messages_lost),
                "last problem": self.last_problem,
                **self._notes,
            }
            if self.steering:
                values["steering published"] = str(self.steering_published)
                values["steering window restarts"] = str(self.steering_restarts)
                values["steering last restart"] = self.last_steering_restart
            problems = self._problems(now)
        level = max((lvl for lvl, _ in problems), default=DiagnosticStatus.OK)
        return DiagnosticStatus(
            level=level,
            name=self.name,
            message="; ".join(text for _, text in problems) or "running",
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def _problems(self, now: float) -> list[tuple[bytes, str]]:
        """(level, message) of everything wrong now, most severe first (caller holds the lock)."""
        problems: list[tuple[bytes, str]] = []
        if self.paused:
            problems.append((DiagnosticStatus.WARN, "paused (enable = false)"))
        elif self.stale_after_s > 0:
            since = self._last_image_time
            silent_s = now - (since if since is not None else self._started)
            if silent_s > self.stale_after_s:
                what = "no input image yet" if since is None else "no input image"
                problems.append((DiagnosticStatus.STALE, f"{what} for {silent_s:.1f} s"))
        if now - self._last_problem_time < WARN_HOLD_S:
            problems.append((DiagnosticStatus.WARN, f"input rejected: {self.last_problem}"))
        if now - self._last_zero_stamp_time < WARN_HOLD_S:
            problems.append((DiagnosticStatus.WARN, "input header stamps are 0 (latency not measured)"))
        if now - self._last_lost_time < WARN_HOLD_S:
            problems.append((DiagnosticStatus.WARN, f"{self.messages_lost} messages lost in transport"))
        problems += [(DiagnosticStatus.WARN, message) for message in self._conditions.values()]
        problems.sort(key=lambda p: p[0], reverse=True)  # stable: same-level order kept
        return problems

    def summary(self) -> str:
        """One line with every bucket, for the shutdown log."""
        with self._lock:
            frames = (
                f"frames in {self.frames_in}: processed {self.frames_out}, dropped {self.frames_dropped}, "
                f"rejected {self.frames_rejected}"
            )
            if self.views == 1:
                return frames
            return (
                f"{frames} (a frame is a stereo pair); images in {self.images_in}: "
                f"paired {self.views * self.frames_in}, unmatched {self.images_unmatched}"
            )


def format_stages(percentiles: dict[str, tuple[float, float, float]]) -> str:
    """'stage p50/p95/max ms: arrival 12.0/30.1/45.2, ...' for the shutdown log."""
    parts = [f"{stage} {p50:.1f}/{p95:.1f}/{top:.1f}" for stage, (p50, p95, top) in percentiles.items()]
    return "stage p50/p95/max ms: " + ", ".join(parts) if parts else "no frame processed"
