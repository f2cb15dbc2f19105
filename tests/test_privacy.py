"""Personal data over real DDS: the /data_management declaration, retention, ~/forget_all, owner-only files.

The memory folder is planted as the fault tests plant it (alice and bobby_tables: memories, population,
gallery, a set-aside copy, leftovers of killed writes), with ordinary permissions, as a folder written
before files were made owner-only.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from std_srvs.srv import Trigger

from clifer_core.learner import CliferLearner
from clifer_core.privacy import LAST_SEEN_FILE, SECONDS_PER_DAY, LastSeen, node_files, read_last_seen
from clifer_ros.harness import NodeProcess, Probe
from clifer_ros.privacy import TOPIC, declaration_qos
from faults_helpers import (FORGOTTEN, NODE, Attacker, person_rows, plant,
                            population_depends_only_on_the_remaining_people, start_node, stored_bytes, traces_of,
                            wait_until_gone)
from hri_privacy_msgs.msg import PersonalDataProcessor
from test_faults import set_parameter

DAY = SECONDS_PER_DAY
DECLARED = ("people", "identity.npz", "population.npz", "learner.json", LAST_SEEN_FILE)


@pytest.fixture
def probe():
    probe = Probe("clifer_privacy_probe")
    yield probe
    probe.close()


def modes(memory: Path) -> dict[str, int]:
    """Permission bits of the memory folder and of everything under it."""
    return {str(path): stat.S_IMODE(path.stat().st_mode) for path in [memory, *memory.rglob("*")]}


def owner_only(memory: Path) -> bool:
    return all(mode == (0o700 if Path(path).is_dir() else 0o600) for path, mode in modes(memory).items())


def make_ordinary(memory: Path) -> None:
    """Give the planted folder the permissions a folder saved before owner-only files had (umask 022)."""
    for path in [memory, *memory.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def late_declaration(probe: Probe, count: int) -> list:
    """What a subscriber that joins now receives on /data_management (transient-local: the node's history)."""
    received = probe.collect(PersonalDataProcessor, TOPIC, declaration_qos(10))
    probe.wait_for(lambda: len(received) >= count, 20, f"{count} declarations on {TOPIC}")
    time.sleep(1.0)
    return received


def test_a_late_subscriber_receives_the_declaration_and_only_the_current_one(probe, tmp_path):
    memory, _ = plant(tmp_path)
    node = start_node(probe, memory, "-p", "retention_days:=30")
    try:
        time.sleep(1.0)
        declared = late_declaration(probe, len(DECLARED))
        assert len(declared) == len(DECLARED)
        assert sorted(Path(m.path).name for m in declared) == sorted(DECLARED)
        assert all(Path(m.path).parent == memory for m in declared)
        assert {m.data_source_node for m in declared} == {NODE}
        assert all(m.user_friendly_source_name and "If deleted" in m.data_purpose for m in declared)
        assert all("30 days" in m.data_purpose for m in declared if not m.path.endswith("population.npz"))

        set_parameter(SimpleNamespace(probe=probe), "retention_days", 7)
        updated = late_declaration(probe, len(DECLARED))
        assert len(updated) == len(DECLARED), "a late subscriber gets the current declaration, not the old one too"
        assert not any("30 days" in m.data_purpose for m in updated)
        assert all("7 days" in m.data_purpose for m in updated if not m.path.endswith("population.npz"))
    finally:
        assert node.stop() == 0, node.output()


def test_without_a_memory_folder_the_declaration_says_nothing_is_written_to_disk(probe):
    node = NodeProcess.start("-p", "imagination:=none", "-p", "features:=fer", "-p", "memory_dir:=''")
    try:
        assert probe.transition(NODE, Transition.TRANSITION_CONFIGURE, timeout=120), node.output()
        declared = late_declaration(probe, 1)
        assert len(declared) == 1 and declared[0].path == ""
        assert "Nothing is written to disk" in declared[0].data_purpose
    finally:
        assert node.stop() == 0, node.output()


def test_retention_at_start_up_and_when_set_then_forget_all_leave_no_ones_data_in_owner_only_files(probe, tmp_path):
    memory, _ = plant(tmp_path)
    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    learner.load(memory)
    rng = np.random.default_rng(5)
    learner.learn_features("carol", rng.normal(size=(14, 128)).astype(np.float32), np.repeat(np.arange(7), 2))
    learner.save_person(memory, "carol")
    now = time.time()
    LastSeen({FORGOTTEN: now - 10 * DAY, "carol": now - 3 * DAY}).save(memory)
    make_ordinary(memory)
    rows = {person: person_rows(memory, person) for person in ("alice", FORGOTTEN, "carol")}

    attacker = Attacker(probe)
    node = start_node(probe, memory, "-p", "retention_days:=7")
    try:
        assert set(attacker.people()) == {"alice", "carol"}, "bobby_tables, not seen for 10 days, is forgotten"
        assert traces_of(memory, FORGOTTEN, rows[FORGOTTEN]) == []
        assert population_depends_only_on_the_remaining_people(memory)
        assert read_last_seen(memory / LAST_SEEN_FILE).keys() == {"alice", "carol"}, \
            "alice had no sighting saved: her files' time counts, so she stays"
        assert owner_only(memory), modes(memory)

        set_parameter(SimpleNamespace(probe=probe), "retention_days", 2)
        wait_until_gone(attacker, "carol")
        probe.wait_for(lambda: not traces_of(memory, "carol", rows["carol"]), 20, "carol's files erased")
        assert set(attacker.people()) == {"alice"}

        reply = probe.call(Trigger, f"{NODE}/forget_all", Trigger.Request())
        assert reply.success and "queued" in reply.message, reply.message
        wait_until_gone(attacker, "alice")
        assert attacker.people() == {}
        probe.wait_for(lambda: not traces_of(memory, "alice", rows["alice"]), 20, "alice's files erased")
        stored = b"\n".join(stored_bytes(memory).values())
        assert not any(person.encode() in stored for person in rows), "no one's id in any file"
        assert {path.name for path in node_files(memory)} <= {"identity.npz", LAST_SEEN_FILE}
        assert owner_only(memory), modes(memory)
        assert node.process.poll() is None
    finally:
        assert node.stop() == 0, node.output()
    assert owner_only(memory), modes(memory)
