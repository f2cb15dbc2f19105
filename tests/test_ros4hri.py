"""ROS4HRI input mode: the crop path of the core, and the node between a stand-in hri_face_detect and ROS4HRI
consumers over real DDS.

``clifer_ros/ros4hri_standin.py`` is a STAND-IN for ``hri_face_detect`` (which
cannot be installed here): it publishes ``/humans/faces/tracked`` and each
face's ``/aligned`` crop as that node does. The node is started from the
real ROS4HRI launch file, evaluated by ``tests/launch_standin.py`` (a
stand-in for ``ros2 launch``; see tests/test_package.py).
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from frames import face_frame

ROOT = Path(__file__).resolve().parents[1]
NODE = "/clifer"


@pytest.fixture(scope="module")
def astronaut_crop() -> np.ndarray:
    """The astronaut's REP-155 aligned crop (128x128), as hri_face_detect would publish it."""
    from clifer_core.faces import align_rep155, find_largest_face

    frame = face_frame()
    return align_rep155(frame, find_largest_face(frame))


class SteppedClock:
    """The identity's clock, advanced by the test: its embedding schedule then depends on calls, not on CPU load
    (the way bag evaluation drives it)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def crop_pipeline(clock=None, identity: bool = True):
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig

    return build_pipeline(PipelineConfig(identity=identity, identity_in_background=False), imagination="none",
                          identity_clock=clock)


# ----------------------------------------------------------------- the core


def test_crop_path_estimates_identifies_and_teaches_like_the_frame_path(astronaut_crop):
    from clifer_core.faces.align import REP155_SIZE
    from clifer_core.logs import ThrottledLogger
    from clifer_core.pipeline import resize_crop
    from clifer_core.session import Label, LearningSession

    clock = SteppedClock()
    pipeline = crop_pipeline(clock)
    session = LearningSession(pipeline, None, ThrottledLogger("test_ros4hri"))
    try:
        crops = {"fa": astronaut_crop, "fb": np.ascontiguousarray(astronaut_crop[:, ::-1])}
        estimates = []
        steps = 8
        for step in range(steps):
            clock.now = step * 1.0
            estimates = pipeline.process_crops(crops, stamp=float(step), people={"fa": "alice"})
            session.after_frame(estimates)
        by_face = {e.face_id: e for e in estimates}
        assert set(by_face) == {"fa", "fb"}
        assert by_face["fa"].person_id == "alice", "a person named from outside wins"
        assert by_face["fb"].person_id, "without one, the node's own identity enrols the face from its crops"
        prior = pipeline.expression_model.predict_proba(np.stack([resize_crop(astronaut_crop, 96)]))[0]
        fa = by_face["fa"]
        assert fa.memory == "prior" and fa.stamp == steps - 1 and fa.roi == (0, 0, REP155_SIZE, REP155_SIZE)
        np.testing.assert_allclose(fa.probabilities, prior, atol=1e-5)
        assert fa.label == ("angry", "disgusted", "scared", "happy", "sad", "surprised", "neutral")[int(np.argmax(prior))]
        assert -1 <= fa.valence <= 1 and -1 <= fa.arousal <= 1

        outcome = session.teach("sad", face_id="fa")
        assert outcome.success and outcome.person_id == "alice", outcome.message
        assert session.receive_label(Label(stamp=steps - 1.0, expression="sad", face_id="fa"))
        session.after_frame([])
        session.stop()
        assert session.label_counts()["used"] == 1, "a label finds the face by the crop's stamp"
        assert pipeline.learner.knows("alice")
        taught = pipeline.process_crops({"fa": astronaut_crop}, stamp=float(steps), people={"fa": "alice"})[0]
        assert taught.memory == "fused" and taught.label == "sad", "the person's taught memory answers"

        assert len(pipeline.recent_crops("fb")) == steps
        pipeline.end_faces(["fb"])
        assert len(pipeline.recent_crops("fb")) == 0 and pipeline.person_of("fb") is None
    finally:
        session.stop()
        pipeline.close()


def test_rep155_aligned_crop_levels_the_eyes_of_a_tilted_face():
    import cv2

    from clifer_core.faces import align_rep155, crop_rep155, find_largest_face
    from clifer_core.faces.align import eye_angle_degrees

    frame = face_frame()
    tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D((320, 240), 20, 1.0), (640, 480), borderValue=(90, 90, 90))
    detection = find_largest_face(tilted)
    assert abs(eye_angle_degrees(detection)) > 12, "the face in the frame is tilted"
    aligned, cropped = align_rep155(tilted, detection), crop_rep155(tilted, detection)
    assert aligned.shape == cropped.shape == (128, 128, 3)
    assert abs(eye_angle_degrees(find_largest_face(aligned))) < 6, "the aligned crop's eyes are level"
    assert abs(eye_angle_degrees(find_largest_face(cropped))) > 12, "the plain REP-155 crop keeps the tilt"


def test_crop_path_refuses_bad_input_and_loses_nothing(astronaut_crop):
    pipeline = crop_pipeline(identity=False)
    try:
        pipeline.process_crops({"fa": astronaut_crop}, stamp=1.0)
        with pytest.raises(ValueError, match="ROS name token"):
            pipeline.process_crops({"not a token": astronaut_crop})
        with pytest.raises(ValueError, match="too small"):
            pipeline.process_crops({"fb": astronaut_crop[:4, :4]})
        assert len(pipeline.recent_crops("fa")) == 1 and pipeline.frame_faces(1.0).face_ids == ["fa"]
        assert pipeline.process_crops({}, stamp=2.0) == []
    finally:
        pipeline.close()


def test_own_identity_on_aligned_crops_tells_two_real_people_apart(data_dir):
    from clifer_core.data.datasets import load_dataset, load_rgb
    from clifer_core.faces import align_rep155, find_largest_face

    samples = load_dataset("taiwanese")
    people = sorted({s.subject for s in samples})[:2]
    crops = {}
    for subject in people:
        images = [load_rgb(s.path) for s in samples if s.subject == subject][:6]
        crops[subject] = [align_rep155(image, find_largest_face(image)) for image in images]
    clock = SteppedClock()
    pipeline = crop_pipeline(clock)
    try:
        found = {}
        for step in range(6):
            clock.now = step * 1.0
            estimates = pipeline.process_crops({"fa": crops[people[0]][step], "fb": crops[people[1]][step]}, stamp=step)
            found = {e.face_id: e.person_id for e in estimates}
        assert found["fa"] and found["fb"] and found["fa"] != found["fb"], f"{people}: {found}"
        pipeline.end_faces(["fa", "fb"])
        for step in range(6, 10):
            clock.now = step * 1.0
            again = pipeline.process_crops({"fc": crops[people[1]][step - 6]}, stamp=step)[0].person_id
        assert again == found["fb"], "the same person's new face is recognised from its crops"
    finally:
        pipeline.close()


# ------------------------------------------------- the association, no DDS


def test_face_person_association_follows_ros4hri_rules():
    from hri_msgs.msg import IdsMatch

    from clifer_ros.ros4hri import FacePersonAssociation

    def match(id1, type1, id2, type2, confidence):
        return IdsMatch(id1=id1, id1_type=type1, id2=id2, id2_type=type2, confidence=confidence)

    PERSON, FACE, BODY = IdsMatch.PERSON, IdsMatch.FACE, IdsMatch.BODY
    association = FacePersonAssociation()
    assert association.candidate_match(match("alice", PERSON, "fa", FACE, 0.9)) is None
    assert association.candidate_match(match("fb", FACE, "bob", PERSON, 0.7)) is None
    assert association.candidate_match(match("fc", FACE, "b1", BODY, 0.9)) is None, "face-body matches are not ours"
    assert association.people() == {"fa": "alice", "fb": "bob"}
    assert association.changes() == ({"fa": "alice", "fb": "bob"}, [])
    assert association.changes() == ({}, []), "changes are reported once"

    association.candidate_match(match("carol", PERSON, "fb", FACE, 0.0))
    assert association.people()["fb"] == "bob", "confidence 0 withdraws only the pair it names"
    association.candidate_match(match("bob", PERSON, "fb", FACE, 0.0))
    assert association.people() == {"fa": "alice"}
    assert association.changes() == ({}, ["fb"])

    association.candidate_match(match("alice", PERSON, "fd", FACE, 0.8))
    assert association.people() == {"fa": "alice"}, "a person has one face: their most confident match"
    association.candidate_match(match("alice", PERSON, "fd", FACE, 0.95))
    assert association.people() == {"fd": "alice"}
    association.candidate_match(match("bob", PERSON, "fb", FACE, 0.6))
    association.candidate_match(match("carol", PERSON, "fb", FACE, 0.7))
    assert association.people()["fb"] == "carol", "a face is its most confident candidate"
    association.candidate_match(match("carol", PERSON, "fb", FACE, 0.0))
    assert association.people()["fb"] == "bob"
    assert association.person_face("dave", "fd") is None
    assert association.people() == {"fa": "alice", "fb": "bob", "fd": "dave"}, (
        "the person manager wins over candidate matches; alice is back on her other face")
    association.person_face("dave", "")
    assert association.people() == {"fb": "bob", "fd": "alice"}
    association.person_face("erin", "fe")
    association.person_left("erin")
    association.person_face("frank", "ff")
    association.faces_tracked({"fa", "fd", "ff"}, left=["fb"])
    assert association.people() == {"fd": "alice", "ff": "frank"}, "fb left, and its candidates with it"
    association.faces_tracked(set(), left=["fa", "fd", "ff"])
    assert association.people() == {}

    assert "ROS name token" in association.candidate_match(match("alice", PERSON, "bad face", FACE, 0.9))
    assert association.candidate_match(match("9lives", PERSON, "fa", FACE, 0.9)), "person ids are checked"
    assert association.person_face("alice", "f/1")
    assert association.people() == {}, "refused input changes nothing"


# --------------------------------------------------------- the node, over DDS


class FaceStream:
    """Publishes, every ``period_s`` from a thread, the stand-in's current faces (``faces``: given crops, or the
    faces it finds in ``frame``) and the person manager's list."""

    def __init__(self, standin, probe, period_s: float = 0.1):
        from hri_msgs.msg import IdsList

        from clifer_ros.node import IMAGE_QOS

        self.standin, self.probe, self.period_s = standin, probe, period_s
        self.faces: dict[str, np.ndarray] = {}
        self.frame: np.ndarray | None = None
        self.persons: list[str] = []
        self.sent: dict[int, set[str]] = {}
        self._persons = probe.node.create_publisher(IdsList, "/humans/persons/tracked", IMAGE_QOS)
        self._stop = threading.Event()
        self._stamps = itertools.count(1_000)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from hri_msgs.msg import IdsList
        from std_msgs.msg import Header

        while not self._stop.is_set():
            stamp = next(self._stamps) * 100_000_000
            header = Header(frame_id="camera")
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            if self.frame is not None:
                faces = self.standin.publish_frame(self.frame, header)
            else:
                faces = dict(self.faces)
                self.standin.publish_faces(faces, header)
            self.sent[stamp] = set(faces)
            self._persons.publish(IdsList(header=header, ids=list(self.persons)))
            time.sleep(self.period_s)

    def mark(self) -> int:
        """A stamp from which on every frame has the faces set now."""
        return (next(self._stamps) + 1) * 100_000_000

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_for_people(probe, arrays, since: int, expected: dict[str, str], what: str, timeout: float = 30.0) -> None:
    """Wait until the newest estimate array from ``since`` on shows ``expected``; on timeout, say what it showed."""
    try:
        probe.wait_for(lambda: people_after(arrays, since) == expected, timeout, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; the newest array shows {people_after(arrays, since)}") from None


def people_after(arrays, since: int) -> dict[str, str]:
    """face -> person_id in the newest estimate array stamped at or after ``since``."""
    from clifer_ros.harness import stamp_ns

    newest = [m for m in arrays if stamp_ns(m) >= since]
    return {e.face_id: e.person_id for e in newest[-1].estimates} if newest else {}


def test_node_in_ros4hri_mode_follows_tracked_faces_and_the_person_association(astronaut_crop, tmp_path):
    import launch_standin
    from diagnostic_msgs.msg import DiagnosticArray
    from hri_msgs.msg import Expression, IdsMatch
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.srv import GetParameters
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from clifer.msg import ExpressionEstimateArray
    from clifer.srv import Teach
    from clifer_ros.harness import PARAMETER_RESEND_S, NodeProcess, Probe, stamp_ns
    from clifer_ros.ros4hri_standin import FaceDetectStandIn
    from test_node import wait_for_counters

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    identity: false\n    imagination: none\n"
                      "    memory_dir: ''\n    processing_rate_hz: 30.0\n")
    plan = launch_standin.evaluate(ROOT / "launch" / "clifer_ros4hri.launch.py", share_dir=ROOT,
                                   executable_dir=Path(sys.executable).parent, params_file=str(params))
    assert plan.transitions == [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE]

    probe = Probe()
    node = NodeProcess(plan.argv)
    stream = None
    try:
        arrays = probe.collect(ExpressionEstimateArray, f"{NODE}/expressions")
        diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
        expressions = {face: probe.collect(Expression, f"/humans/faces/{face}/expression") for face in ("fa", "fb")}
        matches = probe.node.create_publisher(IdsMatch, "/humans/candidate_matches",
                                              QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        carol_face = probe.node.create_publisher(String, "/humans/persons/carol/face_id", latched)
        for transition in plan.transitions:
            assert probe.transition(NODE, transition), node.output()
        reply = probe.call(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=["input"]),
                           resend_after=PARAMETER_RESEND_S)
        assert reply.values[0].string_value == "ros4hri"

        stream = FaceStream(FaceDetectStandIn(probe.node), probe)
        stream.faces = {"fa": astronaut_crop, "fb": np.ascontiguousarray(astronaut_crop[:, ::-1])}
        probe.wait_for(lambda: expressions["fa"] and expressions["fb"], 30, "an hri_msgs/Expression per face")
        assert probe.node.count_subscribers("/humans/faces/fa/aligned") == 1, "the graph shows the node's subscriptions"
        assert probe.node.count_subscribers("/image") == 0, "no camera subscription in ros4hri mode"
        probe.wait_for(lambda: matches.get_subscription_count() > 0, 20, "the node on /humans/candidate_matches")
        matches.publish(IdsMatch(id1="alice", id1_type=IdsMatch.PERSON, id2="fa", id2_type=IdsMatch.FACE, confidence=0.9))
        matches.publish(IdsMatch(id1="fb", id1_type=IdsMatch.FACE, id2="bob", id2_type=IdsMatch.PERSON, confidence=0.8))
        since = stream.mark()
        wait_for_people(probe, arrays, since, {"fa": "alice", "fb": "bob"},
                        "the persons of the candidate matches (either order of ids)")

        reply = probe.call(Teach, f"{NODE}/teach", Teach.Request(face_id="fa", expression="sad"))
        assert reply.success and reply.person_id == "alice", reply.message

        matches.publish(IdsMatch(id1="bob", id1_type=IdsMatch.PERSON, id2="fb", id2_type=IdsMatch.FACE, confidence=0.0))
        since = stream.mark()
        wait_for_people(probe, arrays, since, {"fa": "alice", "fb": ""}, "fb dissociated from bob (identity off: nobody)")

        carol_face.publish(String(data="fb"))
        stream.persons = ["carol"]
        since = stream.mark()
        wait_for_people(probe, arrays, since, {"fa": "alice", "fb": "carol"}, "the person manager's latched face_id")

        stream.faces = {"fa": astronaut_crop}
        left = stream.mark()
        probe.wait_for(lambda: probe.node.count_publishers("/humans/faces/fb/expression") == 0, 30,
                       "fb's expression topic to go when fb leaves the tracked list")
        probe.wait_for(lambda: probe.node.count_subscribers("/humans/faces/fb/aligned") == 0, 30,
                       "the node's subscription to fb's crops to go (the graph reports each removal in its own time)")
        probe.wait_for(lambda: len([m for m in expressions["fa"] if stamp_ns(m) >= left]) >= 5, 30,
                       "fa's expressions to go on")
        assert probe.node.count_publishers("/humans/faces/fa/expression") == 1
        stream.stop()
        counters = wait_for_counters(probe, diagnostics, lambda c: c["frames processed"] + c["frames dropped"]
                                     == c["frames received"] > 0, "every crop processed or counted as dropped",
                                     since=len(diagnostics), timeout=30.0)
        assert counters["frames failed"] == 0 and counters["frames rejected"] == 0
    except AssertionError:
        print(node.output()[-4000:])
        raise
    finally:
        if stream is not None:
            stream.stop()
        exit_code = node.stop()
        probe.close()
    assert exit_code == 0, node.output()

    for face, received in expressions.items():
        stamps = [stamp_ns(m) for m in received]
        assert all(face in stream.sent.get(stamp, ()) for stamp in stamps), (
            f"every Expression of {face} carries the stamp of a crop of {face}")
        assert len(stamps) == len(set(stamps)), "one Expression per crop"
        for expression in received:
            assert expression.header.frame_id == "camera"
            assert expression.expression in ("angry", "disgusted", "scared", "happy", "sad", "surprised", "neutral")
            assert -1 <= expression.valence <= 1 and -1 <= expression.arousal <= 1 and 0 < expression.confidence <= 1
            assert not math.isnan(expression.valence) and not math.isnan(expression.arousal)
    assert not [m for m in expressions["fb"] if stamp_ns(m) >= left], "nothing for fb once it left"
    by_stamp: dict[int, dict] = {}
    for array_msg in arrays:  # a frame's crops are one array unless one came over GATHER_S late: then two, same stamp
        by_stamp.setdefault(stamp_ns(array_msg), {}).update({e.face_id: e for e in array_msg.estimates})
    for expression in expressions["fa"]:
        estimate = by_stamp[stamp_ns(expression)]["fa"]
        assert expression.expression == estimate.expression
        assert expression.valence == pytest.approx(estimate.valence)
        assert expression.confidence == pytest.approx(estimate.confidence)
    assert all(set(faces) == {"fa"} for stamp, faces in by_stamp.items() if stamp >= left), "fb gone from ~/expressions"


def test_node_in_ros4hri_mode_falls_back_to_its_own_identity_learns_the_association_and_reactivates(tmp_path):
    """The stand-in finds the face in camera frames itself here (its detector path), as hri_face_detect would."""
    from hri_msgs.msg import IdsMatch
    from lifecycle_msgs.msg import Transition
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from clifer.msg import ExpressionEstimateArray
    from clifer.srv import ListPeople
    from clifer_ros.harness import NodeProcess, Probe
    from clifer_ros.ros4hri_standin import FaceDetectStandIn

    probe = Probe()
    node = NodeProcess.start("-p", "input:=ros4hri", "-p", "imagination:=none", "-p", f"memory_dir:={tmp_path}")
    stream = None
    try:
        arrays = probe.collect(ExpressionEstimateArray, f"{NODE}/expressions")
        matches = probe.node.create_publisher(IdsMatch, "/humans/candidate_matches",
                                              QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        assert probe.transition(NODE, Transition.TRANSITION_CONFIGURE), node.output()
        assert probe.transition(NODE, Transition.TRANSITION_ACTIVATE), node.output()
        stream = FaceStream(FaceDetectStandIn(probe.node), probe)
        stream.frame = face_frame()
        face = "f00000"
        probe.wait_for(lambda: people_after(arrays, 0).get(face), 40, "the node's own identity to enrol the face")
        enrolled = people_after(arrays, 0)[face]
        assert enrolled != "alice"

        probe.wait_for(lambda: matches.get_subscription_count() > 0, 20, "the node on /humans/candidate_matches")
        matches.publish(IdsMatch(id1=face, id1_type=IdsMatch.FACE, id2="alice", id2_type=IdsMatch.PERSON, confidence=1.0))
        since = stream.mark()
        wait_for_people(probe, arrays, since, {face: "alice"}, "the face to be alice")
        probe.wait_for(lambda: "alice" in probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request()).person_ids
                       and enrolled not in probe.call(ListPeople, f"{NODE}/list_people", ListPeople.Request()).person_ids,
                       30, f"the gallery to merge {enrolled} into alice")

        assert probe.transition(NODE, Transition.TRANSITION_DEACTIVATE)
        probe.wait_for(lambda: probe.node.count_publishers(f"/humans/faces/{face}/expression") == 0
                       and probe.node.count_subscribers("/humans/faces/tracked") == 0, 30,
                       "deactivation to drop the ROS4HRI subscriptions and the face's expression topic")
        assert probe.transition(NODE, Transition.TRANSITION_ACTIVATE)
        since = stream.mark()
        wait_for_people(probe, arrays, since, {face: "alice"}, "estimates again after re-activation, still alice")
    except AssertionError:
        print(node.output()[-4000:])
        raise
    finally:
        if stream is not None:
            stream.stop()
        exit_code = node.stop()
        probe.close()
    assert exit_code == 0, node.output()
