"""Turn a labelled face dataset into an evaluation rosbag: a camera stream, person by person.

Each dataset image becomes a 640x480 ``bgr8`` camera frame (the face scaled to
a realistic size on a plain backdrop, drifting slightly as a seated person
does), stamped at the frame rate. Between people the camera sees an empty
scene for a moment, so face tracks end as they would in a real session. Every
face frame has a ``clifer/msg/ExpressionLabel`` on the labels topic with the
frame's exact stamp and the dataset subject as ``person_id``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from clifer_core.data.datasets import FaceSample, load_dataset, load_rgb
from clifer_core.progress import Progress
from clifer_core.labels import canonical
from clifer_ros.bags.io import CAMERA_QOS, IMAGE_TYPE, LABEL_TYPE, RELIABLE_QOS, bag_directory, bag_writer, serialize, typestore

FRAME_WIDTH, FRAME_HEIGHT = 640, 480
FACE_HEIGHT = 260
"""Pixels from top to bottom of the pasted image: a face about a metre from a VGA webcam."""
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
"""A fixed wall-clock start (2023-11-14), so the same dataset always gives the same bag."""
IMAGE_TOPIC = "/camera/image_raw"
LABELS_TOPIC = "/clifer/labels"
CAMERA_FRAME_ID = "camera"


@dataclass(frozen=True)
class PlannedFrame:
    """One camera frame of the bag: when, and which dataset image (None: the empty scene between people)."""

    stamp_ns: int
    sample: FaceSample | None
    seconds_into_visit: float


@dataclass(frozen=True)
class BagSummary:
    path: Path
    frames: int
    labels: int
    people: int
    duration_s: float


def plan_frames(
    samples: list[FaceSample],
    fps: float = 15.0,
    seconds_per_person: float | None = None,
    gap_seconds: float = 1.0,
    start_ns: int = DEFAULT_START_NS,
    lead_expression: str | None = None,
    lead_frames: int = 6,
    hold_frames: int = 1,
) -> list[PlannedFrame]:
    """The frame schedule: people in subject order, expressions interleaved, each image once (or spread over
    ``seconds_per_person``).

    With ``lead_expression`` each visit opens with the person's first image of that expression held for
    ``lead_frames`` frames (the one to teach: ``bag eval --teach-first lead_frames``), then shows their
    other expressions, each held for ``hold_frames`` frames (as a face keeps an expression on video, which
    self-training needs); their other images of the lead expression are left out, being near-duplicates of
    the taught one."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if seconds_per_person is not None and seconds_per_person <= 0:
        raise ValueError(f"seconds per person must be positive, got {seconds_per_person}")
    if gap_seconds < 0:
        raise ValueError(f"gap seconds must be >= 0, got {gap_seconds}")
    by_person: dict[str, list[FaceSample]] = {}
    for sample in samples:
        if sample.expression is not None:
            by_person.setdefault(sample.subject, []).append(sample)
    if not by_person:
        raise ValueError("the dataset has no expression-labelled images")
    period_ns = round(1e9 / fps)
    gap_frames = round(gap_seconds * fps)
    plan: list[PlannedFrame] = []
    if lead_expression is not None:
        lead_expression = canonical(lead_expression)
        by_person = {person: images for person, images in by_person.items()
                     if any(image.expression == lead_expression for image in images)}
        if not by_person or lead_frames < 1:
            raise ValueError(f"no person shows {lead_expression!r} (or lead_frames {lead_frames} < 1)")
    if hold_frames < 1:
        raise ValueError(f"hold_frames must be >= 1, got {hold_frames}")
    if hold_frames > 1 and lead_expression is None:
        raise ValueError("hold_frames applies to the expressions after a lead expression; give lead_expression")
    for person_index, person in enumerate(sorted(by_person)):
        images = interleave_expressions(by_person[person])
        if lead_expression is not None:
            lead = next(image for image in images if image.expression == lead_expression)
            images = [image for image in images if image.expression != lead_expression]
            if person_index:
                plan.extend(PlannedFrame(start_ns + len(plan) * period_ns, None, 0.0) for _ in range(gap_frames))
            plan.extend(PlannedFrame(start_ns + len(plan) * period_ns, lead, i / fps) for i in range(lead_frames))
            plan.extend(PlannedFrame(start_ns + len(plan) * period_ns, image, (lead_frames + i) / fps)
                        for i, image in enumerate(image for image in images for _ in range(hold_frames)))
            continue
        count = len(images) if seconds_per_person is None else max(1, round(seconds_per_person * fps))
        if person_index:
            plan.extend(PlannedFrame(start_ns + len(plan) * period_ns, None, 0.0) for _ in range(gap_frames))
        for frame_index in range(count):
            image = images[frame_index * len(images) // count]
            plan.append(PlannedFrame(start_ns + len(plan) * period_ns, image, frame_index / fps))
    return plan


def interleave_expressions(samples: list[FaceSample]) -> list[FaceSample]:
    """One image of each expression in turn (dataset order within an expression).

    A visit then shows every expression early on, so teaching a person's first
    few frames (``bag eval --teach-first``) covers their expressions.
    """
    by_expression: dict[str, list[FaceSample]] = {}
    for sample in samples:
        by_expression.setdefault(sample.expression, []).append(sample)
    queues = list(by_expression.values())
    return [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]


def compose_frame(face_rgb: np.ndarray | None, seconds_into_visit: float) -> np.ndarray:
    """A 640x480 RGB frame: a soft backdrop, and the face (if any) near the centre, drifting a few pixels."""
    rows = np.linspace(70, 110, FRAME_HEIGHT, dtype=np.float32)[:, None, None]
    frame = np.broadcast_to(rows, (FRAME_HEIGHT, FRAME_WIDTH, 3)).astype(np.uint8)
    if face_rgb is None:
        return frame
    scale = FACE_HEIGHT / face_rgb.shape[0]
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    face = cv2.resize(face_rgb, (round(face_rgb.shape[1] * scale), FACE_HEIGHT), interpolation=interpolation)
    face = face[:, : FRAME_WIDTH - 40]
    dx = round(18 * math.sin(2 * math.pi * 0.2 * seconds_into_visit))
    dy = round(6 * math.sin(2 * math.pi * 0.33 * seconds_into_visit + 1.0))
    top = (FRAME_HEIGHT - face.shape[0]) // 2 + dy
    left = (FRAME_WIDTH - face.shape[1]) // 2 + dx
    frame[top:top + face.shape[0], left:left + face.shape[1]] = face
    return frame


def render_frames(plan: list[PlannedFrame]) -> Iterator[tuple[PlannedFrame, np.ndarray]]:
    """Each planned frame with its RGB pixels (an image held over several frames is read once)."""
    cached_path, cached_face = None, None
    for planned in plan:
        if planned.sample is not None and planned.sample.path != cached_path:
            cached_path, cached_face = planned.sample.path, load_rgb(planned.sample.path)
        yield planned, compose_frame(cached_face if planned.sample is not None else None, planned.seconds_into_visit)


def _header(stamp_ns: int):
    store = typestore()
    seconds, nanoseconds = divmod(stamp_ns, 1_000_000_000)
    stamp = store.types["builtin_interfaces/msg/Time"](sec=seconds, nanosec=nanoseconds)
    return store.types["std_msgs/msg/Header"](stamp=stamp, frame_id=CAMERA_FRAME_ID)


def image_message(frame_rgb: np.ndarray, stamp_ns: int):
    """A ``sensor_msgs/Image`` (rosbags object) holding ``frame_rgb`` as bgr8."""
    bgr = np.ascontiguousarray(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    return typestore().types[IMAGE_TYPE](
        header=_header(stamp_ns), height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8",
        is_bigendian=0, step=bgr.shape[1] * 3, data=bgr.reshape(-1),
    )


def label_message(stamp_ns: int, person_id: str, expression: str, face_id: str = ""):
    return typestore().types[LABEL_TYPE](
        header=_header(stamp_ns), face_id=face_id, person_id=person_id, expression=canonical(expression),
    )


def select_people(samples: list[FaceSample], people: int | None) -> list[FaceSample]:
    """The samples of the first ``people`` subjects (in sorted order), or all."""
    if people is None:
        return samples
    if people < 1:
        raise ValueError(f"people must be >= 1, got {people}")
    chosen = set(sorted({s.subject for s in samples})[:people])
    return [s for s in samples if s.subject in chosen]


def make_bag(
    dataset: str,
    out: str | Path,
    storage: str | None = None,
    fps: float = 15.0,
    seconds_per_person: float | None = None,
    gap_seconds: float = 1.0,
    people: int | None = None,
    force: bool = False,
    progress: bool = False,
    lead_expression: str | None = None,
    lead_frames: int = 6,
    hold_frames: int = 1,
) -> BagSummary:
    """Write the evaluation bag for ``dataset`` (a name or folder, as :func:`load_dataset` takes) to ``out``;
    ``lead_expression``: each visit opens with that expression, the others then held ``hold_frames`` frames each
    (see :func:`plan_frames`)."""
    plan = plan_frames(select_people(load_dataset(dataset), people), fps, seconds_per_person, gap_seconds,
                       lead_expression=lead_expression, lead_frames=lead_frames, hold_frames=hold_frames)
    bar = Progress("bag make", len(plan), enabled=progress)
    labels = 0
    with bag_writer(out, storage, force) as writer:
        images = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=typestore(), offered_qos_profiles=[CAMERA_QOS])
        labels_connection = writer.add_connection(
            LABELS_TOPIC, LABEL_TYPE, typestore=typestore(), offered_qos_profiles=[RELIABLE_QOS]
        )
        for planned, frame in render_frames(plan):
            writer.write(images, planned.stamp_ns, serialize(image_message(frame, planned.stamp_ns), IMAGE_TYPE))
            if planned.sample is not None:
                label = label_message(planned.stamp_ns, planned.sample.subject, planned.sample.expression)
                writer.write(labels_connection, planned.stamp_ns, serialize(label, LABEL_TYPE))
                labels += 1
            bar.update()
    bar.close()
    return BagSummary(
        path=bag_directory(out), frames=len(plan), labels=labels,
        people=len({p.sample.subject for p in plan if p.sample is not None}),
        duration_s=(plan[-1].stamp_ns - plan[0].stamp_ns) / 1e9,
    )
