"""FramePipeline: the one implementation of per-frame processing.

The live node, bag evaluation and the demo all call :meth:`FramePipeline.process`
on an RGB frame and get plain :class:`FaceEstimate` records back; none of them
re-implements detection, tracking or prediction. Learning never runs here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from clifer_core.labels import valence_arousal


@dataclass(frozen=True)
class FaceEstimate:
    """What the pipeline concluded about one face in one frame."""

    face_id: str
    person_id: str | None
    roi: tuple[int, int, int, int]
    """Face box ``(x0, y0, x1, y1)`` in pixels, clipped to the frame."""
    label: str
    labels: tuple[str, ...]
    probabilities: np.ndarray
    confidence: float
    valence: float | None
    arousal: float | None
    memory: str
    """Which model answered: ``episodic``, ``semantic`` or ``prior``."""
    novelty: float | None
    stamp: float | None = None


@dataclass
class PipelineConfig:
    """Tunables of the frame path (the node exposes each one as a ROS parameter)."""

    detector: str = "blazeface"
    min_face_score: float = 0.6
    track_min_hits: int = 2
    track_max_misses: int = 5
    deterministic_ids: bool = False
    crop_size: int = 96
    crop_margin: float = 0.2


@dataclass
class PipelineTimings:
    """Milliseconds spent in each stage of the last processed frame."""

    detect_ms: float = 0.0
    expression_ms: float = 0.0
    total_ms: float = 0.0
    faces: int = 0


class FramePipeline:
    """Detect and track faces, crop them, and estimate each face's expression.

    Until a person-specific learner is attached the population prior (the
    packaged FER2013 model) answers, and estimates say ``memory="prior"``.
    """

    def __init__(self, config: PipelineConfig | None = None, detector=None, expression_model=None, tracker=None):
        from clifer_core.faces import make_detector
        from clifer_core.faces.track import FaceTracker
        from clifer_core.features import Fer2013Model

        self.config = config or PipelineConfig()
        self.detector = detector or make_detector(self.config.detector, min_score=self.config.min_face_score)
        self.expression_model = expression_model or Fer2013Model()
        self.tracker = tracker or FaceTracker(
            min_hits=self.config.track_min_hits,
            max_misses=self.config.track_max_misses,
            deterministic_ids=self.config.deterministic_ids,
        )
        self.timings = PipelineTimings()

    def warm_up(self) -> None:
        """Run every model once so the first real frame is not slowed by graph tracing."""
        self.detector.detect(np.zeros((480, 640, 3), np.uint8))
        self.expression_model.predict_proba(np.zeros((1, self.config.crop_size, self.config.crop_size, 3), np.uint8))

    def set_min_face_score(self, value: float) -> None:
        """Change the detection threshold while running."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"min_face_score must be in [0, 1], got {value}")
        self.config.min_face_score = value
        self.detector.min_score = value

    def process(self, frame_rgb: np.ndarray, stamp: float | None = None) -> list[FaceEstimate]:
        """Estimates for every confirmed face track in ``frame_rgb`` (an RGB uint8 image)."""
        from clifer_core.faces import align_face, as_rgb_uint8

        start = time.perf_counter()
        frame = as_rgb_uint8(frame_rgb)
        detections = self.detector.detect(frame)
        tracks = [track for track in self.tracker.update(detections) if track.confirmed]
        detected = time.perf_counter()
        if not tracks:
            self._record(start, detected, detected, 0)
            return []
        crops = np.stack([align_face(frame, t.detection, size=self.config.crop_size, margin=self.config.crop_margin) for t in tracks])
        probabilities = self.expression_model.predict_proba(crops)
        estimated = time.perf_counter()
        height, width = frame.shape[:2]
        estimates = [self._estimate(track, p, width, height, stamp) for track, p in zip(tracks, probabilities)]
        self._record(start, detected, estimated, len(estimates))
        return estimates

    def _estimate(self, track, probabilities: np.ndarray, width: int, height: int, stamp) -> FaceEstimate:
        labels = tuple(self.expression_model.labels)
        best = int(np.argmax(probabilities))
        valence, arousal = valence_arousal(labels, probabilities)
        x0, y0, x1, y1 = track.detection.box
        roi = (
            int(np.clip(math.floor(x0), 0, width)), int(np.clip(math.floor(y0), 0, height)),
            int(np.clip(math.ceil(x1), 0, width)), int(np.clip(math.ceil(y1), 0, height)),
        )
        return FaceEstimate(
            face_id=track.face_id,
            person_id=None,
            roi=roi,
            label=labels[best],
            labels=labels,
            probabilities=np.asarray(probabilities, np.float32),
            confidence=float(probabilities[best]),
            valence=valence,
            arousal=arousal,
            memory="prior",
            novelty=None,
            stamp=stamp,
        )

    def _record(self, start: float, detected: float, estimated: float, faces: int) -> None:
        self.timings.detect_ms = (detected - start) * 1e3
        self.timings.expression_ms = (estimated - detected) * 1e3
        self.timings.total_ms = (time.perf_counter() - start) * 1e3
        self.timings.faces = faces


