"""Ego motion: kinematic bicycle model steered by pure pursuit toward a wandering lane target.

The lateral target is the lane centre plus an Ornstein-Uhlenbeck offset, so the car drifts
within its lane and recovers, as a human driver does; the steering label is the commanded
front-wheel angle (radians, positive = left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mtl_perception.sim.road import Road

WHEELBASE = 2.7  # metres
MAX_STEER = 0.5  # radians
SUBSTEPS = 10  # integration steps per frame


@dataclass(frozen=True)
class EgoState:
    xy: np.ndarray
    yaw: float
    steering: float  # front wheel angle, radians, positive = left
    s: float  # arc length along the road


def pure_pursuit(road: Road, xy: np.ndarray, yaw: float, s: float, lateral: float, speed: float) -> float:
    """Front-wheel angle (rad, + = left) toward the point ``lateral`` metres off the road centreline,
    a look-ahead of max(5 m, 0.9 s x speed) down the road from arc length ``s``."""
    target, _ = road.point(s + max(5.0, 0.9 * speed), lateral)
    delta = target - xy
    alpha = math.atan2(delta[1], delta[0]) - yaw
    distance = float(np.hypot(*delta))
    return float(np.clip(math.atan2(2 * WHEELBASE * math.sin(alpha), distance), -MAX_STEER, MAX_STEER))


def expert_steering(road: Road, states: list[EgoState], speed: float) -> np.ndarray:
    """Per state, the command of the driver without its wander (pure pursuit toward the lane centre):
    the label a lane keeper should learn. The wander moves the car off the centre (so the frames show
    recoveries) but its target is invisible in the images; this label depends only on the car's pose
    relative to the road, which they show."""
    lane_centre = -road.lane_width / 2
    return np.array(
        [pure_pursuit(road, st.xy, st.yaw, st.s, lane_centre, speed) for st in states], np.float32
    )


def drive(road: Road, rng: np.random.Generator, frames: int, rate_hz: float, speed: float) -> list[EgoState]:
    """Simulate ``frames`` ego states at ``rate_hz`` driving the right lane at about ``speed`` m/s."""
    dt = 1.0 / rate_hz / SUBSTEPS
    lane_centre = -road.lane_width / 2
    xy, yaw = road.point(0.0, lane_centre)
    yaw += rng.normal(0.0, 0.03)  # start slightly misaligned, so recovery shows from frame 0
    s = 0.0
    offset = rng.normal(0.0, 0.2)
    theta, sigma = 0.4, 0.35  # OU mean reversion (1/s) and diffusion (m/sqrt(s))
    steering = 0.0
    states: list[EgoState] = []
    for _ in range(frames):
        states.append(EgoState(xy=xy.copy(), yaw=yaw, steering=steering, s=s))
        for _ in range(SUBSTEPS):
            offset += -theta * offset * dt + sigma * math.sqrt(dt) * rng.normal()
            offset = float(np.clip(offset, -0.8, 0.8))
            steering = pure_pursuit(road, xy, yaw, s, lane_centre + offset, speed)
            xy = xy + speed * dt * np.array([math.cos(yaw), math.sin(yaw)])
            yaw += speed * dt * math.tan(steering) / WHEELBASE
            s, _ = road.project(xy, s)
    return states
