"""The package as ROS tooling sees it: package.xml, the installed share folder, config, launch file.

The launch-file test uses tests/launch_standin.py, a STAND-IN for `ros2 launch`
(launch_ros cannot be installed here): it evaluates the real launch file into
the argv and lifecycle transitions `ros2 launch` would produce, then the test
starts that argv for real, drives the transitions over real services and
checks the running node (name, namespace, parameters, remapped topics), not
the stand-in's argv.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from catkin_pkg.package import parse_package
from lifecycle_msgs.msg import Transition
from rcl_interfaces.srv import GetParameters

import launch_standin
from clifer.msg import ExpressionEstimateArray
from clifer_ros.parameters import PARAMETERS
from frames import face_frame
from clifer_ros.harness import PARAMETER_RESEND_S, NodeProcess, Probe

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_a_valid_format3_ament_cmake_interface_package():
    package = parse_package(str(ROOT / "package.xml"))
    package.validate()
    assert package.package_format == 3
    assert package.name == "clifer"
    assert package.get_build_type() == "ament_cmake"
    buildtool = {d.name for d in package.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= buildtool
    runtime = {d.name for d in package.exec_depends}
    assert {"rosidl_default_runtime", "rclpy", "lifecycle_msgs", "diagnostic_msgs", "launch_ros"} <= runtime
    assert {"std_msgs", "sensor_msgs"} <= {d.name for d in package.build_depends} & runtime
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]


def test_cmake_declares_every_interface_file():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    interfaces = sorted(p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("msg/*.msg"), *ROOT.glob("srv/*.srv")])
    assert interfaces, "the package has messages"
    for interface in interfaces:
        assert f'"{interface}"' in cmake, f"{interface} is not generated"


def test_installed_share_folder_looks_like_a_ros_prefix():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("clifer"))
    assert (share / "launch" / "clifer.launch.py").is_file()
    assert (share / "config" / "clifer.yaml").is_file()
    assert (share / "msg" / "ExpressionEstimate.msg").is_file()


def test_config_file_and_readme_table_match_the_declared_parameters():
    from clifer_ros.parameters import config_yaml, markdown_table

    assert (ROOT / "config" / "clifer.yaml").read_text() == config_yaml(), (
        "regenerate with: python -m clifer_ros.parameters yaml > config/clifer.yaml")
    assert markdown_table() in (ROOT / "README.md").read_text(), "README parameter table is stale"
    values = yaml.safe_load(config_yaml())["/**"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in PARAMETERS}
    for spec in PARAMETERS:
        assert spec.descriptor().description, spec.name


def test_launch_file_starts_the_lifecycle_node_as_ros2_launch_would(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    min_face_score: 0.55\n    track_max_misses: 7\n")
    share = ROOT
    plan = launch_standin.evaluate(ROOT / "launch" / "clifer.launch.py", share_dir=share,
                                   executable_dir=Path(sys.executable).parent,
                                   image_topic="/test/camera/color", namespace="robot", params_file=str(params))
    assert plan.transitions == [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE]
    manual = launch_standin.evaluate(ROOT / "launch" / "clifer.launch.py", share_dir=share,
                                     executable_dir=Path(sys.executable).parent, autostart="false")
    assert manual.transitions == [], "autostart:=false leaves the node to a lifecycle manager"

    probe = Probe()
    node = NodeProcess(plan.argv)
    try:
        outputs = probe.collect(ExpressionEstimateArray, "/robot/clifer/expressions")
        for transition in plan.transitions:
            assert probe.transition("/robot/clifer", transition), node.output()
        assert probe.state("/robot/clifer") == "active"
        names = probe.node.get_node_names_and_namespaces()
        assert ("clifer", "/robot") in names
        reply = probe.call(GetParameters, "/robot/clifer/get_parameters",
                           GetParameters.Request(names=["min_face_score", "track_max_misses", "use_sim_time"]),
                           resend_after=PARAMETER_RESEND_S)
        assert [reply.values[0].double_value, reply.values[1].integer_value, reply.values[2].bool_value] == [
            0.55, 7, False], "the node runs with the launch file's params_file and use_sim_time"
        frame = face_frame()
        for index in range(5):
            probe.publish_frame("/test/camera/color", frame, stamp_ns=(index + 1) * 100_000_000)
            time.sleep(0.1)
        probe.wait_for(lambda: len(outputs) >= 3, 20, "estimates on the namespaced topic")
        assert any(len(m.estimates) == 1 for m in outputs), "the astronaut's face is found"
    finally:
        exit_code = node.stop()
        probe.close()
    assert exit_code == 0, node.output()


def test_readme_documents_every_parameter_service_and_topic():
    readme = (ROOT / "README.md").read_text()
    for spec in PARAMETERS:
        assert f"`{spec.name}`" in readme, f"parameter {spec.name} is not in the README"
    for name in ("~/teach", "~/forget_person", "~/list_people", "~/save", "~/load", "~/reset",
                 "~/expressions", "~/debug_image", "/diagnostics", "`labels`"):
        assert name in readme, name


def test_the_harness_finds_clifer_node_where_ros2_run_would_then_on_path(tmp_path, monkeypatch):
    from clifer_ros.harness import VENV_BIN, node_executable

    def executable(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "no_prefix"))
    assert node_executable() == VENV_BIN / "clifer_node"
    on_path = executable(tmp_path / "bin" / "clifer_node")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert node_executable() == on_path
    colcon = executable(tmp_path / "install" / "lib" / "clifer" / "clifer_node")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'no_prefix'}:{tmp_path / 'install'}")
    assert node_executable() == colcon


def test_readme_layout_table_matches_the_tree():
    import re

    section = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    paths = {path: what for first, what in rows for path in re.findall(r"`([^`]+)`", first)}
    missing = [path for path in paths if not (ROOT / path.split(" ")[0]).exists()]
    assert not missing, f"the layout table names paths that do not exist: {missing}"
    for folder in ("clifer_core", "clifer_ros", *[p.rstrip("/") for p in paths if p.count("/") == 2]):
        what = paths[f"{folder}/"]
        for entry in sorted((ROOT / folder).iterdir()):
            if entry.name.startswith(("_", ".")) or entry.suffix not in (".py", "") or entry.name == "default":
                continue
            name = entry.name + ("/" if entry.is_dir() else "")
            assert f"`{name}`" in what or f"{folder}/{name}" in paths, f"{folder}/{name} is not in the README layout"
