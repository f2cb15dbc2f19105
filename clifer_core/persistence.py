"""Versioned, atomic, pickle-free storage of learned state.

Every persisted object (memories, identity gallery, learner state) is one
``.npz`` file: its arrays, plus a ``__manifest__`` entry holding a JSON
document with the format name, schema version and hyperparameters. Files are
written to a temporary file in the same folder, fsynced, then renamed over
the target, so a crash mid-save leaves the last good file intact. Loading
never unpickles (``allow_pickle=False``).

Privacy is a property of the folder: a file written into an owner-only
folder (no group or other permission bits, as :func:`make_private_folder`
makes the memory folder) is created owner-only (0600), and a folder created
inside one is owner-only (0700), whatever the umask; elsewhere (packaged
model weights, calibration files) files get ordinary permissions.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MANIFEST_KEY = "__manifest__"
SET_ASIDE_SUFFIX = ".corrupt"
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700


class StateFileError(ValueError):
    """A persisted state file is missing, truncated, corrupt or of the wrong kind."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_private_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is an existing folder only its owner may enter (no group or other permission bits)."""
    try:
        return Path(folder).is_dir() and os.stat(folder).st_mode & 0o077 == 0
    except OSError:
        return False


def make_private_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed (missing parents get ordinary permissions) and make it owner-only (0700)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, PRIVATE_FOLDER_MODE)
    return folder


def make_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and missing parents; each one created inside an owner-only folder is owner-only too."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    make_folder(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        return folder
    if is_private_folder(folder.parent):
        os.chmod(folder, PRIVATE_FOLDER_MODE)
    return folder


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` via a temporary file and an atomic rename (owner-only in an owner-only folder)."""
    path = Path(path)
    make_folder(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE if is_private_folder(path.parent) else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def temporary_files(folder: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_write_bytes` leaves in ``folder`` when killed mid-write (``.<name>.*.tmp``)."""
    folder = Path(folder)
    return sorted(path for path in folder.glob(".*.tmp") if path.is_file() and not path.is_symlink())


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the leftovers of writes killed mid-way in ``folder``; call only while nothing writes there."""
    removed = []
    for path in temporary_files(folder):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def set_aside(path: str | os.PathLike) -> Path:
    """Rename an unusable state file to ``<name>.corrupt`` (``.corrupt.1``... if taken): kept, never overwritten."""
    path = Path(path)
    target = path.with_name(path.name + SET_ASIDE_SUFFIX)
    number = 0
    while target.exists() or target.is_symlink():
        number += 1
        target = path.with_name(f"{path.name}{SET_ASIDE_SUFFIX}.{number}")
    os.rename(path, target)
    return target


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON state file's top-level object; StateFileError naming the file and why it is unusable."""
    path = Path(path)
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise StateFileError(f"{path}: unreadable ({type(error).__name__}: {str(error)[:80]})") from error
    if not isinstance(document, dict):
        raise StateFileError(f"{path}: expected a JSON object, got a {type(document).__name__}")
    return document


def save_state(path: str | os.PathLike, kind: str, version: int, manifest: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically save ``arrays`` and a JSON ``manifest`` as a versioned ``.npz``.

    ``kind`` names the format (``"clifer.gwr"``...), ``version`` its schema
    version; both are checked by :func:`load_state`.
    """
    if MANIFEST_KEY in arrays:
        raise ValueError(f"array name {MANIFEST_KEY!r} is reserved")
    document = {"kind": kind, "schema_version": int(version), **manifest}
    buffer = io.BytesIO()
    encoded = np.frombuffer(json.dumps(document, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(buffer, **{MANIFEST_KEY: encoded}, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def _read_state(path: Path, with_arrays: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (a JSON object) and, with ``with_arrays``, the arrays of a :func:`save_state` file; every
    failure is a :class:`StateFileError` naming the file."""
    if not path.is_file():
        raise StateFileError(f"{path}: no such state file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if MANIFEST_KEY not in data.files:
                raise StateFileError(f"{path}: not a CLIFER state file (no manifest)")
            manifest = json.loads(bytes(data[MANIFEST_KEY]).decode("utf-8"))
            arrays = {name: data[name] for name in data.files if name != MANIFEST_KEY} if with_arrays else {}
    except StateFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
        raise StateFileError(f"{path}: corrupt or truncated state file ({type(error).__name__}: {error})") from error
    if not isinstance(manifest, dict):
        raise StateFileError(f"{path}: the manifest is not a JSON object")
    return manifest, arrays


def state_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a file written by :func:`save_state` (its ``kind`` says which loader reads it), without
    its arrays; :class:`StateFileError` when it is missing, corrupt or no state file."""
    return _read_state(Path(path), with_arrays=False)[0]


def load_state(path: str | os.PathLike, kind: str, supported_versions) -> tuple[dict, dict[str, np.ndarray]]:
    """Load a file written by :func:`save_state`; return ``(manifest, arrays)``.

    Raises :class:`StateFileError` naming the file and the problem when it is
    missing, truncated, corrupt, of another kind or of an unsupported version.
    """
    path = Path(path)
    manifest, arrays = _read_state(path, with_arrays=True)
    if manifest.get("kind") != kind:
        raise StateFileError(f"{path}: holds {manifest.get('kind')!r}, expected {kind!r}")
    if manifest.get("schema_version") not in tuple(supported_versions):
        raise StateFileError(
            f"{path}: schema version {manifest.get('schema_version')} is not supported "
            f"(this version reads {', '.join(map(str, supported_versions))})"
        )
    return manifest, arrays
