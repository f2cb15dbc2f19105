"""Fusing the population's evidence with one person's episodic memory, so teaching can only help.

A known person's estimate is a conditional-logit model over the classes:

    logit_k = a * log p_pop(k)
              + [k taught]            * (c - b * d_k)
              + [k imagined, untaught] * (c_im - b_im * d_k)

``p_pop`` is the population evidence (whatever model the learner holds as
its prior: anything with ``predict_proba(crops) -> (N, 7)`` over
:data:`~clifer_core.labels.EXPRESSIONS`). ``d_k`` is the distance from the
face to the nearest prototype of class ``k`` in the person's episodic memory,
over the memory's insertion distance (the memory's novelty per class).

- A class the person was taught (with a real label) is judged mostly by
  their memory (``b`` is large): near its prototypes it wins.
- A class not taught has no memory term and keeps the population's evidence:
  teaching only "neutral" cannot hide the population's "angry".
- A face far from everything taught (novelty) lowers every taught class's
  logit, so the population's answer comes back.
- Imagined prototypes of untaught classes count with their own weight
  (``b_im``, ``c_im``), fitted like the others; 0 when they do not help.

The five weights are fitted by maximum likelihood on validation people
(:func:`fit_fusion`), so the probabilities are calibrated by construction
(the evaluation reports their expected calibration error). This module
imports only numpy and scipy, so evaluation workers can use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PROBABILITY_FLOOR = 1e-4
"""Population probabilities are clipped here before the log, so one overconfident zero cannot veto a class."""


@dataclass(frozen=True)
class FusionWeights:
    """The conditional-logit weights (see the module docstring)."""

    prior: float
    taught: float
    taught_bias: float
    imagined: float = 0.0
    imagined_bias: float = 0.0

    def as_vector(self) -> np.ndarray:
        return np.array([self.prior, self.taught, self.taught_bias, self.imagined, self.imagined_bias])

    @classmethod
    def from_vector(cls, vector) -> "FusionWeights":
        return cls(*(float(v) for v in vector))

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_FUSION = FusionWeights(prior=1.0, taught=4.0, taught_bias=4.0)
"""Weights the learner uses unless told otherwise; ``benchmarks/personalisation.py`` refits them on
validation data (never the reported people) and docs/results.md lists the values it found."""


def population_probabilities(prior: np.ndarray, columns) -> np.ndarray:
    """The prior's ``(N, 7)`` probabilities restricted to ``columns`` (the learner's classes), renormalised."""
    restricted = np.asarray(prior, np.float64)[:, list(columns)]
    sums = restricted.sum(axis=1, keepdims=True)
    return np.where(sums > 0, restricted / np.where(sums > 0, sums, 1.0), 1.0 / restricted.shape[1])


def class_distances(features: np.ndarray, prototypes: np.ndarray, prototype_labels: np.ndarray, n_classes: int,
                    insertion_distance: float) -> np.ndarray:
    """``(N, n_classes)``: distance to the nearest prototype of each class over ``insertion_distance``;
    ``inf`` for a class with no prototype."""
    features = np.asarray(features, np.float64)
    prototypes = np.asarray(prototypes, np.float64)
    squared = (np.sum(features ** 2, axis=1)[:, None] - 2.0 * features @ prototypes.T
               + np.sum(prototypes ** 2, axis=1)[None, :])
    distances = np.sqrt(np.maximum(squared, 0.0)) / float(insertion_distance)
    result = np.full((len(features), n_classes), np.inf)
    for label in range(n_classes):
        own = prototype_labels == label
        if own.any():
            result[:, label] = distances[:, own].min(axis=1)
    return result


def fusion_terms(population: np.ndarray, distances: np.ndarray, taught) -> np.ndarray:
    """``(5, N, C)``: the per-class terms each weight multiplies (logits = weights · terms)."""
    population = np.asarray(population, np.float64)
    distances = np.asarray(distances, np.float64)
    taught = np.broadcast_to(np.asarray(taught, bool), distances.shape)
    finite = np.isfinite(distances)
    distance = np.where(finite, distances, 0.0)
    taught_here = taught & finite
    imagined_here = ~taught & finite
    return np.stack([np.log(np.maximum(population, PROBABILITY_FLOOR)),
                     -distance * taught_here, taught_here.astype(np.float64),
                     -distance * imagined_here, imagined_here.astype(np.float64)])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def fuse(population: np.ndarray, distances: np.ndarray, taught, weights: FusionWeights = DEFAULT_FUSION) -> np.ndarray:
    """Fused ``(N, C)`` probabilities (rows sum to 1) from the population's probabilities over the same
    classes, the per-class memory distances and which classes were taught with real labels."""
    terms = fusion_terms(population, distances, taught)
    return _softmax(np.tensordot(weights.as_vector(), terms, axes=1))


def fit_fusion(terms: np.ndarray, labels: np.ndarray, use_imagination: bool = True,
               regularisation: float = 1e-3) -> FusionWeights:
    """Maximum-likelihood weights from validation examples: ``terms`` ``(5, N, C)``, true ``labels`` ``(N,)``.

    The weights on the prior and on distances are kept non-negative (more
    population evidence, or a nearer prototype, never lowers a class);
    ``use_imagination=False`` pins the imagined weights at 0.
    """
    from scipy.optimize import minimize

    terms = np.asarray(terms, np.float64)
    labels = np.asarray(labels, np.int64)
    if terms.ndim != 3 or terms.shape[0] != 5 or terms.shape[1] != len(labels) or len(labels) == 0:
        raise ValueError(f"need terms (5, N, C) and N labels, got {terms.shape} and {labels.shape}")
    rows = np.arange(len(labels))
    chosen = terms[:, rows, labels]
    free = np.array([True, True, True, use_imagination, use_imagination])

    def objective(vector):
        weights = np.where(free, vector, 0.0)
        probabilities = _softmax(np.tensordot(weights, terms, axes=1))
        loss = -np.mean(np.log(np.maximum(probabilities[rows, labels], 1e-300))) + regularisation * weights @ weights
        expected = np.einsum("jnc,nc->jn", terms, probabilities)
        gradient = np.mean(expected - chosen, axis=1) + 2 * regularisation * weights
        return loss, np.where(free, gradient, 0.0)

    bounds = [(0.0, None), (0.0, None), (None, None), (0.0, None), (None, None)]
    start = DEFAULT_FUSION.as_vector() * free
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return FusionWeights.from_vector(np.where(free, result.x, 0.0))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Top-label expected calibration error: the bin-weighted gap between confidence and accuracy."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)
