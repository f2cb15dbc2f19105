"""ROS4HRI input (``input: ros4hri``): the faces ``hri_face_detect`` tracks, their aligned crops, and who each is.

The node then looks at no camera. It follows REP-155 / ROS4HRI:

- ``/humans/faces/tracked`` (``hri_msgs/IdsList``) says which faces exist; a
  subscription to ``/humans/faces/<face_id>/aligned`` (``sensor_msgs/Image``,
  a 128x128 eye-levelled crop, best-effort like a camera) is created for each
  face as it appears and destroyed when it leaves;
- who a face is comes from the ROS4HRI side when it says so: the person
  manager's ``/humans/persons/<person_id>/face_id`` (``std_msgs/String``,
  latched) for every person on ``/humans/persons/tracked``, and
  ``hri_msgs/IdsMatch`` on ``/humans/candidate_matches``
  (``hri_face_identification``); a face with neither is left to the node's own
  identity on its crop.

Callbacks only store (the newest crop per face, faces that left, the
association); the node's frame worker takes them with :meth:`Ros4hriInput.take` (docs/design.md §7.7).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from hri_msgs.msg import IdsList, IdsMatch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from clifer_core.faces.track import ROS_NAME_TOKEN
from clifer_core.people import person_id_problem, shown

TRACKED_FACES = "/humans/faces/tracked"
TRACKED_PERSONS = "/humans/persons/tracked"
CANDIDATE_MATCHES = "/humans/candidate_matches"
LIST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
"""Id lists are republished with every camera frame; best-effort matches reliable and best-effort publishers."""
CROP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos_profile_sensor_data.reliability,
                      durability=qos_profile_sensor_data.durability)
MATCHES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
"""A candidate match is an event, not a stream: reliable, so none is lost."""
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""The person manager latches ``/humans/persons/<id>/face_id``: a late subscriber still gets the current face."""
GATHER_S = 0.03
"""Longest wait for the other tracked faces' crops of a camera frame, so that one frame is one ~/expressions array
(the face detector publishes its faces' crops one after the other)."""
IDLE_WAIT_S = 0.5


def aligned_topic(face_id: str) -> str:
    return f"/humans/faces/{face_id}/aligned"


def expression_topic(face_id: str) -> str:
    return f"/humans/faces/{face_id}/expression"


def person_face_topic(person_id: str) -> str:
    return f"/humans/persons/{person_id}/face_id"


def face_id_problem(face_id: str) -> str | None:
    """Why ``face_id`` cannot name topics (None if it can): REP-155 ids are ROS name tokens."""
    if ROS_NAME_TOKEN.match(face_id or ""):
        return None
    return f"face id {shown(face_id)} is not a ROS name token"


class FacePersonAssociation:
    """Which person each tracked face is, as ROS4HRI says; callbacks write, the frame worker reads.

    ``hri_face_identification`` republishes, for every tracked face, one match
    per candidate person with a confidence, and a match of confidence 0 to
    withdraw one. A face is its most confident candidate; a person has one
    face, the one they are matched with most confidently. The person
    manager's ``face_id`` (its fused decision) wins over candidate matches;
    an empty one withdraws it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._candidates: dict[str, dict[str, float]] = {}
        """face -> {person: confidence}, from /humans/candidate_matches."""
        self._managed: dict[str, str] = {}
        """person -> face, from /humans/persons/<person>/face_id."""
        self._applied: dict[str, str] = {}

    def candidate_match(self, msg: IdsMatch) -> str | None:
        """Take a candidate match (either order of ids; other id types are ignored); returns why it was refused."""
        if (msg.id1_type, msg.id2_type) == (IdsMatch.FACE, IdsMatch.PERSON):
            face_id, person_id = msg.id1, msg.id2
        elif (msg.id1_type, msg.id2_type) == (IdsMatch.PERSON, IdsMatch.FACE):
            person_id, face_id = msg.id1, msg.id2
        else:
            return None
        problem = face_id_problem(face_id) or person_id_problem(person_id)
        if problem:
            return problem
        with self._lock:
            if msg.confidence > 0:
                self._candidates.setdefault(face_id, {})[person_id] = float(msg.confidence)
            else:
                self._candidates.get(face_id, {}).pop(person_id, None)
        return None

    def person_face(self, person_id: str, face_id: str) -> str | None:
        """The person manager says ``person_id`` has the face ``face_id`` (none when empty); returns why it was refused."""
        problem = person_id_problem(person_id) or (face_id_problem(face_id) if face_id else None)
        if problem:
            return problem
        with self._lock:
            if face_id:
                self._managed[person_id] = face_id
            else:
                self._managed.pop(person_id, None)
        return None

    def person_left(self, person_id: str) -> None:
        with self._lock:
            self._managed.pop(person_id, None)

    def faces_tracked(self, tracked: set[str], left) -> None:
        """The faces tracked now, and those that just left: candidates of untracked faces go (they are
        republished), the person manager's faces that left go (its latched face_id is not)."""
        with self._lock:
            self._candidates = {face: persons for face, persons in self._candidates.items()
                                if face in tracked and persons}
            self._managed = {person: face for person, face in self._managed.items() if face not in left}

    def people(self) -> dict[str, str]:
        """face -> person, every face ROS4HRI has associated."""
        with self._lock:
            best = {face: max(persons.items(), key=lambda item: (item[1], item[0]))
                    for face, persons in self._candidates.items() if persons}
            managed = dict(self._managed)
        managed_faces = set(managed.values())
        chosen: dict[str, tuple[str, float]] = {}
        for face, (person, confidence) in sorted(best.items()):
            if person in managed or face in managed_faces:
                continue
            if person not in chosen or confidence > chosen[person][1]:
                chosen[person] = (face, confidence)
        people = {face: person for person, (face, _) in chosen.items()}
        people.update({face: person for person, face in managed.items()})
        return people

    def changes(self) -> tuple[dict[str, str], list[str]]:
        """Since the last call: ``(newly bound face -> person, faces whose association was withdrawn)``."""
        now = self.people()
        bound = {face: person for face, person in now.items() if self._applied.get(face) != person}
        released = [face for face in self._applied if face not in now]
        self._applied = now
        return bound, released


@dataclass
class FaceInput:
    """What the frame worker takes in one go: the newest crop of each face, and the faces that left."""

    crops: dict[str, Image] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.crops or self.left)


class Ros4hriInput:
    """The ROS4HRI subscriptions of one activation of ``node``.

    ``ready`` is the node's frame condition (it guards what the worker takes
    and wakes the worker); ``stats`` its frame counters, which count crops
    here: received, dropped (replaced by a newer crop of the same face, or its
    face left first), processed. :meth:`close` destroys every subscription; the
    callbacks create and destroy the per-face and per-person ones under one lock,
    so a callback running during :meth:`close` leaves nothing behind.
    """

    def __init__(self, node, ready: threading.Condition, stats):
        self._node = node
        self._ready = ready
        self._stats = stats
        self._group = MutuallyExclusiveCallbackGroup()
        self.association = FacePersonAssociation()
        self._pending = FaceInput()
        self._first_crop_at = 0.0
        self._tracked: set[str] = set()
        self._subscriptions_lock = threading.Lock()
        self._closed = False
        self._crop_subscriptions: dict[str, object] = {}
        self._person_subscriptions: dict[str, object] = {}
        self._subscriptions = [
            node.create_subscription(IdsList, TRACKED_FACES, self._on_tracked_faces, LIST_QOS, callback_group=self._group),
            node.create_subscription(IdsMatch, CANDIDATE_MATCHES, self._on_candidate_match, MATCHES_QOS,
                                     callback_group=self._group),
            node.create_subscription(IdsList, TRACKED_PERSONS, self._on_tracked_persons, LIST_QOS,
                                     callback_group=self._group),
        ]

    @property
    def topics(self) -> list[str]:
        return [subscription.topic_name for subscription in self._subscriptions]

    def tracked(self) -> set[str]:
        with self._ready:
            return set(self._tracked)

    def pending(self) -> bool:
        """Whether the worker should take now (call with ``ready`` held): faces left, or the newest camera frame's
        crops are there for every tracked face, or the first waiting crop has waited ``GATHER_S``."""
        if self._pending.left:
            return True
        crops = self._pending.crops
        if not crops:
            return False
        newest = max(_stamp(msg) for msg in crops.values())
        complete = all(face_id in crops and _stamp(crops[face_id]) == newest for face_id in self._tracked)
        return complete or time.monotonic() - self._first_crop_at >= GATHER_S

    def wait_s(self) -> float:
        """How long the worker may sleep before :meth:`pending` can change by itself (call with ``ready`` held)."""
        if not self._pending.crops:
            return IDLE_WAIT_S
        return max(1e-3, GATHER_S - (time.monotonic() - self._first_crop_at))

    def take(self) -> FaceInput:
        """Everything stored since the last take (call with ``ready`` held)."""
        taken, self._pending = self._pending, FaceInput()
        return taken

    def close(self) -> None:
        with self._subscriptions_lock:
            self._closed = True
            for subscription in [*self._subscriptions, *self._crop_subscriptions.values(),
                                 *self._person_subscriptions.values()]:
                self._node.destroy_subscription(subscription)
            self._subscriptions, self._crop_subscriptions, self._person_subscriptions = [], {}, {}

    # ------------------------------------------------------------ callbacks

    def _valid_ids(self, ids, problem_of) -> set[str]:
        valid = set()
        for identifier in ids:
            problem = problem_of(identifier)
            if problem:
                self._node.get_logger().warning(f"ignored: {problem}", throttle_duration_sec=5.0)
            else:
                valid.add(identifier)
        return valid

    def _on_tracked_faces(self, msg: IdsList) -> None:
        """Subscribe to the aligned crop of each new face; unsubscribe and hand the departures to the worker."""
        tracked = self._valid_ids(msg.ids, face_id_problem)
        with self._subscriptions_lock:
            if self._closed:
                return
            for face_id in sorted(tracked - self._crop_subscriptions.keys()):
                self._crop_subscriptions[face_id] = self._node.create_subscription(
                    Image, aligned_topic(face_id), lambda crop, face_id=face_id: self._on_crop(face_id, crop),
                    CROP_QOS, callback_group=self._group)
            left = sorted(self._crop_subscriptions.keys() - tracked)
            for face_id in left:
                self._node.destroy_subscription(self._crop_subscriptions.pop(face_id))
        self.association.faces_tracked(tracked, left)
        with self._ready:
            self._tracked = tracked
            for face_id in left:
                if self._pending.crops.pop(face_id, None) is not None:
                    self._stats.dropped += 1
            if left:
                self._pending.left.extend(left)
                self._ready.notify()

    def _on_crop(self, face_id: str, msg: Image) -> None:
        with self._ready:
            if face_id not in self._tracked:
                return
            self._stats.received += 1
            if face_id in self._pending.crops:
                self._stats.dropped += 1
            elif not self._pending.crops:
                self._first_crop_at = time.monotonic()
            self._pending.crops[face_id] = msg
            self._ready.notify()

    def _on_candidate_match(self, msg: IdsMatch) -> None:
        problem = self.association.candidate_match(msg)
        if problem:
            self._node.get_logger().warning(f"candidate match ignored: {problem}", throttle_duration_sec=5.0)

    def _on_tracked_persons(self, msg: IdsList) -> None:
        """Follow each tracked person's latched face_id; a person who left takes their association along."""
        tracked = self._valid_ids(msg.ids, person_id_problem)
        with self._subscriptions_lock:
            if self._closed:
                return
            for person_id in sorted(tracked - self._person_subscriptions.keys()):
                self._person_subscriptions[person_id] = self._node.create_subscription(
                    String, person_face_topic(person_id),
                    lambda face, person_id=person_id: self._on_person_face(person_id, face), LATCHED_QOS,
                    callback_group=self._group)
            for person_id in sorted(self._person_subscriptions.keys() - tracked):
                self._node.destroy_subscription(self._person_subscriptions.pop(person_id))
                self.association.person_left(person_id)

    def _on_person_face(self, person_id: str, msg: String) -> None:
        problem = self.association.person_face(person_id, msg.data)
        if problem:
            self._node.get_logger().warning(f"face_id of {person_id} ignored: {problem}", throttle_duration_sec=5.0)


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec
