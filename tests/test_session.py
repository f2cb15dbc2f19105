"""The learning session without ROS: labels matched by stamp, teaching, first meetings, forgetting, identity merges.

A real FramePipeline (detector, FER2013 prior, identity gallery, learner) runs
on the astronaut frame; the session queues on its real learning worker.
"""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core import session as session_module
from clifer_core.logs import ThrottledLogger
from clifer_core.people import person_path
from clifer_core.session import Label, LearningSession, SessionSettings
from tests.frames import face_frame
from tests.test_people import trained

FRAME_S = 0.1


class Clock:
    """Frame time as the identity resolver's clock, so its embedding schedule is deterministic."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_session(tmp_path, imagination: str = "none", **settings):
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig

    clock = Clock()
    config = PipelineConfig(deterministic_ids=True, identity=True, identity_in_background=False, recent_crops=10)
    pipeline = build_pipeline(config, imagination=imagination, identity_clock=clock)
    pipeline.warm_up()
    session = LearningSession(pipeline, tmp_path / "memory", ThrottledLogger("test_session"),
                              SessionSettings(**settings))
    return session, clock


def run_frames(session: LearningSession, clock: Clock, count: int):
    """Process ``count`` frames, each FRAME_S after the last, as the node does; returns the last estimates."""
    estimates = []
    for _ in range(count):
        clock.now = round(clock.now + FRAME_S, 6)
        estimates = session.pipeline.process(face_frame(), stamp=clock.now)
        session.after_frame(estimates)
    return estimates


@pytest.fixture
def plain(tmp_path):
    session, clock = make_session(tmp_path)
    yield session, clock
    session.stop()
    session.pipeline.close()


def test_labels_meet_their_frames_by_stamp_even_when_they_arrive_first_and_the_rest_are_counted(plain, monkeypatch):
    session, clock = plain
    ahead = round(clock.now + 3 * FRAME_S, 6)
    assert session.receive_label(Label(stamp=ahead, expression="happy", person_id="alice"))
    assert not session.receive_label(Label(stamp=ahead, expression="smug", person_id="alice"))
    assert not session.receive_label(Label(stamp=ahead, expression="happy", person_id="../etc"))
    run_frames(session, clock, 2)
    assert session.label_counts()["waiting"] == 1, f"a label for a frame not yet processed waits: {session.label_counts()}"
    run_frames(session, clock, 2)
    assert session.worker.wait_idle(60)
    assert session.learner.people() == {"alice": 1}
    assert session.receive_label(Label(stamp=1e6, expression="sad", person_id="bob"))
    run_frames(session, clock, 1)
    assert session.label_counts()["waiting"] == 1
    monkeypatch.setattr(session_module, "LABEL_WAIT_S", 0.0)
    run_frames(session, clock, 1)
    counts = session.label_counts()
    assert counts == {"received": 4, "used": 1, "unmatched": 1, "rejected": 2, "dropped": 0, "waiting": 0}
    assert not session.learner.knows("bob")


def test_teaching_by_person_learns_their_current_face_and_refuses_what_it_cannot_do(plain):
    session, clock = plain
    run_frames(session, clock, 6)
    assert session.teach("happy", person_id="carol").message.startswith("no current face")
    face_id = session.pipeline.tracker.tracks[0].face_id
    named = session.teach("happy", face_id=face_id, person_id="alice")
    assert named.success and named.person_id == "alice", named.message
    run_frames(session, clock, 1)
    by_person = session.teach("sad", person_id="alice")
    assert by_person.success and by_person.person_id == "alice", by_person.message
    assert session.worker.wait_idle(60)
    assert session.learner.people()["alice"] == 2 * session.settings.teach_samples
    assert not session.teach("angry", person_id="9lives").success
    assert not session.teach("smug", person_id="alice").success
    session.learning_enabled = False
    assert "disabled" in session.teach("happy", person_id="alice").message


def test_forgetting_erases_memory_identity_and_files(plain):
    session, clock = plain
    run_frames(session, clock, 3)
    face_id = session.pipeline.tracker.tracks[0].face_id
    assert session.teach("happy", face_id=face_id, person_id="alice").success
    assert session.worker.wait_idle(60)
    session.save(everything=True)
    assert person_path(session.memory_dir, "alice").is_file()
    assert session.forget("nobody").message == "nobody is not known"
    assert session.forget("../x").message.startswith("refused")
    assert session.forget("alice").success
    assert session.worker.wait_idle(60)
    assert not session.learner.knows("alice") and "alice" not in session.people()
    assert not person_path(session.memory_dir, "alice").exists()


def test_a_merged_identity_moves_its_memory_and_files(plain):
    session, clock = plain
    run_frames(session, clock, 15)
    face_id = session.pipeline.tracker.tracks[0].face_id
    stranger = session.pipeline.person_of(face_id)
    assert stranger, "the face was auto-enrolled"
    assert session.teach("happy", face_id=face_id).person_id == stranger
    assert session.worker.wait_idle(60)
    session.save(everything=True)
    (person_path(session.memory_dir, stranger).parent / f"{stranger}.npz.corrupt").write_bytes(b"old")
    taught = session.learner.people()[stranger]
    assert session.receive_label(Label(stamp=clock.now, expression="happy", face_id=face_id, person_id="alice"))
    run_frames(session, clock, 1)
    assert session.worker.wait_idle(60)
    assert session.worker.merged == 1
    assert not session.learner.knows(stranger) and session.learner.people()["alice"] == taught + 1
    assert stranger not in session.pipeline.identity.people()
    people_folder = person_path(session.memory_dir, "alice").parent
    assert sorted(path.name for path in people_folder.iterdir()) == ["alice.npz", "alice.npz.corrupt"]
    assert session.forget("alice").success and session.worker.wait_idle(60)
    assert list(people_folder.iterdir()) == [], "forgetting the merged person erases what the stranger left"


def test_merging_keeps_both_memories_when_the_target_has_one():
    learner = trained(("alice", "p0000001"))
    alice, stranger = learner.memories["alice"], learner.memories["p0000001"]
    samples = learner.people()
    assert learner.merge("p0000001", "alice")
    merged = learner.memories["alice"]
    assert merged is not alice and not learner.knows("p0000001")
    assert learner.people() == {"alice": samples["alice"] + samples["p0000001"]}
    assert merged.episodic_.n_nodes_ >= alice.episodic_.n_nodes_
    nearest = np.min(np.linalg.norm(merged.episodic_.weights_[None] - stranger.episodic_.weights_[:, None], axis=2),
                     axis=1)
    assert np.median(nearest) < np.median(np.min(np.linalg.norm(
        alice.episodic_.weights_[None] - stranger.episodic_.weights_[:, None], axis=2), axis=1)), \
        "the merged memory holds the stranger's faces"
    assert not learner.merge("nobody", "alice")


def test_a_stranger_is_seeded_once_from_enough_faces_and_stays_untaught(tmp_path):
    session, clock = make_session(tmp_path, imagination="image", seed_faces=4)
    try:
        estimates = run_frames(session, clock, 16)
        assert session.worker.wait_idle(120)
        person_id = estimates[0].person_id
        assert person_id and session.learner.knows(person_id), "imagination prepared the stranger's memory"
        assert session.learner.people()[person_id] == 0, "nothing was taught"
        assert session.worker.completed == 1, "seeded once"
        run_frames(session, clock, 2)
        assert session.worker.wait_idle(120) and session.worker.completed == 1
    finally:
        session.stop()
        session.pipeline.close()
