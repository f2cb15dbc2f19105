"""Score the expression pipeline on a labelled bag: in-process (fast, deterministic) or a live node over DDS.

In-process, every frame of the bag goes through one :class:`FramePipeline` in
recorded order with deterministic track ids, as fast as the CPU allows, so
the same bag always gives the same numbers. Live, the bag's images are played
into a real ``clifer_node`` at their recorded timing and whatever it publishes
on ``~/expressions`` is scored: frames it drops count as misses.

Labels are matched to frames by header stamp (a label carries its image's
stamp). With a per-person ``learner`` (e.g.
:class:`clifer_core.learner.CliferLearner`) the in-process evaluation drives
the node's own :class:`clifer_core.session.LearningSession`: with
``teach_first=N`` the first N labelled frames of each person are handed to it
as labels (the labelled face's track is bound to the labelled person, ids the
gallery merges bring their memories) instead of scored, and first meetings
are handled as the node handles them. Each frame's learning is finished
before the next frame is processed, and identity runs on the bag's clock, so
results stay deterministic however fast the CPU is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from clifer_core.progress import Progress
from clifer_core.labels import canonical
from clifer_ros.bags.io import IMAGE_TYPE, LABEL_TYPE, BagError, BagReader
from clifer_core.evaluation.bag_report import FrameResult
from clifer_ros.conversions import ImageConversionError, image_to_rgb


class LearnerUnavailableError(ValueError):
    """Teaching was asked for but no per-person learner was given."""


@dataclass(frozen=True)
class BagFrame:
    index: int
    stamp_ns: int
    frame_rgb: np.ndarray


@dataclass(frozen=True)
class BagLabel:
    stamp_ns: int
    person_id: str
    expression: str
    face_id: str


@dataclass(frozen=True)
class Prediction:
    """One reported face, from a :class:`FaceEstimate` or an ``ExpressionEstimate`` message alike."""

    face_id: str
    area: int
    label: str
    confidence: float
    memory: str


def header_stamp_ns(message) -> int:
    return int(message.header.stamp.sec) * 1_000_000_000 + int(message.header.stamp.nanosec)


def pick_topic(reader: BagReader, msgtype: str, wanted: str | None, preferred: str) -> str:
    """``wanted`` if given, else the bag's only topic of ``msgtype`` (``preferred`` when there are several)."""
    if wanted is not None:
        if reader.topics.get(wanted) != msgtype:
            raise BagError(f"{reader.path}: topic {wanted} is not a {msgtype} topic (found: {reader.topics.get(wanted)})")
        return wanted
    candidates = reader.topics_of_type(msgtype)
    if len(candidates) == 1:
        return candidates[0]
    if preferred in candidates:
        return preferred
    if not candidates:
        raise BagError(f"{reader.path}: no {msgtype} topic; topics: {', '.join(f'{t} ({k})' for t, k in reader.topics.items())}")
    raise BagError(f"{reader.path}: several {msgtype} topics ({', '.join(candidates)}); choose one")


def read_labels(reader: BagReader, topic: str) -> dict[int, list[BagLabel]]:
    """Every label of ``topic``, keyed by the stamp of the image it labels."""
    labels: dict[int, list[BagLabel]] = {}
    for message in reader.messages([topic]):
        decoded = reader.decode(message)
        try:
            expression = canonical(decoded.expression)
        except ValueError as error:
            raise BagError(f"{reader.path}: label message {message.index} on {topic}: {error}") from error
        label = BagLabel(header_stamp_ns(decoded), decoded.person_id, expression, decoded.face_id)
        labels.setdefault(label.stamp_ns, []).append(label)
    return labels


def read_frames(reader: BagReader, topic: str) -> Iterator[BagFrame]:
    """The RGB frames of ``topic`` in recorded order, with their header stamps."""
    for message in reader.messages([topic]):
        decoded = reader.decode(message)
        try:
            frame = image_to_rgb(decoded)
        except ImageConversionError as error:
            raise BagError(
                f"{reader.path}: image message {message.index} on {topic} (log time {message.timestamp_ns} ns): {error}"
            ) from error
        yield BagFrame(message.index, header_stamp_ns(decoded), frame)


def choose_prediction(predictions: list[Prediction], label: BagLabel) -> Prediction | None:
    """The face a label is about: its ``face_id`` when it names one, else the largest face."""
    if label.face_id:
        return next((p for p in predictions if p.face_id == label.face_id), None)
    return max(predictions, key=lambda p: p.area, default=None)


def _from_estimates(estimates) -> list[Prediction]:
    return [
        Prediction(e.face_id, (e.roi[2] - e.roi[0]) * (e.roi[3] - e.roi[1]), e.label, float(e.confidence), e.memory)
        for e in estimates
    ]


def _from_message(message) -> list[Prediction]:
    return [
        Prediction(e.face_id, int(e.roi.width) * int(e.roi.height), e.expression, float(e.confidence), e.memory)
        for e in message.estimates
    ]


class TeachingQuota:
    """Counts labelled frames per person, in bag order: the first ``teach_first`` of each are taught."""

    def __init__(self, teach_first: int):
        if teach_first < 0:
            raise ValueError(f"--teach-first must be >= 0, got {teach_first}")
        self.teach_first = teach_first
        self.seen: dict[str, int] = {}

    def teaches(self, person_id: str) -> bool:
        self.seen[person_id] = self.seen.get(person_id, 0) + 1
        return self.seen[person_id] <= self.teach_first


def learning_session(pipeline, learner, settings=None):
    """The node's learning session on ``pipeline`` with ``learner`` (memories in RAM) and ``settings`` (a
    :class:`~clifer_core.session.SessionSettings`; the node's defaults when None); None without a learner."""
    from clifer_core.logs import ThrottledLogger
    from clifer_core.session import LearningSession

    if learner is None:
        return None
    return LearningSession(pipeline, None, ThrottledLogger("clifer.bag_eval"), settings=settings, learner=learner)


class BagClock:
    """The stamp of the frame being processed, as a clock: identity's embedding schedule follows bag time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def default_pipeline(identity: bool = False, clock: BagClock | None = None, learner: bool = False,
                     **options):
    """A deterministic :class:`FramePipeline`; with ``identity``, people are recognised on ``clock`` (bag time).

    With ``learner`` it carries a fresh learner as ``pipeline.learner`` (``options``
    go to :func:`clifer_core.build.build_pipeline`); without, attach one as the node does.
    """
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig

    config = PipelineConfig(deterministic_ids=True, identity=identity, identity_in_background=False)
    return build_pipeline(config, learner=learner, identity_clock=clock or BagClock() if identity else None,
                          **options)


def evaluate_in_process(
    bag: str | Path,
    pipeline=None,
    learner=None,
    teach_first: int = 0,
    image_topic: str | None = None,
    labels_topic: str | None = None,
    progress: bool = False,
    clock: BagClock | None = None,
    settings=None,
) -> list[FrameResult]:
    """One :class:`FrameResult` per labelled frame of ``bag``, from ``pipeline`` run over every frame in order.

    ``pipeline`` defaults to :func:`default_pipeline`, with identity and
    ``learner`` attached when a learner is given. A given pipeline must
    consult ``learner`` itself; pass the :class:`BagClock` its identity
    resolver reads as ``clock`` so identity follows bag time. ``settings``: the learning session's
    :class:`~clifer_core.session.SessionSettings` (self-training, first meetings), the node's defaults when None.
    """
    quota = TeachingQuota(teach_first)
    clock = clock or BagClock()
    if learner is None and teach_first:
        raise LearnerUnavailableError(f"--teach-first {teach_first} needs a per-person learner to teach")
    if pipeline is None:
        pipeline = default_pipeline(identity=learner is not None, clock=clock)
        pipeline.learner = learner
    session = learning_session(pipeline, learner, settings)
    try:
        return _evaluate_frames(bag, pipeline, session, quota, clock, image_topic, labels_topic, progress)
    finally:
        if session is not None:
            session.stop()


def _evaluate_frames(bag, pipeline, session, quota: TeachingQuota, clock: BagClock, image_topic, labels_topic,
                     progress: bool) -> list[FrameResult]:
    from clifer_core.session import Label

    results: list[FrameResult] = []
    with BagReader(bag) as reader:
        image_topic = pick_topic(reader, IMAGE_TYPE, image_topic, "/camera/image_raw")
        labels = read_labels(reader, pick_topic(reader, LABEL_TYPE, labels_topic, "/clifer/labels"))
        bar = Progress("bag eval", reader.counts[image_topic], enabled=progress)
        for frame in read_frames(reader, image_topic):
            frame_labels = labels.get(frame.stamp_ns, [])
            taught = [quota.teaches(label.person_id) for label in frame_labels]
            clock.now = frame.stamp_ns / 1e9
            estimates = pipeline.process(frame.frame_rgb, stamp=clock.now)
            predictions = _from_estimates(estimates)
            for label, is_taught in zip(frame_labels, taught):
                chosen = choose_prediction(predictions, label)
                if is_taught and chosen is not None:
                    session.receive_label(Label(stamp=clock.now, expression=label.expression,
                                                face_id=chosen.face_id, person_id=label.person_id))
                results.append(_result(label, chosen, is_taught))
            if session is not None:
                session.after_frame(estimates)
                session.worker.wait_idle()
            bar.update()
        bar.close()
    return results


def _result(label: BagLabel, chosen: Prediction | None, taught: bool) -> FrameResult:
    return FrameResult(
        stamp_ns=label.stamp_ns, person_id=label.person_id, expression=label.expression,
        predicted=chosen.label if chosen else None, confidence=chosen.confidence if chosen else None,
        face_id=chosen.face_id if chosen else label.face_id, taught=taught,
        memory=chosen.memory if chosen else "",
    )


def _wait_until_quiet(outputs: list, quiet_s: float, timeout: float) -> None:
    """Let the node finish the frames it is still working on: return once no output came for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    seen, quiet_since = len(outputs), time.monotonic()
    while time.monotonic() < deadline:
        if len(outputs) != seen:
            seen, quiet_since = len(outputs), time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.05)


def taught_labels(reader: BagReader, topic: str, teach_first: int) -> set[int]:
    """Log times of the labels that teach: the first ``teach_first`` labelled frames of each person."""
    quota = TeachingQuota(teach_first)
    return {m.timestamp_ns for m in reader.messages([topic]) if quota.teaches(reader.decode(m).person_id)}


def evaluate_live(
    bag: str | Path,
    rate: float = 1.0,
    teach_first: int = 0,
    image_topic: str | None = None,
    labels_topic: str | None = None,
    node_ros_args: tuple[str, ...] = (),
    settle_s: float = 5.0,
    progress: bool = False,
) -> list[FrameResult]:
    """Play ``bag`` into a freshly started ``clifer_node`` at recorded timing and score what it publishes.

    With ``teach_first`` the node also receives the labels of each person's
    first N labelled frames on its labels topic, and learns from them as it
    would from a teacher; the remaining frames are scored. The node starts
    with no memories and saves none (``memory_dir`` empty), so a run neither
    depends on nor changes what a user's node has learnt.
    """
    from lifecycle_msgs.msg import Transition

    from clifer.msg import ExpressionEstimateArray
    from clifer_ros.bags.replay import BagPlayer
    from clifer_ros.harness import NodeProcess, Probe

    quota = TeachingQuota(teach_first)
    with BagReader(bag) as reader:
        image_topic = pick_topic(reader, IMAGE_TYPE, image_topic, "/camera/image_raw")
        labels_topic = pick_topic(reader, LABEL_TYPE, labels_topic, "/clifer/labels")
        labels = read_labels(reader, labels_topic)
        teaching = taught_labels(reader, labels_topic, teach_first) if teach_first else set()
        probe = Probe("clifer_bag_eval")
        node = NodeProcess.start("-r", f"image:={image_topic}", "-r", f"labels:={labels_topic}",
                                 "-p", "deterministic_ids:=true", "-p", "memory_dir:=''", *node_ros_args)
        try:
            outputs = probe.collect(ExpressionEstimateArray, "/clifer/expressions")
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                if not probe.transition("/clifer", transition, timeout=180.0):
                    raise RuntimeError(f"the node refused lifecycle transition {transition}:\n{node.output()}")
            player = BagPlayer(probe.node, reader, topics=[image_topic, labels_topic] if teaching else [image_topic])
            player.wait_for_subscribers(timeout=30.0)
            player.play(rate=rate, progress=progress, keep=lambda m: m.topic == image_topic or m.timestamp_ns in teaching)
            _wait_until_quiet(outputs, quiet_s=1.0, timeout=settle_s)
        finally:
            node.stop()
            probe.close()
    by_stamp = {header_stamp_ns(m): _from_message(m) for m in list(outputs)}
    results = []
    for stamp in sorted(labels):
        for label in labels[stamp]:
            chosen = choose_prediction(by_stamp.get(stamp, []), label)
            results.append(_result(label, chosen, taught=quota.teaches(label.person_id)))
    return results
