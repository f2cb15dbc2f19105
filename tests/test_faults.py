"""Fault injection over real DDS: one node, attacked the way a careless or hostile user on the domain would.

After every case the node is alive, nothing outside ``memory_dir`` changed (hash of planted files that
path tricks would reach), every label sent (reliably) and every frame received (frames are best-effort) shows
in a counter on /diagnostics, and alice, whose memory was learned before any fault, is still answered.
About a minute: the node is started once and the cases run in order against it.
"""

from __future__ import annotations

import json
import time
from array import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import Trigger

from clifer.msg import ExpressionEstimateArray
from clifer.srv import ForgetPerson, Teach
from clifer_ros.harness import Probe
from faults_helpers import (ATTACKS, FORGOTTEN, NODE, Attacker, fingerprint, person_rows, plant,
                            population_depends_only_on_the_remaining_people, start_node, traces_of, wait_until_gone)
from frames import face_frame

ALICE_SAMPLES = 21
ERASED = "erin_erased"


@pytest.fixture(scope="module")
def attack(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    memory, outside = plant(root)
    probe = Probe("clifer_faults_probe")
    attacker = Attacker(probe)
    outputs = probe.collect(ExpressionEstimateArray, f"{NODE}/expressions")
    node = start_node(probe, memory)
    state = SimpleNamespace(root=root, memory=memory, outside=outside, hashes=fingerprint(outside), probe=probe,
                            attacker=attacker, node=node, outputs=outputs, stamp=1_000_000_000_000)
    try:
        yield state
    finally:
        code = node.stop()
        probe.close()
    assert code == 0, node.output()


@pytest.fixture
def healthy(attack):
    """Checks the invariants after the case that uses it."""
    yield attack
    assert attack.node.process.poll() is None, f"the node exited:\n{attack.node.output()[-3000:]}"
    assert fingerprint(attack.outside) == attack.hashes, "a file outside memory_dir changed"
    attack.probe.wait_for(lambda: attack.attacker.labels_unaccounted() == 0, 15, "every label in a counter")
    attack.probe.wait_for(lambda: attack.attacker.frames_unaccounted() == 0, 15, "every frame in a counter")
    assert attack.attacker.people().get("alice") == ALICE_SAMPLES, "learning done before the fault is kept"


def feed_faces(attack, count: int = 4, period_s: float = 0.1) -> list[int]:
    """Publish ``count`` face frames; returns their stamps."""
    stamps = []
    for index in range(count):
        attack.stamp += 100_000_000
        attack.attacker.frame(face_frame(offset=(2 * (index % 3), 0)), attack.stamp)
        stamps.append(attack.stamp)
        time.sleep(period_s)
    return stamps


def settle(attack, stamp: int, timeout: float = 20.0) -> None:
    """Wait until the node published its estimates for the frame stamped ``stamp`` (or rejected it)."""
    def done():
        outputs = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in attack.outputs]
        return stamp in outputs
    attack.probe.wait_for(done, timeout, "the frame's estimates")


def identified_face(attack):
    """Feed face frames until the face is reported with a person id; returns that estimate."""
    def found():
        settle(attack, feed_faces(attack, 2)[-1])
        faces = [m.estimates[0] for m in attack.outputs[-2:] if m.estimates and m.estimates[0].person_id]
        return faces[-1] if faces else None
    attack.probe.wait_for(found, 40, "an identified face")
    return found()


def feeding_until(attack, predicate, timeout: float, message: str) -> None:
    """Keep feeding face frames until ``predicate()`` holds."""
    def fed():
        feed_faces(attack, 1)
        return predicate()
    attack.probe.wait_for(fed, timeout, message)


def _stamp_of(estimate) -> int:
    return estimate.header.stamp.sec * 1_000_000_000 + estimate.header.stamp.nanosec


def set_parameter(attack, name: str, value) -> None:
    kinds = {bool: ("bool_value", ParameterType.PARAMETER_BOOL), int: ("integer_value", ParameterType.PARAMETER_INTEGER),
             float: ("double_value", ParameterType.PARAMETER_DOUBLE)}
    field, kind = kinds[type(value)]
    parameter = Parameter(name=name, value=ParameterValue(type=kind, **{field: value}))
    reply = attack.probe.call(SetParameters, f"{NODE}/set_parameters", SetParameters.Request(parameters=[parameter]))
    assert reply.results[0].successful, reply.results[0].reason


def forget(attack, person_id: str):
    return attack.probe.call(ForgetPerson, f"{NODE}/forget_person", ForgetPerson.Request(person_id=person_id))


def teach(attack, person_id: str = "", expression: str = "happy", face_id: str = ""):
    return attack.probe.call(Teach, f"{NODE}/teach", Teach.Request(face_id=face_id, person_id=person_id,
                                                                   expression=expression))


def test_leftovers_of_killed_writes_are_removed_at_start_up_and_the_planted_people_load(attack, healthy):
    assert not list(attack.memory.rglob("*.tmp"))
    people = attack.attacker.people()
    assert people["alice"] == ALICE_SAMPLES and people[FORGOTTEN] == ALICE_SAMPLES


def test_every_dynamic_parameter_that_is_accepted_is_applied(attack, healthy):
    attacker = attack.attacker
    identified_face(attack)

    set_parameter(attack, "diagnostics_period_s", 0.1)
    count = len(attacker.diagnostics)
    time.sleep(2.0)
    fast = len(attacker.diagnostics) - count
    set_parameter(attack, "diagnostics_period_s", 1.5)
    count = len(attacker.diagnostics)
    time.sleep(2.0)
    slow = len(attacker.diagnostics) - count
    set_parameter(attack, "diagnostics_period_s", 0.5)
    assert fast >= 8 and slow <= 2, (fast, slow)

    set_parameter(attack, "max_processing_ms", 1.0)
    settle(attack, feed_faces(attack, 2)[-1])
    attack.probe.wait_for(lambda: "slow" in attacker.fresh_values()["message"], 10, "a WARN about slow frames")
    set_parameter(attack, "max_processing_ms", 10000.0)
    attack.probe.wait_for(lambda: attacker.fresh_values()["message"] == "running", 10, "diagnostics OK again")

    rejected = int(attacker.fresh_values()["frames rejected"])
    set_parameter(attack, "max_image_pixels", 100 * 100)
    feed_faces(attack, 1)
    attack.probe.wait_for(lambda: int(attacker.fresh_values()["frames rejected"]) == rejected + 1, 10,
                          "the frame over max_image_pixels rejected")
    set_parameter(attack, "max_image_pixels", 3840 * 2160)

    set_parameter(attack, "min_face_score", 1.0)
    stamp = feed_faces(attack, 2)[-1]
    settle(attack, stamp)
    assert not [m for m in attack.outputs if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp][0].estimates
    set_parameter(attack, "min_face_score", 0.6)

    dropped = int(attacker.fresh_values()["frames dropped"])
    set_parameter(attack, "processing_rate_hz", 0.5)
    feed_faces(attack, 5, period_s=0.05)
    attack.probe.wait_for(lambda: int(attacker.fresh_values()["frames dropped"]) >= dropped + 2, 10,
                          "frames dropped at 0.5 Hz")
    set_parameter(attack, "processing_rate_hz", 30.0)
    time.sleep(2.5)

    face = identified_face(attack)
    set_parameter(attack, "teach_samples", 2)
    reply = teach(attack, face_id=face.face_id)
    assert reply.success and "learning 2 faces" in reply.message, reply.message
    set_parameter(attack, "learning_enabled", False)
    reply = teach(attack, face_id=face.face_id)
    assert not reply.success and "disabled" in reply.message
    set_parameter(attack, "learning_enabled", True)

    attack.probe.wait_for(lambda: attacker.fresh_values()["learning queue"] == "0", 20, "the teaching learned")
    done = int(attacker.fresh_values()["learning jobs done"])
    feed_faces(attack, 25)
    assert int(attacker.fresh_values()["learning jobs done"]) == done, "no self-training while it is off"
    set_parameter(attack, "self_training", True)
    feeding_until(attack, lambda: int(attacker.fresh_values()["learning jobs done"]) > done, 30,
                  "self-training from the node's own confident estimates")
    set_parameter(attack, "self_training", False)

    from hri_msgs.msg import Expression

    face = identified_face(attack)
    rep155 = attack.probe.collect(Expression, f"/humans/faces/{face.face_id}/expression")
    feeding_until(attack, lambda: rep155, 20, "REP-155 expressions")
    set_parameter(attack, "rep155_expressions", False)
    time.sleep(0.5)
    count = len(rep155)
    settle(attack, feed_faces(attack, 5)[-1])
    assert len(rep155) == count, "no REP-155 output while it is off"
    set_parameter(attack, "rep155_expressions", True)

    face = identified_face(attack)
    set_parameter(attack, "auto_enrol", False)
    assert forget(attack, face.person_id).success
    wait_until_gone(attacker, face.person_id)
    seen = len(attack.outputs)
    settle(attack, feed_faces(attack, 20)[-1])
    after = [m.estimates[0] for m in attack.outputs[seen:] if m.estimates]
    assert after and not any(e.person_id for e in after), "nobody is enrolled while auto_enrol is off"
    set_parameter(attack, "auto_enrol", True)
    assert identified_face(attack).person_id != face.person_id, "enrolled again, as someone new"

    set_parameter(attack, "autosave_period_s", 3600.0)
    time.sleep(1.5)
    saves = int(attacker.fresh_values()["saves"])
    time.sleep(2.0)
    assert int(attacker.fresh_values()["saves"]) == saves, "no save within an hour's period"
    set_parameter(attack, "autosave_period_s", 1.0)
    attack.probe.wait_for(lambda: int(attacker.fresh_values()["saves"]) > saves, 10, "saves every second again")


def test_forget_person_refuses_ids_that_would_name_files_elsewhere(attack, healthy):
    before = {p: p.read_bytes() for p in attack.memory.rglob("*") if p.is_file()}
    absolute = str(attack.root / "outside" / "victim")
    for person_id in (*ATTACKS, absolute):
        reply = forget(attack, person_id)
        assert not reply.success, person_id
        assert "refused" in reply.message and len(reply.message) < 300, reply.message
    assert forget(attack, "nobody_here").message == "nobody_here is not known"
    after = {p: p.read_bytes() for p in attack.memory.rglob("*") if p.is_file() and p in before}
    assert (attack.memory / "identity.npz") in after and (attack.memory / "people" / "alice.npz") in after


def test_teach_refuses_invalid_person_ids_and_answers_instead_of_raising(attack, healthy):
    for person_id in ATTACKS:
        if not person_id:
            continue
        reply = teach(attack, person_id=person_id)
        assert not reply.success and reply.message.startswith("refused"), (person_id, reply.message)
    reply = teach(attack, person_id="alice", expression="x" * 300)
    assert not reply.success and "not among" in reply.message and len(reply.message) < 300
    reply = teach(attack, face_id="no_such_face")
    assert not reply.success and "no current face" in reply.message


def test_a_burst_of_bad_labels_is_rejected_and_counted_and_a_valid_label_among_them_is_learned(attack, healthy):
    attacker = attack.attacker
    stamp = _stamp_of(identified_face(attack))
    before = attacker.fresh_values()
    rejected, received = int(before["labels rejected"]), int(before["labels received"])
    for index in range(200):
        attacker.label(ATTACKS[index % len(ATTACKS)] or "a b", "happy", stamp)
        if index == 100:
            attacker.label("carol", "happy", stamp)
        if index % 25 == 24:
            # Flow control: DDS itself may drop a reliable burst that outruns the node's executor (seen: 48 of
            # 202 delivered); what is tested is the node's accounting of what it receives.
            sent = index + 1 + (index >= 100)
            attack.probe.wait_for(lambda: int(attacker.values()["labels received"]) - received >= sent, 10,
                                  f"the node receiving {sent} labels of the burst")
    attacker.label("carol", "no_such_expression", stamp)
    settle(attack, feed_faces(attack, 2)[-1])
    attack.probe.wait_for(lambda: "carol" in attacker.people(), 20, f"carol learned: {attacker.values()}")
    values = attacker.fresh_values()
    assert int(values["labels rejected"]) - rejected == 201
    assert int(values["labels used"]) >= 1
    log = attack.node.output()
    assert "x" * 100 not in log, "refused ids are truncated in the log"
    assert log.count("label rejected") < 20, "warnings about the same cause are throttled"


def test_a_compressed_frame_that_decodes_huge_is_refused_before_decoding(attack, healthy):
    ok, bomb = cv2.imencode(".png", np.zeros((12000, 12000), np.uint8))
    assert ok and len(bomb) < 200_000
    peak_before = _peak_rss_kb(attack.node.process.pid)
    rejected = int(attack.attacker.fresh_values()["frames rejected"])
    attack.stamp += 100_000_000
    msg = CompressedImage(format="png", data=array("B", bomb.tobytes()))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(attack.stamp, 1_000_000_000)
    attack.attacker.raw_frame(msg)
    attack.probe.wait_for(lambda: int(attack.attacker.fresh_values()["frames rejected"]) == rejected + 1, 20,
                          "the 12000x12000 frame rejected")
    assert _peak_rss_kb(attack.node.process.pid) - peak_before < 200_000, "432 MB of pixels were never decoded"
    assert "exceeds the limit" in attack.node.output()


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


BAD_MANIFESTS = {
    "kind 99": lambda good: {**good, "kind": 99},
    "version 99": lambda good: {**good, "schema_version": 99},
    "other classes": lambda good: {**good, "classes": ["happy", "sad"]},
    "a non-integer count": lambda good: {**good, "people": {"alice": 21, FORGOTTEN: 1.5}},
    "a JSON list": lambda good: [good],
}


def test_bad_manifests_and_a_corrupt_gallery_are_set_aside_not_overwritten_and_the_rest_loads(attack, healthy):
    memory = attack.memory
    good = json.loads((memory / "learner.json").read_text())
    variants = {name: json.dumps(make(good)).encode() for name, make in BAD_MANIFESTS.items()}
    variants["garbage bytes"] = b"\x00\xffbobby_tables garbage\x80" * 10
    for name, payload in variants.items():
        (memory / "learner.json").write_bytes(payload)
        reply = attack.probe.call(Trigger, f"{NODE}/load", Trigger.Request())
        assert reply.success and "set aside 1 files" in reply.message, (name, reply.message)
        kept = [p.read_bytes() for p in memory.glob("learner.json.corrupt*")]
        assert payload in kept, f"{name}: the set-aside manifest keeps its bytes"
        assert "alice" in attack.attacker.people()
    assert len(list(memory.glob("learner.json.corrupt*"))) == len(variants), "renamed, never overwritten"
    assert "schema_version is 99" in attack.node.output() and "expected a JSON object" in attack.node.output()

    (memory / "identity.npz").write_bytes(b"PK\x03\x04 not a gallery")
    reply = attack.probe.call(Trigger, f"{NODE}/load", Trigger.Request())
    assert reply.success and "set aside" in reply.message, reply.message
    assert (memory / "identity.npz.corrupt").is_file()
    reply = attack.probe.call(Trigger, f"{NODE}/save", Trigger.Request())
    assert reply.success, reply.message
    assert (memory / "identity.npz").is_file() and (memory / "learner.json").is_file()


def test_forgetting_erases_the_person_everywhere_even_with_a_garbage_index(attack, healthy):
    memory = attack.memory
    rows = person_rows(memory, FORGOTTEN)
    assert traces_of(memory, FORGOTTEN, rows), "the person is stored before"
    population_before = (memory / "population.npz").read_bytes()
    (memory / "learner.json").write_bytes(b"\x00garbage mentioning bobby_tables\xff")
    reply = forget(attack, FORGOTTEN)
    assert reply.success and "queued" in reply.message, reply.message
    wait_until_gone(attack.attacker, FORGOTTEN)
    _wait_without_traces(attack, FORGOTTEN, rows)
    assert (memory / "population.npz").read_bytes() != population_before
    assert population_depends_only_on_the_remaining_people(memory)
    assert not list((memory / "people").glob(f"{FORGOTTEN}*"))
    assert json.loads((memory / "learner.json").read_text())["people"].get("alice") == ALICE_SAMPLES


def test_a_failing_disk_keeps_learning_in_ram_reports_error_and_saves_when_it_recovers(attack, healthy):
    memory, attacker = attack.memory, attack.attacker
    people, moved = memory / "people", memory / "people_away"
    people.rename(moved)
    people.write_bytes(b"a file where the people folder was")
    try:
        stamp = _stamp_of(identified_face(attack))
        attacker.label("dora", "sad", stamp)
        settle(attack, feed_faces(attack, 2)[-1])
        attack.probe.wait_for(lambda: "dora" in attacker.people(), 20, "dora learned")
        attack.probe.wait_for(lambda: attacker.fresh_values()["level"] == 2, 15, "an ERROR on /diagnostics")
        values = attacker.values()
        assert "saving failed" in values["message"] and values["last save error"] != "none"
        reply = attack.probe.call(Trigger, f"{NODE}/save", Trigger.Request())
        assert not reply.success and "kept in RAM" in reply.message, reply.message
        assert attack.node.process.poll() is None
    finally:
        people.unlink()
        moved.rename(people)
    attack.probe.wait_for(lambda: attacker.fresh_values()["last save error"] == "none", 90, "a save after recovery")
    assert (people / "dora.npz").is_file() and "dora" in attacker.people()


def test_forget_is_queued_behind_the_persons_jobs_and_services_keep_answering(attack, healthy):
    attacker = attack.attacker
    stamp = _stamp_of(identified_face(attack))
    for _ in range(5):
        attacker.label(ERASED, "surprised", stamp)
    settle(attack, feed_faces(attack, 1)[-1])
    attack.probe.wait_for(lambda: ERASED in attacker.people(), 20, "erin learned")
    attack.probe.wait_for(lambda: (attack.memory / "people" / f"{ERASED}.npz").is_file(), 10, "erin saved")
    rows = person_rows(attack.memory, ERASED)
    for _ in range(5):
        attacker.label(ERASED, "sad", stamp)
    settle(attack, feed_faces(attack, 1)[-1])
    reply = forget(attack, ERASED)
    assert reply.success and "queued" in reply.message, reply.message
    assert "alice" in attacker.people(), "other services answer while the erasure waits"
    wait_until_gone(attacker, ERASED)
    _wait_without_traces(attack, ERASED, rows)
    assert population_depends_only_on_the_remaining_people(attack.memory)


def _wait_without_traces(attack, person_id: str, rows) -> None:
    deadline = time.monotonic() + 10
    while traces_of(attack.memory, person_id, rows) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert traces_of(attack.memory, person_id, rows) == [], "every trace of the person gone from disk"
