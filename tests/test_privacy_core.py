"""Personal data without ROS: owner-only files, last sightings, retention, forgetting everyone, the declaration."""

from __future__ import annotations

import json
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clifer_core.faces.identity import IdentityGallery
from clifer_core.people import GALLERY_FILE, person_path
from clifer_core.persistence import StateFileError, make_folder, make_private_folder, save_state
from clifer_core.privacy import (LAST_SEEN_FILE, LAST_SEEN_RESOLUTION_S, PLAUSIBLE_SINCE, SECONDS_PER_DAY, LastSeen,
                                 erase_everyone, expired, node_files, protect, read_last_seen, stores)
from tests.test_people import trained

NOW = 1_790_000_000.0
"""A fixed clock (September 2026) for decisions that depend on the time."""
DAY = SECONDS_PER_DAY


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plant(memory: Path, people=("alice", "bob")) -> None:
    """Memories, population, index and gallery of ``people``, saved as the node saves them."""
    learner = trained(people)
    learner.save(memory)
    gallery = IdentityGallery()
    rng = np.random.default_rng(3)
    for person_id in people:
        embeddings = rng.normal(size=(2, 128)).astype(np.float32)
        gallery.enrol(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), person_id)
    gallery.save(memory / GALLERY_FILE)


def stored_text(memory: Path) -> bytes:
    """Every byte under ``memory``, npz members decompressed."""
    parts = []
    for path in sorted(p for p in memory.rglob("*") if p.is_file()):
        parts.append(path.read_bytes())
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                parts += [archive.read(name) for name in archive.namelist()]
    return b"\n".join(parts)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_and_folders_in_an_owner_only_folder_are_owner_only_whatever_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        memory = make_private_folder(tmp_path / "robot" / "memory")
        learner = trained(("alice",))
        learner.save(memory)
        shared = make_folder(tmp_path / "shared" / "models")
        os.chmod(shared, 0o755)
        model = save_state(shared / "model.npz", "test.state", 1, {}, {"w": np.zeros(1)})
    finally:
        os.umask(previous)
    assert mode(memory) == 0o700 and mode(memory / "people") == 0o700
    assert {mode(path) for path in memory.rglob("*") if path.is_file()} == {0o600}
    assert mode(model) == 0o666 & ~umask, "outside an owner-only folder, files keep ordinary permissions"


def test_protect_fixes_a_memory_folder_written_with_ordinary_permissions(tmp_path):
    memory = tmp_path / "memory"
    memory.mkdir()
    os.chmod(memory, 0o755)
    plant(memory)
    (memory / "notes.txt").write_text("someone else's file")
    for path in [memory / "people", *memory.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    protect(memory)
    assert mode(memory) == 0o700 and mode(memory / "people") == 0o700
    assert {mode(path) for path in node_files(memory)} == {0o600}
    assert mode(memory / "notes.txt") == 0o644, "files that are not the node's are left alone"


def test_expired_counts_whole_days_and_never_trusts_a_clock_before_2025():
    seen = {"alice": NOW - 8 * DAY, "bob": NOW - 6 * DAY, "carol": NOW - 7 * DAY, "dave": 1000.0}
    assert expired(seen, NOW, 7) == ["alice", "carol"]
    assert expired(seen, NOW, 0) == [], "0 keeps everyone"
    assert expired(seen, NOW, 1) == ["alice", "bob", "carol"], "dave was seen by a wrong clock: kept"
    assert expired(seen, PLAUSIBLE_SINCE - 1.0, 1) == [], "while the clock reads before 2025 nobody is forgotten"


def test_sightings_round_trip_and_an_unusable_file_is_set_aside(tmp_path):
    sightings = LastSeen()
    sightings.see(["alice", "bob"], NOW - DAY)
    sightings.see(["alice"], NOW)
    sightings.see(["bob"], NOW - 2 * DAY)
    assert sightings.times() == {"alice": NOW, "bob": NOW - DAY}, "a sighting never moves back in time"
    path = sightings.save(tmp_path)
    assert read_last_seen(path) == {"alice": NOW, "bob": NOW - DAY}
    restored = LastSeen()
    assert restored.restore(tmp_path, NOW) == {}
    assert restored.times() == sightings.times() and not restored.needs_saving()

    documents = ({"kind": "clifer.last_seen", "schema_version": 99, "people": {}},
                 {"kind": "clifer.last_seen", "schema_version": 1, "people": {"../x": NOW}},
                 {"kind": "clifer.last_seen", "schema_version": 1, "people": {"a": "yesterday"}})
    for broken in (b"\x00garbage", *(json.dumps(document).encode() for document in documents)):
        for old in tmp_path.glob("*.corrupt*"):
            old.unlink()
        path.write_bytes(broken)
        with pytest.raises(StateFileError):
            read_last_seen(path)
        problems = restored.restore(tmp_path, NOW)
        assert list(problems) == [str(path)] and (tmp_path / f"{LAST_SEEN_FILE}.corrupt").is_file()
        assert restored.times() == {} and restored.needs_saving() is False
        restored.see(["alice"], NOW)
        assert restored.needs_saving()


def test_a_sighting_saved_by_a_wrong_clock_restarts_from_now(tmp_path):
    LastSeen({"alice": 86400.0, "bob": NOW - DAY}).save(tmp_path)
    restored = LastSeen()
    restored.restore(tmp_path, NOW)
    assert restored.times() == {"alice": NOW, "bob": NOW - DAY}


def test_the_file_is_rewritten_only_when_someone_comes_goes_or_moves_by_the_resolution(tmp_path):
    sightings = LastSeen()
    sightings.see(["alice"], NOW)
    assert sightings.needs_saving()
    sightings.save(tmp_path)
    sightings.see(["alice"], NOW + LAST_SEEN_RESOLUTION_S / 2)
    assert not sightings.needs_saving(), "alice in view does not cost a write per save"
    sightings.see(["alice"], NOW + LAST_SEEN_RESOLUTION_S)
    assert sightings.needs_saving()
    sightings.save(tmp_path)
    sightings.merge("p1234abcd", "alice")
    assert not sightings.needs_saving()
    sightings.see(["bob"], NOW)
    assert sightings.needs_saving()
    sightings.save(tmp_path)
    sightings.keep_only({"alice"})
    assert sightings.needs_saving() and sightings.times().keys() == {"alice"}


def test_an_older_memory_folder_takes_each_persons_sighting_from_their_files(tmp_path):
    plant(tmp_path, ("alice", "bob"))
    os.utime(person_path(tmp_path, "alice"), (NOW - 10 * DAY, NOW - 10 * DAY))
    os.utime(person_path(tmp_path, "bob"), (NOW - 2 * DAY, NOW - 2 * DAY))
    os.utime(tmp_path / GALLERY_FILE, (NOW - 3 * DAY, NOW - 3 * DAY))
    sightings = LastSeen()
    assert sightings.restore(tmp_path, NOW) == {}
    assumed = sightings.assume_from_files(tmp_path, {"alice", "bob", "carol", "dave"} - {"dave"}, NOW)
    assert assumed == ["alice", "bob", "carol"]
    assert sightings.times() == {"alice": NOW - 10 * DAY, "bob": NOW - 2 * DAY, "carol": NOW - 3 * DAY}, \
        "carol (in the gallery only) takes the gallery's time"
    assert sightings.assume_from_files(tmp_path, {"alice"}, NOW + DAY) == [], "a known sighting is kept"


def test_erasing_everyone_leaves_no_persons_bytes_and_leaves_other_files(tmp_path):
    memory = tmp_path / "memory"
    plant(memory)
    LastSeen({"alice": NOW, "bob": NOW}).save(memory)
    (memory / "people" / "bob.npz.corrupt").write_bytes(person_path(memory, "bob").read_bytes()[:200])
    (memory / ".identity.npz.abc123.tmp").write_bytes(b"alice half-written")
    (memory / "population.npz.corrupt").write_bytes(b"alice bob")
    (memory / "notes.txt").write_text("not the node's")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "alice.npz").write_bytes(b"alice elsewhere")
    (memory / "people" / "link.npz").symlink_to(outside / "alice.npz")
    erase_everyone(memory)
    assert sorted(p.name for p in memory.rglob("*")) == ["notes.txt", "people"]
    assert (outside / "alice.npz").read_bytes() == b"alice elsewhere", "a link is removed, never followed"
    assert b"alice" not in stored_text(memory) and b"bob" not in stored_text(memory)


def test_every_file_the_node_saves_is_declared(tmp_path):
    plant(tmp_path)
    LastSeen({"alice": NOW}).save(tmp_path)
    declared = stores(tmp_path, 30)
    paths = [Path(store.path) for store in declared]
    for path in node_files(tmp_path):
        assert any(path == declared_path or declared_path in path.parents for declared_path in paths), path
    assert all("30 days" in store.purpose and "If deleted" in store.purpose
               for store in declared if not store.path.endswith("population.npz"))
    assert len(stores(tmp_path, 0, identity=False, population=False)) == len(declared) - 2
    ram = stores(None, 0)
    assert len(ram) == 1 and ram[0].path == "" and "Nothing is written to disk" in ram[0].purpose


def fer_session(memory: Path):
    """A session on a real pipeline whose learner reads the planted (FER-feature) memories."""
    from clifer_core.build import build_pipeline
    from clifer_core.logs import ThrottledLogger
    from clifer_core.pipeline import PipelineConfig
    from clifer_core.session import LearningSession
    from tests.test_session import Clock

    clock = Clock()
    config = PipelineConfig(deterministic_ids=True, identity=True, identity_in_background=False, recent_crops=10)
    pipeline = build_pipeline(config, features="fer", imagination="none", identity_clock=clock)
    return LearningSession(pipeline, memory, ThrottledLogger("test_privacy")), clock


def test_retention_forgets_at_start_up_those_not_seen_and_keeps_the_others(tmp_path):
    memory = tmp_path / "memory"
    plant(memory, ("alice", "bob", "carol"))
    now = time.time()
    LastSeen({"alice": now - 9 * DAY, "bob": now - DAY}).save(memory)
    os.utime(person_path(memory, "carol"), (now - 30 * DAY, now - 30 * DAY))
    (memory / "people" / "carol.npz.corrupt").write_bytes(b"carol, set aside")
    os.utime(memory / "people" / "carol.npz.corrupt", (now - 30 * DAY, now - 30 * DAY))
    session, _ = fer_session(memory)
    try:
        assert session.load() == {}
        assert session.apply_retention(0) == []
        assert session.apply_retention(7) == ["alice", "carol"], "carol's files are 30 days old, bob seen yesterday"
        assert session.worker.wait_idle(60)
        assert set(session.people()) == {"bob"}
        assert IdentityGallery.load(memory / GALLERY_FILE).people() == ["bob"]
        assert read_last_seen(memory / LAST_SEEN_FILE).keys() == {"bob"}
        assert sorted(p.name for p in (memory / "people").iterdir()) == ["bob.npz"]
        stored = stored_text(memory)
        assert b"alice" not in stored and b"carol" not in stored and b"bob" in stored
        assert session.apply_retention(7) == [], "the check finds no one twice"
        assert session.apply_retention(7, now=now + 5 * DAY) == [], "bob, seen a day ago, is kept 5 days later"
        assert session.apply_retention(7, now=now + 7 * DAY) == ["bob"], "a daily check a week later forgets bob"
        assert session.worker.wait_idle(60)
        assert session.people() == {} and list((memory / "people").iterdir()) == []
    finally:
        session.stop()
        session.pipeline.close()


def test_forget_all_erases_everyone_in_ram_and_on_disk(tmp_path):
    from tests.test_session import run_frames

    memory = tmp_path / "memory"
    plant(memory)
    session, clock = fer_session(memory)
    try:
        assert session.load() == {}
        run_frames(session, clock, 3)
        face_id = session.pipeline.tracker.tracks[0].face_id
        assert session.teach("happy", face_id=face_id, person_id="carol").success
        assert session.worker.wait_idle(60)
        session.save(everything=True)
        assert "carol" in session.worker.last_seen.times()
        outcome = session.forget_all()
        assert outcome.success and "queued" in outcome.message
        assert session.worker.wait_idle(60)
        assert session.people() == {} and session.worker.last_seen.times() == {}
        stored = stored_text(memory)
        assert not any(name in stored for name in (b"alice", b"bob", b"carol"))
        assert list((memory / "people").iterdir()) == []
        assert {p.name for p in node_files(memory)} <= {GALLERY_FILE, LAST_SEEN_FILE}, "only an empty gallery and index"
        assert IdentityGallery.load(memory / GALLERY_FILE).people() == []
        assert read_last_seen(memory / LAST_SEEN_FILE) == {}
        assert session.worker.forgotten >= 3
    finally:
        session.stop()
        session.pipeline.close()
