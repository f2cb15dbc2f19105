"""A population classifier on the memory's features, and its fine-tuning on one person.

A person's episodic memory says how near a face is to what they were
taught; it knows nothing of the classes between. A softmax regression
trained on many people's faces, in the same feature space as the memory,
knows the population's decision boundaries; fine-tuned on the person's
taught faces (those its memory kept), with an L2 pull back to the population's weights, it
moves those boundaries towards this person while keeping the population's
view of every class (the fusion, :mod:`clifer_core.fusion`, adds its
log-probabilities with a weight fitted on validation people).

Trained by ``clifer train-adaptation`` (:mod:`clifer_core.adaptation_training`);
the shipped weights and their model card are in ``clifer_core/adaptation_default/``.
Saved as a versioned npz (:mod:`clifer_core.persistence`), never pickled.
Imports only numpy and scipy, so evaluation workers can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clifer_core.persistence import StateFileError, load_state, save_state

ADAPTATION_KIND = "clifer.population_classifier"
ADAPTATION_VERSION = 1
SHIPPED_FOLDER = Path(__file__).resolve().parent / "adaptation_default"
REPRESENTATIONS = ("fer", "fer+shape")
"""Feature spaces a population classifier ships for."""
POPULATION_L2 = 1e-3
"""L2 on the population classifier's weights (fixed before any result was seen, not tuned)."""
ADAPTATION_L2 = 0.05
"""Pull of the fine-tuned weights back to the population's (fixed before any result was seen, not tuned)."""
ADAPTATION_STEPS = 200
STATE = ("mean", "scale", "weights", "bias")
"""The learned arrays, saved as ``<name>`` and held as ``<name>_``."""
ADAPTATION_RATE = 0.02


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def shipped_path(representation: str) -> Path:
    """The shipped classifier for a feature space (``clifer train-adaptation`` writes it)."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"no population classifier ships for features {representation!r}; one of {REPRESENTATIONS}")
    return SHIPPED_FOLDER / f"population_classifier_{representation.replace('+', '_')}.npz"


class PopulationClassifier:
    """``softmax(((x - mean_) / scale_) @ weights_ + bias_)`` over ``n_classes`` classes, ``x`` the memory's features.

    Inputs are standardised with the training data's mean and spread, so one
    step size and one L2 pull suit every feature space (``fer+shape`` puts
    unit-norm appearance beside landmark coordinates far from zero).

    ``representation`` names the feature space it was trained in (a learner
    uses it only when its memories learn the same one).
    """

    def __init__(self, n_classes: int, representation: str = "", provenance: dict | None = None):
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        self.n_classes = int(n_classes)
        self.representation = representation
        self.provenance = dict(provenance or {})

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "weights_")

    @property
    def n_features_in_(self) -> int:
        return int(self.weights_.shape[0])

    def fit(self, X, y, max_iter: int = 200) -> "PopulationClassifier":
        """L2-regularised multinomial logistic regression (L-BFGS), every sample weighted equally."""
        from scipy.optimize import minimize

        features, labels = self._checked(X, y, standardise=False)
        self.mean_ = features.mean(axis=0)
        self.scale_ = np.maximum(features.std(axis=0), 1e-6)
        features = (features - self.mean_) / self.scale_
        n, dimension = features.shape
        classes = self.n_classes
        onehot = np.eye(classes)[labels]

        def objective(vector):
            weights, bias = vector[:dimension * classes].reshape(dimension, classes), vector[dimension * classes:]
            logits = features @ weights + bias
            logits -= logits.max(axis=1, keepdims=True)
            log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            loss = -np.sum(onehot * log_probabilities) / n + POPULATION_L2 * np.sum(weights ** 2)
            residual = (np.exp(log_probabilities) - onehot) / n
            gradient = np.concatenate([(features.T @ residual + 2 * POPULATION_L2 * weights).ravel(),
                                       residual.sum(axis=0)])
            return loss, gradient

        start = np.zeros(dimension * classes + classes)
        result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        self.weights_ = result.x[:dimension * classes].reshape(dimension, classes)
        self.bias_ = result.x[dimension * classes:]
        return self

    def adapted(self, X, y) -> "PopulationClassifier":
        """A copy fine-tuned on one person's taught faces ``X`` (labels ``y``), pulled back to these weights.

        Gradient descent from the population's weights (:data:`ADAPTATION_STEPS`
        steps of :data:`ADAPTATION_RATE`), L2 :data:`ADAPTATION_L2` towards them:
        a handful of faces moves the boundaries, it cannot erase a class.
        """
        self._check_fitted()
        features, labels = self._checked(X, y)
        weights, bias = self.weights_.copy(), self.bias_.copy()
        onehot = np.eye(self.n_classes)[labels]
        for _ in range(ADAPTATION_STEPS):
            residual = (_softmax_rows(features @ weights + bias) - onehot) / len(labels)
            weights -= ADAPTATION_RATE * (features.T @ residual + 2 * ADAPTATION_L2 * (weights - self.weights_))
            bias -= ADAPTATION_RATE * (residual.sum(axis=0) + 2 * ADAPTATION_L2 * (bias - self.bias_))
        copy = PopulationClassifier(self.n_classes, self.representation, self.provenance)
        copy.mean_, copy.scale_, copy.weights_, copy.bias_ = self.mean_, self.scale_, weights, bias
        return copy

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        features = np.asarray(X, np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_features_in_:
            raise ValueError(f"expected features (N, {self.n_features_in_}), got {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError("features contain NaN or infinity")
        return _softmax_rows(((features - self.mean_) / self.scale_) @ self.weights_ + self.bias_)

    def predict(self, X) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        manifest = {"n_classes": self.n_classes, "representation": self.representation, "provenance": self.provenance}
        return save_state(path, ADAPTATION_KIND, ADAPTATION_VERSION, manifest,
                          {name: getattr(self, f"{name}_").astype(np.float32) for name in STATE})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PopulationClassifier":
        """The classifier at ``path`` (:func:`shipped_path`: the shipped ones); StateFileError if missing or corrupt."""
        manifest, arrays = load_state(path, ADAPTATION_KIND, (ADAPTATION_VERSION,))
        n_classes = int(manifest.get("n_classes", 0)) if isinstance(manifest.get("n_classes"), int) else 0
        state = {name: arrays.get(name) for name in STATE}
        weights = state["weights"]
        shapes_ok = (n_classes >= 2 and all(v is not None for v in state.values()) and weights.ndim == 2
                     and weights.shape[1] == n_classes and state["bias"].shape == (n_classes,)
                     and state["mean"].shape == state["scale"].shape == (weights.shape[0],))
        if not shapes_ok or not all(np.all(np.isfinite(v)) for v in state.values()) or np.any(state["scale"] <= 0):
            raise StateFileError(f"{path}: the arrays do not make a {n_classes}-class population classifier")
        classifier = cls(n_classes, str(manifest.get("representation", "")), manifest.get("provenance"))
        for name, value in state.items():
            setattr(classifier, f"{name}_", value.astype(np.float64))
        return classifier

    def _checked(self, X, y, standardise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Validated features (standardised when asked) and integer labels; ValueError on bad input."""
        features = np.asarray(X, np.float64)
        labels = np.asarray(y)
        if features.ndim != 2 or len(features) == 0 or len(labels) != len(features):
            raise ValueError(f"need features (N, D) with N labels, got {features.shape} and {labels.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError("features contain NaN or infinity")
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be class indices in [0, {self.n_classes}), got {np.unique(labels)[:10]}")
        if self.is_fitted and features.shape[1] != self.n_features_in_:
            raise ValueError(f"expected features (N, {self.n_features_in_}), got {features.shape}")
        if standardise:
            features = (features - self.mean_) / self.scale_
        return features, labels.astype(np.int64)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("the population classifier is not fitted")
