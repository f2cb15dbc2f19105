"""Readers for the folder datasets the project evaluates on.

Each reader returns a list of :class:`FaceSample` (path, subject, expression,
group), parsing labels and subjects from file names as documented in
``../shared/data/README.md``. ``group`` is the unit a leak-free split must
keep together: a CK+ sequence, a Taiwanese performance type, a clip.
Images are loaded on demand with :func:`load_rgb`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.labels import canonical

DATA_ENV = "CLIFER_DATA_DIR"
_TAIWANESE_LETTERS = dict(zip("abcdefg", ("neutral", "happy", "sad", "angry", "disgusted", "scared", "surprised")))
_TAIWANESE_NAME = re.compile(r"^(?P<subject>\d{2})(?P<type>\d)(?P<view>\d)(?P<letter>[a-g]?)(?P<serial>\d{2,3})\.jpe?g$", re.I)
_CK_NAME = re.compile(r"^S(?P<subject>\d+)_(?P<sequence>\d+)_(?P<frame>\d+)\.png$", re.I)
_YALE_NAME = re.compile(r"^subject(?P<subject>\d+)\.(?P<condition>[a-z]+)$", re.I)
_YALE_EXPRESSIONS = {"happy": "happy", "normal": "neutral", "sad": "sad", "surprised": "surprised"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class FaceSample:
    """One labelled face image: where it is, whose face, which expression, which clip."""

    path: Path
    subject: str
    expression: str | None
    group: str
    dataset: str


def default_data_dir() -> Path | None:
    """``$CLIFER_DATA_DIR``, else ``../shared/data`` beside the project, if it exists."""
    configured = os.environ.get(DATA_ENV)
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def load_taiwanese(root: str | os.PathLike) -> list[FaceSample]:
    """Taiwanese FED ``PPTVeNN.jpg``; group = performance type (neutral: by serial parity)."""
    folder = Path(root)
    if (folder / "taiwanese_fed").is_dir():
        folder = folder / "taiwanese_fed"
    if (folder / "faces_256x256").is_dir():
        folder = folder / "faces_256x256"
    samples = []
    for path in sorted(folder.iterdir()):
        match = _TAIWANESE_NAME.match(path.name)
        if not match:
            continue
        performance = match["type"]
        letter = match["letter"].lower()
        expression = _TAIWANESE_LETTERS[letter] if letter else ("neutral" if performance == "0" else None)
        if expression is None:
            continue
        group = f"t{performance}" if expression != "neutral" else f"n{int(match['serial']) % 2}"
        samples.append(FaceSample(path, f"tw{match['subject']}", expression, group, "taiwanese"))
    return samples


def load_ckplus(root: str | os.PathLike) -> list[FaceSample]:
    """CK+48 ``<class>/S<subject>_<sequence>_<frame>.png``; group = sequence. Contempt is skipped."""
    folder = Path(root)
    for sub in ("ckplus48", "CK+48"):
        if (folder / sub).is_dir():
            folder = folder / sub
    samples = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name.lower() == "contempt":
            continue
        expression = canonical(class_dir.name)
        for path in sorted(class_dir.iterdir()):
            match = _CK_NAME.match(path.name)
            if match:
                samples.append(FaceSample(path, f"ck{match['subject']}", expression, f"s{match['sequence']}", "ckplus"))
    return samples


def load_yale(root: str | os.PathLike, expressions_only: bool = False) -> list[FaceSample]:
    """Yale ``subjectNN.<condition>``; expression None for lighting/glasses conditions."""
    folder = Path(root)
    for sub in ("yalefaces", "yalefaces"):
        if (folder / sub).is_dir():
            folder = folder / sub
    samples = []
    for path in sorted(folder.iterdir()):
        match = _YALE_NAME.match(path.name)
        if not match:
            continue
        expression = _YALE_EXPRESSIONS.get(match["condition"].lower())
        if expressions_only and expression is None:
            continue
        samples.append(FaceSample(path, f"yale{match['subject']}", expression, match["condition"].lower(), "yale"))
    return samples


def load_generic(root: str | os.PathLike) -> list[FaceSample]:
    """Generic ``<subject>/<expression>/[<clip>/]*.png`` layout; group = clip folder or file stem."""
    root = Path(root)
    samples = []
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for expression_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            expression = canonical(expression_dir.name)
            for path in sorted(expression_dir.rglob("*")):
                if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file():
                    clip = path.parent.name if path.parent != expression_dir else path.stem
                    samples.append(FaceSample(path, subject_dir.name, expression, clip, "generic"))
    return samples


LOADERS = {"taiwanese": load_taiwanese, "ckplus": load_ckplus, "yale": load_yale, "generic": load_generic}


def load_dataset(name_or_path: str) -> list[FaceSample]:
    """Load a dataset by name (``taiwanese``, ``ckplus``, ``yale`` under the data dir) or by folder.

    A folder is recognised by its layout: a Taiwanese, CK+48 or Yale folder, or
    else the generic ``<subject>/<expression>/`` layout.
    """
    if name_or_path in LOADERS and name_or_path != "generic":
        root = default_data_dir()
        if root is None:
            raise FileNotFoundError(f"no data folder: set ${DATA_ENV} or place the data at ../shared/data")
        return LOADERS[name_or_path](root)
    path = Path(name_or_path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such dataset folder")
    names = {p.name.lower() for p in path.iterdir()}
    if "taiwanese_fed" in names or "faces_256x256" in names or any(_TAIWANESE_NAME.match(n) for n in names):
        return load_taiwanese(path)
    if "ckplus48" in names or "ck+48" in names or "contempt" in names:
        return load_ckplus(path)
    if "yalefaces" in names or any(_YALE_NAME.match(n) for n in names):
        return load_yale(path)
    return load_generic(path)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array (grey and GIF included)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from error
