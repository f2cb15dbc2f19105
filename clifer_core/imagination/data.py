"""Training data for the imagination model: face crops, a subject split, a tf.data pipeline.

Crops come from :func:`clifer_core.faces.crop_largest_face` (the same helper
the node uses on live frames), are made once per dataset, size and margin,
and cached as ``.npz`` outside the repository (``~/.cache/clifer`` or
``$CLIFER_CACHE_DIR``), since the data's terms forbid shipping anything
derived from it. The split is by subject: a fixed, documented list of people
is never trained on and serves the quality report.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.data.datasets import load_dataset, load_rgb
from clifer_core.labels import EXPRESSIONS

CACHE_ENV = "CLIFER_CACHE_DIR"
CROP_MARGIN = 0.2
HELD_OUT_EVERY = 6
"""Every 6th subject (sorted by id, starting with the 3rd) of each dataset is held out: fold 2 of 6."""
HELD_OUT_START = 2


@dataclass
class FaceSet:
    """Face crops in memory: ``faces (N, S, S, 3)`` uint8 RGB, expression indices, subject ids."""

    faces: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray

    def __len__(self) -> int:
        return len(self.faces)

    def subset(self, mask: np.ndarray) -> "FaceSet":
        return FaceSet(self.faces[mask], self.labels[mask], self.subjects[mask])

    @staticmethod
    def concatenate(parts: list["FaceSet"]) -> "FaceSet":
        return FaceSet(np.concatenate([p.faces for p in parts]), np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.subjects for p in parts]))


def cache_dir() -> Path:
    """Where derived crops live: ``$CLIFER_CACHE_DIR`` or ``~/.cache/clifer``, never the repository."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "clifer")) / "imagination"


def held_out_subjects(subjects, fold: int = HELD_OUT_START) -> list[str]:
    """The evaluation people of one dataset: every 6th subject id in sorted order, from the ``fold``-th (0-5); the
    default is the fixed split every report uses, the others let cheap models be fitted leave-fold-out."""
    if not 0 <= fold < HELD_OUT_EVERY:
        raise ValueError(f"fold must be in 0..{HELD_OUT_EVERY - 1}, got {fold}")
    ordered = sorted(set(subjects))
    return ordered[fold::HELD_OUT_EVERY]


def load_face_set(dataset: str, image_size: int, margin: float = CROP_MARGIN, use_cache: bool = True) -> FaceSet:
    """Crops of every labelled image of ``dataset`` (a name or folder), cached after the first call.

    Images where no face is found are skipped; expression-less images (Yale
    lighting conditions) are left out.
    """
    from clifer_core.faces import crop_largest_face

    samples = [s for s in load_dataset(dataset) if s.expression is not None]
    if not samples:
        raise ValueError(f"{dataset}: no labelled face images found")
    key = hashlib.sha1("\n".join(str(s.path) for s in samples).encode()).hexdigest()[:12]
    cache_file = cache_dir() / f"crops_{Path(dataset).name}_{image_size}px_m{margin:g}_{key}.npz"
    if use_cache and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            return FaceSet(cached["faces"], cached["labels"], cached["subjects"])
    faces, labels, subjects = [], [], []
    for sample in samples:
        crop = crop_largest_face(load_rgb(sample.path), size=image_size, margin=margin)
        if crop is None:
            continue
        faces.append(crop)
        labels.append(EXPRESSIONS.index(sample.expression))
        subjects.append(f"{sample.dataset}:{sample.subject}")
    face_set = FaceSet(np.stack(faces).astype(np.uint8), np.asarray(labels, np.int32), np.asarray(subjects))
    if use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(".tmp.npz")
        np.savez(temporary, faces=face_set.faces, labels=face_set.labels, subjects=face_set.subjects)
        os.replace(temporary, cache_file)
    return face_set


FER2013_NAME = "fer2013"


def load_fer2013(image_size: int, data_dir: str | os.PathLike | None = None) -> FaceSet:
    """FER2013's 48×48 grey web faces as grey RGB crops, each its own subject (it names no people).

    The faces are pre-cropped, so they are used whole (resized to ``image_size``
    when it is not 48), as the evaluation uses CK+48's. Its classes are in
    :data:`~clifer_core.labels.EXPRESSIONS` order already.
    """
    import cv2

    from clifer_core.data.datasets import default_data_dir

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = Path(root or ".") / "fer2013" / "fer2013_48.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FER2013 archive not found (set $CLIFER_DATA_DIR)")
    with np.load(path, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"].astype(np.int32)
    if images.shape[1] != image_size:
        images = np.stack([cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
                           for image in images])
    faces = np.repeat(images[..., None], 3, axis=-1).astype(np.uint8)
    return FaceSet(faces, labels, np.array([f"{FER2013_NAME}:{i}" for i in range(len(faces))]))


def load_training_set(dataset: str, image_size: int) -> FaceSet:
    """One training dataset by name: FER2013's archive, or the face crops of :func:`load_face_set`."""
    return load_fer2013(image_size) if dataset == FER2013_NAME else load_face_set(dataset, image_size)


def split_by_subject(face_set: FaceSet, fold: int = HELD_OUT_START) -> tuple[FaceSet, FaceSet]:
    """(train, held-out): the held-out people of :func:`held_out_subjects` (``fold``), per dataset prefix (FER2013:
    none held out, its images name no people and are never evaluated)."""
    held = set()
    datasets = {s.split(":", 1)[0] for s in face_set.subjects} - {FER2013_NAME}
    for name in datasets:
        held.update(held_out_subjects([s for s in face_set.subjects if s.startswith(f"{name}:")], fold))
    mask = np.isin(face_set.subjects, sorted(held))
    return face_set.subset(~mask), face_set.subset(mask)


def same_subject_partners(subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each sample: ``(order, start, count)`` so that ``order[start + k]``, k < count, are its subject's samples."""
    order = np.argsort(subjects, kind="stable")
    sorted_subjects = subjects[order]
    unique, first, counts = np.unique(sorted_subjects, return_index=True, return_counts=True)
    position = np.searchsorted(unique, subjects)
    return order.astype(np.int64), first[position].astype(np.int64), counts[position].astype(np.int64)


def make_pipeline(face_set: FaceSet, batch_size: int, augment: bool = True, shuffle: bool = True, seed: int | None = None,
                  repeat: bool = False):
    """A ``tf.data`` pipeline of ``(face, label, partner_face, partner_label)`` batches.

    The partner is a random image of the same person (any expression), the
    target of the same-person translation loss. Faces are float32 in
    [-1, 1]; augmentation (mirror, shift, brightness/contrast) is applied
    identically to a face and its partner. The last, smaller batch is kept
    (docs/design.md §2.4); ``repeat`` makes an endless stream, reshuffled every pass.
    """
    import tensorflow as tf

    faces = tf.constant(face_set.faces)
    labels = tf.constant(face_set.labels, tf.int32)
    order, start, count = (tf.constant(a) for a in same_subject_partners(face_set.subjects))
    size = face_set.faces.shape[1]
    shift = max(1, size // 16)

    def lookup(index):
        partner = tf.gather(order, tf.gather(start, index) + tf.random.uniform((), 0, tf.gather(count, index), tf.int64))
        pair = tf.stack([tf.gather(faces, index), tf.gather(faces, partner)])
        pair = tf.cast(pair, tf.float32) / 127.5 - 1.0
        if augment:
            pair = tf.cond(tf.random.uniform(()) < 0.5, lambda: tf.reverse(pair, axis=[2]), lambda: pair)
            padded = tf.pad(pair, [[0, 0], [shift, shift], [shift, shift], [0, 0]], mode="REFLECT")
            offset = tf.random.uniform((2,), 0, 2 * shift + 1, tf.int32)
            pair = padded[:, offset[0]:offset[0] + size, offset[1]:offset[1] + size, :]
            contrast = tf.random.uniform((), 0.85, 1.15)
            brightness = tf.random.uniform((), -0.1, 0.1)
            pair = tf.clip_by_value(pair * contrast + brightness, -1.0, 1.0)
        return pair[0], tf.gather(labels, index), pair[1], tf.gather(labels, partner)

    indices = tf.data.Dataset.range(len(face_set))
    if shuffle:
        indices = indices.shuffle(len(face_set), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        indices = indices.repeat()
    return (indices.map(lookup, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE))
