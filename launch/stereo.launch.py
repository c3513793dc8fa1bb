"""Stereo perception node (+ optional rviz).

    ros2 launch mtl_perception stereo.launch.py namespace:=front \
        left_image:=/stereo/left/image_rect right_image:=/stereo/right/image_rect \
        left_camera_info:=/stereo/left/camera_info right_camera_info:=/stereo/right/camera_info

Arguments and nodes: mtl_perception/ros/launch_description.py (shared with mono.launch.py).
"""

from launch import LaunchDescription

from mtl_perception.ros.launch_description import perception_launch_description


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the stereo perception node and (optionally) rviz2."""
    return perception_launch_description("stereo")
