"""Score the expression pipeline on a labelled bag: in-process (fast, deterministic) or a live node over DDS.

In-process, every frame of the bag goes through one :class:`FramePipeline` in
recorded order with deterministic track ids, as fast as the CPU allows, so
the same bag always gives the same numbers. Live, the bag's images are played
into a real ``clifer_node`` at their recorded timing and whatever it publishes
on ``~/expressions`` is scored: frames it drops count as misses.

Labels are matched to frames by header stamp (a label carries its image's
stamp). With ``teach_first=N`` the first N labelled frames of each person are
taught to a ``learner`` (``learn(person_id, crops, labels)``) instead of
scored; the pipeline given must consult that learner for its predictions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from clifer_core.labels import canonical
from clifer_ros.bag_io import IMAGE_TYPE, LABEL_TYPE, BagError, BagReader
from clifer_ros.bag_progress import Progress
from clifer_ros.bag_report import FrameResult
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
        Prediction(e.face_id, (e.roi[2] - e.roi[0]) * (e.roi[3] - e.roi[1]), e.label, float(e.confidence))
        for e in estimates
    ]


def _from_message(message) -> list[Prediction]:
    return [
        Prediction(e.face_id, int(e.roi.width) * int(e.roi.height), e.expression, float(e.confidence))
        for e in message.estimates
    ]


def _crop(frame_rgb: np.ndarray, roi: tuple[int, int, int, int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = roi
    return cv2.resize(frame_rgb[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


class TeachingSchedule:
    """Which labelled frames are taught: the first ``teach_first`` of each person, in bag order.

    Crops of taught frames are handed to the learner as one batch per person
    as soon as that person's quota is full (or at the end of the bag).
    """

    def __init__(self, teach_first: int, learner, crop_size: int):
        if teach_first < 0:
            raise ValueError(f"--teach-first must be >= 0, got {teach_first}")
        if teach_first and learner is None:
            raise LearnerUnavailableError(
                f"--teach-first {teach_first} needs the per-person learner (issue 6), which this build does not have "
                "yet; run with --teach-first 0 to score the population prior"
            )
        self.teach_first = teach_first
        self.learner = learner
        self.crop_size = crop_size
        self.seen: dict[str, int] = {}
        self.pending: dict[str, tuple[list[np.ndarray], list[str]]] = {}

    def teaches(self, person_id: str) -> bool:
        """Count one labelled frame of ``person_id``; True when it belongs to the taught share."""
        self.seen[person_id] = self.seen.get(person_id, 0) + 1
        return self.seen[person_id] <= self.teach_first

    def teach(self, person_id: str, frame_rgb: np.ndarray, roi, expression: str) -> None:
        crops, labels = self.pending.setdefault(person_id, ([], []))
        crops.append(_crop(frame_rgb, roi, self.crop_size))
        labels.append(expression)
        if self.seen[person_id] >= self.teach_first:
            self._flush(person_id)

    def finish(self) -> None:
        for person_id in list(self.pending):
            self._flush(person_id)

    def _flush(self, person_id: str) -> None:
        crops, labels = self.pending.pop(person_id, ([], []))
        if crops:
            self.learner.learn(person_id, np.stack(crops), list(labels))


def evaluate_in_process(
    bag: str | Path,
    pipeline=None,
    learner=None,
    teach_first: int = 0,
    image_topic: str | None = None,
    labels_topic: str | None = None,
    progress: bool = False,
) -> list[FrameResult]:
    """One :class:`FrameResult` per labelled frame of ``bag``, from ``pipeline`` (default: a fresh
    deterministic :class:`FramePipeline`) run over every frame in order."""
    from clifer_core.pipeline import FramePipeline, PipelineConfig

    config = pipeline.config if pipeline is not None else PipelineConfig(deterministic_ids=True)
    schedule = TeachingSchedule(teach_first, learner, config.crop_size)
    pipeline = pipeline or FramePipeline(config)
    results: list[FrameResult] = []
    with BagReader(bag) as reader:
        image_topic = pick_topic(reader, IMAGE_TYPE, image_topic, "/camera/image_raw")
        labels = read_labels(reader, pick_topic(reader, LABEL_TYPE, labels_topic, "/clifer/labels"))
        bar = Progress(reader.counts[image_topic], "bag eval", enabled=progress)
        for frame in read_frames(reader, image_topic):
            estimates = pipeline.process(frame.frame_rgb, stamp=frame.stamp_ns / 1e9)
            predictions = _from_estimates(estimates)
            for label in labels.get(frame.stamp_ns, []):
                chosen = choose_prediction(predictions, label)
                taught = schedule.teaches(label.person_id)
                if taught and chosen is not None:
                    estimate = next(e for e in estimates if e.face_id == chosen.face_id)
                    schedule.teach(label.person_id, frame.frame_rgb, estimate.roi, label.expression)
                results.append(_result(label, chosen, taught))
            bar.advance()
        bar.close()
    schedule.finish()
    return results


def _result(label: BagLabel, chosen: Prediction | None, taught: bool) -> FrameResult:
    return FrameResult(
        stamp_ns=label.stamp_ns, person_id=label.person_id, expression=label.expression,
        predicted=chosen.label if chosen else None, confidence=chosen.confidence if chosen else None,
        face_id=chosen.face_id if chosen else label.face_id, taught=taught,
    )


def evaluate_live(
    bag: str | Path,
    rate: float = 1.0,
    image_topic: str | None = None,
    labels_topic: str | None = None,
    node_ros_args: tuple[str, ...] = (),
    settle_s: float = 5.0,
    progress: bool = False,
) -> list[FrameResult]:
    """Play ``bag``'s images into a freshly started ``clifer_node`` at recorded timing and score its output."""
    from lifecycle_msgs.msg import Transition

    from clifer.msg import ExpressionEstimateArray
    from clifer_ros.bag_replay import BagPlayer
    from clifer_ros.harness import NodeProcess, Probe

    with BagReader(bag) as reader:
        image_topic = pick_topic(reader, IMAGE_TYPE, image_topic, "/camera/image_raw")
        labels = read_labels(reader, pick_topic(reader, LABEL_TYPE, labels_topic, "/clifer/labels"))
        probe = Probe("clifer_bag_eval")
        node = NodeProcess.start("-r", f"image:={image_topic}", "-p", "deterministic_ids:=true", *node_ros_args)
        try:
            outputs = probe.collect(ExpressionEstimateArray, "/clifer/expressions")
            for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                if not probe.transition("/clifer", transition, timeout=180.0):
                    raise RuntimeError(f"the node refused lifecycle transition {transition}:\n{node.output()}")
            player = BagPlayer(probe.node, reader, topics=[image_topic])
            player.wait_for_subscribers(timeout=30.0)
            player.play(rate=rate, progress=progress)
            last_stamp = max(labels) if labels else None
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline and not any(header_stamp_ns(m) == last_stamp for m in list(outputs)):
                time.sleep(0.05)
        finally:
            node.stop()
            probe.close()
    by_stamp = {header_stamp_ns(m): _from_message(m) for m in list(outputs)}
    results = []
    for stamp in sorted(labels):
        for label in labels[stamp]:
            results.append(_result(label, choose_prediction(by_stamp.get(stamp, []), label), taught=False))
    return results
