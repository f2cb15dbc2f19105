"""What the memories see of each dataset image, computed once and cached.

Per image: the feature vector the memories learn (FER2013 ``add_4`` or the
CAAE latent), the packaged FER2013 class probabilities (the population-only
baseline), and, for image-space imagination, the feature vector of the face
imagined with each of the 7 expressions. Imagination from a real crop does
not depend on the class order, so it is done here, in batches, and the
protocol runs (numpy only) just look it up. FER features are stored raw;
the memories' scaling is applied by the protocol so it can be tuned
without recomputing anything. :func:`compute_landmarks` caches each crop's
facial landmarks the same way (the shape features and the population
model's training and benchmark start from them). Entries are keyed by the crop's pixels (and
the imagination model file), so any change to cropping recomputes them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.data.cache import ArrayCache, file_identity
from clifer_core.imagination import is_landmark_warp
from clifer_core.progress import Progress
from clifer_core.labels import EXPRESSIONS

BATCH = 256
REPRESENTATION_VERSION = 2


@dataclass
class Representations:
    """Per-image arrays aligned with a list of samples."""

    features: np.ndarray
    """``(N, D)`` raw memory input (FER2013 features or CAAE latents)."""
    prior: np.ndarray
    """``(N, 7)`` FER2013 probabilities over :data:`EXPRESSIONS`."""
    imagined: np.ndarray | None
    """``(N, 7, D)`` features of each face imagined with each expression, or None."""
    feature_kind: str


def imaginer_path(path: str | os.PathLike | None) -> Path:
    from clifer_core.imagination.imaginer import DEFAULT_MODEL_PATH

    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no imagination model; train one with `clifer train-imagination` "
                                "or pass --imaginer")
    return path


class _Models:
    """Loads TensorFlow models only when a cache miss needs them."""

    def __init__(self, imaginer_file: Path | None):
        self.imaginer_file = imaginer_file
        self._fer = None
        self._imaginer = None

    @property
    def fer(self):
        if self._fer is None:
            from clifer_core.features import Fer2013Model

            self._fer = Fer2013Model()
        return self._fer

    @property
    def imaginer(self):
        if self._imaginer is None:
            from clifer_core.imagination.imaginer import load_imagination

            self._imaginer = load_imagination(self.imaginer_file)
        return self._imaginer


def _cached_rows(keys: list[str], cache: ArrayCache, compute, label: str, show_progress: bool) -> np.ndarray:
    """Stack one cached array per key, computing the missing ones in batches with ``compute(indices)``."""
    rows: list[np.ndarray | None] = [cache.get(key) for key in keys]
    missing = [i for i, row in enumerate(rows) if row is None]
    progress = Progress(label, len(missing), enabled=show_progress and bool(missing))
    for start in range(0, len(missing), BATCH):
        batch = missing[start:start + BATCH]
        for i, value in zip(batch, compute(batch)):
            cache.put(keys[i], value)
            rows[i] = value
        progress.update(len(batch))
    if missing:
        progress.close()
    return np.stack(rows) if rows else np.zeros((0,), np.float32)


def compute_representations(crops: np.ndarray, cache: ArrayCache, features: str = "fer",
                            imagination: bool = True, imaginer_file: str | os.PathLike | None = None,
                            show_progress: bool = True, own_expressions: np.ndarray | None = None) -> Representations:
    """Features, prior probabilities and (optionally) imagined features of every crop.

    ``features`` is ``fer`` or ``caae``; imagination and CAAE features need
    the imagination model (``imaginer_file``, default: the packaged one).
    ``own_expressions`` (one :data:`EXPRESSIONS` index per crop, what it
    shows) is required by an imagination that starts from the face's own
    expression (the landmark warp); the protocols only ever imagine from
    taught faces, whose taught label it is.
    """
    if features not in ("fer", "caae"):
        raise ValueError(f"features must be 'fer' or 'caae', got {features!r}")
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 crops (N, H, W, 3), got {crops.dtype} {crops.shape}")
    needs_imaginer = imagination or features == "caae"
    model_file = imaginer_path(imaginer_file) if needs_imaginer else None
    models = _Models(model_file)
    imaginer_id = file_identity(model_file) if model_file else "none"
    needs_own = model_file is not None and imagination and is_landmark_warp(model_file)
    if needs_own and (own_expressions is None or len(own_expressions) != len(crops)):
        raise ValueError(f"{model_file}: this imagination starts from each face's own expression; "
                         "pass own_expressions, one per crop")
    identities = [hashlib.sha1(np.ascontiguousarray(crop).tobytes()).hexdigest() for crop in crops]

    prior = _cached_rows([f"prior|v{REPRESENTATION_VERSION}|{ident}" for ident in identities], cache,
                         lambda idx: models.fer.predict_proba(crops[idx]), "FER2013 probabilities", show_progress)
    if features == "fer":
        feature_rows = _cached_rows([f"fer|v{REPRESENTATION_VERSION}|{ident}" for ident in identities], cache,
                                    lambda idx: models.fer.features(crops[idx]), "FER2013 features", show_progress)
    else:
        feature_rows = _cached_rows([f"caae|v{REPRESENTATION_VERSION}|{imaginer_id}|{ident}" for ident in identities],
                                    cache, lambda idx: models.imaginer.encode(crops[idx]), "CAAE latents",
                                    show_progress)
    imagined = None
    if imagination:
        def imagine(indices):
            own = {"own_expressions": np.asarray(own_expressions)[indices]} if needs_own else {}
            faces, latents = models.imaginer.imagine(crops[indices], EXPRESSIONS, **own)
            if features == "caae":
                return latents
            flat = models.fer.features(faces.reshape(-1, *faces.shape[2:]))
            return flat.reshape(len(indices), len(EXPRESSIONS), -1)

        owns = [f"|own{int(e)}" if needs_own else "" for e in (own_expressions if needs_own else identities)]
        keys = [f"imagined|{features}|v{REPRESENTATION_VERSION}|{imaginer_id}|{ident}{own}"
                for ident, own in zip(identities, owns)]
        imagined = _cached_rows(keys, cache, imagine, "imagined expressions", show_progress).astype(np.float32)
    return Representations(feature_rows.astype(np.float32), prior.astype(np.float32), imagined, features)


LANDMARK_VERSION = 1


def compute_landmarks(crops: np.ndarray, cache: ArrayCache, model: str = "facemesh",
                      show_progress: bool = True) -> np.ndarray:
    """``(N, K, 2)`` landmarks of every crop (:mod:`clifer_core.faces.landmarks`), keyed by the crop's pixels."""
    from clifer_core.faces.landmarks import make_landmarker

    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 crops (N, H, W, 3), got {crops.dtype} {crops.shape}")
    landmarker = []

    def compute(indices):
        if not landmarker:
            landmarker.append(make_landmarker(model))
        return landmarker[0](crops[indices])

    keys = [f"landmarks|{model}|v{LANDMARK_VERSION}|{hashlib.sha1(np.ascontiguousarray(crop).tobytes()).hexdigest()}"
            for crop in crops]
    rows = _cached_rows(keys, cache, compute, f"{model} landmarks", show_progress)
    return rows.astype(np.float32) if len(rows) else np.zeros((0, 0, 2), np.float32)
