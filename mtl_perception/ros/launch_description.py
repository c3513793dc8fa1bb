"""The launch description behind launch/stereo.launch.py and launch/mono.launch.py.

Imported only by those launch files (and by test/test_launch.py, which stands in for the ROS modules):
``launch``, ``launch_ros`` and ``ament_index_python`` come with a ROS 2 install and cannot be
pip-installed. The node is started through `mtl-perception run <mode>`, the same entry point as without
launch, with the same parameter file; launch arguments that are left empty keep the file's values.
"""

import shutil
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition, InvalidConditionExpressionError
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mtl_perception.errors import UserError

PACKAGE = "mtl_perception"
RVIZ_PACKAGE = "rviz2"
# mode -> input topics the node subscribes to, as (launch argument, node's topic name, description);
# the argument's default is the node's own (relative) name, so leaving it unset remaps nothing.
INPUT_TOPICS = {
    "stereo": (
        ("left_image", "left/image_rect", "rectified left image topic"),
        ("right_image", "right/image_rect", "rectified right image topic"),
        ("left_camera_info", "left/camera_info", "left camera_info topic"),
        ("right_camera_info", "right/camera_info", "right camera_info topic"),
    ),
    "mono": (
        ("image", "image_rect", "rectified image topic"),
        ("camera_info", "camera_info", "camera_info topic"),
    ),
}
# The rviz config shows this topic; it is remapped to the mode's (first, left) image.
RVIZ_IMAGE_TOPIC = "left/image_rect"
# With input_transport: compressed the node subscribes to <image topic>/compressed (image_transport's
# name); ROS 2 remaps exact names only, so each image remap is repeated for that name.
COMPRESSED_SUFFIX = "/compressed"


def input_remappings(mode: str, value: dict[str, str]) -> list[tuple[str, str]]:
    """(node topic, launch argument value) for every input, plus the compressed name of each image."""
    remaps = []
    for argument, topic, _ in INPUT_TOPICS[mode]:
        remaps.append((topic, value[argument]))
        if topic.endswith("image_rect"):
            remaps.append((topic + COMPRESSED_SUFFIX, value[argument] + COMPRESSED_SUFFIX))
    return remaps


def launch_arguments(mode: str, share: Path) -> dict[str, tuple[str, str]]:
    """Launch argument -> (default, description) for ``mode`` ("stereo" or "mono")."""
    if mode not in INPUT_TOPICS:
        raise ValueError(f"mode must be one of {sorted(INPUT_TOPICS)}, got {mode!r}")
    return {
        "namespace": ("", "namespace of the node and its relative topics"),
        "params_file": (str(share / "config" / f"{mode}.yaml"), "ROS 2 parameter file"),
        "model_file_path": ("", "exported model (.onnx); empty = the parameter file's value"),
        "backend": ("", "auto | tensorrt | onnxruntime | torch; empty = the parameter file's value"),
        **{argument: (topic, description) for argument, topic, description in INPUT_TOPICS[mode]},
        "use_rviz": ("false", "start rviz2 with the package's display config"),
    }


def rviz_missing_reason() -> str | None:
    """Why launch_ros could not start rviz2 here, or None when it can.

    The same lookup as launch_ros's ExecutableInPackage (ament index prefix, then lib/rviz2/rviz2), so
    a yes here means the Node action will find the executable.
    """
    try:
        prefix = Path(get_package_prefix(RVIZ_PACKAGE))
    except PackageNotFoundError:
        return f"package '{RVIZ_PACKAGE}' is not in the ament index"
    libexec = prefix / "lib" / RVIZ_PACKAGE
    if shutil.which(RVIZ_PACKAGE, path=str(libexec)) is None:
        return (
            f"package '{RVIZ_PACKAGE}' found at {prefix}, but {libexec / RVIZ_PACKAGE} is not an executable"
        )
    return None


def perception_launch_description(mode: str) -> LaunchDescription:
    """Launch arguments, the ``mode`` perception node and (optionally) rviz2."""
    share = Path(get_package_share_directory(PACKAGE))
    arguments = launch_arguments(mode, share)

    def nodes(context: LaunchContext) -> list[Node]:
        value = {name: LaunchConfiguration(name).perform(context) for name in arguments}
        # Every check comes before the first Node exists: an action that fails after the perception
        # process started would end the launch and leave that process running without its parent.
        try:  # launch's own rule (true/1, false/0, any case), with a message that names the argument
            use_rviz = IfCondition(value["use_rviz"]).evaluate(context)
        except InvalidConditionExpressionError as exc:
            raise UserError(f"use_rviz must be true or false (or 1 / 0), got {value['use_rviz']!r}") from exc
        if use_rviz and (reason := rviz_missing_reason()) is not None:
            raise UserError(
                f"use_rviz:=true but rviz2 cannot be started ({reason}); install rviz2 "
                f"(apt install ros-$ROS_DISTRO-rviz2) or launch with use_rviz:=false. Nothing was started."
            )
        overrides = {name: value[name] for name in ("model_file_path", "backend") if value[name]}
        started = [
            Node(
                package=PACKAGE,
                executable="mtl-perception",
                name=PACKAGE,
                namespace=value["namespace"],
                arguments=["run", mode, "--params-file", value["params_file"]],
                parameters=[overrides] if overrides else [],
                remappings=input_remappings(mode, value),
                output="screen",
            )
        ]
        if use_rviz:
            first_image = INPUT_TOPICS[mode][0][0]
            started.append(
                Node(
                    package=RVIZ_PACKAGE,
                    executable=RVIZ_PACKAGE,
                    namespace=value["namespace"],
                    arguments=["-d", str(share / "config" / "mtl_perception.rviz")],
                    remappings=[(RVIZ_IMAGE_TOPIC, value[first_image])],
                    output="screen",
                )
            )
        return started

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in arguments.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
