"""Stereo pair matching by header stamp, exact or approximate, with bounded queues.

message_filters is not installable outside a ROS distro (no PyPI wheel), so the node carries its
own matcher. It is simpler than message_filters' ApproximateTime on purpose: the node only ever
wants the newest pair, so a match discards everything older on both sides.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

LEFT = 0
RIGHT = 1


@dataclass(frozen=True)
class StampedPair(Generic[T]):
    """A matched left/right pair and the stamps they were matched on (nanoseconds)."""

    left: T
    right: T
    left_stamp_ns: int
    right_stamp_ns: int


class StereoSynchronizer(Generic[T]):
    """Match left and right messages whose stamps are equal (or within ``tolerance_s``).

    Each side keeps at most ``queue_size`` unmatched messages. A message that leaves without a
    partner (pushed out of a full queue, or older than a match) is counted in ``unmatched`` and
    reported to ``on_unmatched``; a matched one is part of exactly one pair (``pairs``). So every
    message pushed is, at any time, in one of: ``2 * pairs``, ``unmatched``, ``pending()``.
    Thread-safe: callbacks may come from several threads.
    """

    def __init__(
        self,
        queue_size: int,
        *,
        approximate: bool = False,
        tolerance_s: float = 0.0,
        on_unmatched: Callable[[int], None] | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._queues: tuple[deque[tuple[int, T]], deque[tuple[int, T]]] = (deque(), deque())
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._on_unmatched = on_unmatched
        self.approximate = approximate
        self.tolerance_s = tolerance_s
        self.pairs = 0
        self.unmatched = 0
        # Per side: has its full queue pushed a message out since the last pair? Both true means
        # messages keep arriving on both sides and none match (see ``mismatch``).
        self._overflowed = [False, False]
        self._last_stamp: list[int | None] = [None, None]

    def configure(self, *, approximate: bool, tolerance_s: float) -> None:
        """Change the matching rule live (parameter updates)."""
        with self._lock:
            self.approximate = approximate
            self.tolerance_s = tolerance_s

    def push_left(self, stamp_ns: int, msg: T) -> StampedPair[T] | None:
        """Add a left message; return the newest pair it completes, if any."""
        return self._push(LEFT, stamp_ns, msg)

    def push_right(self, stamp_ns: int, msg: T) -> StampedPair[T] | None:
        """Add a right message; return the newest pair it completes, if any."""
        return self._push(RIGHT, stamp_ns, msg)

    def pending(self) -> tuple[int, int]:
        """Unmatched messages waiting on each side (left, right)."""
        with self._lock:
            return len(self._queues[LEFT]), len(self._queues[RIGHT])

    def flush(self) -> int:
        """Discard every waiting message as unmatched (pause, shutdown); returns how many."""
        with self._lock:
            count = len(self._queues[LEFT]) + len(self._queues[RIGHT])
            for queue in self._queues:
                queue.clear()
            self._overflowed = [False, False]
            self._count_unmatched(count)
            return count

    def mismatch(self) -> tuple[int, int] | None:
        """(last left stamp, last right stamp) while both sides arrive but never match, else None.

        "Never match" means each side has overflowed its queue since the last pair: more than
        ``queue_size`` messages in a row on both cameras without a partner.
        """
        with self._lock:
            left, right = self._last_stamp
            if all(self._overflowed) and left is not None and right is not None:
                return left, right
            return None

    def _count_unmatched(self, count: int) -> None:
        if count:
            self.unmatched += count
            if self._on_unmatched is not None:
                self._on_unmatched(count)

    def _push(self, side: int, stamp_ns: int, msg: T) -> StampedPair[T] | None:
        with self._lock:
            self._last_stamp[side] = stamp_ns
            other = self._queues[1 - side]
            own = self._queues[side]
            match = self._best_match(other, stamp_ns)
            if match is None:
                own.append((stamp_ns, msg))
                if len(own) > self._queue_size:
                    own.popleft()
                    self._overflowed[side] = True
                    self._count_unmatched(1)
                return None
            # Everything up to and including the match on the other side is now stale, and so is
            # anything on this side not newer than this message.
            matched_stamp, matched_msg = other[match]
            for _ in range(match + 1):
                other.popleft()
            stale = [item for item in own if item[0] <= stamp_ns]
            for item in stale:
                own.remove(item)
            self._count_unmatched(match + len(stale))
            self.pairs += 1
            self._overflowed = [False, False]
            if side == LEFT:
                return StampedPair(msg, matched_msg, stamp_ns, matched_stamp)
            return StampedPair(matched_msg, msg, matched_stamp, stamp_ns)

    def _best_match(self, queue: deque[tuple[int, T]], stamp_ns: int) -> int | None:
        """Index of the closest stamp in ``queue`` within the tolerance (exact: equal), or None."""
        tolerance_ns = round(self.tolerance_s * 1e9) if self.approximate else 0
        best: int | None = None
        best_gap = tolerance_ns + 1
        for index, (other_stamp, _) in enumerate(queue):
            gap = abs(other_stamp - stamp_ns)
            if gap < best_gap:
                best, best_gap = index, gap
        return best
