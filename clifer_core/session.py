"""LearningSession: everything the robot does to learn, in one place that the node, bag evaluation and demo share.

The frame path (:class:`clifer_core.pipeline.FramePipeline`) estimates; the
session decides what is learned from it and queues that on the
:class:`clifer_core.learning.LearningWorker`, so learning never blocks
inference:

- labels (a labels topic, a bag's labels) wait until the frame with their
  stamp has been processed (a label may arrive before its frame), then teach
  the labelled face; one that never meets its frame within ``LABEL_WAIT_S``
  is counted unmatched;
- teaching by face or by person (the ``~/teach`` service);
- the first-meeting policy (imagination seeds a stranger's memory from
  ``seed_faces`` faces) and self-training from stable, confident estimates;
- the person lifecycle: save, load, reset, forget, identity merges (an
  auto-enrolled id the gallery merges into a labelled person takes its memory
  and files along) and splits (undoing the last merge into a person);
- personal data: when each person was last seen, forgetting everyone, and
  retention (people not seen for ``retention_days`` days are forgotten,
  :mod:`clifer_core.privacy`).

Every label is counted once, in :class:`LabelCounts`. Settings may change at
any time (:attr:`LearningSession.settings`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path

from clifer_core.learning import LearningJob, LearningWorker, describe_error
from clifer_core.people import GALLERY_FILE, PEOPLE_FOLDER, person_id_problem, person_of_file, shown
from clifer_core.persistence import set_aside
from clifer_core.privacy import expired, stored_people

LABEL_WAIT_S = 5.0
MAX_PENDING_LABELS = 500
SELF_TRAINING_INTERVAL_S = 2.0


@dataclass
class SessionSettings:
    """What a teacher may tune (the node's parameters of the same names)."""

    teach_samples: int = 5
    seed_faces: int = 10
    self_training: bool = False
    self_training_threshold: float = 0.99
    self_training_frames: int = 5


@dataclass
class Label:
    """``expression`` is what the face in the frame stamped ``stamp`` shows: the face ``face_id``, or the
    largest face when empty; ``person_id`` (optional) names who it is."""

    stamp: float
    expression: str
    face_id: str = ""
    person_id: str = ""


@dataclass
class LabelCounts:
    """Every label received ends in exactly one of used, unmatched, rejected or dropped (or still waits)."""

    received: int = 0
    used: int = 0
    """Turned into a learning job."""
    unmatched: int = 0
    """Their frame or face was never seen (within LABEL_WAIT_S)."""
    rejected: int = 0
    """Invalid: person id, expression, or a failure while matching."""
    dropped: int = 0
    """Valid but not learned: learning off, learning queue full, or too many waiting."""


@dataclass
class Outcome:
    """What a request achieved: ``success``, a ``message`` for a person, and the ``person_id`` concerned."""

    success: bool
    message: str
    person_id: str = ""


class ConfidentRuns:
    """Frames in a row each face's estimate has kept its label at or above a threshold (self-training's gate)."""

    def __init__(self):
        self._runs: dict[str, tuple[str, int]] = {}

    def update(self, estimates, threshold: float) -> dict[str, int]:
        """The runs after this frame's ``estimates`` (a face missing from it, or below ``threshold``, starts again)."""
        runs = {}
        for estimate in estimates:
            label, count = self._runs.get(estimate.face_id, (None, 0))
            if estimate.confidence >= threshold:
                runs[estimate.face_id] = (estimate.label, count + 1 if label == estimate.label else 1)
        self._runs = runs
        return {face_id: count for face_id, (_, count) in runs.items()}


class LearningSession:
    """One robot's learning: ``pipeline`` (a FramePipeline), its learner (``learner`` overrides
    ``pipeline.learner``) and a worker saving to ``memory_dir`` (None: RAM only)."""

    def __init__(self, pipeline, memory_dir: str | Path | None, logger, settings: SessionSettings | None = None,
                 max_queue: int = 64, learner=None):
        self.pipeline = pipeline
        self.learner = learner or pipeline.learner
        self.memory_dir = Path(memory_dir).expanduser() if memory_dir else None
        self.logger = logger
        self.settings = settings or SessionSettings()
        self.worker = LearningWorker(self.learner, self.memory_dir, logger, identity=pipeline.identity,
                                     max_queue=max_queue)
        self.labels = LabelCounts()
        self._counts_lock = threading.Lock()
        self._labels_lock = threading.Lock()
        self._pending_labels: deque[tuple[float, Label]] = deque()
        self._seeded: set[str] = set()
        self._last_self_training: dict[str, float] = {}
        self._confident_runs = ConfidentRuns()

    @property
    def learning_enabled(self) -> bool:
        return self.worker.enabled

    @learning_enabled.setter
    def learning_enabled(self, enabled: bool) -> None:
        self.worker.enabled = bool(enabled)

    def stop(self) -> None:
        """Finish the queued jobs and stop the worker (save afterwards with :meth:`save`)."""
        self.worker.stop()

    # --------------------------------------------------------------- labels

    def label_counts(self) -> dict[str, int]:
        with self._counts_lock:
            counts = {field.name: getattr(self.labels, field.name) for field in fields(LabelCounts)}
        with self._labels_lock:
            counts["waiting"] = len(self._pending_labels)
        return counts

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            setattr(self.labels, outcome, getattr(self.labels, outcome) + 1)

    def label_problem(self, label: Label) -> str | None:
        """Why a label cannot be learned, whatever frame it refers to (None if it can)."""
        if label.person_id:
            problem = person_id_problem(label.person_id)
            if problem:
                return problem
        try:
            self.learner.label_indices([label.expression])
        except ValueError:
            return f"expression {shown(label.expression)} is not among {', '.join(self.learner.classes)}"
        return None

    def receive_label(self, label: Label) -> bool:
        """Keep a valid label until its frame is processed (see :meth:`after_frame`); False if rejected."""
        self._count("received")
        problem = self.label_problem(label)
        if problem:
            self._count("rejected")
            self.logger.warning(f"label rejected: {problem}", throttle_duration_sec=5.0)
            return False
        with self._labels_lock:
            overflow = len(self._pending_labels) >= MAX_PENDING_LABELS
            if overflow:
                self._pending_labels.popleft()
            self._pending_labels.append((time.monotonic(), label))
        if overflow:
            self._count("dropped")
            self.logger.warning(f"more than {MAX_PENDING_LABELS} labels wait for their frames: oldest dropped",
                                throttle_duration_sec=5.0)
        return True

    def match_labels(self) -> None:
        """Turn labels whose frame has been processed into learning jobs (labels may arrive before their frame)."""
        now = time.monotonic()
        with self._labels_lock:
            waiting, self._pending_labels = list(self._pending_labels), deque()
        still_waiting = []
        for arrived, label in waiting:
            try:
                faces = self.pipeline.frame_faces(label.stamp)
                if faces is None:
                    if now - arrived < LABEL_WAIT_S:
                        still_waiting.append((arrived, label))
                    else:
                        self._count("unmatched")
                    continue
                self._count(self._learn_label(faces, label))
            except Exception as error:  # noqa: BLE001 - one bad label must not lose the others
                self._count("rejected")
                self.logger.error(f"label failed: {describe_error(error)}", throttle_duration_sec=5.0)
        with self._labels_lock:
            self._pending_labels.extendleft(reversed(still_waiting))

    def _learn_label(self, faces, label: Label) -> str:
        """Queue what a label teaches; returns the count it belongs to."""
        if label.face_id:
            index = faces.face_ids.index(label.face_id) if label.face_id in faces.face_ids else None
        else:
            index = max(range(len(faces.face_ids)), key=lambda i: faces.areas[i]) if faces.face_ids else None
        person_id = label.person_id or (faces.person_ids[index] if index is not None else None)
        if index is None or not person_id:
            return "unmatched"
        if not self.worker.enabled:
            return "dropped"
        if label.person_id:
            self.bind(faces.face_ids[index], label.person_id)
        self._seeded.add(person_id)
        self.worker.last_seen.see([person_id])
        queued = self.worker.submit(LearningJob(person_id, faces.crops[index:index + 1], [label.expression],
                                                "labels topic"))
        return "used" if queued else "dropped"

    # ------------------------------------------------------------- teaching

    def bind(self, face_id: str, person_id: str) -> None:
        """Bind a face to a person named by a teacher; ids the gallery merges into them bring their memories."""
        identity = self.pipeline.identity
        if identity is None:
            return
        for source in identity.set_external_identity(face_id, person_id) or []:
            self._seeded.discard(source)
            self.worker.submit_merge(source, person_id)

    def teach(self, expression: str, face_id: str = "", person_id: str = "") -> Outcome:
        """Learn the newest ``teach_samples`` crops of a face (or of ``person_id``'s face) as ``expression``."""
        if not self.worker.enabled:
            return Outcome(False, "learning is disabled (learning_enabled:=false)")
        if person_id:
            problem = person_id_problem(person_id)
            if problem:
                self.logger.warning(f"teach refused: {problem}", throttle_duration_sec=5.0)
                return Outcome(False, f"refused: {problem}")
        try:
            self.learner.label_indices([expression])
        except ValueError:
            return Outcome(False, f"expression {shown(expression)} is not among {', '.join(self.learner.classes)}")
        pipeline = self.pipeline
        asked_face = face_id
        if not face_id and person_id:
            faces = pipeline.faces_of(person_id)
            face_id = faces[0] if faces else ""
        person = person_id or (pipeline.person_of(face_id) if face_id else None)
        crops = pipeline.recent_crops(face_id, self.settings.teach_samples) if face_id else []
        if len(crops) == 0:
            return Outcome(False, f"no current face for face_id={shown(asked_face)} person_id={shown(person_id)}")
        if not person:
            return Outcome(False, f"face {face_id} is not identified yet; give person_id")
        if person_id and pipeline.person_of(face_id) != person_id:
            self.bind(face_id, person_id)
        self._seeded.add(person)
        self.worker.last_seen.see([person])
        queued = self.worker.submit(LearningJob(person, crops, [expression] * len(crops), "teach service"))
        message = f"learning {len(crops)} faces of {person} as {expression}" if queued else "learning queue full; try again"
        return Outcome(queued, message, person)

    def after_frame(self, estimates) -> None:
        """After a frame: match waiting labels, seed memories of people met for the first time, self-train.

        Self-training learns an estimate as a label only once the face's
        estimate has kept the same label at or above ``self_training_threshold``
        for ``self_training_frames`` frames in a row, and at most every
        ``SELF_TRAINING_INTERVAL_S`` per person: one confident blip cannot
        poison a memory.
        """
        self.match_labels()
        self.worker.last_seen.see([e.person_id for e in estimates if e.person_id])
        runs = self.confident_runs_of(estimates)
        learner, settings = self.learner, self.settings
        if not self.worker.enabled:
            return
        now = time.monotonic()
        for estimate in estimates:
            person_id = estimate.person_id
            if person_id is None:
                continue
            if learner.imagination != "none" and person_id not in self._seeded and not learner.knows(person_id):
                crops = self.pipeline.recent_crops(estimate.face_id)
                if len(crops) >= settings.seed_faces:
                    self._seeded.add(person_id)
                    self.worker.submit(LearningJob(person_id, crops, None, "first meeting"))
            if (settings.self_training and runs.get(estimate.face_id, 0) >= settings.self_training_frames
                    and now - self._last_self_training.get(person_id, 0.0) >= SELF_TRAINING_INTERVAL_S
                    and estimate.label in learner.classes):
                self._last_self_training[person_id] = now
                crops = self.pipeline.recent_crops(estimate.face_id, 1)
                self.worker.submit(LearningJob(person_id, crops, [estimate.label], "self-training"))

    def confident_runs_of(self, estimates) -> dict[str, int]:
        return self._confident_runs.update(estimates, self.settings.self_training_threshold)

    # ------------------------------------------------------------ lifecycle

    def people(self) -> dict[str, int]:
        """Everyone known (memory or identity) and how many labelled samples each was taught."""
        people = dict(self.learner.people())
        if self.pipeline.identity is not None:
            for person_id in self.pipeline.identity.people():
                people.setdefault(person_id, 0)
        return people

    def save(self, everything: bool = False) -> list[str]:
        """Save now (raises what the disk raised; learning stays in RAM and autosave retries)."""
        return self.worker.save(everything=everything)

    def autosave(self, period_s: float) -> None:
        self.worker.autosave(period_s)

    def load(self) -> dict[str, str]:
        """Replace memories and gallery with those in ``memory_dir``; returns ``{file: problem}`` set aside."""
        if self.memory_dir is None:
            return {}
        with self.worker.disk:
            problems = self.restore(self.pipeline, self.memory_dir)
            self.worker.gallery_saved()
            problems.update(self.restore_last_seen())
        return problems

    def restore_last_seen(self, now: float | None = None) -> dict[str, str]:
        """Read when each person was last seen from ``memory_dir``; people without a sighting there (a folder
        saved before sightings were kept) get their files' modification time. Returns ``{file: problem}``."""
        if self.memory_dir is None:
            return {}
        last_seen = self.worker.last_seen
        problems = last_seen.restore(self.memory_dir, now)
        assumed = last_seen.assume_from_files(self.memory_dir, self.known_people(), now)
        if assumed:
            self.logger.info(f"last sighting of {len(assumed)} people not saved (older memory folder): taken from "
                             "their files' modification times")
        return problems

    def known_people(self) -> set[str]:
        """Everyone about whom something is kept: a memory, an identity, or files (set-aside copies too)."""
        return set(self.people()) | stored_people(self.memory_dir)

    def apply_retention(self, retention_days: int, now: float | None = None) -> list[str]:
        """Queue the erasure of everyone not seen for ``retention_days`` days (0: keep everyone); returns them.

        The same erasure as :meth:`forget`; anyone known without a sighting
        (met before sightings were kept) counts as seen at their files' time.
        """
        if retention_days <= 0:
            return []
        now = time.time() if now is None else float(now)
        last_seen, known = self.worker.last_seen, self.known_people()
        last_seen.keep_only(known)
        last_seen.assume_from_files(self.memory_dir, known, now)
        gone = expired(last_seen.times(), now, retention_days)
        for person_id in gone:
            self.forget(person_id)
        if gone:
            self.logger.info(f"retention: forgetting {len(gone)} people not seen for {retention_days} days")
        return gone

    def forget_all(self) -> Outcome:
        """Queue the erasure of everyone: every memory, the identity gallery and every file of the node's."""
        ahead = self.worker.submit_forget_all()
        self._seeded.clear()
        return Outcome(True, f"forgetting everyone: queued after {ahead} learning jobs; memories, identities and "
                             "files are erased when it runs (see ~/list_people)")

    @staticmethod
    def restore(pipeline, memory_dir: Path) -> dict[str, str]:
        """Load ``pipeline``'s gallery and learner from ``memory_dir``; corrupt files are set aside and returned."""
        problems: dict[str, str] = {}
        gallery_path = memory_dir / GALLERY_FILE
        if pipeline.identity is not None and gallery_path.is_file():
            try:
                pipeline.identity.restore_gallery(gallery_path)
            except ValueError as error:  # StateFileError and any other refusal of a saved gallery
                set_aside(gallery_path)
                problems[str(gallery_path)] = str(error)
        if memory_dir.is_dir():
            problems.update(pipeline.learner.load(memory_dir))
        return problems

    def reset(self) -> Outcome:
        """Clear every expression memory (identities and files are kept)."""
        self.learner.reset()
        self._seeded.clear()
        return Outcome(True, "all expression memories cleared (identities and files kept)")

    def forget(self, person_id: str) -> Outcome:
        """Queue the erasure of a person: it runs after the jobs already queued, off the caller's thread."""
        problem = person_id_problem(person_id)
        if problem:
            self.logger.warning(f"forget_person refused: {problem}", throttle_duration_sec=5.0)
            return Outcome(False, f"refused: {problem}")
        identity = self.pipeline.identity
        if not (self.learner.knows(person_id) or (identity is not None and person_id in identity.people())
                or self._has_files(person_id)):
            return Outcome(False, f"{person_id} is not known")
        ahead = self.worker.submit_forget(person_id)
        self._seeded.discard(person_id)
        return Outcome(True, f"forgetting {person_id}: queued after {ahead} learning jobs; memory, identity and files "
                             "are erased when it runs (see ~/list_people)", person_id)

    def split(self, person_id: str) -> Outcome:
        """Undo the last merge into ``person_id``: the gallery samples it brought become a new person.

        The new id is the Outcome's ``person_id``. Expression memory stays with
        ``person_id``: a person's memory does not record which faces taught it
        what, so what it learnt from the merged faces cannot be told apart; the
        new person starts without a memory (imagination seeds one when they
        are next seen). The gallery is saved by a job on the learning worker.
        """
        problem = person_id_problem(person_id)
        if problem:
            self.logger.warning(f"split_person refused: {problem}", throttle_duration_sec=5.0)
            return Outcome(False, f"refused: {problem}")
        identity = self.pipeline.identity
        if identity is None:
            return Outcome(False, "identity is off (identity:=false)")
        try:
            new_person_id, source = identity.split_last_merge(person_id)
        except ValueError as error:
            return Outcome(False, str(error))
        self.worker.submit_split(person_id, new_person_id)
        return Outcome(True, f"{source} is no longer {person_id}: it is {new_person_id} (identity split; "
                             f"{person_id}'s expression memory is kept as it was)", new_person_id)

    def _has_files(self, person_id: str) -> bool:
        """Whether ``memory_dir/people`` holds any file of this (valid) person, set-aside copies included."""
        folder = self.memory_dir / PEOPLE_FOLDER if self.memory_dir is not None else None
        if folder is None or not folder.is_dir():
            return False
        return any(person_of_file(path) == person_id for path in folder.glob(f"{person_id}.*"))
