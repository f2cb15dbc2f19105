"""Turn whatever image array a caller has into the RGB uint8 frame the face code expects.

Frames in clifer_core are ``(H, W, 3)`` uint8 RGB. Grey ``(H, W)`` / ``(H, W, 1)``,
RGBA ``(H, W, 4)``, 16-bit and float images are converted here, once, so that
detectors, alignment and the embedder never see anything else. Float images
are read as ``[0, 1]`` when their finite maximum is at most 1, else as
``[0, 255]``; non-finite values become 0.
"""

from __future__ import annotations

import numpy as np


def as_rgb_uint8(frame) -> np.ndarray:
    """Return ``frame`` as a C-contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises ValueError naming the problem for anything that is not an image:
    None, zero-size arrays, wrong number of dimensions or channels, bool or
    complex data.
    """
    if frame is None:
        raise ValueError("no frame: got None")
    array = np.asarray(frame)
    if array.ndim not in (2, 3):
        raise ValueError(f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty frame: shape {array.shape}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise ValueError(f"a frame must have 1, 3 or 4 channels; got {array.shape[2]}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"a frame must hold integer or float pixels; got dtype {array.dtype}")
    array = _to_uint8(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        cleaned = np.where(finite, array, 0.0)
        peak = float(cleaned.max()) if finite.any() else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(cleaned * scale, 0, 255).round().astype(np.uint8)
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)
