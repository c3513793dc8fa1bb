"""Mono perception node (+ optional rviz).

    ros2 launch mtl_perception mono.launch.py namespace:=front \
        image:=/camera/image_rect camera_info:=/camera/camera_info

Arguments and nodes: mtl_perception/ros/launch_description.py (shared with stereo.launch.py).
"""

from launch import LaunchDescription

from mtl_perception.ros.launch_description import perception_launch_description


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the mono perception node and (optionally) rviz2."""
    return perception_launch_description("mono")
