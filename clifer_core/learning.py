"""LearningWorker: learning, forgetting and saving beside the frame path, never inside it.

Teachers (the ``~/teach`` service, a labels topic, self-training, first
meetings) put jobs on a queue; one worker thread runs imagination and memory
updates through :class:`clifer_core.learner.CliferLearner`, which trains a
private copy of the person's memory and swaps it in when done, so inference
keeps reading the previous memory meanwhile. Forgetting is a job on the same
queue, so it runs after the person's jobs already queued, off the executor;
so are forgetting everyone, merging two ids the identity gallery found to be
one person, and saving a split of one (an undone merge). The worker also keeps
when each person was last seen (:class:`clifer_core.privacy.LastSeen`), saved
with the memories.

Every write under ``memory_dir`` goes through :meth:`LearningWorker.save`
while holding :attr:`LearningWorker.disk`, so a save never writes back a person
being erased, and keeps the memory folder owner-only (so its files are too,
:mod:`clifer_core.persistence`). A save that fails (read-only folder, disk
full) keeps everything in RAM, is reported by :attr:`save_error` and retried
with back-off by :meth:`autosave`; a job that fails is counted, logged, and
the worker goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.people import GALLERY_FILE, shown
from clifer_core.persistence import is_private_folder, make_private_folder
from clifer_core.privacy import LastSeen, erase_everyone, stored_people

FIRST_RETRY_S = 1.0
LONGEST_RETRY_S = 60.0
"""A failed save is retried after 1, 2, 4... s, at most this long apart."""
ERROR_CHARACTERS = 200


@dataclass
class LearningJob:
    """Teach ``person_id`` that ``crops`` show ``labels``; ``labels=None`` seeds a new person's memory."""

    person_id: str
    crops: np.ndarray
    labels: list[str] | None
    source: str


@dataclass
class ForgetJob:
    """Erase ``person_id``: memory, population contribution, identity gallery entry and files."""

    person_id: str


@dataclass
class ForgetAllJob:
    """Erase everyone: every memory, the identity gallery, every sighting and every file of the node's."""

    person_id: str = "everyone"


@dataclass
class MergeJob:
    """Give ``target`` the memory and files of ``source`` (an auto-enrolled id the gallery merged into them)."""

    source: str
    target: str

    @property
    def person_id(self) -> str:
        return self.source


@dataclass
class SplitJob:
    """``new_person_id`` was split from ``person_id`` in the identity gallery: save it (memories stay as they are)."""

    person_id: str
    new_person_id: str


def describe_error(error: BaseException) -> str:
    """``Type: message`` cut to a loggable length."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_CHARACTERS else text[:ERROR_CHARACTERS] + f"... ({len(text)} characters)"


class LearningWorker:
    """One background thread applying learning, forget, merge and split jobs to a learner.

    ``identity`` (optional) is the pipeline's identity resolver: its gallery is
    saved beside the memories and forgets people with them.
    """

    def __init__(self, learner, memory_dir: str | None, logger, identity=None, max_queue: int = 64):
        self.learner = learner
        self.memory_dir = Path(memory_dir).expanduser() if memory_dir else None
        self.logger = logger
        self.identity = identity
        self.max_queue = max_queue
        self.jobs: queue.Queue[LearningJob | ForgetJob | ForgetAllJob | MergeJob | SplitJob | None] = queue.Queue()
        self.enabled = True
        self.completed = 0
        self.failed = 0
        self.rejected = 0
        self.forgotten = 0
        self.merged = 0
        self.split = 0
        self.last_duration_s = 0.0
        self.last_error = ""
        self.disk = threading.RLock()
        self.saves = 0
        self.save_failures = 0
        """Consecutive failed saves (0 after a success)."""
        self.save_error = ""
        """Why the last save failed; empty once a save succeeds."""
        self._last_save_attempt = time.monotonic()
        self._retry_at = 0.0
        self._learning_queued = 0
        self._dirty: set[str] = set()
        self._erasures: set[str] = set()
        self._moves: dict[str, str] = {}
        self._erase_everyone = False
        self.last_seen = LastSeen()
        self._gallery_revision = self._current_gallery_revision()
        self._dirty_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="clifer-learning", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- jobs

    def submit(self, job: LearningJob) -> bool:
        """Queue a job; False (and counted as rejected) when learning is off or the queue is full."""
        with self._dirty_lock:
            accepted = self.enabled and self._learning_queued < self.max_queue
            if accepted:
                self._learning_queued += 1
                self._idle.clear()
                self.jobs.put_nowait(job)
            else:
                self.rejected += 1
        if not accepted and self.enabled:
            self.logger.warning("learning queue full: sample dropped", throttle_duration_sec=5.0)
        return accepted

    def submit_forget(self, person_id: str) -> int:
        """Queue the erasure of ``person_id`` (never refused); returns how many jobs run before it."""
        with self._dirty_lock:
            ahead = self.jobs.qsize()
            self._idle.clear()
            self.jobs.put_nowait(ForgetJob(person_id))
        return ahead

    def submit_forget_all(self) -> int:
        """Queue the erasure of everyone (never refused); returns how many jobs run before it."""
        with self._dirty_lock:
            ahead = self.jobs.qsize()
            self._idle.clear()
            self.jobs.put_nowait(ForgetAllJob())
        return ahead

    def submit_merge(self, source: str, target: str) -> None:
        """Queue moving ``source``'s memory and files to ``target`` (never refused), after ``source``'s queued jobs."""
        with self._dirty_lock:
            self._idle.clear()
            self.jobs.put_nowait(MergeJob(source, target))

    def submit_split(self, person_id: str, new_person_id: str) -> None:
        """Queue saving a split the identity just made (never refused), after the jobs already queued."""
        with self._dirty_lock:
            self._idle.clear()
            self.jobs.put_nowait(SplitJob(person_id, new_person_id))

    @property
    def queue_length(self) -> int:
        return self.jobs.qsize()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued job is done (tests, save on shutdown)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            start = time.perf_counter()
            try:
                self._apply(job)
                self.completed += 1
            except Exception as error:  # noqa: BLE001 - one bad job must not end learning for everyone
                self.failed += 1
                self.last_error = f"{job.person_id}: {describe_error(error)}"
                self.logger.error(f"{type(job).__name__} for {shown(job.person_id)} failed: {describe_error(error)}",
                                  throttle_duration_sec=5.0)
            finally:
                self.last_duration_s = time.perf_counter() - start
                with self._dirty_lock:
                    if isinstance(job, LearningJob):
                        self._learning_queued -= 1
                    if self.jobs.empty():
                        self._idle.set()

    def _apply(self, job: LearningJob | ForgetJob | ForgetAllJob | MergeJob | SplitJob) -> None:
        if isinstance(job, ForgetJob):
            self._forget(job.person_id)
            return
        if isinstance(job, ForgetAllJob):
            self._forget_all()
            return
        if isinstance(job, MergeJob):
            self._merge(job.source, job.target)
            return
        if isinstance(job, SplitJob):
            self._split(job.person_id, job.new_person_id)
            return
        if job.labels is None:
            self.learner.seed(job.person_id, job.crops)
        else:
            self.learner.learn(job.person_id, job.crops, job.labels)
        with self._dirty_lock:
            self._dirty.add(job.person_id)

    def _forget(self, person_id: str) -> None:
        """Erase from RAM now, from disk at once (or, if the disk refuses, at every later save until done)."""
        with self.disk:
            self.learner.forget(person_id)
            if self.identity is not None:
                self.identity.forget(person_id)
            self.last_seen.forget(person_id)
            with self._dirty_lock:
                self._dirty.discard(person_id)
                self._erasures.add(person_id)
        self.forgotten += 1
        self.logger.info(f"forgot {person_id}")
        self._save_now(f"{person_id} is forgotten in RAM; their files go at the next save")

    def _forget_all(self) -> None:
        """Erase everyone from RAM now, and every file of the node's at once (or at every later save until done)."""
        with self.disk:
            people = set(self.learner.people()) | set(self.last_seen.times())
            self.learner.reset()
            if self.identity is not None:
                people |= set(self.identity.people())
                for person_id in self.identity.people():
                    self.identity.forget(person_id)
            self.last_seen.clear()
            with self._dirty_lock:
                self._dirty.clear()
                self._erasures.clear()
                self._moves.clear()
                self._erase_everyone = True
        self.forgotten += len(people)
        self.logger.info(f"forgot everyone ({len(people)} people)")
        self._save_now("everyone is forgotten in RAM; the files go at the next save")

    def _merge(self, source: str, target: str) -> None:
        """Merge in RAM now, on disk at once (or, if the disk refuses, at every later save until done)."""
        with self.disk:
            if not self.learner.merge(source, target):
                return
            self.last_seen.merge(source, target)
            with self._dirty_lock:
                self._dirty.discard(source)
                self._moves[source] = target
        self.merged += 1
        self.logger.info(f"{source} is {target}: memory merged")
        self._save_now(f"{source} is merged into {target} in RAM; their files move at the next save")

    def _split(self, person_id: str, new_person_id: str) -> None:
        """Save the gallery now, so the split survives a restart (or at the next save, if the disk refuses)."""
        self.split += 1
        seen = self.last_seen.times().get(person_id)
        if seen is not None:
            # The split-off faces were last seen no later than the person they were merged into.
            self.last_seen.assume(new_person_id, seen)
        self.logger.info(f"{new_person_id} split from {person_id}")
        self._save_now(f"the split of {new_person_id} from {person_id} is saved at the next save")

    def _save_now(self, if_refused: str) -> None:
        """Save at once after a change the disk must follow; if the disk refuses, log ``if_refused`` (save keeps
        the pending erasures, moves and files, and retries them with the next save)."""
        try:
            self.save()
        except Exception as error:  # noqa: BLE001 - reported by save; retried with the next save
            self.logger.error(f"{if_refused} ({describe_error(error)})")

    # -------------------------------------------------------------- saving

    def _current_gallery_revision(self):
        return getattr(getattr(self.identity, "gallery", None), "revision", None)

    def gallery_saved(self) -> None:
        """The gallery in RAM is the one on disk (just restored from it): no need to write it back."""
        self._gallery_revision = self._current_gallery_revision()

    def save(self, everything: bool = False) -> list[str]:
        """Finish pending erasures and merges, then save changed memories (``everything``: all of them), the gallery
        and the sightings.

        Returns the people saved. Raises what the disk raised, after putting
        the unsaved people back so the next save writes them; the outcome is
        kept in :attr:`save_error` / :attr:`save_failures`.
        """
        if self.memory_dir is None:
            return []
        with self.disk:
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
                erasures = sorted(self._erasures)
                moves = dict(self._moves)
                erase_everyone_first = self._erase_everyone
            try:
                self._keep_private()
                if erase_everyone_first:
                    erase_everyone(self.memory_dir)
                    with self._dirty_lock:
                        self._erase_everyone = False
                for person_id in erasures:
                    self.learner.delete_person_files(self.memory_dir, person_id)
                    with self._dirty_lock:
                        self._erasures.discard(person_id)
                for source, target in moves.items():
                    self.learner.move_person_files(self.memory_dir, source, target)
                    with self._dirty_lock:
                        self._moves.pop(source, None)
                if everything:
                    self.learner.save(self.memory_dir)
                    saved = sorted(self.learner.people())
                else:
                    saved = [p for p in sorted(dirty) if self.learner.save_person(self.memory_dir, p) is not None]
                    if saved:
                        self.learner.save_population(self.memory_dir)
                revision = self._current_gallery_revision()
                if self.identity is not None and (everything or revision != self._gallery_revision):
                    self.identity.save_gallery(self.memory_dir / GALLERY_FILE)
                    self._gallery_revision = revision
                self._save_last_seen(everything)
            except Exception as error:
                with self._dirty_lock:
                    self._dirty |= dirty
                self._record_save(error)
                raise
            self._record_save(None)
            return saved

    def _keep_private(self) -> None:
        """Make the memory folder owner-only if it is not (new, or its mode changed since); a folder this user
        may write but not chmod still saves, with a warning."""
        if is_private_folder(self.memory_dir):
            return
        try:
            make_private_folder(self.memory_dir)
        except PermissionError as error:
            self.logger.warning(f"cannot make {self.memory_dir} owner-only, its files may be readable by others: "
                                f"{describe_error(error)}", throttle_duration_sec=60.0)

    def _save_last_seen(self, everything: bool) -> None:
        """Save the sightings of the people about whom something is kept, when out of date (``everything``: always)."""
        known = set(self.learner.people()) | stored_people(self.memory_dir)
        if self.identity is not None:
            known |= set(self.identity.people())
        self.last_seen.keep_only(known)
        if everything or self.last_seen.needs_saving():
            self.last_seen.save(self.memory_dir)

    def _record_save(self, error: BaseException | None) -> None:
        if error is None:
            if self.save_failures:
                self.logger.info(f"saving works again after {self.save_failures} failed attempts")
            self.saves += 1
            self.save_failures, self.save_error = 0, ""
            return
        self.save_failures += 1
        self.save_error = describe_error(error)
        retry = min(FIRST_RETRY_S * 2 ** (self.save_failures - 1), LONGEST_RETRY_S)
        self._retry_at = time.monotonic() + retry
        self.logger.error(f"saving to {self.memory_dir} failed ({self.save_failures}x): {self.save_error}; "
                          f"learning is kept in RAM, retrying in {retry:.0f} s", throttle_duration_sec=10.0)

    def autosave(self, period_s: float) -> None:
        """Save if due: ``period_s`` after the last attempt; after a failure, at the back-off's retry time
        instead (1, 2, 4... s, at most LONGEST_RETRY_S). A new ``period_s`` applies at once. Never raises."""
        now = time.monotonic()
        due = now >= self._retry_at if self.save_failures else now >= self._last_save_attempt + period_s
        if self.memory_dir is None or not due:
            return
        self._last_save_attempt = now
        try:
            self.save()
        except Exception:  # noqa: BLE001 - recorded (log, /diagnostics) by save; retried when due again
            pass

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued jobs, then stop the thread."""
        self.jobs.put(None)
        self._thread.join(timeout)
