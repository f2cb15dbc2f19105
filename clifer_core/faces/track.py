"""Face tracking: a stable ``face_id`` per face across frames.

Detections are matched to tracks by box overlap or, for fast motion, by
centre distance to a constant-velocity prediction (optimal assignment).
Hysteresis: a track is ``confirmed`` (published) after ``min_hits``
consecutive matched frames and ended after ``max_misses`` consecutive
misses, so one missed or one spurious detection neither drops nor creates a
face. IDs are valid ROS name tokens (a letter, then letters, digits, ``_``).
"""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from clifer_core.faces.detect import Detection

ROS_NAME_TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_MIN_HITS = 2
"""Detections before a face is reported: one spurious detection is not a face, two in a row usually is."""


@dataclass
class Track:
    """One tracked face. Read-only for callers; :class:`FaceTracker` updates it."""

    face_id: str
    detection: Detection
    hits: int = 1
    misses: int = 0
    age: int = 1
    confirmed: bool = False
    velocity: tuple[float, float] = (0.0, 0.0)

    @property
    def visible(self) -> bool:
        """True when the track was matched in the latest frame."""
        return self.misses == 0


def _iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    y0 = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    x1 = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    y1 = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


class FaceTracker:
    """Assigns persistent face IDs to per-frame detections.

    ``update(detections)`` returns the tracks visible in this frame (confirmed
    or not: publish only ``track.confirmed`` ones); ``ended`` then lists the
    tracks dropped by that update. ``deterministic_ids`` numbers IDs
    ``f00000, f00001...`` (tests, bag replay); otherwise they are random
    ``f`` + 8 hex digits, unique across restarts.
    """

    def __init__(
        self,
        min_hits: int = DEFAULT_MIN_HITS,
        max_misses: int = 5,
        iou_threshold: float = 0.2,
        max_center_shift: float = 1.0,
        deterministic_ids: bool = False,
    ):
        if min_hits < 1 or max_misses < 0:
            raise ValueError(f"need min_hits >= 1 and max_misses >= 0, got {min_hits}, {max_misses}")
        if not 0.0 <= iou_threshold <= 1.0 or max_center_shift < 0:
            raise ValueError(f"need 0 <= iou_threshold <= 1 and max_center_shift >= 0, got {iou_threshold}, {max_center_shift}")
        self.min_hits = int(min_hits)
        self.max_misses = int(max_misses)
        self.iou_threshold = float(iou_threshold)
        self.max_center_shift = float(max_center_shift)
        self.deterministic_ids = deterministic_ids
        self._counter = itertools.count(0)
        self._tracks: list[Track] = []
        self.ended: list[Track] = []

    @property
    def tracks(self) -> list[Track]:
        """Every live track, including ones missed in the latest frame."""
        return list(self._tracks)

    def reset(self) -> list[Track]:
        """Drop every track (e.g. on a camera change); return them as ended."""
        self.ended, self._tracks = self._tracks, []
        return self.ended

    def _new_id(self) -> str:
        if self.deterministic_ids:
            return f"f{next(self._counter):05d}"
        return "f" + uuid.uuid4().hex[:8]

    def update(self, detections: list[Detection]) -> list[Track]:
        """Match this frame's detections to tracks; return the tracks visible now."""
        detections = [d for d in detections if _usable(d)]
        matches, unmatched_tracks, unmatched_detections = self._associate(detections)
        for track_index, detection_index in matches:
            self._hit(self._tracks[track_index], detections[detection_index])
        self.ended = []
        survivors = []
        for index, track in enumerate(self._tracks):
            if index in unmatched_tracks:
                track.misses += 1
                track.age += 1
                if track.misses > self.max_misses or not track.confirmed:
                    self.ended.append(track)
                    continue
            survivors.append(track)
        for detection_index in unmatched_detections:
            survivors.append(Track(self._new_id(), detections[detection_index], confirmed=self.min_hits <= 1))
        self._tracks = survivors
        return [track for track in self._tracks if track.visible]

    def _hit(self, track: Track, detection: Detection) -> None:
        (old_x, old_y), (new_x, new_y) = track.detection.center, detection.center
        steps = track.misses + 1
        track.velocity = ((new_x - old_x) / steps, (new_y - old_y) / steps)
        track.detection = detection
        track.hits = track.hits + 1 if track.misses == 0 else 1
        track.misses = 0
        track.age += 1
        if track.hits >= self.min_hits:
            track.confirmed = True

    def _predicted_boxes(self) -> np.ndarray:
        boxes = np.array([t.detection.box for t in self._tracks], np.float64).reshape(-1, 4)
        shift = np.array([t.velocity for t in self._tracks], np.float64).reshape(-1, 2)
        steps = np.array([t.misses + 1 for t in self._tracks], np.float64)[:, None]
        return boxes + np.tile(shift * steps, 2)

    def _associate(self, detections: list[Detection]):
        if not self._tracks or not detections:
            return [], set(range(len(self._tracks))), list(range(len(detections)))
        predicted = self._predicted_boxes()
        observed = np.array([d.box for d in detections], np.float64)
        overlap = _iou_matrix(predicted, observed)
        track_centres = (predicted[:, :2] + predicted[:, 2:]) / 2
        detection_centres = (observed[:, :2] + observed[:, 2:]) / 2
        distance = np.linalg.norm(track_centres[:, None] - detection_centres[None], axis=2)
        face_size = np.maximum(predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1])[:, None]
        proximity = 1.0 - distance / np.maximum(self.max_center_shift * face_size, 1e-9)
        allowed = (overlap >= self.iou_threshold) | (proximity > 0)
        score = np.where(allowed, overlap + np.clip(proximity, 0, None), -1.0)
        rows, cols = linear_sum_assignment(-score)
        matches = [(r, c) for r, c in zip(rows, cols) if allowed[r, c]]
        matched_tracks = {r for r, _ in matches}
        matched_detections = {c for _, c in matches}
        unmatched_tracks = set(range(len(self._tracks))) - matched_tracks
        unmatched_detections = [c for c in range(len(detections)) if c not in matched_detections]
        return matches, unmatched_tracks, unmatched_detections


def _usable(detection: Detection) -> bool:
    box = np.asarray(detection.box, np.float64)
    return bool(np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1])
