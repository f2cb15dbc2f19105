"""Versioned atomic state files: corruption is reported, and a process killed mid-save loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from clifer_core.persistence import StateFileError, load_state, save_state

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from clifer_core.persistence import save_state
    path = sys.argv[1]
    step = 0
    while True:
        step += 1
        values = np.full(200_000, step, np.int64)
        save_state(path, "test.state", 1, {"step": step}, {"values": values})
        print(step, flush=True)
""")


def test_round_trip_keeps_arrays_and_manifest(tmp_path):
    path = save_state(tmp_path / "s.npz", "test.state", 2, {"alpha": 0.5, "names": ["a"]}, {"w": np.eye(3, dtype=np.float32)})
    manifest, arrays = load_state(path, "test.state", (2,))
    assert manifest["alpha"] == 0.5 and manifest["names"] == ["a"] and manifest["schema_version"] == 2
    assert np.array_equal(arrays["w"], np.eye(3)) and arrays["w"].dtype == np.float32


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_files_raise_a_clear_error(tmp_path, damage):
    path = save_state(tmp_path / "s.npz", "test.state", 1, {}, {"w": np.arange(1000)})
    payload = path.read_bytes()
    path.write_bytes({"truncate": payload[: len(payload) // 2], "garbage": b"\x00junk" * 50, "empty": b""}[damage])
    with pytest.raises(StateFileError, match="s.npz"):
        load_state(path, "test.state", (1,))


def test_wrong_kind_version_and_missing_file(tmp_path):
    path = save_state(tmp_path / "s.npz", "test.state", 3, {}, {"w": np.zeros(2)})
    with pytest.raises(StateFileError, match="expected 'other.kind'"):
        load_state(path, "other.kind", (3,))
    with pytest.raises(StateFileError, match="schema version 3 is not supported"):
        load_state(path, "test.state", (1, 2))
    with pytest.raises(StateFileError, match="no such state file"):
        load_state(tmp_path / "absent.npz", "test.state", (1,))


def test_a_pickle_inside_is_refused(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, __manifest__=np.frombuffer(b'{"kind": "test.state", "schema_version": 1}', np.uint8),
             sneaky=np.array([object()], dtype=object))
    with pytest.raises(StateFileError):
        load_state(path, "test.state", (1,))


def test_kill_minus_nine_during_saves_never_leaves_a_corrupt_file(tmp_path):
    path = tmp_path / "state.npz"
    rng = np.random.default_rng(7)
    for attempt in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip(), "the writer completed a first save"
        time.sleep(float(rng.uniform(0.05, 0.4)))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        manifest, arrays = load_state(path, "test.state", (1,))
        assert np.all(arrays["values"] == manifest["step"]), f"attempt {attempt}: a consistent, complete state"


def test_saved_files_get_ordinary_permissions_outside_an_owner_only_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    previous = os.umask(0o022)
    try:
        path = save_state(shared / "s.npz", "test.state", 1, {}, {"w": np.zeros(1)})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
