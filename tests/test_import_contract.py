"""The layering contract, checked on the source: what each layer may import.

``clifer_core`` never imports ROS or the shell; the runtime layers (faces,
memory, imagination, features, learner, pipeline, data) never import the
evaluation, which sits on top of them. A violation names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = ("rclpy", "rosbags", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces",
               "rcl_interfaces", "hri_msgs", "hri_privacy_msgs", "std_srvs", "clifer.msg", "clifer.srv", "launch",
               "launch_ros", "clifer_ros")
RUNTIME = ("faces", "memory", "imagination", "features.py", "learner.py", "pipeline.py", "data", "labels.py",
           "persistence.py", "progress.py", "build.py", "people.py", "shape.py", "fusion.py", "population.py",
           "learning.py", "logs.py", "session.py", "privacy.py", "adaptation.py")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def names(module: str, prefixes) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def core_files(*parts: str) -> list[Path]:
    files = []
    for part in parts:
        target = ROOT / "clifer_core" / part
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


def test_the_core_never_imports_ros_or_the_shell():
    violations = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                  for path in core_files(".") for line, module in imports_of(path) if names(module, ROS_MODULES)]
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("layer", RUNTIME)
def test_runtime_layers_never_import_the_evaluation(layer):
    violations = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                  for path in core_files(layer) for line, module in imports_of(path)
                  if names(module, ("clifer_core.evaluation", "clifer_core.cli"))]
    assert not violations, "\n".join(violations)


def test_the_data_layer_imports_only_labels_and_itself():
    allowed = ("clifer_core.data", "clifer_core.labels", "clifer_core.faces", "clifer_core.progress")
    violations = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                  for path in core_files("data") for line, module in imports_of(path)
                  if module.startswith("clifer_core") and not names(module, allowed)]
    assert not violations, "\n".join(violations)


def test_the_contract_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from clifer_core.evaluation.metrics import x\n    import rclpy\n")
    found = [module for _, module in imports_of(source)]
    assert found == ["clifer_core.evaluation.metrics", "rclpy"]
