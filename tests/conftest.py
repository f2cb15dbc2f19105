"""Test-wide isolation for everything that talks DDS or writes ROS logs.

Set before rclpy initialises: localhost-only discovery, a ROS domain of this
test process's own (so parallel runs never see each other), logs and
``$ROS_HOME`` (hence nodes' default memory folder) in temporary folders, and the shared-memory Fast DDS profile so camera-sized
best-effort frames cross processes (docs/design.md §7.4).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 200)
os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="clifer-ros-log-")
os.environ["ROS_HOME"] = tempfile.mkdtemp(prefix="clifer-ros-home-")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(PROJECT_ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def data_dir():
    """The shared real-data folder; tests using it skip when it is absent."""
    from clifer_core.data.datasets import default_data_dir

    found = default_data_dir()
    if found is None:
        pytest.skip("real data (../shared/data or $CLIFER_DATA_DIR) is not available")
    return found
