"""The protocols on the real datasets in ../shared/data (skipped when absent)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from clifer_core.data.datasets import default_data_dir, load_dataset
from clifer_core.evaluation.protocols import dataset_classes, split_masks

pytestmark = pytest.mark.skipif(default_data_dir() is None, reason="no ../shared/data (set CLIFER_DATA_DIR)")


def _taiwanese_split():
    classes = dataset_classes("taiwanese", [])
    samples = [s for s in load_dataset("taiwanese") if s.expression in classes]
    subjects = np.array([s.subject for s in samples])
    labels = np.array([classes.index(s.expression) for s in samples])
    groups = [s.group for s in samples]
    return samples, subjects, labels, groups, split_masks(subjects, labels, groups, "fixed")


def test_taiwanese_fixed_split_never_teaches_and_tests_the_same_performance():
    samples, subjects, labels, groups, (train, test) = _taiwanese_split()
    assert not np.any(train & test)
    taught = defaultdict(set)
    for i in np.flatnonzero(train):
        taught[(subjects[i], labels[i])].add(groups[i])
    assert all(groups[i] not in taught[(subjects[i], labels[i])] for i in np.flatnonzero(test))
    assert len(set(subjects)) == 29
    cell_groups = defaultdict(set)
    for subject, label, group in zip(subjects, labels, groups):
        cell_groups[(subject, label)].add(group)
    for (subject, label), names in cell_groups.items():  # a cell is tested exactly when it has two groups
        assert np.any(test & (subjects == subject) & (labels == label)) == (len(names) > 1)
    tested_classes = {s: set(labels[test & (subjects == s)]) for s in set(subjects)}
    assert sum(len(c) == 6 for c in tested_classes.values()) == 24  # five people have a single neutral image
    assert tested_classes["tw23"] == {0, 2, 3, 4}  # subject 23: no fear image, one neutral
    assert 0.25 < test.mean() < 0.4


def test_ckplus_has_no_leak_free_per_subject_split_and_says_so():
    from clifer_core.evaluation.runner import evaluate

    with pytest.raises(ValueError, match="no leak-free per-subject split"):
        evaluate("ckplus", "fixed", conditions=("gdm",), show_progress=False)


def test_imagination_predicts_untaught_classes_above_chance_and_plain_gdm_does_not():
    """Real faces, real FER2013 features and the packaged imagination model, four subjects, two orders."""
    from clifer_core.evaluation.runner import evaluate

    result = evaluate("taiwanese", "fixed", conditions=("gdm", "imagination"), orders=[0, 1],
                      subjects=["tw01", "tw02", "tw03", "tw05"], show_progress=False)
    first_class = {0: result.classes[result.orders[0][0]], 1: result.classes[result.orders[1][0]]}
    untaught = defaultdict(list)
    for row in result.rows:
        if (row["step"] == 1 and row["test_set"] == "overall" and row["memory"] == "episodic"
                and row["metric"].startswith("recall:") and row["metric"][7:] != first_class[row["order"]]):
            untaught[row["condition"]].append(row["value"])
    assert np.mean(untaught["gdm"]) == 0.0
    assert np.mean(untaught["imagination"]) > 1 / 6
