"""Per-person, class-incremental learning on real faces (Taiwanese FED, FER2013 features): the memory remembers.

Skipped when ``../shared/data`` (or ``$CLIFER_DATA_DIR``) is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.data.datasets import default_data_dir, load_dataset, load_rgb
from clifer_core.labels import GDM_EXPRESSIONS
from clifer_core.memory import GrowingDualMemory

SUBJECTS = 5
HELD_OUT_GROUPS = ("t3", "n1")  # one performance type per emotion, half the neutral serials


@pytest.fixture(scope="module")
def taiwanese_features():
    if default_data_dir() is None:
        pytest.skip("real data folder absent (set CLIFER_DATA_DIR or provide ../shared/data)")
    from clifer_core.features import Fer2013Model

    samples = [s for s in load_dataset("taiwanese") if s.expression in GDM_EXPRESSIONS]
    subjects = sorted({s.subject for s in samples})[:SUBJECTS]
    samples = [s for s in samples if s.subject in subjects]
    features = Fer2013Model().features(np.stack([load_rgb(s.path) for s in samples]))
    labels = np.array([GDM_EXPRESSIONS.index(s.expression) for s in samples])
    subject = np.array([s.subject for s in samples])
    held_out = np.array([s.group in HELD_OUT_GROUPS for s in samples])
    return features, labels, subject, held_out


def class_incremental_scores(features, labels, subject, held_out, **settings):
    """Per step, mean over subjects of episodic accuracy on seen classes: (training images, held-out images)."""
    scores = []
    for person in np.unique(subject):
        memory = GrowingDualMemory(**settings)
        steps = []
        for k in range(len(GDM_EXPRESSIONS)):
            memory.partial_fit(features[(subject == person) & ~held_out & (labels == k)],
                               labels[(subject == person) & ~held_out & (labels == k)])
            seen_train = (subject == person) & ~held_out & (labels <= k)
            seen_test = (subject == person) & held_out & (labels <= k)
            steps.append(((memory.predict(features[seen_train]) == labels[seen_train]).mean(),
                          (memory.predict(features[seen_test]) == labels[seen_test]).mean()))
        scores.append(steps)
    return np.mean(scores, axis=0)


def test_per_person_memory_remembers_every_class_seen_so_far(taiwanese_features):
    fixed = class_incremental_scores(*taiwanese_features)
    assert (fixed[:, 0] >= 0.95).all(), f"forgot seen classes: {fixed[:, 0]}"
    assert fixed[-1, 1] >= 0.4, f"held-out accuracy over 6 classes {fixed[-1, 1]:.2f} (chance 0.17)"
    compat = class_incremental_scores(*taiwanese_features, capacity="first_class", global_ageing=True)
    assert compat[-1, 0] < fixed[-1, 0] - 0.2, "CLIFER's first-class capacity forgets (B-7), the fix does not"
