"""An executor spun on a background thread that stops cleanly.

The thread calls ``spin_once`` until told to stop and is joined before the executor is shut down,
so no wait is ever in flight while the executor's guard condition, the nodes or the context are
being destroyed. (Shutting an executor down while ``executor.spin()`` runs on another thread was
seen to leave that thread spinning with the GIL held, starving the thread that shut it down.)
"""

from __future__ import annotations

import threading
from typing import Any

SPIN_PERIOD_S = 0.05  # how long one spin_once waits for work; bounds the time stop() takes


class BackgroundSpinner:
    """``start()`` spins ``executor`` on a daemon thread; ``stop()`` joins it, then shuts it down."""

    def __init__(self, executor: Any, name: str = "ros_spin") -> None:
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)

    def start(self) -> BackgroundSpinner:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop and join the thread (if it was started), then shut the executor down."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        self.executor.shutdown(timeout_sec=timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=SPIN_PERIOD_S)
