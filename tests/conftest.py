"""Test-wide isolation for everything that talks DDS or writes ROS logs, and hypothesis profiles.

Set before rclpy initialises: localhost-only discovery, a ROS domain of this
test process's own (so parallel runs never see each other), logs and
``$ROS_HOME`` (hence nodes' default memory folder) in temporary folders, and the shared-memory Fast DDS profile so camera-sized
best-effort frames cross processes (docs/design.md §7.4).

Hypothesis profiles: ``ci`` (chosen when ``CI=true``) is derandomised and keeps no example
database, so a commit that passed once passes again; ``thorough`` draws 1,000 random examples
for properties that do not fix their own count. ``HYPOTHESIS_PROFILE`` picks one explicitly.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 200)
os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="clifer-ros-log-")
os.environ["ROS_HOME"] = tempfile.mkdtemp(prefix="clifer-ros-home-")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(PROJECT_ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("thorough", max_examples=1000, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "default"))


@pytest.fixture(scope="session")
def data_dir():
    """The shared real-data folder; tests using it skip when it is absent."""
    from clifer_core.data.datasets import default_data_dir

    found = default_data_dir()
    if found is None:
        configured = os.environ.get("CLIFER_DATA_DIR")
        why = f"CLIFER_DATA_DIR={configured!r}" if configured is not None else "no ../shared/data, CLIFER_DATA_DIR unset"
        pytest.skip(f"real data is not available ({why})")
    return found
