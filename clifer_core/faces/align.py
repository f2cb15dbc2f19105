"""Face crops: eye-levelled crops for the expression models, and REP-155 "cropped" and "aligned" images.

Both are a single affine warp of the frame with a zero border, so faces cut
by the frame edge come out padded with black rather than shifted or squashed.
``margin`` is the fraction of the face box's side added on every side.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from clifer_core.faces.detect import Detection
from clifer_core.faces.frames import as_rgb_uint8

DEFAULT_MARGIN = 0.2
REP155_SIZE = 128


def _check_geometry(detection: Detection, size: int, margin: float) -> None:
    if int(size) != size or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    if not math.isfinite(margin) or margin <= -0.5:
        raise ValueError(f"margin must be finite and > -0.5, got {margin!r}")
    if not all(math.isfinite(v) for v in detection.box) or detection.width <= 0 or detection.height <= 0:
        raise ValueError(f"face box must be finite with positive size, got {detection.box}")


def eye_angle_degrees(detection: Detection) -> float:
    """Tilt of the line from the image-left eye to the image-right eye (0 when there are no keypoints)."""
    eyes = detection.eyes()
    if eyes is None or not np.all(np.isfinite(eyes)):
        return 0.0
    (x0, y0), (x1, y1) = eyes
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def alignment_transform(detection: Detection, size: int = 96, margin: float = DEFAULT_MARGIN, rotate: bool = True) -> np.ndarray:
    """The 2x3 affine matrix that :func:`align_face` applies (frame pixels -> crop pixels)."""
    _check_geometry(detection, size, margin)
    centre_x, centre_y = detection.center
    side = max(detection.width, detection.height) * (1.0 + 2.0 * margin)
    angle = eye_angle_degrees(detection) if rotate else 0.0
    matrix = cv2.getRotationMatrix2D((centre_x, centre_y), angle, size / side)
    matrix[:, 2] += (size / 2.0 - centre_x, size / 2.0 - centre_y)
    return matrix


def align_face(frame, detection: Detection, size: int = 96, margin: float = DEFAULT_MARGIN, rotate: bool = True) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 crop centred on the face, eyes levelled when keypoints exist."""
    rgb = as_rgb_uint8(frame)
    matrix = alignment_transform(detection, size, margin, rotate)
    return cv2.warpAffine(rgb, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_rep155(frame, detection: Detection, size: int = REP155_SIZE, margin: float = 0.0) -> np.ndarray:
    """REP-155 ``cropped`` image: the face box (plus margin), centred, scaled to fit ``size``, zero-padded."""
    rgb = as_rgb_uint8(frame)
    _check_geometry(detection, size, margin)
    centre_x, centre_y = detection.center
    width = detection.width * (1.0 + 2.0 * margin)
    height = detection.height * (1.0 + 2.0 * margin)
    scale = size / max(width, height)
    matrix = np.array([[scale, 0.0, size / 2.0 - scale * centre_x], [0.0, scale, size / 2.0 - scale * centre_y]])
    crop = cv2.warpAffine(rgb, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    keep_w, keep_h = round(width * scale), round(height * scale)
    x0, y0 = (size - keep_w) // 2, (size - keep_h) // 2
    crop[:y0] = 0
    crop[y0 + keep_h :] = 0
    crop[:, :x0] = 0
    crop[:, x0 + keep_w :] = 0
    return crop


def align_rep155(frame, detection: Detection, size: int = REP155_SIZE) -> np.ndarray:
    """REP-155 ``aligned`` image, as ROS4HRI's ``hri_face_detect`` makes it: the frame turned about the face
    centre so the eyes are level (when keypoints exist), then the face box fitted into ``size`` as in
    :func:`crop_rep155`."""
    rgb = as_rgb_uint8(frame)
    _check_geometry(detection, size, 0.0)
    turn = cv2.getRotationMatrix2D(detection.center, eye_angle_degrees(detection), 1.0)
    height, width = rgb.shape[:2]
    levelled = cv2.warpAffine(rgb, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    return crop_rep155(levelled, detection, size)
