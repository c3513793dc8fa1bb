"""Mono perception node (+ optional rviz).

    ros2 launch mtl_perception mono.launch.py namespace:=front \
        image:=/camera/image_rect camera_info:=/camera/camera_info

The node is started through `mtl-perception run mono`, the same entry point as without launch,
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
MODE = "mono"
# launch argument -> (default, description)
ARGUMENTS = {
    "namespace": ("", "namespace of the node and its relative topics"),
    "params_file": (str(SHARE / "config" / f"{MODE}.yaml"), "ROS 2 parameter file"),
    "model_file_path": ("", "exported model (.onnx); empty = the parameter file's value"),
    "backend": ("", "auto | tensorrt | onnxruntime | torch; empty = the parameter file's value"),
    "image": ("image_rect", "rectified image topic"),
    "camera_info": ("camera_info", "camera_info topic"),
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
        remappings=[("image_rect", value["image"]), ("camera_info", value["camera_info"])],
        output="screen",
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        namespace=value["namespace"],
        arguments=["-d", str(SHARE / "config" / "mtl_perception.rviz")],
        remappings=[("left/image_rect", value["image"])],
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
