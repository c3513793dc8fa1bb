"""A procedural curving road: centreline by integrating a smooth random curvature profile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLE_SPACING = 0.5  # metres between centreline samples


@dataclass(frozen=True)
class Road:
    """Centreline samples (x, y, heading) at arc lengths ``s`` plus the cross-section widths.

    Two lanes, right-hand traffic: the ego lane centre is at lateral offset ``-lane_width / 2``
    (lateral offsets are positive to the left of the driving direction).
    """

    s: np.ndarray
    xy: np.ndarray  # (N, 2)
    heading: np.ndarray  # (N,)
    lane_width: float
    sidewalk_width: float

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def normal(self) -> np.ndarray:
        """(N, 2) unit vectors pointing left of the driving direction."""
        return np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=1)

    def point(self, s: float, lateral: float = 0.0) -> tuple[np.ndarray, float]:
        """World (x, y) and heading at arc length ``s`` and ``lateral`` offset (left positive)."""
        s = float(np.clip(s, self.s[0], self.s[-1]))
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        heading = float(np.interp(s, self.s, np.unwrap(self.heading)))
        return np.array([x - lateral * math.sin(heading), y + lateral * math.cos(heading)]), heading

    def project(self, xy: np.ndarray, s_guess: float, window: float = 10.0) -> tuple[float, float]:
        """Arc length and lateral offset of world point ``xy`` near ``s_guess``."""
        lo = np.searchsorted(self.s, s_guess - window)
        hi = np.searchsorted(self.s, s_guess + window)
        idx = lo + int(np.argmin(np.sum((self.xy[lo:hi] - xy) ** 2, axis=1)))
        delta = xy - self.xy[idx]
        tangent = np.array([math.cos(self.heading[idx]), math.sin(self.heading[idx])])
        along = float(delta @ tangent)
        lateral = float(delta @ np.array([-tangent[1], tangent[0]]))
        return float(self.s[idx]) + along, lateral


def random_road(
    rng: np.random.Generator, length: float, start: float = -30.0, max_curvature: float = 0.02
) -> Road:
    """A road from arc length ``start`` to ``length``: straight near the origin, then gentle curves.

    Curvature is a sum of a few random sinusoids along s (radius >= 1 / ``max_curvature`` metres),
    faded in so the ego starts on a straight at the origin heading along +x.
    """
    s = np.arange(start, length + SAMPLE_SPACING, SAMPLE_SPACING)
    curvature = np.zeros_like(s)
    for _ in range(3):
        wavelength = rng.uniform(60.0, 250.0)
        curvature += rng.uniform(-1.0, 1.0) * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi))
    curvature *= max_curvature / max(1.0, float(np.max(np.abs(curvature))))
    curvature *= np.clip(s / 20.0, 0.0, 1.0)  # straight before s = 0, ramping in over 20 m
    heading = np.cumsum(curvature) * SAMPLE_SPACING
    heading -= np.interp(0.0, s, heading)
    xy = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * SAMPLE_SPACING, axis=0)
    xy -= np.array([np.interp(0.0, s, xy[:, 0]), np.interp(0.0, s, xy[:, 1])])
    return Road(
        s=s,
        xy=xy,
        heading=heading,
        lane_width=float(rng.uniform(3.0, 3.8)),
        sidewalk_width=float(rng.uniform(2.0, 3.5)),
    )
