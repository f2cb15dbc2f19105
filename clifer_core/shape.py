"""Expression features from the face's shape: landmarks aligned to a canonical face, plus classic measures.

The FER2013 feature sees grey texture; what it misses (a slightly dropped
jaw, raised inner brows, widened eyes: the scared face) is geometry. Here the
landmarks of :mod:`clifer_core.faces.landmarks` are mapped by a similarity
transform (Procrustes: translation, scale, in-plane rotation) fitted on the
rigid points only (eye corners, nose bridge and tip) onto a canonical face,
so the features do not change with where the face is, how large, or how
tilted, and a smile does not change the fitted scale. Two parts:

- the aligned positions of the expressive points (brows, eyes, nose, lips,
  jaw), in units of the outer-eye-corner distance;
- interpretable measures (:data:`MEASURES`): mouth opening and width,
  lip-corner height, brow raise and knit, eye aperture, nose wrinkle.

Displacements from a person's own typical face (:class:`PersonReference`, a
running median of their frames, no labels needed) remove who the person is
and keep what their face is doing. Within one person's memory that reference
is a constant shift, which nearest-neighbour and GWR distances ignore, so the
learner's per-person memories learn the aligned shape itself; the reference
matters across people, so the population model (:mod:`clifer_core.population`)
keeps one per person it is told about.
"""

from __future__ import annotations

from collections import deque

import numpy as np

MEASURES = ("mouth_opening", "mouth_opening_outer", "mouth_width", "lip_corner_height", "lip_corner_to_nose",
            "upper_lip_to_nose", "brow_raise", "inner_brow_raise", "brow_knit", "eye_aperture", "nose_wrinkle")
"""Names of the interpretable measures, in the order :func:`expression_measures` returns them."""
MEASURE_WEIGHT = 3.0
"""Measures are multiplied by this inside the shape vector: a handful of numbers beside some 170 points,
each a distance of the same order as a point's displacement, would otherwise count for little."""
DEFAULT_REFERENCE_WINDOW = 90
"""Frames in a person's running median: three seconds at 30 Hz, long enough that a held expression does
not become the reference at once."""


def similarity_to_template(points: np.ndarray, rigid_indices: np.ndarray,
                           template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity map (Umeyama, no reflection) of each face's rigid points onto ``template``.

    ``points`` ``(N, K, 2)``; ``rigid_indices`` ``(M,)`` into K; ``template`` ``(M, 2)``. Complex arithmetic: a
    similarity in 2-D is z -> a z + b; returns ``(a, b)``, each ``(N, 1)`` complex.
    """
    z = as_complex(points)
    source = z[:, rigid_indices]
    target = as_complex(template)
    source_mean = source.mean(axis=1, keepdims=True)
    target_mean = target.mean()
    centred = source - source_mean
    energy = np.sum(np.abs(centred) ** 2, axis=1, keepdims=True)
    if np.any(energy <= 1e-12):
        raise ValueError("degenerate landmarks: the rigid points of a face coincide")
    factor = np.sum(np.conj(centred) * (target - target_mean)[None], axis=1, keepdims=True) / energy
    return factor, target_mean - factor * source_mean


def as_complex(points: np.ndarray) -> np.ndarray:
    """``(..., 2)`` x, y -> ``(...)`` complex x + iy."""
    points = np.asarray(points, np.float64)
    return points[..., 0] + 1j * points[..., 1]


def as_points(values: np.ndarray) -> np.ndarray:
    """``(...)`` complex -> ``(..., 2)`` x, y."""
    return np.stack([values.real, values.imag], axis=-1)


def align_to_template(points: np.ndarray, rigid_indices: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Every point of each face ``(N, K, 2)`` mapped by its :func:`similarity_to_template`."""
    factor, offset = similarity_to_template(points, rigid_indices, template)
    return as_points(factor * as_complex(points) + offset)


def expression_measures(aligned: np.ndarray, anchors: dict[str, tuple[int, int]]) -> np.ndarray:
    """``(N, len(MEASURES))`` interpretable measures of aligned landmarks (image y points down).

    Positive lip-corner height means the corners sit below the lips' centre (a
    frown); brow raise grows with raised brows; nose wrinkle shrinks when the
    nose wings rise towards the eyes.
    """
    def point(name, side):
        return aligned[:, anchors[name][side]]

    def both_y(name):
        return 0.5 * (point(name, 0)[:, 1] + point(name, 1)[:, 1])

    def gap(name):
        return np.linalg.norm(point(name, 1) - point(name, 0), axis=1)

    mouth_centre_y = 0.5 * (both_y("lip_top") + both_y("lip_bottom"))
    columns = {
        "mouth_opening": both_y("lip_bottom") - both_y("lip_top"),
        "mouth_opening_outer": both_y("outer_lip_bottom") - both_y("outer_lip_top"),
        "mouth_width": gap("mouth_corner"),
        "lip_corner_height": both_y("mouth_corner") - mouth_centre_y,
        "lip_corner_to_nose": both_y("mouth_corner") - both_y("nose_tip"),
        "upper_lip_to_nose": both_y("outer_lip_top") - both_y("nose_tip"),
        "brow_raise": both_y("eye_top") - both_y("brow_middle"),
        "inner_brow_raise": both_y("eye_inner") - both_y("brow_inner"),
        "brow_knit": gap("brow_inner"),
        "eye_aperture": both_y("eye_bottom") - both_y("eye_top"),
        "nose_wrinkle": both_y("nose_wing") - both_y("eye_inner"),
    }
    return np.stack([columns[name] for name in MEASURES], axis=1)


class ShapeFeatures:
    """Landmark geometry of face crops: aligned expressive points and :data:`MEASURES`, one vector per face.

    Same interface as the learner's other extractors: ``raw(crops)`` is the
    unscaled vector, ``from_raw`` applies ``scale``, ``__call__`` does both.
    ``landmarker`` is a loaded :mod:`clifer_core.faces.landmarks` model, or
    ``model`` names one to load on first use (default: the face mesh).
    """

    name = "shape"

    def __init__(self, landmarker=None, scale: float = 1.0, model: str = "facemesh"):
        from clifer_core.faces.landmarks import RIGID, landmark_class

        self._landmarker = landmarker
        self.model = landmarker.name if landmarker is not None else model
        topology = landmark_class(self.model)
        self.n_points = topology.n_points
        self.anchors = topology.anchors
        self.scale = float(scale)
        self.rigid_indices = np.asarray([topology.anchors[name][side] for name in RIGID for side in (0, 1)])
        self.template = np.asarray([topology.rigid_template[name][side] for name in RIGID for side in (0, 1)])
        self.indices = np.asarray(topology.indices)
        self.dim = 2 * len(self.indices) + len(MEASURES)

    @property
    def landmarker(self):
        """The landmark model, loaded on first use (topology alone is enough for :meth:`from_landmarks`)."""
        if self._landmarker is None:
            from clifer_core.faces.landmarks import make_landmarker

            self._landmarker = make_landmarker(self.model)
        return self._landmarker

    def landmarks(self, crops) -> np.ndarray:
        """``(N, K, 2)`` landmarks in crop pixels."""
        return self.landmarker(crops)

    def from_landmarks(self, points: np.ndarray) -> np.ndarray:
        """Raw shape vectors ``(N, dim)`` from landmarks ``(N, K, 2)`` (any position, scale, in-plane angle)."""
        points = np.asarray(points, np.float64)
        if points.ndim != 3 or points.shape[1:] != (self.n_points, 2):
            raise ValueError(f"expected landmarks (N, {self.n_points}, 2), got shape {points.shape}")
        if len(points) == 0:
            return np.zeros((0, self.dim), np.float32)
        aligned = align_to_template(points, self.rigid_indices, self.template)
        measures = expression_measures(aligned, self.anchors)
        coordinates = aligned[:, self.indices].reshape(len(points), -1)
        return np.concatenate([coordinates, MEASURE_WEIGHT * measures], axis=1).astype(np.float32)

    def raw(self, crops) -> np.ndarray:
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.from_landmarks(self.landmarks(crops))

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        return (self.scale * np.asarray(raw, np.float32)).astype(np.float32)

    def __call__(self, crops) -> np.ndarray:
        return self.from_raw(self.raw(crops))


class PersonReference:
    """A person's typical face: the running median of their last ``window`` raw shape vectors (no labels)."""

    def __init__(self, window: int = DEFAULT_REFERENCE_WINDOW):
        if int(window) < 1:
            raise ValueError(f"window must be at least 1 frame, got {window!r}")
        self.window = int(window)
        self._frames: deque = deque(maxlen=self.window)

    def __len__(self) -> int:
        return len(self._frames)

    def update(self, raw: np.ndarray) -> None:
        """Add frames ``(N, D)`` of this person."""
        for row in np.asarray(raw, np.float32):
            self._frames.append(row)

    def median(self) -> np.ndarray | None:
        """``(D,)`` the median of the frames seen, or None before any."""
        if not self._frames:
            return None
        return np.median(np.stack(self._frames), axis=0).astype(np.float32)

    def displacement(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` minus the reference; ValueError before any frame was seen (there is no reference yet)."""
        reference = self.median()
        if reference is None:
            raise ValueError("no reference yet: update() with at least one frame of this person first")
        return np.asarray(raw, np.float32) - reference
