"""Stereo perception node (+ optional rviz).

    ros2 launch mtl_perception stereo.launch.py namespace:=front \
        left_image:=/stereo/left/image_rect right_image:=/stereo/right/image_rect \
        left_camera_info:=/stereo/left/camera_info right_camera_info:=/stereo/right/camera_info

The node is started through `mtl-perception run stereo`, the same entry point as without launch,
with the same parameter file; launch arguments that are left empty keep the file's values.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = Path(get_package_share_directory("mtl_perception"))
MODE = "stereo"
# launch argument -> (default, description)
ARGUMENTS = {
    "namespace": ("", "namespace of the node and its relative topics"),
    "params_file": (str(SHARE / "config" / f"{MODE}.yaml"), "ROS 2 parameter file"),
    "model_file_path": ("", "exported model (.onnx); empty = the parameter file's value"),
    "backend": ("", "auto | tensorrt | onnxruntime | torch; empty = the parameter file's value"),
    "left_image": ("left/image_rect", "rectified left image topic"),
    "right_image": ("right/image_rect", "rectified right image topic"),
    "left_camera_info": ("left/camera_info", "left camera_info topic"),
    "right_camera_info": ("right/camera_info", "right camera_info topic"),
    "use_rviz": ("false", "start rviz2 with the package's display config"),
}


def _nodes(context: LaunchContext) -> list[Node]:
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {name: value[name] for name in ("model_file_path", "backend") if value[name]}
    perception = Node(
        package="mtl_perception",
        executable="mtl-perception",
        name="mtl_perception",
        namespace=value["namespace"],
        arguments=["run", MODE, "--params-file", value["params_file"]],
        parameters=[overrides] if overrides else [],
        remappings=[
            ("left/image_rect", value["left_image"]),
            ("right/image_rect", value["right_image"]),
            ("left/camera_info", value["left_camera_info"]),
            ("right/camera_info", value["right_camera_info"]),
        ],
        output="screen",
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        namespace=value["namespace"],
        arguments=["-d", str(SHARE / "config" / "mtl_perception.rviz")],
        remappings=[("left/image_rect", value["left_image"])],
        condition=IfCondition(value["use_rviz"]),
        output="screen",
    )
    return [perception, rviz]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments, the perception node and (optionally) rviz2."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
