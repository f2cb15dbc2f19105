"""Face crops of dataset images through the face pipeline, cached on disk.

Every evaluation image goes through :func:`clifer_core.faces.crop_largest_face`
(detect + eye-level align), like the live node's faces. Pre-cropped images
on which no face is found (CK+48's 48x48 crops are often too tight for the
detector) are used whole, resized: they are faces already. The cache key is
the file's identity plus the crop settings, so changing either recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clifer_core.data.cache import ArrayCache, file_identity
from clifer_core.data.datasets import FaceSample, load_rgb
from clifer_core.progress import Progress

CROP_SIZE = 96
CROP_MARGIN = 0.2
CROP_VERSION = 1


def whole_image_crop(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """The image itself, centre-squared and resized: the crop of an already-cropped face."""
    import cv2

    height, width = image_rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image_rgb[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def face_crop(image_rgb: np.ndarray, size: int = CROP_SIZE, margin: float = CROP_MARGIN) -> tuple[np.ndarray, bool]:
    """The aligned crop of the largest face, or the whole image when none is found; and whether one was."""
    from clifer_core.faces import crop_largest_face

    crop = crop_largest_face(image_rgb, size=size, margin=margin)
    if crop is None:
        return whole_image_crop(image_rgb, size), False
    return crop, True


def dataset_crops(samples: Sequence[FaceSample], cache: ArrayCache, size: int = CROP_SIZE,
                  margin: float = CROP_MARGIN, show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(N, size, size, 3)`` uint8 crops of ``samples`` and an ``(N,)`` bool "face detected" mask."""
    crops = np.empty((len(samples), size, size, 3), np.uint8)
    detected = np.empty(len(samples), bool)
    progress = Progress("face crops", len(samples), enabled=show_progress)
    for i, sample in enumerate(samples):
        key = f"crop|v{CROP_VERSION}|{file_identity(sample.path)}|{size}|{margin}"
        cached = cache.get(key)
        if cached is None:
            crop, found = face_crop(load_rgb(sample.path), size, margin)
            cached = np.concatenate([crop.reshape(-1), np.array([found], np.uint8)])
            cache.put(key, cached)
        crops[i] = cached[:-1].reshape(size, size, 3)
        detected[i] = bool(cached[-1])
        progress.update()
    progress.close()
    return crops, detected
