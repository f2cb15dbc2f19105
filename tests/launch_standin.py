"""STAND-IN for `ros2 launch` (launch / launch_ros cannot be installed here).

This is not launch_ros. It provides just enough of the ``launch`` and
``launch_ros`` API surface that ``launch/clifer.launch.py`` uses to import the
real file, call ``generate_launch_description()``, resolve its arguments and
substitutions, and produce (a) the exact argv ``ros2 launch`` would start the
node with and (b) the lifecycle transitions its event handlers would request.
Tests then start that argv in a real process and perform those transitions
over real lifecycle services. Anything the launch file uses beyond this
surface fails loudly here (AttributeError / ImportError), so the two stay in
step.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name


class PathJoinSubstitution:
    def __init__(self, parts):
        self.parts = parts


class FindPackageShare:
    def __init__(self, package):
        self.package = package


class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=""):
        self.name, self.default_value, self.description = name, default_value, description


class IfCondition:
    def __init__(self, predicate):
        self.predicate = predicate


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


class EmitEvent:
    def __init__(self, event, condition=None):
        self.event, self.condition = event, condition


class RegisterEventHandler:
    def __init__(self, event_handler, condition=None):
        self.event_handler, self.condition = event_handler, condition


class ChangeState:
    def __init__(self, lifecycle_node_matcher, transition_id):
        self.lifecycle_node_matcher, self.transition_id = lifecycle_node_matcher, transition_id


class OnStateTransition:
    def __init__(self, target_lifecycle_node, goal_state, entities):
        self.target_lifecycle_node, self.goal_state, self.entities = target_lifecycle_node, goal_state, entities


def matches_action(action):
    return action


class LifecycleNode:
    def __init__(self, package, executable, name, namespace, parameters=(), remappings=(), output="log", **extra):
        if extra:
            raise TypeError(f"stand-in LifecycleNode does not model arguments {sorted(extra)}")
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters, self.remappings, self.output = list(parameters), list(remappings), output


_MODULES = {
    "launch": {"LaunchDescription": LaunchDescription},
    "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "EmitEvent": EmitEvent,
                       "RegisterEventHandler": RegisterEventHandler},
    "launch.conditions": {"IfCondition": IfCondition},
    "launch.events": {"matches_action": matches_action},
    "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration, "PathJoinSubstitution": PathJoinSubstitution},
    "launch_ros": {},
    "launch_ros.actions": {"LifecycleNode": LifecycleNode},
    "launch_ros.event_handlers": {"OnStateTransition": OnStateTransition},
    "launch_ros.events": {},
    "launch_ros.events.lifecycle": {"ChangeState": ChangeState},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


@contextmanager
def _standin_modules():
    saved = {name: sys.modules.get(name) for name in _MODULES}
    try:
        for name, attributes in _MODULES.items():
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@dataclass
class LaunchPlan:
    """What `ros2 launch` would do: start ``argv``, then request ``transitions`` (lifecycle_msgs ids) in order."""

    argv: list[str]
    node_name: str
    namespace: str
    transitions: list[int] = field(default_factory=list)
    arguments: dict[str, str] = field(default_factory=dict)


def evaluate(launch_file: str | os.PathLike, share_dir: str | os.PathLike, executable_dir: str | os.PathLike,
             **launch_arguments: str) -> LaunchPlan:
    """Evaluate ``launch_file`` with ``launch_arguments`` (as on the command line)."""
    with _standin_modules():
        spec = importlib.util.spec_from_file_location("clifer_launch_under_test", launch_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()

    def resolve(value) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, LaunchConfiguration):
            return arguments[value.name]
        if isinstance(value, FindPackageShare):
            return str(share_dir)
        if isinstance(value, PathJoinSubstitution):
            return str(Path(*[resolve(part) for part in value.parts]))
        if isinstance(value, list):
            return "".join(resolve(part) for part in value)
        raise TypeError(f"stand-in cannot resolve {value!r}")

    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    unknown = set(launch_arguments) - {d.name for d in declared}
    if unknown:
        raise ValueError(f"launch file declares no argument(s) {sorted(unknown)}")
    arguments: dict[str, str] = {}
    for declaration in declared:
        value = launch_arguments.get(declaration.name, declaration.default_value)
        arguments[declaration.name] = resolve(value)

    def enabled(entity) -> bool:
        condition = getattr(entity, "condition", None)
        return condition is None or resolve(condition.predicate).lower() in ("true", "1")

    nodes = [e for e in description.entities if isinstance(e, LifecycleNode)]
    if len(nodes) != 1:
        raise ValueError(f"expected one LifecycleNode, found {len(nodes)}")
    node = nodes[0]
    namespace = resolve(node.namespace)
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else "/"
    argv = [str(Path(executable_dir) / node.executable), "--ros-args", "-r", f"__node:={resolve(node.name)}",
            "-r", f"__ns:={namespace}"]
    for parameters in node.parameters:
        if isinstance(parameters, dict):
            for name, value in parameters.items():
                argv += ["-p", f"{name}:={resolve(value)}"]
        else:
            argv += ["--params-file", resolve(parameters)]
    for source, target in node.remappings:
        argv += ["-r", f"{resolve(source)}:={resolve(target)}"]

    transitions = [e.event.transition_id for e in description.entities
                   if isinstance(e, EmitEvent) and enabled(e) and e.event.lifecycle_node_matcher is node]
    for handler in (e for e in description.entities if isinstance(e, RegisterEventHandler) and enabled(e)):
        on_transition = handler.event_handler
        if on_transition.target_lifecycle_node is node and on_transition.goal_state == "inactive":
            transitions += [e.event.transition_id for e in on_transition.entities if isinstance(e, EmitEvent)]
    return LaunchPlan(argv, resolve(node.name), namespace, transitions, arguments)
