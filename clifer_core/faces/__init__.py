"""Face pipeline: detection, alignment, tracking and identity.

``crop_largest_face`` is the one-call convenience for preparing training crops
from dataset images; live frames go through a detector, :class:`FaceTracker`
and :class:`IdentityResolver` instead.
"""

from __future__ import annotations

import threading

import numpy as np

from clifer_core.faces.align import DEFAULT_MARGIN, align_face, align_rep155, crop_rep155
from clifer_core.faces.detect import Detection, FaceDetector, detect_largest, make_detector
from clifer_core.faces.frames import as_rgb_uint8
from clifer_core.faces.identity import FaceEmbedder, IdentityGallery, IdentityResolver
from clifer_core.faces.track import FaceTracker, Track

_shared_detector: FaceDetector | None = None
_shared_lock = threading.Lock()


def find_largest_face(image_rgb) -> Detection | None:
    """The largest face the default BlazeFace detector finds (pre-cropped faces included), or None."""
    global _shared_detector
    with _shared_lock:
        if _shared_detector is None:
            _shared_detector = make_detector("blazeface")
        return detect_largest(_shared_detector, image_rgb)


def crop_largest_face(image_rgb, size: int = 96, margin: float = DEFAULT_MARGIN) -> np.ndarray | None:
    """An eye-levelled ``(size, size, 3)`` uint8 crop of the largest face, or None when no face is found."""
    detection = find_largest_face(image_rgb)
    if detection is None:
        return None
    return align_face(image_rgb, detection, size=size, margin=margin)


__all__ = [
    "Detection",
    "FaceDetector",
    "FaceEmbedder",
    "FaceTracker",
    "IdentityGallery",
    "IdentityResolver",
    "Track",
    "align_face",
    "align_rep155",
    "as_rgb_uint8",
    "crop_largest_face",
    "crop_rep155",
    "detect_largest",
    "find_largest_face",
    "make_detector",
]
