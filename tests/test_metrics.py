"""Metric functions against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clifer_core.evaluation import metrics

Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_single_label_scores_match_hand_computation():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    # class 0: P=2/2 R=2/3 F1=0.8; class 1: P=1/2 R=1/2 F1=0.5; class 2: P=1/2 R=1 F1=2/3
    assert metrics.per_class_f1(Y_TRUE, Y_PRED, [0, 1, 2]) == pytest.approx([0.8, 0.5, 2 / 3])
    assert metrics.macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics.per_class_recall(Y_TRUE, Y_PRED, [0, 1, 2]) == pytest.approx([2 / 3, 0.5, 1.0])
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_macro_f1_counts_predicted_only_classes_and_explicit_label_sets():
    # class 1 never occurs but is predicted once: it scores F1 0 and lowers the macro mean
    assert metrics.macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3 + 0.0) / 2)
    assert metrics.macro_f1([0, 0], [0, 1], labels=[0]) == pytest.approx(2 / 3)
    assert math.isnan(metrics.per_class_recall([0], [0], [0, 5])[1])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="equal length"):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="square"):
        metrics.average_accuracy(np.zeros((2, 3)))


ACCURACY_MATRIX = np.array([
    [0.9, 0.2, 0.1],
    [0.7, 0.8, 0.3],
    [0.6, 0.5, 1.0],
])


def test_continual_learning_summaries_match_hand_computation():
    assert metrics.average_accuracy(ACCURACY_MATRIX) == pytest.approx((0.6 + 0.5 + 1.0) / 3)
    assert metrics.average_incremental_accuracy(ACCURACY_MATRIX) == pytest.approx((0.9 + 0.75 + 0.7) / 3)
    assert metrics.backward_transfer(ACCURACY_MATRIX) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert metrics.forgetting(ACCURACY_MATRIX) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    assert metrics.forward_transfer(ACCURACY_MATRIX, baseline=0.0) == pytest.approx((0.2 + 0.3) / 2)
    assert math.isnan(metrics.backward_transfer([[1.0]]))


def test_mean_sd_ci():
    mean, sd, half = metrics.mean_sd_ci([1.0, 2.0, 3.0, float("nan")])
    assert (mean, sd) == pytest.approx((2.0, 1.0))
    assert half == pytest.approx(4.302652729 * 1.0 / math.sqrt(3))
