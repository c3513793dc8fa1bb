"""Frame statistics of the node and their diagnostic_msgs/DiagnosticStatus form.

Kept free of node logic so the numbers (rates, latency, drops) can be unit-tested. Hand-written
because diagnostic_updater has no PyPI wheel.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

# How long a bad-input reason keeps the status at WARN after the last bad frame.
WARN_HOLD_S = 5.0


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
    """Counts and rolling windows the node updates from its callbacks and worker (thread-safe)."""

    def __init__(
        self,
        name: str,
        hardware_id: str,
        *,
        window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.hardware_id = hardware_id
        self.backend = ""
        self._clock = clock
        self._lock = threading.Lock()
        self._inputs = _Window(window_s)
        self._outputs = _Window(window_s)
        self._latency_ms = _Window(window_s)
        self._infer_ms = _Window(window_s)
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.frames_rejected = 0
        self.last_problem = ""
        self._last_problem_time = -float("inf")
        self.paused = False

    def input_received(self) -> None:
        """A matched input (pair or mono image) was accepted for processing."""
        with self._lock:
            self.frames_in += 1
            self._inputs.add(self._clock())

    def dropped(self, count: int = 1) -> None:
        """Frames replaced by newer ones (or unmatched) before inference."""
        with self._lock:
            self.frames_dropped += count

    def rejected(self, reason: str) -> None:
        """A frame skipped because of bad input; ``reason`` is shown in diagnostics."""
        with self._lock:
            self.frames_rejected += 1
            self.last_problem = reason
            self._last_problem_time = self._clock()

    def published(self, latency_ms: float, infer_ms: float) -> None:
        """A frame's outputs went out; latency is from its header stamp."""
        with self._lock:
            now = self._clock()
            self.frames_out += 1
            self._outputs.add(now)
            self._latency_ms.add(now, latency_ms)
            self._infer_ms.add(now, infer_ms)

    def to_status(self) -> DiagnosticStatus:
        """The current state as one DiagnosticStatus (WARN while bad input is recent or paused)."""
        with self._lock:
            now = self._clock()
            values = {
                "backend": self.backend,
                "input rate (Hz)": f"{self._inputs.rate(now):.2f}",
                "output rate (Hz)": f"{self._outputs.rate(now):.2f}",
                "latency mean (ms)": f"{self._latency_ms.mean():.1f}",
                "latency max (ms)": f"{self._latency_ms.max():.1f}",
                "inference mean (ms)": f"{self._infer_ms.mean():.1f}",
                "frames in": str(self.frames_in),
                "frames out": str(self.frames_out),
                "frames dropped": str(self.frames_dropped),
                "frames rejected": str(self.frames_rejected),
                "last problem": self.last_problem,
            }
            recent_problem = now - self._last_problem_time < WARN_HOLD_S
        if recent_problem:
            level, message = DiagnosticStatus.WARN, f"input rejected: {self.last_problem}"
        elif self.paused:
            level, message = DiagnosticStatus.WARN, "paused (enable = false)"
        else:
            level, message = DiagnosticStatus.OK, "running"
        return DiagnosticStatus(
            level=level,
            name=self.name,
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
