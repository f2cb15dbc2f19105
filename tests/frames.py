"""Frames the tests build themselves: a public-domain face (scikit-image's astronaut,
a NASA photograph) placed on a 640x480 canvas, blank frames, and real dataset faces."""

from __future__ import annotations

import numpy as np


def astronaut_rgb() -> np.ndarray:
    """The astronaut photograph (512x512 RGB, public domain) shipped inside scikit-image."""
    from skimage.data import astronaut

    return astronaut()


def face_frame(width: int = 640, height: int = 480, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A width x height RGB frame with the astronaut's head and shoulders, shifted by ``offset`` pixels."""
    import cv2

    portrait = astronaut_rgb()[0:300, 60:360]
    scale = min(height / portrait.shape[0], width / portrait.shape[1]) * 0.8
    resized = cv2.resize(portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 90, np.uint8)
    y = (height - resized.shape[0]) // 2 + offset[1]
    x = (width - resized.shape[1]) // 2 + offset[0]
    frame[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return frame


def blank_frame(width: int = 640, height: int = 480) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)
