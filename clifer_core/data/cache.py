"""A disk cache of arrays, so each face is cropped and featurised once across runs.

Entries are ``.npy`` files (never pickled) named by a hash of a key string
that callers build from everything the value depends on: the image's path,
size and modification time, the crop settings, the model file's identity.
Writes are atomic (temp file + rename), so a killed run leaves no torn entry.
The cache lives outside the repository (dataset-derived crops may not be
committed): ``$CLIFER_CACHE_DIR``, else ``~/.cache/clifer/evaluation``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

CACHE_ENV = "CLIFER_CACHE_DIR"


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "clifer" / "evaluation"


def file_identity(path: str | os.PathLike) -> str:
    """``path|size|mtime`` of a file: changes whenever the file is replaced or edited."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"


class ArrayCache:
    """``get(key)`` / ``put(key, array)`` on a folder; ``folder=None`` disables caching."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, key: str) -> np.ndarray | None:
        if self.folder is None:
            self.misses += 1
            return None
        path = self._path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, key: str, array: np.ndarray) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, np.asarray(array), allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
