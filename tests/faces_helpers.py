"""Faces the face tests can build anywhere: two public-domain photographs shipped in scikit-image.

``astronaut`` (NASA portrait of Eileen Collins, colour) and ``camera`` (the
cameraman, grey) are two different real people, so detection, tracking and
identity can be tested without ../shared/data.
"""

from __future__ import annotations

import cv2
import numpy as np

# Face boxes (x0, y0, x1, y1) BlazeFace finds in the untouched photographs.
ASTRONAUT_FACE = (174, 70, 279, 175)
CAMERAMAN_FACE = (205, 124, 274, 193)


def astronaut_head(side: int = 160) -> np.ndarray:
    """The astronaut's head with some context, resized to ``side`` x ``side`` RGB."""
    from skimage.data import astronaut

    head = astronaut()[20:230, 120:330]
    return cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)


def cameraman_head(side: int = 160) -> np.ndarray:
    """The cameraman's head with some context, resized to ``side`` x ``side`` RGB."""
    from skimage.data import camera

    head = camera()[90:230, 170:310]
    return cv2.resize(np.repeat(head[:, :, None], 3, axis=2), (side, side), interpolation=cv2.INTER_AREA)


def paste(patch: np.ndarray, x: int, y: int, width: int = 640, height: int = 480, background: int = 90) -> np.ndarray:
    """A frame with ``patch`` placed with its top-left corner at (x, y); parts outside the frame are cut."""
    frame = np.full((height, width, 3), background, np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + patch.shape[1], width), min(y + patch.shape[0], height)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    return frame


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` rotated counter-clockwise about its centre, same size, black corners."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height))
