"""Fusing the population's evidence with one person's episodic memory, so teaching can only help.

A known person's estimate is a conditional-logit model over the classes:

    logit_k = a * log p_pop(k)
              + [k taught]            * (c - b * d_k + e * [k is the nearest taught class] + r * [d_k < 1])
              + [k imagined, untaught] * (c_im - b_im * d_k)
              + g * log p_person(k)

``p_pop`` is the population evidence (whatever model the learner holds as
its prior: anything with ``predict_proba(crops) -> (N, 7)`` over
:data:`~clifer_core.labels.EXPRESSIONS`). ``d_k`` is the distance from the
face to the nearest prototype of class ``k`` in the person's episodic memory,
over the memory's insertion distance (the memory's novelty per class).

- A class the person was taught (with a real label) is judged mostly by
  their memory (``b`` and ``e``): near its prototypes, and nearest among the
  taught classes, it wins.
- A class not taught has no memory term and keeps the population's evidence:
  teaching only "neutral" cannot hide the population's "angry".
- A face the memory recognises (``d_k < 1``: activation above the
  memory's insertion threshold, a frame like one taught) is the taught
  class (``r``): what the user just taught is followed.
- A face far from everything taught (novelty) lowers every taught class's
  logit, so the population's answer comes back.
- Imagined prototypes of untaught classes count with their own weight
  (``b_im``, ``c_im``), fitted like the others; 0 when they do not help.
- ``p_person`` (optional, weight ``g``) is a population classifier on the
  memory's features fine-tuned on the person's taught faces (those the memory kept)
  (:mod:`clifer_core.adaptation`): the population's decision boundaries,
  moved towards this person. Without one the term is 0.

The weights are fitted by maximum a-posteriori on validation people
(:func:`fit_fusion`, a Gaussian prior centred on :data:`FUSION_CENTRE`, so a
weight the validation data cannot inform, such as ``r`` when no validation
face is that close to a taught one, keeps its default), so the probabilities
are calibrated where validation data exists (the evaluation reports their
expected calibration error). This module
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
    nearest: float = 0.0
    recognised: float = 0.0
    imagined: float = 0.0
    imagined_bias: float = 0.0
    adapted: float = 0.0

    def as_vector(self) -> np.ndarray:
        return np.array([self.prior, self.taught, self.taught_bias, self.nearest, self.recognised, self.imagined,
                         self.imagined_bias, self.adapted])

    @classmethod
    def from_vector(cls, vector) -> "FusionWeights":
        return cls(*(float(v) for v in vector))

    def as_dict(self) -> dict:
        return asdict(self)


FUSION_CENTRE = FusionWeights(prior=1.0, taught=0.5, taught_bias=2.5, nearest=0.5, recognised=8.0)
"""Where :func:`fit_fusion` starts and what it pulls towards: set by hand before any result was seen
(the prior as it is, a taught class a few log-odds up, a recognised face taken as taught)."""
DEFAULT_FUSION = FusionWeights(prior=0.451, taught=0.712, taught_bias=3.432, nearest=0.563, recognised=8.0)
"""Weights for a learner without imagination: fitted by ``benchmarks/personalisation.py`` on every Taiwanese
person (partial teaching, all folds, orders and shots; docs/results.md). The evaluation itself scores each
person with weights fitted on the other people only. ``recognised`` keeps its :data:`FUSION_CENTRE` value:
no held-out Taiwanese face is that close to a taught one."""
DEFAULT_FUSION_IMAGINATION = FusionWeights(prior=0.293, taught=1.974, taught_bias=1.825, nearest=0.283,
                                           recognised=8.0, imagined=1.608, imagined_bias=0.675)
"""Weights for a learner with image-space imagination: fitted the same way on the five Taiwanese people the
packaged imagination model never saw (tw03, tw10, tw16, tw22, tw28), the only ones it may be judged on."""
DEFAULT_FUSION_ADAPTED = FusionWeights(prior=0.116, taught=0.151, taught_bias=0.163, nearest=0.132, recognised=8.0,
                                       adapted=0.344)
"""Weights for a learner with person adaptation (the population classifier fine-tuned on the taught faces the
memory kept, :mod:`clifer_core.adaptation`) and without imagination: fitted like :data:`DEFAULT_FUSION`, on every
Taiwanese person with all 7 classes scored (disgust too: the node answers all 7) and the learner's default
``fer+shape`` features (``fusion_every_person_all7`` in ``benchmarks/personalisation.py``'s details; fitted with
disgust left out, as the headline scores, they are prior 0.246, taught 0.205, bias 0.675, nearest 0.120,
adapted 0.315, docs/results.md). A ``fer`` learner uses them too."""
DEFAULT_FUSION_IMAGINATION_ADAPTED = DEFAULT_FUSION_ADAPTED
"""Weights for a learner with person adaptation and imagination: the adapted weights, imagined prototypes weighing
0. On the five people the packaged imagination model never saw, imagination with adaptation scored below adaptation
alone (docs/results.md: weights fitted there with imagination, prior 0.170, taught 1.147, bias 1.271, nearest 0.292,
imagined 0.903, imagined bias 1.229, adapted 0.257, gave 0.512 / 0.513 / 0.541 against 0.535 / 0.537 / 0.561),
and their imagined prototypes could outweigh a face just taught that the memory did not quite recognise.
Imagination still prepares a first-met person's memory."""
DEFAULT_FUSION_SHAPE = FusionWeights(prior=1.627, taught=0.564, taught_bias=2.694, nearest=0.371, recognised=8.0)
"""Like :data:`DEFAULT_FUSION`, for the population model (its own fine-tuned network, centred on the person, x face
shape) as the population evidence: fitted by ``benchmarks/personalisation.py --population`` with such a model
trained without Taiwanese (``clifer train-population --datasets ckplus yale``)."""
DEFAULT_FUSION_SHAPE_IMAGINATION = FusionWeights(prior=1.730, taught=1.167, taught_bias=1.914, nearest=0.257,
                                                 recognised=8.0, imagined=0.788, imagined_bias=0.586)
"""Like :data:`DEFAULT_FUSION_IMAGINATION` (the same five people), for the face-shape population model. With this
evidence imagination measured slightly below no imagination on those five (docs/results.md)."""
DEFAULT_FUSION_SHAPE_ADAPTED = FusionWeights(prior=0.790, taught=0.137, taught_bias=0.225, nearest=0.152,
                                             recognised=8.0, adapted=0.254)
"""Like :data:`DEFAULT_FUSION_ADAPTED` (every Taiwanese person, all 7 classes scored, ``fer+shape`` features), for
the population model as the evidence: fitted with such a model trained without Taiwanese (docs/results.md; with
disgust left out: prior 1.138, taught 0.186, bias 0.679, nearest 0.107, adapted 0.237). Imagined prototypes weigh 0,
as with FER2013 evidence."""


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


TERMS = 8


def fusion_terms(population: np.ndarray, distances: np.ndarray, taught, adapted: np.ndarray | None = None) -> np.ndarray:
    """``(8, N, C)``: the per-class terms each weight multiplies (logits = weights · terms); ``adapted``:
    the person-adapted classifier's ``(N, C)`` probabilities, or None (its term is 0)."""
    population = np.asarray(population, np.float64)
    distances = np.asarray(distances, np.float64)
    taught = np.broadcast_to(np.asarray(taught, bool), distances.shape)
    finite = np.isfinite(distances)
    distance = np.where(finite, distances, 0.0)
    taught_here = taught & finite
    imagined_here = ~taught & finite
    taught_distance = np.where(taught_here, distances, np.inf)
    nearest = taught_here & (taught_distance == taught_distance.min(axis=1, keepdims=True))
    return np.stack([np.log(np.maximum(population, PROBABILITY_FLOOR)),
                     -distance * taught_here, taught_here.astype(np.float64), nearest.astype(np.float64),
                     (taught_here & (distance < 1.0)).astype(np.float64),
                     -distance * imagined_here, imagined_here.astype(np.float64),
                     np.zeros(distance.shape) if adapted is None
                     else np.log(np.maximum(np.asarray(adapted, np.float64), PROBABILITY_FLOOR))])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def fuse(population: np.ndarray, distances: np.ndarray, taught, weights: FusionWeights = DEFAULT_FUSION,
         adapted: np.ndarray | None = None) -> np.ndarray:
    """Fused ``(N, C)`` probabilities (rows sum to 1) from the population's probabilities over the same
    classes, the per-class memory distances, which classes were taught with real labels and, optionally,
    the person-adapted classifier's probabilities."""
    return fuse_terms(fusion_terms(population, distances, taught, adapted), weights)


def fuse_terms(terms: np.ndarray, weights: FusionWeights) -> np.ndarray:
    """Fused probabilities from precomputed :func:`fusion_terms`."""
    return _softmax(np.tensordot(weights.as_vector(), terms, axes=1))


def fit_fusion(terms: np.ndarray, labels: np.ndarray, use_imagination: bool = True,
               regularisation: float = 1e-3, start: FusionWeights = FUSION_CENTRE,
               use_adapted: bool = False) -> FusionWeights:
    """Maximum-likelihood weights from validation examples: ``terms`` ``(8, N, C)``, true ``labels`` ``(N,)``.

    The weights on the prior, on distances and on the adapted classifier are
    kept non-negative (more evidence, or a nearer prototype, never lowers a
    class) and pulled towards ``start`` by ``regularisation``;
    ``use_imagination=False`` pins the imagined weights at 0,
    ``use_adapted=False`` the adapted classifier's.
    """
    from scipy.optimize import minimize

    terms = np.asarray(terms, np.float64)
    labels = np.asarray(labels, np.int64)
    if terms.ndim != 3 or terms.shape[0] != TERMS or terms.shape[1] != len(labels) or len(labels) == 0:
        raise ValueError(f"need terms ({TERMS}, N, C) and N labels, got {terms.shape} and {labels.shape}")
    rows = np.arange(len(labels))
    chosen = terms[:, rows, labels]
    free = np.array([True, True, True, True, True, use_imagination, use_imagination, use_adapted])
    centre = start.as_vector() * free

    def objective(vector):
        weights = np.where(free, vector, 0.0)
        probabilities = _softmax(np.tensordot(weights, terms, axes=1))
        offset = weights - centre
        loss = -np.mean(np.log(np.maximum(probabilities[rows, labels], 1e-300))) + regularisation * offset @ offset
        expected = np.einsum("jnc,nc->jn", terms, probabilities)
        gradient = np.mean(expected - chosen, axis=1) + 2 * regularisation * offset
        return loss, np.where(free, gradient, 0.0)

    bounds = [(0.0, None), (0.0, None), (None, None), (0.0, None), (0.0, None), (0.0, None), (None, None), (0.0, None)]
    result = minimize(objective, centre, jac=True, method="L-BFGS-B", bounds=bounds)
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
