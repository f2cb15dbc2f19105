"""Readers for the folder datasets the project evaluates on.

Each reader returns a list of :class:`FaceSample` (path, subject, expression,
group), parsing labels and subjects from file names as documented in
``../shared/data/README.md``. ``group`` is the unit a leak-free split must
keep together: a CK+ sequence, a Taiwanese performance type, a clip.
Images are loaded on demand with :func:`load_rgb`.

The paper's video datasets (docs/design.md §5.1) are read from their layouts too:
RAVDESS by its file-name convention, MMI and BAUM-1 as
``<subject>/<class>/<video>/<frames>``; videos are decoded to frames once
(cached outside the repository) and sub-sampled as the paper did
(:mod:`clifer_core.data.frames`, docs/design.md §5.1).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.labels import canonical

DATA_ENV = "CLIFER_DATA_DIR"
NO_DATA = "none"  # CLIFER_DATA_DIR=none: behave as a machine without the data
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
    """The real-data folder: ``$CLIFER_DATA_DIR`` when set, else ``../shared/data`` beside the project.

    ``CLIFER_DATA_DIR`` set to ``none`` or to nothing means no data, so a machine that has
    ``../shared/data`` can run everything as a user's machine without it would. A set path
    that is not a folder also gives None: an explicit choice is never replaced by the sibling.
    """
    configured = os.environ.get(DATA_ENV)
    if configured is not None:
        if configured.strip().lower() in ("", NO_DATA):
            return None
        return Path(configured) if Path(configured).is_dir() else None
    for candidate in (Path(__file__).resolve().parents[2].parent / "shared" / "data",
                      Path.cwd().parent / "shared" / "data"):
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


_RAVDESS_NAME = re.compile(r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})-"
                           r"(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})(?P<suffix>\.[A-Za-z0-9]+)?$")
_RAVDESS_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry", "06": "scared", "07": "disgusted",
                     "08": "surprised"}
"""RAVDESS emotion codes; 02 (calm) has no counterpart here and is skipped, as in the paper."""
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv"}
BAUM_REQUIRED = ("angry", "scared", "happy", "sad", "surprised", "neutral")
SAMPLINGS = ("compat", "per_video")


def _frames_dir() -> Path:
    from clifer_core.data.cache import default_cache_dir

    return default_cache_dir() / "frames"


def _video_frames(source: Path) -> list[Path]:
    """The frames of a video file (decoded once into the cache) or of a folder of frame images."""
    from clifer_core.data.cache import file_identity
    from clifer_core.data.frames import extract_frames, natural_key

    if source.is_dir():
        frames = [p for p in source.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()]
        return sorted(frames, key=lambda p: natural_key(p.name))
    import hashlib

    digest = hashlib.sha1(file_identity(source).encode()).hexdigest()[:16]
    return extract_frames(source, _frames_dir() / digest)


def _sampled(videos: dict[tuple[str, str], list[Path]], sampler, sampling: str, dataset: str) -> list[FaceSample]:
    """Apply a sampler of docs/design.md §5.1 per (subject, class) (``compat``) or per video (``per_video``)."""
    from clifer_core.data.frames import natural_key

    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    samples = []
    for (subject, expression), sources in sorted(videos.items()):
        sources = sorted(sources, key=lambda p: natural_key(p.name))
        framed = [(source.name, frame) for source in sources for frame in _video_frames(source)]
        streams = [framed] if sampling == "compat" else [[f for f in framed if f[0] == s.name] for s in sources]
        for stream in streams:
            for video_name, frame in sampler(stream):
                samples.append(FaceSample(frame, subject, expression, video_name, dataset))
    return samples


def load_ravdess(root: str | os.PathLike, sampling: str = "compat") -> list[FaceSample]:
    """RAVDESS videos (or frame folders) named ``MM-CC-EE-II-SS-RR-AA[.ext]`` anywhere under ``root``.

    Audio-only files (modality 03) and calm (emotion 02) are skipped;
    subject = actor, group = video. Frames are sub-sampled as the paper did (docs/design.md §5.1).
    """
    from clifer_core.data.frames import sample_ravdess

    videos: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(Path(root).rglob("*")):
        match = _RAVDESS_NAME.match(path.name)
        if not match or match["modality"] == "03" or match["emotion"] not in _RAVDESS_EMOTIONS:
            continue
        if not (path.is_dir() or path.suffix.lower() in _VIDEO_SUFFIXES):
            continue
        key = (f"ravdess{match['actor']}", _RAVDESS_EMOTIONS[match["emotion"]])
        videos.setdefault(key, []).append(path)
    return _sampled(videos, sample_ravdess, sampling, "ravdess")


def _subject_class_videos(root: Path) -> dict[tuple[str, str], list[Path]]:
    """``<subject>/<class>/<video>`` (video = file or frame folder); unknown class names are skipped."""
    videos: dict[tuple[str, str], list[Path]] = {}
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for class_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            try:
                expression = canonical(class_dir.name)
            except ValueError:
                continue
            for source in sorted(class_dir.iterdir()):
                if source.is_dir() or source.suffix.lower() in _VIDEO_SUFFIXES:
                    videos.setdefault((subject_dir.name, expression), []).append(source)
    return videos


def load_mmi(root: str | os.PathLike, sampling: str = "compat") -> list[FaceSample]:
    """MMI as ``<subject>/<class>/<video>/<frames>``; the paper's MMI sampling (docs/design.md §5.1); group = video."""
    from clifer_core.data.frames import sample_mmi

    return _sampled(_subject_class_videos(Path(root)), sample_mmi, sampling, "mmi")


def load_baum(root: str | os.PathLike, sampling: str = "compat") -> list[FaceSample]:
    """BAUM-1 as ``<subject>/<class>/<video>/<frames>``; only subjects with all six classes (docs/design.md §5.1)."""
    from clifer_core.data.frames import sample_baum

    videos = _subject_class_videos(Path(root))
    complete = {subject for subject, _ in videos
                if all((subject, expression) in videos for expression in BAUM_REQUIRED)}
    return _sampled({key: value for key, value in videos.items() if key[0] in complete}, sample_baum, sampling, "baum")


LOADERS = {"taiwanese": load_taiwanese, "ckplus": load_ckplus, "yale": load_yale, "ravdess": load_ravdess,
           "mmi": load_mmi, "baum": load_baum, "generic": load_generic}
_DATA_FOLDERS = {"ravdess": ("ravdess", "RAVDESS", "Ravdess"), "mmi": ("mmi", "MMI"), "baum": ("baum", "BAUM", "BAUM-1")}


def load_dataset(name_or_path: str) -> list[FaceSample]:
    """Load a dataset by name (``taiwanese``, ``ckplus``, ``yale`` under the data dir) or by folder.

    A folder is recognised by its layout: a Taiwanese, CK+48 or Yale folder, or
    else the generic ``<subject>/<expression>/`` layout.
    """
    if name_or_path in LOADERS and name_or_path != "generic":
        root = default_data_dir()
        if root is None:
            configured = os.environ.get(DATA_ENV)
            reason = (f"${DATA_ENV}={configured!r} is not a data folder" if configured is not None
                      else f"set ${DATA_ENV} or place the data at ../shared/data")
            raise FileNotFoundError(f"no data folder: {reason}")
        if name_or_path in _DATA_FOLDERS:
            folders = [root / name for name in _DATA_FOLDERS[name_or_path] if (root / name).is_dir()]
            if not folders:
                raise FileNotFoundError(f"{name_or_path} is not under {root} (looked for {_DATA_FOLDERS[name_or_path]})")
            root = folders[0]
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
    if any(n.startswith("actor_") or _RAVDESS_NAME.match(n) for n in names):
        return load_ravdess(path)
    return load_generic(path)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array (grey and GIF included)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from error
