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
"""Every 6th subject (sorted by id, starting with the 3rd) of each dataset is held out."""
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


def held_out_subjects(subjects) -> list[str]:
    """The fixed evaluation people of one dataset: every 6th subject id in sorted order, from the 3rd."""
    ordered = sorted(set(subjects))
    return ordered[HELD_OUT_START::HELD_OUT_EVERY]


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


def split_by_subject(face_set: FaceSet) -> tuple[FaceSet, FaceSet]:
    """(train, held-out): the held-out people of :func:`held_out_subjects`, per dataset prefix."""
    held = set()
    datasets = {s.split(":", 1)[0] for s in face_set.subjects}
    for name in datasets:
        held.update(held_out_subjects([s for s in face_set.subjects if s.startswith(f"{name}:")]))
    mask = np.isin(face_set.subjects, sorted(held))
    return face_set.subset(~mask), face_set.subset(mask)


def same_subject_partners(subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each sample: ``(order, start, count)`` so that ``order[start + k]``, k < count, are its subject's samples."""
    order = np.argsort(subjects, kind="stable")
    sorted_subjects = subjects[order]
    unique, first, counts = np.unique(sorted_subjects, return_index=True, return_counts=True)
    position = np.searchsorted(unique, subjects)
    return order.astype(np.int64), first[position].astype(np.int64), counts[position].astype(np.int64)


def make_pipeline(face_set: FaceSet, batch_size: int, augment: bool = True, shuffle: bool = True, seed: int | None = None):
    """A ``tf.data`` pipeline of ``(face, label, partner_face, partner_label)`` batches.

    The partner is a random image of the same person (any expression), the
    target of the same-person translation loss. Faces are float32 in
    [-1, 1]; augmentation (mirror, shift, brightness/contrast) is applied
    identically to a face and its partner. The last, smaller batch is kept
    (docs/design.md §2.4).
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
    return (indices.map(lookup, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE))
