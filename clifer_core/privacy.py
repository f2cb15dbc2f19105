"""Personal data the node keeps: what is stored where and why, when each person was last seen, and erasure.

The memory folder holds data about people (README, "Personal data and privacy"):
``people/<id>.npz`` (each person's expression memory), ``identity.npz`` (the
identity gallery), ``population.npz`` (a memory of everyone's taught
expressions), ``learner.json`` (who has a memory, and how many faces each was
taught) and ``last_seen.json`` (when each person was last seen).
:func:`stores` says so in plain English, one entry per store, for the node's
``/data_management`` declaration.

Retention: a person not seen for ``retention_days`` days is forgotten
(:func:`expired`). The last sighting of each person is kept by
:class:`LastSeen` in RAM and saved, atomically and versioned, in
``last_seen.json`` with the other files at every save; it is rewritten when
someone appears or goes, or when a sighting moved by
:data:`LAST_SEEN_RESOLUTION_S` (so a person in view does not cost a disk write
per save; a clean shutdown writes exact times). A memory folder written before
this file existed, or whose file was set aside, takes each person's last
sighting from their files' modification time (:func:`file_time`): the last
time anything of theirs was saved, which is earlier than their last sighting
when they were seen but not taught since, so such a person may be forgotten
that much early, once (their sighting is saved from then on).

Files and folders of the memory folder are owner-only (:func:`protect`,
:mod:`clifer_core.persistence`), and :func:`erase_everyone` deletes every file
of the node's there (``~/forget_all``).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from clifer_core.learner import INDEX_FILE, POPULATION_FILE
from clifer_core.people import GALLERY_FILE, PEOPLE_FOLDER, check_people_map, person_of_file, shown
from clifer_core.persistence import (PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE, SET_ASIDE_SUFFIX, StateFileError,
                                     atomic_write_bytes, make_private_folder, read_json_object, set_aside)

LAST_SEEN_FILE = "last_seen.json"
LAST_SEEN_KIND = "clifer.last_seen"
LAST_SEEN_VERSION = 1
SECONDS_PER_DAY = 86400.0
LAST_SEEN_RESOLUTION_S = 600.0
"""A sighting that moved by less than this is not worth a disk write (retention counts in days); after a
crash a person's saved last sighting may be this much older than the real one."""
PLAUSIBLE_SINCE = 1735689600.0
"""2025-01-01 UTC: a clock reading before this is wrong (a robot booted without a real-time clock, before
NTP). No one is forgotten while the clock reads earlier, and a sighting saved with such a clock is taken as
unknown (restarted from now), so a clock set right later cannot make everyone look long gone."""
NODE_FILES = (GALLERY_FILE, POPULATION_FILE, INDEX_FILE, LAST_SEEN_FILE)
"""The node's files at the top of the memory folder (besides the ``people/`` folder)."""


@dataclass(frozen=True)
class Store:
    """One store of personal data: ``path`` (empty: RAM only, nothing on disk) and what it is, in plain English."""

    path: str
    purpose: str


def retention_text(retention_days: int) -> str:
    """For how long data about a person is kept, in plain English."""
    on_request = "until someone asks the robot to forget them (~/forget_person, or ~/forget_all for everyone)"
    if retention_days <= 0:
        return f"Kept {on_request}; nobody is forgotten by time (retention_days is 0)."
    days = "1 day" if retention_days == 1 else f"{retention_days} days"
    return (f"Kept until the person has not been seen for {days} (retention_days, checked at start-up and daily), "
            f"or {on_request}.")


def stores(memory_dir: str | os.PathLike | None, retention_days: int, identity: bool = True,
           population: bool = True) -> list[Store]:
    """Every store of personal data the node keeps, with what it holds, what for, for how long and what deleting
    it means; with no ``memory_dir``, one entry (empty path) saying that nothing is written to disk."""
    kept = retention_text(retention_days)
    if memory_dir is None:
        who = "the identity gallery (face embeddings of every person met) and " if identity else ""
        return [Store("", (
            f"Nothing is written to disk (memory_dir is empty): {who}each person's expression memory (prototypes of "
            "their facial expression features and the features of the newest faces they were taught, never images) and when they were last seen are kept in RAM only, to "
            f"recognise people and read their expressions better, and are lost when the node stops. {kept} "
            "If deleted, the robot meets everyone as a stranger again and reads their expressions with the "
            "population model until it learns them again."))]
    folder = Path(memory_dir)
    declared = [Store(str(folder / PEOPLE_FOLDER), (
        "Expression memory of each person met (people/<person id>.npz): prototypes of the features of their facial "
        "expressions (expression-network features and face-shape geometry, never images), the same features of the "
        "newest 300 faces they were taught, and which expressions they were taught, so the robot reads this person's expressions better than a model of everyone can. "
        f"{kept} If deleted, the robot reads their expressions with the population model until it learns them again."))]
    if identity:
        declared.append(Store(str(folder / GALLERY_FILE), (
            "Identity gallery: face embeddings (128 numbers per face computed by dlib, a bounded number per person, "
            "never images) of every person met, under an id the robot makes up or a teacher gives, to recognise "
            f"people when they come back. {kept} If deleted, the robot will no longer recognise people it met: it "
            "meets them as strangers with new ids and will read their expressions with the population model until "
            "it learns them again.")))
    if population:
        declared.append(Store(str(folder / POPULATION_FILE), (
            "Shared expression memory: prototypes of the expression features of every face taught to the robot, all "
            "people together (never images). Kept as long as the people it learned from: forgetting a person rebuilds "
            "it from the others. If deleted, nothing the robot does changes: estimates start from the packaged "
            "population model, not from this memory.")))
    declared.append(Store(str(folder / INDEX_FILE), (
        "Index of the people with an expression memory: their ids and how many faces each was taught. "
        f"{kept} If deleted, the memories are still loaded and the counts are taken from them.")))
    declared.append(Store(str(folder / LAST_SEEN_FILE), (
        "When each person was last seen (date and time, by person id), so that people not seen for retention_days "
        f"are forgotten. {kept} If deleted, each person's last sighting is taken from when their files were last "
        "written, so someone seen but not taught since may be forgotten sooner after their last sighting.")))
    return declared


def expired(last_seen: dict[str, float], now: float, retention_days: int) -> list[str]:
    """The people whose last sighting is at least ``retention_days`` days before ``now`` (none when 0, or while
    the clock reads before :data:`PLAUSIBLE_SINCE`; a sighting recorded by such a clock never expires)."""
    if retention_days <= 0 or now < PLAUSIBLE_SINCE:
        return []
    horizon = now - retention_days * SECONDS_PER_DAY
    return sorted(p for p, seen in last_seen.items() if PLAUSIBLE_SINCE <= seen <= horizon)


class LastSeen:
    """When each person was last seen (seconds since the epoch, UTC), in RAM; saved as ``last_seen.json``.

    Thread-safe: the frame path records sightings while the learning worker
    forgets and saves.
    """

    def __init__(self, times: dict[str, float] | None = None):
        self._lock = threading.Lock()
        self._times: dict[str, float] = dict(times or {})
        self._saved: dict[str, float] = {}

    def see(self, person_ids, now: float | None = None) -> None:
        now = time.time() if now is None else float(now)
        with self._lock:
            for person_id in person_ids:
                self._times[person_id] = max(now, self._times.get(person_id, now))

    def times(self) -> dict[str, float]:
        with self._lock:
            return dict(self._times)

    def assume(self, person_id: str, seen: float) -> None:
        """Record ``seen`` for ``person_id`` unless a sighting is already known."""
        with self._lock:
            self._times.setdefault(person_id, float(seen))

    def forget(self, person_id: str) -> None:
        with self._lock:
            self._times.pop(person_id, None)

    def clear(self) -> None:
        with self._lock:
            self._times.clear()

    def merge(self, source: str, target: str) -> None:
        """``source`` turned out to be ``target``: the later of their sightings is ``target``'s."""
        with self._lock:
            moved = self._times.pop(source, None)
            if moved is not None:
                self._times[target] = max(moved, self._times.get(target, moved))

    def keep_only(self, person_ids) -> None:
        """Drop the sightings of people about whom nothing is kept any more (a frame in flight may record a
        sighting of someone just forgotten)."""
        keep = set(person_ids)
        with self._lock:
            self._times = {p: t for p, t in self._times.items() if p in keep}

    def needs_saving(self) -> bool:
        """Whether the file is out of date: someone appeared or went, or a sighting moved by the resolution."""
        with self._lock:
            if self._times.keys() != self._saved.keys():
                return True
            return any(abs(t - self._saved[p]) >= LAST_SEEN_RESOLUTION_S for p, t in self._times.items())

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``<folder>/last_seen.json`` atomically."""
        with self._lock:
            times = dict(self._times)
        document = {"kind": LAST_SEEN_KIND, "schema_version": LAST_SEEN_VERSION, "people": times}
        path = atomic_write_bytes(Path(folder) / LAST_SEEN_FILE,
                                  json.dumps(document, indent=1, sort_keys=True).encode("utf-8"))
        with self._lock:
            self._saved = times
        return path

    def restore(self, folder: str | os.PathLike, now: float | None = None) -> dict[str, str]:
        """Replace the sightings with ``<folder>/last_seen.json``'s; returns ``{file: problem}`` if it was set aside.

        An unusable file (corrupt, wrong kind or version, an invalid person id
        or time) is renamed ``*.corrupt`` and the sightings start empty (see
        :meth:`assume_from_files`). A sighting recorded before
        :data:`PLAUSIBLE_SINCE` is restarted from ``now``.
        """
        now = time.time() if now is None else float(now)
        path = Path(folder) / LAST_SEEN_FILE
        problems: dict[str, str] = {}
        times: dict[str, float] = {}
        if path.is_file():
            try:
                times = read_last_seen(path)
            except StateFileError as error:
                problems[str(path)] = str(error)
                set_aside(path)
        times = {p: (t if t >= PLAUSIBLE_SINCE else now) for p, t in times.items()}
        with self._lock:
            self._times = times
            self._saved = dict(times) if not problems else {}
        return problems

    def assume_from_files(self, folder: str | os.PathLike | None, person_ids, now: float | None = None) -> list[str]:
        """Give each of ``person_ids`` without a known sighting the time of their newest file (see
        :func:`file_time`), else now; returns those given one."""
        now = time.time() if now is None else float(now)
        with self._lock:
            missing = sorted(set(person_ids) - self._times.keys())
        for person_id in missing:
            seen = file_time(folder, person_id) if folder is not None else None
            self.assume(person_id, seen if seen is not None and seen >= PLAUSIBLE_SINCE else now)
        return missing


def read_last_seen(path: str | os.PathLike) -> dict[str, float]:
    """``last_seen.json``'s sightings; StateFileError saying what is wrong with it."""
    path = Path(path)
    document = read_json_object(path)
    if document.get("kind") != LAST_SEEN_KIND:
        raise StateFileError(f"{path}: holds {shown(document.get('kind'))}, expected {LAST_SEEN_KIND!r}")
    if document.get("schema_version") != LAST_SEEN_VERSION:
        raise StateFileError(f"{path}: schema version {shown(document.get('schema_version'))} is not supported "
                             f"(this version reads {LAST_SEEN_VERSION})")
    people = document.get("people")
    check_people_map(path, people, "times", lambda person_id, seen: (
        None if not isinstance(seen, bool) and isinstance(seen, (int, float)) and math.isfinite(seen)
        else f"last sighting of {person_id} is {shown(seen)}, not a time in seconds"))
    return {person_id: float(seen) for person_id, seen in people.items()}


def file_time(folder: str | os.PathLike, person_id: str) -> float | None:
    """When a person's data was last written, for memory folders without their sighting: the newest modification
    time of their files in ``people/`` (set-aside copies keep theirs), else of the identity gallery (written
    whenever anyone's identity is learned, so not before theirs last was); None if neither exists."""
    folder = Path(folder)
    people = folder / PEOPLE_FOLDER
    times = [path.stat().st_mtime for path in people.glob(f"{person_id}.*")
             if person_of_file(path) == person_id and path.is_file()] if _inside(folder, people) else []
    gallery = folder / GALLERY_FILE
    if not times and gallery.is_file():
        times = [gallery.stat().st_mtime]
    return max(times) if times else None


def stored_people(folder: str | os.PathLike | None) -> set[str]:
    """People with any file in ``<folder>/people`` (memories, set-aside copies)."""
    if folder is None:
        return set()
    people = Path(folder) / PEOPLE_FOLDER
    if not _inside(Path(folder), people):
        return set()
    return {person for person in map(person_of_file, people.iterdir()) if person is not None}


def node_files(folder: str | os.PathLike) -> list[Path]:
    """Every file of the node's in the memory folder: all of ``people/``, and at the top its own files
    (:data:`NODE_FILES`), set-aside copies (``*.corrupt*``) and leftovers of interrupted writes (``.*.tmp``).
    Other files someone put there are not the node's and are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (p.is_file() or p.is_symlink()) and (
        p.name in NODE_FILES or SET_ASIDE_SUFFIX in p.name or (p.name.startswith(".") and p.name.endswith(".tmp")))]
    people = folder / PEOPLE_FOLDER
    if _inside(folder, people):
        found += [p for p in people.iterdir() if p.is_file() or p.is_symlink()]
    return sorted(found)


def erase_everyone(folder: str | os.PathLike) -> list[Path]:
    """Delete every file of the node's in the memory folder (:func:`node_files`); returns them."""
    deleted = node_files(folder)
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted


def protect(folder: str | os.PathLike) -> None:
    """Make the memory folder and its ``people/`` folder owner-only (0700) and the node's files in them 0600,
    whatever the umask, creating the folder if needed (folders written before this rule existed are fixed)."""
    folder = make_private_folder(folder)
    people = folder / PEOPLE_FOLDER
    if _inside(folder, people):
        os.chmod(people, PRIVATE_FOLDER_MODE)
    for path in node_files(folder):
        if not path.is_symlink():
            os.chmod(path, PRIVATE_FILE_MODE)


def _inside(folder: Path, people: Path) -> bool:
    """Whether ``people`` is a folder that resolves to ``folder/people`` (not a link leading elsewhere)."""
    return people.is_dir() and people.resolve() == folder.resolve() / PEOPLE_FOLDER
