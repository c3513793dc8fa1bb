"""Known-answer tests of launch/stereo.launch.py, launch/mono.launch.py and their shared builder.

ROS 2's ``launch``, ``launch_ros`` and ``ament_index_python`` cannot be pip-installed (PyPI's ``launch``
is another project), so small stand-ins with the real classes' signatures go into ``sys.modules``:
actions record what they were built with, substitutions and conditions resolve against the launch
arguments the way ``ros2 launch`` does (``IfCondition`` with launch's true/1/false/0 rule), and the
ament index answers from a dict. The launch files themselves are loaded from launch/ as ``ros2 launch``
loads them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mtl_perception import cli
from mtl_perception.commands import run as run_command
from mtl_perception.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BUILDER = "mtl_perception.ros.launch_description"
STEREO_TOPICS = {
    "left_image": "/stereo/left/image_rect",
    "right_image": "/stereo/right/image_rect",
    "left_camera_info": "/stereo/left/camera_info",
    "right_camera_info": "/stereo/right/camera_info",
}
MONO_TOPICS = {"image": "/camera/image_rect", "camera_info": "/camera/camera_info"}


# --- stand-ins for launch, launch_ros and ament_index_python ------------------------------------------


class LaunchContext:
    """launch.LaunchContext, reduced to its launch configurations (argument name -> value)."""

    def __init__(self, launch_configurations: dict[str, str]) -> None:
        self.launch_configurations = dict(launch_configurations)


class Substitution:
    """launch.Substitution: text computed from the context at launch time."""

    def perform(self, context: LaunchContext) -> str:
        raise NotImplementedError


class LaunchConfigurationError(Exception):
    """launch's error for an undeclared launch configuration without a default."""


class LaunchConfiguration(Substitution):
    """launch.substitutions.LaunchConfiguration."""

    def __init__(self, variable_name: str, *, default: str | None = None) -> None:
        self.variable_name = variable_name
        self.default = default

    def perform(self, context: LaunchContext) -> str:
        if self.variable_name in context.launch_configurations:
            return context.launch_configurations[self.variable_name]
        if self.default is not None:
            return self.default
        raise LaunchConfigurationError(f"launch configuration '{self.variable_name}' does not exist")


def perform_substitutions(context: LaunchContext, value: str | Substitution | Iterable[Any]) -> str:
    """launch.utilities.perform_substitutions over launch's SomeSubstitutionsType."""
    if isinstance(value, str):
        return value
    if isinstance(value, Substitution):
        return value.perform(context)
    return "".join(perform_substitutions(context, part) for part in value)


class InvalidConditionExpressionError(Exception):
    """launch.conditions.InvalidConditionExpressionError."""


class IfCondition:
    """launch.conditions.IfCondition: true/1 and false/0 (any case, stripped), anything else an error."""

    def __init__(self, predicate_expression: str | Substitution | Iterable[Any]) -> None:
        self.predicate_expression = predicate_expression

    def evaluate(self, context: LaunchContext) -> bool:
        text = perform_substitutions(context, self.predicate_expression).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise InvalidConditionExpressionError(f"invalid condition expression {text!r}")


class DeclareLaunchArgument:
    """launch.actions.DeclareLaunchArgument."""

    def __init__(
        self,
        name: str,
        *,
        default_value: str | None = None,
        description: str | None = None,
        choices: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.name = name
        self.default_value = default_value
        self.description = description
        self.choices = choices


class OpaqueFunction:
    """launch.actions.OpaqueFunction: launch calls ``function(context, *args, **kwargs)``."""

    def __init__(
        self,
        *,
        function: Callable[..., list[Any] | None],
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **left_over_kwargs: Any,
    ) -> None:
        self.function = function
        self.args = list(args or [])
        self.kwargs = dict(kwargs or {})

    def execute(self, context: LaunchContext) -> list[Any]:
        return list(self.function(context, *self.args, **self.kwargs) or [])


class LaunchDescription:
    """launch.LaunchDescription."""

    def __init__(
        self, initial_entities: Iterable[Any] | None = None, *, deprecated_reason: str | None = None
    ) -> None:
        self.entities = list(initial_entities or [])


class Node:
    """launch_ros.actions.Node; every construction is recorded, returned to launch or not."""

    created: ClassVar[list[Node]] = []

    def __init__(
        self,
        *,
        executable: str,
        package: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        exec_name: str | None = None,
        parameters: list[Any] | None = None,
        remappings: list[tuple[str, str]] | None = None,
        ros_arguments: list[str] | None = None,
        arguments: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.executable = executable
        self.package = package
        self.name = name
        self.namespace = namespace
        self.parameters = parameters
        self.remappings = remappings
        self.arguments = arguments
        self.kwargs = kwargs
        Node.created.append(self)


class PackageNotFoundError(KeyError):
    """ament_index_python.packages.PackageNotFoundError."""


class AmentIndex:
    """The ament index of the machine under test: package -> install prefix, and its share lookups."""

    def __init__(self) -> None:
        self.prefixes: dict[str, Path] = {}
        # This checkout stands in for the installed share/mtl_perception (config/ lies in both).
        self.shares: dict[str, Path] = {"mtl_perception": ROOT}

    def get_package_prefix(self, package_name: str) -> str:
        if package_name not in self.prefixes:
            raise PackageNotFoundError(f"package '{package_name}' not found")
        return str(self.prefixes[package_name])

    def get_package_share_directory(self, package_name: str, print_warning: bool = True) -> str:
        if package_name not in self.shares:
            raise PackageNotFoundError(f"package '{package_name}' not found")
        return str(self.shares[package_name])


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


# --- the harness: what `ros2 launch mtl_perception <mode>.launch.py name:=value ...` would build -------


class Launched:
    """Declared arguments and the nodes the description starts for one set of launch arguments."""

    def __init__(self, arguments: dict[str, DeclareLaunchArgument], nodes: list[Node]) -> None:
        self.arguments = arguments
        self.nodes = nodes

    def node(self, package: str) -> Node:
        (node,) = (n for n in self.nodes if n.package == package)
        return node


class Ros:
    """The stand-in ROS install of one test: an ament index and `ros2 launch`."""

    def __init__(self, tmp_path: Path) -> None:
        self.index = AmentIndex()
        self.tmp_path = tmp_path

    def install_rviz(self, *, executable: bool = True) -> None:
        """Index rviz2 at a prefix of its own, with lib/rviz2/rviz2 (or without it)."""
        prefix = self.tmp_path / "rviz_prefix"
        libexec = prefix / "lib" / "rviz2"
        libexec.mkdir(parents=True)
        if executable:
            (libexec / "rviz2").write_text("#!/bin/sh\n")
            (libexec / "rviz2").chmod(0o755)
        self.index.prefixes["rviz2"] = prefix

    def launch(self, mode: str, **launch_arguments: str) -> Launched:
        path = ROOT / "launch" / f"{mode}.launch.py"
        spec = importlib.util.spec_from_file_location(f"{mode}_launch", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        assert isinstance(description, LaunchDescription)
        declared = {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}
        unknown = set(launch_arguments) - set(declared)
        assert not unknown, f"not declared by {path.name}: {sorted(unknown)}"
        defaults = {name: argument.default_value for name, argument in declared.items()}
        context = LaunchContext({**defaults, **launch_arguments})
        nodes: list[Node] = []
        for entity in description.entities:
            if isinstance(entity, OpaqueFunction):
                returned = entity.execute(context)
                assert all(isinstance(action, Node) for action in returned), returned
                nodes.extend(returned)
        return Launched(declared, nodes)


@pytest.fixture
def ros(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Ros:
    stand_in = Ros(tmp_path)
    modules = {
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module(
            "ament_index_python.packages",
            PackageNotFoundError=PackageNotFoundError,
            get_package_prefix=stand_in.index.get_package_prefix,
            get_package_share_directory=stand_in.index.get_package_share_directory,
        ),
        "launch": _module("launch", LaunchContext=LaunchContext, LaunchDescription=LaunchDescription),
        "launch.actions": _module(
            "launch.actions", DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction
        ),
        "launch.conditions": _module(
            "launch.conditions",
            IfCondition=IfCondition,
            InvalidConditionExpressionError=InvalidConditionExpressionError,
        ),
        "launch.substitutions": _module("launch.substitutions", LaunchConfiguration=LaunchConfiguration),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=Node),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    # The builder binds launch's names at import: import it afresh against the stand-ins, drop it after.
    monkeypatch.delitem(sys.modules, BUILDER, raising=False)
    monkeypatch.setattr(Node, "created", [])
    return stand_in


# --- launch arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "topics"),
    [
        (
            "stereo",
            {
                "left_image": "left/image_rect",
                "right_image": "right/image_rect",
                "left_camera_info": "left/camera_info",
                "right_camera_info": "right/camera_info",
            },
        ),
        ("mono", {"image": "image_rect", "camera_info": "camera_info"}),
    ],
)
def test_arguments_default_to_the_params_file_and_remap_nothing(
    ros: Ros, mode: str, topics: dict[str, str]
) -> None:
    launched = ros.launch(mode)
    defaults = {name: argument.default_value for name, argument in launched.arguments.items()}
    assert defaults == {
        "namespace": "",
        "params_file": str(ROOT / "config" / f"{mode}.yaml"),
        "model_file_path": "",
        "backend": "",
        **topics,
        "use_rviz": "false",
    }
    assert all(argument.description for argument in launched.arguments.values())
    (node,) = launched.nodes
    assert [(a, b) for a, b in node.remappings if not a.endswith("/compressed")] == [
        (topic, topic) for topic in topics.values()
    ]
    assert node.parameters == []


# --- the perception node ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stereo", "mono"])
def test_perception_node_runs_the_packages_entry_point_in_the_namespace(ros: Ros, mode: str) -> None:
    (node,) = ros.launch(mode, namespace="front").nodes
    assert (node.package, node.executable, node.name, node.namespace) == (
        "mtl_perception",
        "mtl-perception",
        "mtl_perception",
        "front",
    )
    assert node.arguments == ["run", mode, "--params-file", str(ROOT / "config" / f"{mode}.yaml")]
    assert node.kwargs["output"] == "screen"


def test_stereo_topic_arguments_remap_each_input_onto_its_own_topic(ros: Ros) -> None:
    (node,) = ros.launch("stereo", **STEREO_TOPICS).nodes
    assert node.remappings == [
        ("left/image_rect", "/stereo/left/image_rect"),
        ("left/image_rect/compressed", "/stereo/left/image_rect/compressed"),
        ("right/image_rect", "/stereo/right/image_rect"),
        ("right/image_rect/compressed", "/stereo/right/image_rect/compressed"),
        ("left/camera_info", "/stereo/left/camera_info"),
        ("right/camera_info", "/stereo/right/camera_info"),
    ]


def test_mono_topic_arguments_remap_each_input_onto_its_own_topic(ros: Ros) -> None:
    (node,) = ros.launch("mono", **MONO_TOPICS).nodes
    assert node.remappings == [
        ("image_rect", "/camera/image_rect"),
        ("image_rect/compressed", "/camera/image_rect/compressed"),
        ("camera_info", "/camera/camera_info"),
    ]


def test_params_file_and_the_non_empty_overrides_reach_the_node(ros: Ros) -> None:
    overrides = {"model_file_path": "/models/m.onnx", "backend": "onnxruntime"}
    (node,) = ros.launch("stereo", params_file="/robot/perception.yaml", **overrides).nodes
    assert node.arguments == ["run", "stereo", "--params-file", "/robot/perception.yaml"]
    assert node.parameters == [overrides]
    # An empty argument keeps the file's value: it is not passed as an empty override.
    (node,) = ros.launch("mono", backend="tensorrt").nodes
    assert node.parameters == [{"backend": "tensorrt"}]


def test_node_arguments_reach_rclpy_through_the_run_command(
    ros: Ros, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = ros.launch("mono", params_file="/robot/mono.yaml").nodes
    parsed: list[argparse.Namespace] = []
    monkeypatch.setattr(run_command, "run", lambda args: parsed.append(args) or 0)
    # launch_ros appends its --ros-args section (node name, namespace, remaps, parameter files).
    ros_section = ["-r", "__node:=mtl_perception", "-r", "image_rect:=/camera/image_rect"]
    assert cli.main([*node.arguments, "--ros-args", *ros_section]) == 0
    (args,) = parsed
    assert run_command.ros_arguments(args.mode, args.params_file, args.ros_args) == [
        "mtl-perception",
        "--ros-args",
        "--params-file",
        "/robot/mono.yaml",
        "-p",
        "mode:=mono",
        *ros_section,
    ]


# --- rviz2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("use_rviz", "started"), [("true", True), ("True", True), ("1", True), ("false", False), ("0", False)]
)
def test_rviz_starts_only_with_use_rviz_true(ros: Ros, use_rviz: str, started: bool) -> None:
    ros.install_rviz()
    launched = ros.launch("stereo", namespace="front", use_rviz=use_rviz, **STEREO_TOPICS)
    assert [node.package for node in launched.nodes] == ["mtl_perception", *(["rviz2"] if started else [])]
    assert [node.package for node in Node.created] == [node.package for node in launched.nodes]


@pytest.mark.parametrize(("mode", "topics"), [("stereo", STEREO_TOPICS), ("mono", MONO_TOPICS)])
def test_rviz_shows_the_namespaced_outputs_and_the_first_input_image(
    ros: Ros, mode: str, topics: dict[str, str]
) -> None:
    ros.install_rviz()
    rviz = ros.launch(mode, namespace="front", use_rviz="true", **topics).node("rviz2")
    assert (rviz.executable, rviz.namespace) == ("rviz2", "front")
    assert rviz.arguments == ["-d", str(ROOT / "config" / "mtl_perception.rviz")]
    first_image = "/stereo/left/image_rect" if mode == "stereo" else "/camera/image_rect"
    assert rviz.remappings == [("left/image_rect", first_image)]


def test_a_use_rviz_that_is_not_a_boolean_is_refused_before_any_node(ros: Ros) -> None:
    ros.install_rviz()
    with pytest.raises(UserError, match=r"use_rviz must be true or false .* got 'yes'"):
        ros.launch("stereo", use_rviz="yes")
    assert Node.created == []


@pytest.mark.parametrize("installed", ["not indexed", "indexed without executable"])
def test_missing_rviz_is_a_clear_error_before_any_node(ros: Ros, installed: str) -> None:
    if installed == "indexed without executable":
        ros.install_rviz(executable=False)
    with pytest.raises(UserError) as refused:
        ros.launch("stereo", use_rviz="true", **STEREO_TOPICS)
    message = str(refused.value)
    assert "rviz2" in message
    assert "use_rviz:=false" in message
    if installed == "indexed without executable":
        assert str(ros.tmp_path / "rviz_prefix" / "lib" / "rviz2" / "rviz2") in message
    else:
        assert "not in the ament index" in message
    # No Node was even built, so launch has no process to leave behind.
    assert Node.created == []


def test_missing_rviz_does_not_matter_without_use_rviz(ros: Ros) -> None:
    launched = ros.launch("mono", **MONO_TOPICS)
    assert [node.package for node in launched.nodes] == ["mtl_perception"]
