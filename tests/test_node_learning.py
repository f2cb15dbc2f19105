"""The node learning per person over real DDS: teaching, persistence across restarts, forgetting, corrupt files."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition

from clifer.msg import ExpressionEstimateArray
from clifer.srv import ForgetPerson, ListPeople, Teach
from clifer_core.tensorflow_startup import STARTUP_NOTES
from clifer_ros.harness import NodeProcess, Probe, stamp_ns
from test_node import IMAGE_TOPIC, NODE, OUTPUT_TOPIC, face_frames, feed


@pytest.fixture
def probe():
    probe = Probe()
    yield probe
    probe.close()


@pytest.fixture
def optional_data_dir():
    from clifer_core.data.datasets import default_data_dir

    return default_data_dir()


def run_node(probe: Probe, memory_dir, *ros_args: str) -> NodeProcess:
    node = NodeProcess.start("-r", f"image:={IMAGE_TOPIC}", "-p", "deterministic_ids:=true",
                             "-p", f"memory_dir:={memory_dir}", "-p", "autosave_period_s:=1.0", *ros_args)
    return node.bring_up(probe, NODE, Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE)


def identified(outputs) -> list:
    return [m.estimates[0] for m in outputs if len(m.estimates) == 1 and m.estimates[0].person_id]


TEACH_SAMPLES = 5  # the node's default: ~/teach learns the face's 5 newest crops


def show_last_frame(probe: Probe, frames, outputs) -> None:
    """Show the last frame until the node's newest answers are all to it.

    ~/teach learns the face's newest crops; a loaded node drops frames, so which crops those are is
    otherwise a matter of timing (the face drifts, so other frames give other crops).
    """
    shown: set[int] = set()

    def newest_answers_are_to_the_last_frame():
        shown.update(feed(probe, frames[-1:], first_stamp_ns=time.time_ns()))
        newest = [stamp_ns(m) for m in list(outputs)[-TEACH_SAMPLES:]]
        return len(newest) == TEACH_SAMPLES and set(newest) <= shown

    probe.wait_for(newest_answers_are_to_the_last_frame, 30, "the node to answer the last frame in a row")


def feed_until_identified(probe: Probe, frames, outputs, message: str) -> None:
    """Keep showing the last frame until an answer names the person: estimates only come with frames, and a
    loaded node may not have identified the face by the time a fixed run of frames ends."""
    probe.wait_for(lambda: feed(probe, frames[-1:], first_stamp_ns=time.time_ns()) and identified(outputs), 30, message)


def follows_teaching(probe: Probe, frames, outputs, taught: str) -> bool:
    """Show the taught face (the last frame) and say whether memory answers ``taught``."""
    feed(probe, frames[-1:], first_stamp_ns=time.time_ns())
    latest = identified(outputs)[-1]
    return latest.memory == "fused" and latest.expression == taught


def latest_estimates(outputs, count: int = 5) -> str:
    """The newest identified estimates, for a time-out's message."""
    return "\n".join(f"person {e.person_id} face {e.face_id} memory {e.memory} expression {e.expression} "
                     f"novelty {e.novelty:.3f} p {dict(zip(e.labels, np.round(e.probabilities, 3)))}"
                     for e in identified(outputs)[-count:])


def test_teaching_persists_across_restarts_and_forgetting_deletes_the_person(probe, tmp_path, optional_data_dir):
    frames = face_frames(optional_data_dir, 12, same_image=True)
    outputs = probe.collect(ExpressionEstimateArray, OUTPUT_TOPIC)
    node = run_node(probe, tmp_path)
    try:
        feed(probe, frames, first_stamp_ns=1_000_000_000_000)
        feed_until_identified(probe, frames, outputs, "an identified face")
        show_last_frame(probe, frames, outputs)
        first = identified(outputs)[-1]
        person_id, prior_label = first.person_id, first.expression
        taught = "sad" if prior_label != "sad" else "surprised"
        reply = probe.call(Teach, f"{NODE}/teach", Teach.Request(face_id=first.face_id, expression=taught))
        assert reply.success, reply.message
        assert reply.person_id == person_id

        probe.wait_for(lambda: follows_teaching(probe, frames, outputs, taught), 40,
                       f"estimates to follow the taught expression {taught!r}",
                       lambda: f"{latest_estimates(outputs)}\n{node.output()[-3000:]}")
        assert identified(outputs)[-1].person_id == person_id
    finally:
        assert node.stop(signum=signal.SIGTERM) == 0, f"SIGTERM (a process manager's stop) ends the node\n{node.output()}"
    assert (tmp_path / "people" / f"{person_id}.npz").is_file()
    assert (tmp_path / "identity.npz").is_file()

    outputs.clear()
    node = run_node(probe, tmp_path)
    try:
        listed = probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request())
        assert person_id in listed.person_ids
        feed(probe, frames, first_stamp_ns=5_000_000_000_000)
        feed_until_identified(probe, frames, outputs, "the person recognised after a restart")
        assert identified(outputs)[-1].person_id == person_id, "the same person keeps the same id across restarts"
        probe.wait_for(lambda: follows_teaching(probe, frames, outputs, taught), 40,
                       f"the restarted node to answer the taught expression {taught!r} from the saved memory",
                       lambda: f"{latest_estimates(outputs)}\n{node.output()[-3000:]}")
        assert identified(outputs)[-1].person_id == person_id

        reply = probe.call(ForgetPerson, f"{NODE}/forget_person", ForgetPerson.Request(person_id=person_id))
        assert reply.success, reply.message
        probe.wait_for(lambda: not (tmp_path / "people" / f"{person_id}.npz").exists(), 20,
                       "the queued erasure to delete the person's file")
        listed = probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request())
        assert person_id not in listed.person_ids
    finally:
        assert node.stop() == 0, node.output()
    from clifer_core.faces.identity import IdentityGallery

    assert person_id not in IdentityGallery.load(tmp_path / "identity.npz").people()


def test_a_missing_imagination_file_refuses_configure_and_says_which(probe, tmp_path):
    missing = tmp_path / "no_such_imagination.npz"
    node = NodeProcess.start("-r", f"image:={IMAGE_TOPIC}", "-p", f"memory_dir:={tmp_path / 'memory'}",
                             "-p", f"imagination_model:={missing}")
    try:
        assert not probe.transition(NODE, Transition.TRANSITION_CONFIGURE), "configure must fail"
        assert probe.state(NODE) == "unconfigured"
        probe.wait_for(lambda: str(missing) in node.output(), 10, "the log to name the missing file")
    finally:
        assert node.stop() == 0, node.output()


def test_a_corrupt_memory_file_is_set_aside_and_the_others_load(probe, tmp_path):
    from clifer_core.learner import CliferLearner

    rng = np.random.default_rng(0)
    learner = CliferLearner(features="fer", imagination="none", feature_model=object())
    for person_id in ("alice", "bob"):
        features = rng.normal(size=(12, 128)).astype(np.float32)
        learner.learn_features(person_id, features, np.repeat(np.arange(3), 4))
    learner.save(tmp_path)
    corrupt = tmp_path / "people" / "bob.npz"
    corrupt.write_bytes(corrupt.read_bytes()[:100])

    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    node = run_node(probe, tmp_path, "-p", "features:=fer")
    try:
        listed = probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request())
        assert "alice" in listed.person_ids and "bob" not in listed.person_ids

        def set_aside_reported():
            values = [{kv.key: kv.value for kv in s.values} for d in diagnostics for s in d.status
                      if s.name.startswith(NODE)]
            return any(v.get("files set aside") == "1" for v in values)

        probe.wait_for(set_aside_reported, 10, "diagnostics reporting the file set aside")
    finally:
        assert node.stop() == 0, node.output()
    assert "bob.npz" in node.output() and "set aside" in node.output()
    assert not STARTUP_NOTES.search(node.output()), "TensorFlow's start-up notes reached the node's log"
    assert (tmp_path / "people" / "bob.npz.corrupt").is_file()
    assert (tmp_path / "people" / "alice.npz").is_file()
