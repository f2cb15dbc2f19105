"""LearningWorker: learning beside the frame path, never inside it.

Teachers (the ``~/teach`` service, a labels topic, self-training, first
meetings) put jobs on a queue; one worker thread runs imagination and memory
updates through :class:`clifer_core.learner.CliferLearner`, which trains a
private copy of the person's memory and swaps it in when done, so inference
keeps reading the previous memory meanwhile. People whose memory changed are
saved by :meth:`LearningWorker.save_dirty` (the node calls it periodically and
on shutdown); each file is written atomically.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LearningJob:
    """Teach ``person_id`` that ``crops`` show ``labels``; ``labels=None`` seeds a new person's memory."""

    person_id: str
    crops: np.ndarray
    labels: list[str] | None
    source: str


class LearningWorker:
    """One background thread applying :class:`LearningJob` s to a learner."""

    def __init__(self, learner, memory_dir: str | None, logger, max_queue: int = 64):
        self.learner = learner
        self.memory_dir = Path(memory_dir).expanduser() if memory_dir else None
        self.logger = logger
        self.jobs: queue.Queue[LearningJob | None] = queue.Queue(maxsize=max_queue)
        self.enabled = True
        self.completed = 0
        self.failed = 0
        self.last_duration_s = 0.0
        self.rejected = 0
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="clifer-learning", daemon=True)
        self._thread.start()

    def submit(self, job: LearningJob) -> bool:
        """Queue a job; False (and counted as rejected) when learning is off or the queue is full."""
        if not self.enabled:
            self.rejected += 1
            return False
        try:
            self._idle.clear()
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            self.rejected += 1
            self.logger.warning("learning queue full: sample dropped", throttle_duration_sec=5.0)
            return False

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
                if job.labels is None:
                    self.learner.seed(job.person_id, job.crops)
                else:
                    self.learner.learn(job.person_id, job.crops, job.labels)
                with self._dirty_lock:
                    self._dirty.add(job.person_id)
                self.completed += 1
            except (ValueError, OSError) as error:
                self.failed += 1
                self.logger.error(f"learning from {job.source} for {job.person_id} failed: {error}")
            finally:
                self.last_duration_s = time.perf_counter() - start
                if self.jobs.empty():
                    self._idle.set()

    def save_dirty(self) -> list[str]:
        """Save the memories changed since the last save; returns the people saved."""
        if self.memory_dir is None:
            return []
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        saved = []
        for person_id in sorted(dirty):
            if self.learner.knows(person_id):
                self.learner.save_person(self.memory_dir, person_id)
                saved.append(person_id)
        if saved and self.learner.population is not None:
            self.learner.population.save(self.memory_dir / "population.npz")
        return saved

    def forget(self, person_id: str) -> None:
        with self._dirty_lock:
            self._dirty.discard(person_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued jobs, then stop the thread."""
        self.jobs.put(None)
        self._thread.join(timeout)
