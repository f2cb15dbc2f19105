"""The paper's frame sub-sampling (docs/design.md §5.1) and video frame extraction for the video datasets.

Sampling works on a naturally sorted list of frames. ``compat`` mode is the
original code's: per (subject, class), the frames of all that class's videos
are concatenated before chunking (chunks may straddle two videos);
``per_video`` samples each video on its own, the unit a leak-free split
keeps together. ``F = fps // 2`` with ``fps = 30`` as in the code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

FPS = 30
CHUNK = FPS // 2
PAD_TO = 64
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(str(name))]


def sample_ravdess(frames: Sequence, chunk: int = CHUNK) -> list:
    """Chunks 2..n-1 of n = len // chunk (first and last dropped); the last two frames of each."""
    count = len(frames) // chunk
    kept = []
    for index in range(1, count - 1):
        block = frames[index * chunk:(index + 1) * chunk]
        kept += list(block[-2:])
    return kept


def _pad_middle(kept: list, size: int) -> list:
    while kept and len(kept) < size:
        kept.append(kept[len(kept) // 2])
    return kept


def sample_mmi(frames: Sequence, chunk: int = CHUNK, pad_to: int = PAD_TO) -> list:
    """All frames if fewer than a chunk, else the 10 central frames of each chunk; padded to ``pad_to``
    by appending the element at the current middle index."""
    if len(frames) < chunk:
        kept = list(frames)
    else:
        centre = chunk // 2
        kept = []
        for index in range(max(1, len(frames) // chunk)):
            block = frames[index * chunk:(index + 1) * chunk]
            kept += list(block[centre - 5:centre + 5])
    return _pad_middle(kept, pad_to)


def sample_baum(frames: Sequence, chunk: int = CHUNK, pad_to: int = PAD_TO) -> list:
    """The last two frames of each full chunk (nothing under one chunk); padded by repeating the last."""
    kept = []
    for index in range(len(frames) // chunk):
        kept += list(frames[index * chunk:(index + 1) * chunk][-2:])
    while kept and len(kept) < pad_to:
        kept.append(kept[-1])
    return kept


SAMPLERS = {"ravdess": sample_ravdess, "mmi": sample_mmi, "baum": sample_baum}


def extract_frames(video: str | os.PathLike, folder: str | os.PathLike) -> list[Path]:
    """Decode every frame of ``video`` to ``folder/frame_NNNNN.png`` once; returns the frame paths.

    A folder that already holds the frames of this video (same size and
    modification time, recorded in ``source.txt``) is reused.
    """
    import cv2

    video, folder = Path(video), Path(folder)
    stat = video.stat()
    stamp = f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    marker = folder / "source.txt"
    if marker.is_file() and marker.read_text() == stamp:
        return sorted(folder.glob("frame_*.png"), key=lambda p: natural_key(p.name))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("frame_*.png"):
        old.unlink()
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"{video}: cannot open video")
    paths = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            path = folder / f"frame_{len(paths):05d}.png"
            if not cv2.imwrite(str(path), frame):
                raise ValueError(f"{path}: cannot write frame")
            paths.append(path)
    finally:
        capture.release()
    if not paths:
        raise ValueError(f"{video}: no frames could be decoded")
    marker.write_text(stamp)
    return paths
