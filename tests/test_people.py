"""Person ids, the paths built from them, the learner index, forgetting and the learning worker's faults,
without ROS: the core checks every boundary relies on."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from clifer_core.learner import CliferLearner
from clifer_core.people import (MAX_PERSON_ID_LENGTH, InvalidPersonId, check_person_id, person_id_problem,
                                person_path, shown)
from clifer_core.persistence import remove_temporary_files, set_aside

ATTACKS = ["../x", "../../victim", "/etc/passwd", "a b", "", "1abc", "é", "a.b", "a/b", "x" * (MAX_PERSON_ID_LENGTH + 1),
           None, 7]


def trained(people=("alice", "bob"), seed: int = 0) -> CliferLearner:
    rng = np.random.default_rng(seed)
    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    for person_id in people:
        learner.learn_features(person_id, rng.normal(size=(14, 128)).astype(np.float32), np.repeat(np.arange(7), 2))
    return learner


def rows(memory) -> set[bytes]:
    return {row.tobytes() for network in (memory.episodic_, memory.semantic_) for row in network.weights_}


@pytest.mark.parametrize("person_id", ATTACKS)
def test_anything_but_a_bounded_ros_name_token_is_refused_with_a_short_reason(person_id):
    assert person_id_problem(person_id)
    with pytest.raises(InvalidPersonId) as refused:
        check_person_id(person_id)
    assert len(str(refused.value)) < 120


def test_valid_ids_up_to_the_bound_pass_and_paths_stay_in_the_folder(tmp_path):
    longest = "p" + "0" * (MAX_PERSON_ID_LENGTH - 1)
    assert check_person_id(longest) == longest and check_person_id("Alice_2") == "Alice_2"
    assert person_path(tmp_path, longest) == (tmp_path / "people" / f"{longest}.npz").resolve()
    with pytest.raises(InvalidPersonId):
        person_path(tmp_path, "alice", "/../../x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "people").symlink_to(outside)
    with pytest.raises(InvalidPersonId, match="not inside"):
        person_path(tmp_path / "memory", "alice")
    assert shown("x" * 1000).endswith("(1002 characters)") and len(shown("x" * 1000)) < 70


def test_forgetting_rebuilds_the_population_from_the_remaining_people_only(tmp_path):
    learner = trained(("alice", "bob", "carol"))
    bob = rows(learner.memories["bob"])
    assert learner.forget("bob") and not learner.forget("bob")
    expected = trained(("alice", "bob", "carol"))
    alone = expected.population_from({p: expected.memories[p] for p in ("alice", "carol")})
    assert rows(learner.population) == rows(alone), "the population is a function of the remaining people"
    assert not rows(learner.population) & bob
    assert learner.forget("alice") and learner.forget("carol") and learner.population is None
    with pytest.raises(InvalidPersonId):
        learner.forget("../bob")


def test_deleting_a_persons_files_takes_set_aside_copies_and_leftovers_and_nothing_else(tmp_path):
    learner = trained(("alice", "bob", "bobby"))
    learner.save(tmp_path)
    people = tmp_path / "people"
    for name in ("bob.npz.corrupt", "bob.npz.corrupt.1", ".bob.npz.a1b2c3.tmp"):
        (people / name).write_bytes(b"bob")
    (tmp_path / "population.npz.corrupt").write_bytes(b"everyone")
    learner.forget("bob")
    deleted = learner.delete_person_files(tmp_path, "bob")
    assert {p.name for p in deleted} == {"bob.npz", "bob.npz.corrupt", "bob.npz.corrupt.1", ".bob.npz.a1b2c3.tmp",
                                         "population.npz.corrupt"}
    assert sorted(p.name for p in people.iterdir()) == ["alice.npz", "bobby.npz"]
    assert set(json.loads((tmp_path / "learner.json").read_text())["people"]) == {"alice", "bobby"}
    assert b"bob\"" not in (tmp_path / "learner.json").read_bytes()


BAD_INDEXES = {
    "kind": lambda good: {**good, "kind": 99},
    "schema_version": lambda good: {**good, "schema_version": 99},
    "classes": lambda good: {**good, "classes": ["happy", "sad"]},
    "features": lambda good: {**good, "features": "caae"},
    "sample count": lambda good: {**good, "people": {"alice": "many"}},
    "person id": lambda good: {**good, "people": {"../alice": 1}},
    "JSON object": lambda good: [good],
}


@pytest.mark.parametrize("problem", [*BAD_INDEXES, "unreadable"])
def test_a_bad_learner_index_is_set_aside_with_its_reason_and_the_memories_still_load(tmp_path, problem):
    trained().save(tmp_path)
    index = tmp_path / "learner.json"
    good = json.loads(index.read_text())
    payload = b"\x00\xff garbage" if problem == "unreadable" else json.dumps(BAD_INDEXES[problem](good)).encode()
    index.write_bytes(payload)
    (tmp_path / "learner.json.corrupt").write_bytes(b"an older one")
    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    problems = learner.load(tmp_path)
    assert list(problems) == [str(index)] and problem in problems[str(index)]
    assert (tmp_path / "learner.json.corrupt.1").read_bytes() == payload, "renamed, never overwritten"
    assert (tmp_path / "learner.json.corrupt").read_bytes() == b"an older one"
    assert sorted(learner.people()) == ["alice", "bob"]


def test_loading_sets_aside_files_of_invalid_ids_or_other_classes_and_removes_leftover_temporaries(tmp_path):
    trained().save(tmp_path)
    people = tmp_path / "people"
    (people / "bob.npz").rename(people / "1bob.npz")
    trained(("carol",)).save(tmp_path / "other")
    (tmp_path / "other" / "people" / "carol.npz").rename(people / "carol.npz")
    fewer = CliferLearner(features="fer", imagination="none", feature_model=object(), classes=("happy", "sad"))
    fewer.learn_features("dave", np.random.default_rng(1).normal(size=(4, 128)).astype(np.float32), np.array([0, 1, 0, 1]))
    fewer.save_person(tmp_path / "fewer", "dave")
    (tmp_path / "fewer" / "people" / "dave.npz").rename(people / "dave.npz")
    (tmp_path / ".identity.npz.x1y2.tmp").write_bytes(b"half")
    (people / ".alice.npz.x1y2.tmp").write_bytes(b"half")
    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    problems = learner.load(tmp_path)
    assert sorted(os.path.basename(p) for p in problems) == ["1bob.npz", "dave.npz"]
    assert sorted(learner.people()) == ["alice", "carol"]
    assert (people / "1bob.npz.corrupt").is_file() and (people / "dave.npz.corrupt").is_file()
    assert not list(tmp_path.glob(".*.tmp")) and not list(people.glob(".*.tmp"))


def test_set_aside_never_overwrites_and_temporaries_are_only_dot_tmp_files(tmp_path):
    for number in range(3):
        (tmp_path / "x.npz").write_bytes(bytes([number]))
        set_aside(tmp_path / "x.npz")
    assert [(tmp_path / name).read_bytes() for name in ("x.npz.corrupt", "x.npz.corrupt.1", "x.npz.corrupt.2")] == [
        b"\x00", b"\x01", b"\x02"]
    (tmp_path / ".x.npz.abc.tmp").write_bytes(b"")
    (tmp_path / "keep.tmp").write_bytes(b"")
    assert [p.name for p in remove_temporary_files(tmp_path)] == [".x.npz.abc.tmp"]
    assert (tmp_path / "keep.tmp").is_file()


def test_the_learning_worker_survives_any_failing_job_and_a_failing_disk(tmp_path):
    from rclpy.logging import get_logger

    from clifer_core.learning import LearningJob, LearningWorker

    learner = trained()
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the memory folder's parent should be")
    worker = LearningWorker(learner, blocked / "memory", get_logger("test_people"))
    try:
        worker.submit(LearningJob("alice", np.zeros((1, 96, 96, 3), np.uint8), ["happy"], "test"))
        worker.submit_forget("bob")
        assert worker.wait_idle(30)
        assert (worker.failed, worker.completed, worker.forgotten) == (1, 1, 1)
        assert "alice" in worker.last_error and not learner.knows("bob")
        with pytest.raises(OSError):
            worker.save(everything=True)
        failures = worker.save_failures
        worker.autosave(period_s=0.0)
        assert failures >= 2 and worker.save_failures == failures, "autosave waits out the back-off"
        assert "Not a directory" in worker.save_error
        blocked.unlink()
        worker.save(everything=True)
        assert worker.save_failures == 0 and not worker.save_error
        assert (blocked / "memory" / "people" / "alice.npz").is_file()
        assert not (blocked / "memory" / "people" / "bob.npz").exists()
    finally:
        worker.stop()


def test_memories_of_another_feature_set_are_set_aside_not_served(tmp_path):
    fer = CliferLearner(features="fer", imagination="none", feature_model=object())
    fer.learn_features("alice", np.random.default_rng(3).normal(size=(6, 128)).astype(np.float32), np.arange(6))
    fer.save(tmp_path)
    shape = CliferLearner(features="fer+shape", imagination="none", feature_model=object())
    problems = shape.load(tmp_path)
    assert "alice" not in shape.people()
    assert any("128-d features" in problem for problem in problems.values()), problems
    assert (tmp_path / "people" / "alice.npz.corrupt").is_file()
