"""FramePipeline: the one implementation of per-frame processing.

The live node, bag evaluation and the demo all call :meth:`FramePipeline.process`
on an RGB frame and get plain :class:`FaceEstimate` records back; none of them
re-implements detection, tracking, identity or prediction.

Per frame: detect -> track -> identity (per track, at a low rate) -> aligned
crops -> one FER2013 pass (the population prior and the expression features at
once) -> the learner's estimate (the prior fused with a taught person's memory,
the prior alone for anyone not taught yet). Learning
never runs here: the pipeline only keeps each face's recent crops so a teacher
(a service, a labels topic, self-training) can hand them to the learner.

:meth:`FramePipeline.process_crops` is the same path for faces detected,
tracked and aligned elsewhere (ROS4HRI's ``hri_face_detect``): given crops and
face ids, it skips detection and tracking and joins the path at identity.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from clifer_core.faces.detect import Detection
from clifer_core.faces.identity import Identity
from clifer_core.faces.track import DEFAULT_MIN_HITS, ROS_NAME_TOKEN, Track
from clifer_core.labels import EXPRESSIONS, valence_arousal


@dataclass(frozen=True)
class FaceEstimate:
    """What the pipeline concluded about one face in one frame."""

    face_id: str
    person_id: str | None
    roi: tuple[int, int, int, int]
    """Face box ``(x0, y0, x1, y1)`` in pixels, clipped to the frame (for a given crop: the whole crop)."""
    label: str
    labels: tuple[str, ...]
    probabilities: np.ndarray
    confidence: float
    valence: float | None
    arousal: float | None
    memory: str
    """What answered: ``fused`` or ``prior`` (:data:`clifer_core.learner.MEMORY_ANSWERS`)."""
    novelty: float | None
    stamp: float | None = None


@dataclass
class PipelineConfig:
    """Tunables of the frame path (the node exposes each one as a ROS parameter)."""

    detector: str = "blazeface"
    min_face_score: float = 0.6
    track_min_hits: int = DEFAULT_MIN_HITS
    track_max_misses: int = 5
    deterministic_ids: bool = False
    crop_size: int = 96
    crop_margin: float = 0.2
    identity: bool = True
    """Recognise people (dlib embeddings, open-set gallery); without it every estimate is person-less."""
    recent_crops: int = 20
    """Crops kept per face for teaching and for seeding a new person's memory."""
    frame_history: int = 90
    """Processed frames remembered (by stamp) so labels arriving later can find their faces."""
    identity_in_background: bool = True
    """Embed faces in a worker thread (live node: no 60-190 ms stalls on the frame path); False makes
    identities deterministic, frame by frame (bag evaluation, tests)."""


@dataclass
class PipelineTimings:
    """Milliseconds spent in each stage of the last processed frame."""

    detect_ms: float = 0.0
    identity_ms: float = 0.0
    expression_ms: float = 0.0
    total_ms: float = 0.0
    faces: int = 0


class BackgroundIdentity(Identity):
    """Runs an :class:`~clifer_core.faces.identity.IdentityResolver` in a worker thread.

    The frame path hands over the newest frame and its tracks and reads back the
    latest face -> person mapping at once; the worker embeds whichever tracks
    are due (newest request wins, like the node's frame worker). Every other use
    of the resolver goes through this object's lock. :meth:`close` stops the
    worker (one thread per object, never left behind).
    """

    def __init__(self, resolver: Identity):
        self.resolver = resolver
        self._lock = threading.Lock()
        self._requests = threading.Condition()
        self._request = None
        self._closed = False
        self._ended: list = []
        self._mapping: dict[str, str | None] = {}
        self._thread = threading.Thread(target=self._run, name="clifer-identity", daemon=True)
        self._thread.start()

    @property
    def gallery(self):
        return self.resolver.gallery

    def update(self, frame, tracks, ended=()) -> dict[str, str | None]:
        with self._requests:
            if self._closed:
                raise RuntimeError("BackgroundIdentity is closed")
            self._ended.extend(ended)
            self._request = (frame, [replace(track) for track in tracks])
            self._requests.notify()
        mapping = self._mapping
        return {track.face_id: mapping.get(track.face_id) for track in tracks}

    def _run(self) -> None:
        while True:
            with self._requests:
                while self._request is None and not self._closed:
                    self._requests.wait()
                if self._closed:
                    return
                (frame, tracks), self._request = self._request, None
                ended, self._ended = self._ended, []
            with self._lock:
                mapping = self.resolver.update(frame, tracks, ended)
                ended_ids = {track.face_id for track in ended}
                self._mapping = {**{k: v for k, v in self._mapping.items() if k not in ended_ids}, **mapping}

    def close(self) -> None:
        """Stop the worker (after the embedding in progress, if any) and close the resolver."""
        with self._requests:
            self._closed = True
            self._request = None
            self._requests.notify_all()
        self._thread.join()
        self.resolver.close()

    def person_of(self, face_id: str) -> str | None:
        with self._lock:
            return self.resolver.person_of(face_id)

    def set_external_identity(self, face_id: str, person_id: str) -> list[str]:
        with self._lock:
            merged = self.resolver.set_external_identity(face_id, person_id)
            self._mapping = {**{k: (person_id if v in merged else v) for k, v in self._mapping.items()},
                             face_id: person_id}
            return merged

    def split_last_merge(self, person_id: str) -> tuple[str, str]:
        with self._lock:
            new_person_id, source = self.resolver.split_last_merge(person_id)
            moved = {face_id for face_id in self._mapping if self.resolver.person_of(face_id) == new_person_id}
            self._mapping = {k: (new_person_id if k in moved else v) for k, v in self._mapping.items()}
            return new_person_id, source

    def forget(self, person_id: str) -> bool:
        with self._lock:
            forgotten = self.resolver.forget(person_id)
            self._mapping = {k: (None if v == person_id else v) for k, v in self._mapping.items()}
            return forgotten

    def people(self) -> list[str]:
        with self._lock:
            return self.resolver.people()

    def save_gallery(self, path) -> None:
        with self._lock:
            self.resolver.save_gallery(path)

    def restore_gallery(self, path) -> None:
        with self._lock:
            self.resolver.restore_gallery(path)


@dataclass
class FrameFaces:
    """The faces of one processed frame: what a label for that frame can refer to."""

    stamp: float | None
    face_ids: list[str]
    person_ids: list[str | None]
    crops: np.ndarray
    areas: list[float] = field(default_factory=list)


class FramePipeline:
    """Detect, track and recognise faces, and estimate each face's expression."""

    def __init__(self, config: PipelineConfig | None = None, detector=None, expression_model=None, tracker=None,
                 identity=None, learner=None):
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
        if identity is None and self.config.identity:
            from clifer_core.build import build_identity

            identity = build_identity(background=self.config.identity_in_background)
        self.identity = identity
        self.learner = learner
        self.timings = PipelineTimings()
        self._lock = threading.Lock()
        self._recent: dict[str, deque] = {}
        self._people: dict[str, str | None] = {}
        self._history: OrderedDict[float, FrameFaces] = OrderedDict()
        self._crop_tracks: dict[str, Track] = {}
        self._crop_tracks_ended: list[Track] = []

    def warm_up(self) -> None:
        """Run every model once so the first real frame is not slowed by graph tracing."""
        self.detector.detect(np.zeros((480, 640, 3), np.uint8))
        self.expression_model.predict_proba_and_features(
            np.zeros((1, self.config.crop_size, self.config.crop_size, 3), np.uint8))

    def close(self) -> None:
        """Release the identity worker; the pipeline is not used afterwards."""
        if self.identity is not None:
            self.identity.close()

    def set_min_face_score(self, value: float) -> None:
        """Change the detection threshold while running."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"min_face_score must be in [0, 1], got {value}")
        self.config.min_face_score = value
        self.detector.min_score = value

    # ------------------------------------------------------------- per frame

    def process(self, frame_rgb: np.ndarray, stamp: float | None = None) -> list[FaceEstimate]:
        """Estimates for every confirmed face track in ``frame_rgb`` (an RGB uint8 image)."""
        from clifer_core.faces import align_face, as_rgb_uint8

        start = time.perf_counter()
        frame = as_rgb_uint8(frame_rgb)
        visible = self.tracker.update(self.detector.detect(frame))
        tracks = [track for track in visible if track.confirmed]
        detected = time.perf_counter()
        people = self.identity.update(frame, visible, self.tracker.ended) if self.identity is not None else {}
        identified = time.perf_counter()
        self._forget_tracks([track.face_id for track in self.tracker.ended])
        if not tracks:
            self._remember(FrameFaces(stamp, [], [], np.zeros((0, self.config.crop_size, self.config.crop_size, 3), np.uint8)))
            self._record(start, detected, identified, identified, 0)
            return []
        crops = np.stack([align_face(frame, t.detection, size=self.config.crop_size, margin=self.config.crop_margin)
                          for t in tracks])
        person_ids = [people.get(t.face_id) for t in tracks]
        prior, fer_features = self.expression_model.predict_proba_and_features(crops)
        answers = self._answers(person_ids, crops, prior, fer_features)
        estimated = time.perf_counter()
        height, width = frame.shape[:2]
        estimates = [self._estimate(track.face_id, track.detection.box, person_id, answer, width, height, stamp)
                     for track, person_id, answer in zip(tracks, person_ids, answers)]
        self._remember(FrameFaces(stamp, [t.face_id for t in tracks], person_ids, crops,
                                  [t.detection.area for t in tracks]))
        self._record(start, detected, identified, estimated, len(estimates))
        return estimates

    # --------------------------------------------------- per set of crops

    def process_crops(self, crops: Mapping[str, np.ndarray], stamp: float | None = None,
                      people: Mapping[str, str] | None = None) -> list[FaceEstimate]:
        """Estimates for faces found elsewhere: ``crops`` maps face ids to aligned face crops (RGB uint8).

        For an upstream face tracker (ROS4HRI's ``hri_face_detect`` publishes a
        128x128 aligned crop per tracked face): no detector, no tracker; each
        crop is resized to ``crop_size`` and goes through the same identity,
        prediction and memory-for-teachers path as a camera frame's faces, so
        teaching, labels and self-training work alike. ``people`` names the
        person of some faces from outside (a person manager's association);
        it wins over the pipeline's own identity, which looks at the crop
        otherwise. Tell :meth:`end_faces` when faces leave. Call from one
        thread, as :meth:`process`.
        """
        from clifer_core.faces import as_rgb_uint8

        start = time.perf_counter()
        for face_id in crops:
            if not isinstance(face_id, str) or not ROS_NAME_TOKEN.match(face_id):
                raise ValueError(f"face id {face_id!r} is not a ROS name token")
        originals = {face_id: as_rgb_uint8(crop) for face_id, crop in crops.items()}
        for face_id, crop in originals.items():
            if min(crop.shape[:2]) < 8:
                raise ValueError(f"crop of face {face_id} is {crop.shape[1]}x{crop.shape[0]}: too small to be a face")
        if not originals:
            size = self.config.crop_size
            self._remember(FrameFaces(stamp, [], [], np.zeros((0, size, size, 3), np.uint8)))
            self._record(start, start, start, start, 0)
            return []
        face_ids = list(originals)
        people = dict(people or {})
        found = self._identify_crops(originals) if self.identity is not None else {}
        person_ids = [people.get(face_id) or found.get(face_id) for face_id in face_ids]
        identified = time.perf_counter()
        resized = np.stack([resize_crop(originals[face_id], self.config.crop_size) for face_id in face_ids])
        prior, fer_features = self.expression_model.predict_proba_and_features(resized)
        answers = self._answers(person_ids, resized, prior, fer_features)
        estimated = time.perf_counter()
        estimates = []
        for face_id, person_id, answer in zip(face_ids, person_ids, answers):
            height, width = originals[face_id].shape[:2]
            estimates.append(self._estimate(face_id, (0, 0, width, height), person_id, answer, width, height, stamp))
        self._remember(FrameFaces(stamp, face_ids, person_ids, resized,
                                  [float(originals[f].shape[0] * originals[f].shape[1]) for f in face_ids]))
        self._record(start, start, identified, estimated, len(estimates))
        return estimates

    def end_faces(self, face_ids: Iterable[str] | None = None) -> None:
        """Faces given to :meth:`process_crops` that left (None: all of them): their recent crops and identity
        evidence go."""
        if face_ids is None:
            with self._lock:
                face_ids = {*self._recent, *self._crop_tracks}
        face_ids = list(face_ids)
        for face_id in face_ids:
            self.restart_identity(face_id)
        self._forget_tracks(face_ids)

    def restart_identity(self, face_id: str) -> None:
        """Forget the identity evidence of a given face (its person was dissociated): the next crop starts afresh."""
        track = self._crop_tracks.pop(face_id, None)
        if track is not None:
            self._crop_tracks_ended.append(track)

    def _identify_crops(self, crops: dict[str, np.ndarray]) -> dict[str, str | None]:
        """Face -> person from the identity, which sees all crops side by side in one mosaic image.

        One mosaic keeps the identity's contract (one image and its tracks per
        call, its own embedding schedule and per-call budget) for faces that
        arrive as separate crops; the gap keeps one face's landmarks and
        embedding chip off its neighbour.
        """
        height = max(crop.shape[0] for crop in crops.values())
        gap = height // 2
        width = sum(crop.shape[1] + gap for crop in crops.values())
        mosaic = np.zeros((height, width, 3), np.uint8)
        tracks, x = [], 0
        for face_id, crop in crops.items():
            crop_height, crop_width = crop.shape[:2]
            mosaic[:crop_height, x:x + crop_width] = crop
            detection = Detection((float(x), 0.0, float(x + crop_width), float(crop_height)), 1.0)
            track = self._crop_tracks.get(face_id)
            if track is None:
                track = self._crop_tracks[face_id] = Track(face_id, detection, confirmed=True)
            else:
                track.detection, track.hits, track.age = detection, track.hits + 1, track.age + 1
            tracks.append(track)
            x += crop_width + gap
        ended, self._crop_tracks_ended = self._crop_tracks_ended, []
        return self.identity.update(mosaic, tracks, ended)

    def _answers(self, person_ids, crops, prior, fer_features) -> list[tuple]:
        """(labels, probabilities, memory, novelty) per face, one learner call per person."""
        answers: list[tuple] = [(tuple(EXPRESSIONS), p, "prior", None) for p in prior]
        if self.learner is None:
            return answers
        by_person: dict[str | None, list[int]] = {}
        for index, person_id in enumerate(person_ids):
            by_person.setdefault(person_id, []).append(index)
        for person_id, indices in by_person.items():
            prediction = self.learner.predict(person_id, crops[indices],
                                              fer_outputs=(prior[indices], fer_features[indices]))
            for row, index in enumerate(indices):
                novelty = float(prediction.novelty[row])
                answers[index] = (prediction.labels, prediction.probabilities[row], prediction.memory,
                                  None if math.isnan(novelty) else novelty)
        return answers

    def _estimate(self, face_id: str, box, person_id, answer, width: int, height: int, stamp) -> FaceEstimate:
        labels, probabilities, memory, novelty = answer
        best = int(np.argmax(probabilities))
        valence, arousal = valence_arousal(labels, probabilities)
        x0, y0, x1, y1 = box
        roi = (
            int(np.clip(math.floor(x0), 0, width)), int(np.clip(math.floor(y0), 0, height)),
            int(np.clip(math.ceil(x1), 0, width)), int(np.clip(math.ceil(y1), 0, height)),
        )
        return FaceEstimate(
            face_id=face_id, person_id=person_id, roi=roi, label=labels[best], labels=tuple(labels),
            probabilities=np.asarray(probabilities, np.float32), confidence=float(probabilities[best]),
            valence=valence, arousal=arousal, memory=memory, novelty=novelty, stamp=stamp,
        )

    def _record(self, start: float, detected: float, identified: float, estimated: float, faces: int) -> None:
        self.timings.detect_ms = (detected - start) * 1e3
        self.timings.identity_ms = (identified - detected) * 1e3
        self.timings.expression_ms = (estimated - identified) * 1e3
        self.timings.total_ms = (time.perf_counter() - start) * 1e3
        self.timings.faces = faces

    # --------------------------------------------------- faces for teachers

    def _remember(self, faces: FrameFaces) -> None:
        with self._lock:
            for face_id, person_id, crop in zip(faces.face_ids, faces.person_ids, faces.crops):
                self._recent.setdefault(face_id, deque(maxlen=self.config.recent_crops)).append(crop)
                self._people[face_id] = person_id
            if faces.stamp is not None:
                self._history[faces.stamp] = faces
                while len(self._history) > self.config.frame_history:
                    self._history.popitem(last=False)

    def _forget_tracks(self, face_ids) -> None:
        with self._lock:
            for face_id in face_ids:
                self._recent.pop(face_id, None)
                self._people.pop(face_id, None)

    def recent_crops(self, face_id: str, count: int | None = None) -> np.ndarray:
        """The newest ``count`` crops of a current face (all kept ones by default); empty if unknown."""
        with self._lock:
            crops = list(self._recent.get(face_id, ()))
        crops = crops[-count:] if count else crops
        size = self.config.crop_size
        return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)

    def person_of(self, face_id: str) -> str | None:
        with self._lock:
            return self._people.get(face_id)

    def faces_of(self, person_id: str) -> list[str]:
        """Current face ids attributed to ``person_id``."""
        with self._lock:
            return [face_id for face_id, person in self._people.items() if person == person_id]

    def frame_faces(self, stamp: float) -> FrameFaces | None:
        """The faces of the processed frame stamped ``stamp`` (None if not processed or too old)."""
        with self._lock:
            return self._history.get(stamp)


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A square ``size`` crop: area averaging when shrinking (REP-155's 128 to 96), linear when enlarging."""
    import cv2

    if crop.shape[:2] == (size, size):
        return crop
    shrinking = crop.shape[0] > size or crop.shape[1] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
