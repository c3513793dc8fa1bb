"""Steering outputs: the JointState contract and an rviz arrow Marker for it."""

from __future__ import annotations

import math

from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker

STEERING_JOINT = "steering"


def steering_message(header: Header, angle_rad: float) -> JointState:
    """The `steering` topic contract: JointState, name ['steering'], position [front-wheel angle].

    The angle is in radians, positive = steer left (REP-103, counter-clockwise about z up), the
    same sign as the training labels. Velocity and effort are left empty.
    """
    return JointState(header=header, name=[STEERING_JOINT], position=[float(angle_rad)])


def steering_marker(header: Header, angle_rad: float, length_m: float = 2.0) -> Marker:
    """An arrow from the camera origin showing the steering direction.

    The header's frame is an optical frame (z forward, x right, y down, REP-103), so a left turn
    (positive angle) points towards -x.
    """
    tip = Point(x=-length_m * math.sin(angle_rad), y=0.0, z=length_m * math.cos(angle_rad))
    return Marker(
        header=header,
        ns="steering",
        id=0,
        type=Marker.ARROW,
        action=Marker.ADD,
        points=[Point(), tip],
        scale=Vector3(x=0.08, y=0.16, z=0.2),  # shaft diameter, head diameter, head length (m)
        color=ColorRGBA(r=1.0, g=0.6, b=0.0, a=1.0),
    )
