"""Partial teaching: does teaching a person ever make the robot read them worse than the population model?

For each person, held-out performance (fold), class order and number of
shots per class, a fresh CLIFER memory is taught one class at a time; after
every step *every* class is scored on the person's held-out performance:
overall macro-F1, recall on the classes taught so far and recall on those
not yet taught, each beside the population prior's. Conditions:

- ``prior``: the population model alone (the packaged FER2013 classifier);
- ``nn``: 1-nearest-neighbour over the person's taught faces;
- ``nn_prior``: 1-NN, but the prior's class wherever the prior picks a class
  not yet taught (nothing fitted, no imagination);
- ``population_person``: a softmax-regression population classifier trained
  on the *other* people of the dataset, refitted with the person's taught
  faces (weight :data:`PERSON_WEIGHT`);
- ``clifer``: the learner's fused estimate (:mod:`clifer_core.fusion`) from a
  GrowingDualMemory taught as the learner teaches it;
- ``clifer_imagination``: the same with image-space imagination, only for
  people the imagination model never saw (``imagination_subjects``).

The fusion weights are fitted by cross-fitting over people: each person is
scored with weights fitted on the other people only (:func:`score`). Worker
tasks import only numpy and scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clifer_core.evaluation import metrics
from clifer_core.fusion import fit_fusion, fuse, fusion_terms, expected_calibration_error
from clifer_core.learner import DEFAULT_MEMORY_PARAMS
from clifer_core.labels import EXPRESSIONS

SHOTS: tuple[int | None, ...] = (1, 3, None)
"""Taught faces per class: 1, 3, or every taught face of that class (None)."""
PERSON_WEIGHT = 10.0
"""How much one of the person's own taught faces counts against one population face (not tuned)."""
POPULATION_L2 = 1e-3
BASELINES = ("prior", "nn", "nn_prior", "population_person")
CROSS_FIT_GROUPS = 5


def shots_name(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


@dataclass
class PartialTask:
    """One person, fold, class order and shot count."""

    subject: str
    fold: int
    order_index: int
    order: tuple[int, ...]
    shots: int | None
    features: np.ndarray
    """``(n, D)`` scaled memory features of the person's faces."""
    population: np.ndarray
    """``(n, C)`` the prior's probabilities over the dataset's classes."""
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    imagined: np.ndarray | None = None
    """``(n, C, D)`` scaled imagined features per class (analogy), or None: no imagination condition."""
    population_model: tuple[np.ndarray, np.ndarray] | None = None
    """``(weights (D, C), bias (C,))`` of the population classifier fitted without this person."""
    population_data: tuple[np.ndarray, np.ndarray] | None = None
    """The other people's ``(features, labels)`` the population classifier was fitted on."""
    memory_params: dict = field(default_factory=lambda: dict(DEFAULT_MEMORY_PARAMS))


@dataclass
class StepRecord:
    """What one step of one task needs for scoring: truth, baseline answers and the fusion's terms."""

    subject: str
    fold: int
    order_index: int
    shots: str
    step: int
    taught: np.ndarray
    labels: np.ndarray
    predictions: dict[str, np.ndarray]
    terms: dict[str, np.ndarray]
    """condition -> ``(5, n_test, C)`` fusion terms (see :func:`clifer_core.fusion.fusion_terms`)."""


def taught_indices(task: PartialTask, label: int) -> np.ndarray:
    """The first ``shots`` taught faces of class ``label`` (file order)."""
    indices = np.flatnonzero(task.train & (task.labels == label))
    return indices if task.shots is None else indices[:task.shots]


def fit_softmax(features: np.ndarray, labels: np.ndarray, n_classes: int, sample_weight=None,
                start: tuple[np.ndarray, np.ndarray] | None = None, max_iterations: int = 200):
    """L2-regularised multinomial logistic regression (L-BFGS); returns ``(weights (D, C), bias (C,))``."""
    from scipy.optimize import minimize

    features = np.asarray(features, np.float64)
    n, dimension = features.shape
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    weight = weight / weight.sum()
    onehot = np.eye(n_classes)[labels]

    def objective(vector):
        weights, bias = vector[:dimension * n_classes].reshape(dimension, n_classes), vector[dimension * n_classes:]
        logits = features @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.sum(weight * np.sum(onehot * log_probabilities, axis=1)) + POPULATION_L2 * np.sum(weights ** 2)
        residual = (np.exp(log_probabilities) - onehot) * weight[:, None]
        gradient = np.concatenate([(features.T @ residual + 2 * POPULATION_L2 * weights).ravel(), residual.sum(axis=0)])
        return loss, gradient

    initial = (np.zeros(dimension * n_classes + n_classes) if start is None
               else np.concatenate([start[0].ravel(), start[1]]))
    result = minimize(objective, initial, jac=True, method="L-BFGS-B", options={"maxiter": max_iterations})
    return result.x[:dimension * n_classes].reshape(dimension, n_classes), result.x[dimension * n_classes:]


def _nearest(train_features: np.ndarray, train_labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    distances = ((query[:, None, :] - train_features[None, :, :]) ** 2).sum(axis=-1)
    return train_labels[np.argmin(distances, axis=1)]


def _new_memory(task: PartialTask, n_classes: int):
    from clifer_core.memory import GrowingDualMemory

    return GrowingDualMemory(**dict(task.memory_params, n_classes=n_classes))


def _memory_terms(memory, features: np.ndarray, population: np.ndarray) -> np.ndarray:
    from clifer_core.learner import CliferLearner

    distances, taught = CliferLearner.memory_evidence(memory, features)
    return fusion_terms(population, distances, taught)


def run_partial_task(task: PartialTask) -> list[StepRecord]:
    """Teach one class per step; after each, every condition's answers (or fusion terms) on the test faces."""
    n_classes = task.population.shape[1]
    order = [c for c in task.order if np.any(task.train & (task.labels == c))]
    test = np.flatnonzero(task.test)
    test_features, test_labels = task.features[test], task.labels[test]
    prior_best = np.argmax(task.population[test], axis=1)
    memories = {"clifer": _new_memory(task, n_classes)}
    if task.imagined is not None:
        memories["clifer_imagination"] = _new_memory(task, n_classes)
    taught_so_far: list[int] = []
    records = []
    for step, new_class in enumerate(order, start=1):
        new = taught_indices(task, new_class)
        taught_so_far += new.tolist()
        for name, memory in memories.items():
            imagine = None
            if name == "clifer_imagination":
                imagined = task.imagined[new].reshape(-1, task.imagined.shape[-1])
                imagined_labels = np.tile(np.arange(n_classes), len(new))

                def imagine(prototypes, labels, imagined=imagined, imagined_labels=imagined_labels):
                    return np.concatenate([prototypes, imagined]), np.concatenate([labels, imagined_labels])
            memory.partial_fit(task.features[new], task.labels[new], imagine=imagine)
        taught = np.zeros(n_classes, bool)
        taught[order[:step]] = True
        taught_features, taught_labels = task.features[taught_so_far], task.labels[taught_so_far]
        nearest = _nearest(taught_features, taught_labels, test_features)
        predictions = {"prior": prior_best, "nn": nearest,
                       "nn_prior": np.where(taught[prior_best], nearest, prior_best)}
        if task.population_model is not None:
            others, other_labels = task.population_data
            weights = np.concatenate([np.ones(len(others)), np.full(len(taught_so_far), PERSON_WEIGHT)])
            model = fit_softmax(np.concatenate([others, taught_features]), np.concatenate([other_labels, taught_labels]),
                                n_classes, weights, start=task.population_model, max_iterations=60)
            predictions["population_person"] = np.argmax(test_features @ model[0] + model[1], axis=1)
        terms = {name: _memory_terms(memory, test_features, task.population[test]) for name, memory in memories.items()}
        records.append(StepRecord(task.subject, task.fold, task.order_index, shots_name(task.shots), step, taught,
                                  test_labels, predictions, terms))
    return records


def cross_fit_groups(subjects: Sequence[str], groups: int = CROSS_FIT_GROUPS) -> dict[str, int]:
    """Subjects (sorted) dealt round-robin into ``groups`` groups for cross-fitting."""
    ordered = sorted(set(subjects))
    return {subject: i % min(groups, len(ordered)) for i, subject in enumerate(ordered)}


def fit_weights(records: Sequence[StepRecord], condition: str, groups: dict[str, int]) -> dict[int, object]:
    """Fusion weights per subject group, each fitted on the records of the *other* groups only."""
    weights = {}
    use_imagination = condition == "clifer_imagination"
    for group in sorted(set(groups.values())):
        others = [r for r in records if condition in r.terms and groups[r.subject] != group]
        if not others:
            continue
        terms = np.concatenate([r.terms[condition] for r in others], axis=1)
        labels = np.concatenate([r.labels for r in others])
        weights[group] = fit_fusion(terms, labels, use_imagination=use_imagination)
    return weights


def _scores(labels: np.ndarray, predicted: np.ndarray, taught: np.ndarray) -> dict[str, float]:
    present = np.unique(labels)
    recalls = metrics.per_class_recall(labels, predicted, present)
    taught_here, untaught_here = taught[present], ~taught[present]
    return {"macro_f1": metrics.macro_f1(labels, predicted, labels=present),
            "accuracy": metrics.accuracy(labels, predicted),
            "recall_taught": float(np.mean(recalls[taught_here])) if taught_here.any() else np.nan,
            "recall_untaught": float(np.mean(recalls[untaught_here])) if untaught_here.any() else np.nan}


def score(records: Sequence[StepRecord], dataset: str, groups: dict[str, int] | None = None) -> tuple[list[dict], dict]:
    """Tidy rows (one per record, condition and metric) and the fitted weights and calibration per condition.

    Fusion weights are cross-fitted: a subject's fused answers use weights
    fitted on the other subject groups (for the imagination condition, with
    one group per subject: it covers few people).
    """
    rows: list[dict] = []
    fitted: dict[str, dict] = {}
    for condition in ("clifer", "clifer_imagination"):
        own = [r for r in records if condition in r.terms]
        if not own:
            continue
        condition_groups = groups or cross_fit_groups([r.subject for r in own])
        if condition == "clifer_imagination":
            condition_groups = {s: i for i, s in enumerate(sorted({r.subject for r in own}))}
        weights = fit_weights(own, condition, condition_groups)
        probabilities, labels = [], []
        for record in own:
            fused = fuse_record(record, condition, weights[condition_groups[record.subject]])
            record.predictions[condition] = np.argmax(fused, axis=1)
            probabilities.append(fused)
            labels.append(record.labels)
        probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
        fitted[condition] = {"weights": {g: w.as_dict() for g, w in weights.items()},
                             "ece": expected_calibration_error(probabilities, labels),
                             "ece_prior": expected_calibration_error(
                                 np.concatenate([np.exp(r.terms[condition][0]) for r in own]), labels),
                             "nll": float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12))))}
    for record in records:
        base = dict(dataset=dataset, subject=record.subject, fold=record.fold, order=record.order_index,
                    shots=record.shots, step=record.step)
        for condition, predicted in record.predictions.items():
            for metric, value in _scores(record.labels, predicted, record.taught).items():
                rows.append(dict(base, condition=condition, metric=metric, value=value))
    return rows, fitted


def fuse_record(record: StepRecord, condition: str, weights) -> np.ndarray:
    return fuse(np.exp(record.terms[condition][0]), _distances_from_terms(record.terms[condition]),
                record.taught, weights)


def _distances_from_terms(terms: np.ndarray) -> np.ndarray:
    """Per-class distances back from the terms (inf where a class has no prototype)."""
    taught_distance, taught_present, imagined_distance, imagined_present = terms[1], terms[2], terms[3], terms[4]
    distances = np.full(taught_distance.shape, np.inf)
    distances = np.where(taught_present > 0, -taught_distance, distances)
    return np.where(imagined_present > 0, -imagined_distance, distances)


def person_means(rows: Sequence[dict], condition: str, metric: str, shots: str, step: int | None = None,
                 subjects: Sequence[str] | None = None) -> dict[str, float]:
    """``{subject: mean over folds and orders}`` of one metric (at ``step``, or averaged over steps)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        if (row["condition"] == condition and row["metric"] == metric and row["shots"] == shots
                and (step is None or row["step"] == step) and (subjects is None or row["subject"] in subjects)
                and np.isfinite(row["value"])):
            values.setdefault(row["subject"], []).append(row["value"])
    return {subject: float(np.mean(v)) for subject, v in values.items()}


def population_model_for(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray, subject: str,
                         n_classes: int, cache: dict) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The population classifier fitted on every other subject (memoised per subject)."""
    if subject not in cache:
        others = subjects != subject
        model = fit_softmax(features[others], labels[others], n_classes)
        cache[subject] = (model, (features[others], labels[others]))
    return cache[subject]


def imagined_columns(classes: Sequence[str]) -> list[int]:
    return [EXPRESSIONS.index(c) for c in classes]
