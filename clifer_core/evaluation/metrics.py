"""Classification and continual-learning metrics, in plain numpy.

Single-label scores (accuracy = micro-F1, macro-F1, per-class recall,
confusion matrix) and the continual-learning summaries of an accuracy matrix
``R`` where ``R[i, j]`` is the score on task ``j`` after training step ``i``
(Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018): average accuracy, average
incremental accuracy, backward and forward transfer, forgetting.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d and of equal length, got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``C[t, p]`` = how many samples of true class ``t`` were predicted as ``p``."""
    y_true, y_pred = _labels(y_true, y_pred)
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} has labels outside 0..{n_classes - 1}")
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return matrix


def accuracy(y_true, y_pred) -> float:
    """Fraction correct; equals micro-F1 for single-label classification. NaN for no samples."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else math.nan


def per_class_f1(y_true, y_pred, labels) -> np.ndarray:
    """F1 of each class in ``labels`` (0 where a class has no true and no predicted sample)."""
    y_true, y_pred = _labels(y_true, y_pred)
    scores = []
    for label in labels:
        true_positive = np.sum((y_true == label) & (y_pred == label))
        denominator = np.sum(y_true == label) + np.sum(y_pred == label)
        scores.append(2.0 * true_positive / denominator if denominator else 0.0)
    return np.asarray(scores, np.float64)


def macro_f1(y_true, y_pred, labels=None) -> float:
    """Unweighted mean F1 over ``labels`` (default: every class in y_true or y_pred, as scikit-learn)."""
    y_true, y_pred = _labels(y_true, y_pred)
    if labels is None:
        labels = np.union1d(y_true, y_pred)
    if len(labels) == 0:
        return math.nan
    return float(per_class_f1(y_true, y_pred, labels).mean())


def per_class_recall(y_true, y_pred, labels) -> np.ndarray:
    """Recall of each class in ``labels``; NaN for a class with no true sample."""
    y_true, y_pred = _labels(y_true, y_pred)
    recalls = []
    for label in labels:
        mask = y_true == label
        recalls.append(float(np.mean(y_pred[mask] == label)) if mask.any() else math.nan)
    return np.asarray(recalls, np.float64)


def _square(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"an accuracy matrix must be square and non-empty, got shape {matrix.shape}")
    return matrix


def average_accuracy(matrix) -> float:
    """Mean score over all tasks after the last step: ``mean_j R[T-1, j]``."""
    matrix = _square(matrix)
    return float(np.nanmean(matrix[-1]))


def average_incremental_accuracy(matrix) -> float:
    """Mean over steps ``i`` of the mean score on the tasks seen so far: ``mean_i mean_{j<=i} R[i, j]``."""
    matrix = _square(matrix)
    return float(np.mean([np.nanmean(matrix[i, : i + 1]) for i in range(len(matrix))]))


def backward_transfer(matrix) -> float:
    """``mean_{j<T-1} (R[T-1, j] - R[j, j])``: negative when learning later tasks hurts earlier ones."""
    matrix = _square(matrix)
    if len(matrix) < 2:
        return math.nan
    return float(np.nanmean([matrix[-1, j] - matrix[j, j] for j in range(len(matrix) - 1)]))


def forgetting(matrix) -> float:
    """``mean_{j<T-1} (max_{i<T-1} R[i, j] - R[T-1, j])`` over steps after task j was learned."""
    matrix = _square(matrix)
    if len(matrix) < 2:
        return math.nan
    drops = [np.nanmax(matrix[j:-1, j]) - matrix[-1, j] for j in range(len(matrix) - 1)]
    return float(np.nanmean(drops))


def forward_transfer(matrix, baseline) -> float:
    """``mean_{j>0} (R[j-1, j] - b_j)``: how well a task is solved before it is trained
    (only imagination makes this positive in class-incremental learning)."""
    matrix = _square(matrix)
    baseline = np.broadcast_to(np.asarray(baseline, np.float64), (len(matrix),))
    if len(matrix) < 2:
        return math.nan
    return float(np.nanmean([matrix[j - 1, j] - baseline[j] for j in range(1, len(matrix))]))


def mean_sd_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the t confidence interval (NaNs ignored)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if values.size == 1:
        return float(values[0]), 0.0, math.nan
    sd = float(values.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * sd / math.sqrt(values.size))
    return float(values.mean()), sd, half_width
