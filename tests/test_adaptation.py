"""The population classifier and its fine-tuning on one person (numpy and scipy only), and the fusion term it adds."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.adaptation import PopulationClassifier, shipped_path
from clifer_core.fusion import DEFAULT_FUSION_ADAPTED, fuse
from clifer_core.labels import EXPRESSIONS
from clifer_core.persistence import StateFileError

CLASSES = 4
DIMENSION = 12


def population(rng, people: int = 20, per_class: int = 6, offset_scale: float = 0.0):
    """Class centres shared by everyone, each person shifted by their own offset (far from zero, like landmarks)."""
    centres = rng.normal(size=(CLASSES, DIMENSION)) * 2.0
    features, labels = [], []
    for _ in range(people):
        offset = rng.normal(size=DIMENSION) * offset_scale + 40.0
        for label in range(CLASSES):
            features.append(centres[label] + offset + rng.normal(size=(per_class, DIMENSION)) * 0.8)
            labels += [label] * per_class
    return np.concatenate(features), np.array(labels), centres


def test_probabilities_are_distributions_and_bad_input_gets_a_clear_error():
    rng = np.random.default_rng(0)
    features, labels, _ = population(rng)
    classifier = PopulationClassifier(CLASSES, "test").fit(features, labels)
    probabilities = classifier.predict_proba(features)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert np.mean(classifier.predict(features) == labels) > 0.9
    with pytest.raises(ValueError, match=f"expected features \\(N, {DIMENSION}\\)"):
        classifier.predict_proba(features[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        classifier.predict_proba(np.full((1, DIMENSION), np.nan))
    with pytest.raises(ValueError, match="labels must be class indices"):
        classifier.adapted(features[:2], np.array([0, 7]))
    with pytest.raises(ValueError, match="not fitted"):
        PopulationClassifier(CLASSES).predict_proba(features)


def test_fine_tuning_moves_the_boundaries_towards_the_person_and_keeps_the_other_classes():
    """A person whose 'class 1' looks like everyone's 'class 0' is read as 0 by the population; a few taught faces
    move them to 1, and classes they were not taught stay as the population reads them."""
    rng = np.random.default_rng(1)
    features, labels, centres = population(rng)
    classifier = PopulationClassifier(CLASSES).fit(features, labels)
    offset = 40.0
    theirs = np.stack([centres[0] * 0.7 + centres[1] * 0.3 + offset + rng.normal(size=DIMENSION) * 0.3 for _ in range(6)])
    assert np.mean(classifier.predict(theirs) == 0) > 0.5, "the population reads this person's 1 as 0"
    adapted = classifier.adapted(theirs[:3], np.ones(3, np.int64))
    assert np.all(adapted.predict(theirs[3:]) == 1), "taught faces move the boundary"
    others = features[labels >= 2]
    assert np.mean(adapted.predict(others) == labels[labels >= 2]) > 0.9, "untaught classes are still read"
    np.testing.assert_allclose(PopulationClassifier.load(_saved(classifier)).predict_proba(theirs), classifier.predict_proba(theirs), atol=1e-5)


def _saved(classifier, folder=None):
    import tempfile
    from pathlib import Path

    path = Path(folder or tempfile.mkdtemp()) / "classifier.npz"
    classifier.save(path)
    return path


def test_a_corrupt_or_truncated_file_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    features, labels, _ = population(rng, people=4)
    path = _saved(PopulationClassifier(CLASSES).fit(features, labels), tmp_path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(StateFileError):
        PopulationClassifier.load(path)


@pytest.mark.parametrize("representation", ["fer", "fer+shape"])
def test_the_shipped_classifiers_load_over_every_expression(representation):
    classifier = PopulationClassifier.load(shipped_path(representation))
    assert classifier.representation == representation and classifier.n_classes == len(EXPRESSIONS)
    assert set(classifier.provenance["datasets"]) == {"taiwanese", "ckplus", "yale"}


def test_an_adapted_term_taught_only_neutral_still_lets_the_priors_angry_through():
    """The fusion with the shipped weights: a person-adapted classifier leaning to neutral (all it was taught)
    does not hide an angry face the population reads and the memory does not recognise."""
    classes = ("angry", "scared", "happy", "sad", "surprised", "neutral")
    angry, neutral = classes.index("angry"), classes.index("neutral")
    prior = np.array([[0.80, 0.05, 0.02, 0.05, 0.03, 0.05]])
    distances = np.full((1, len(classes)), np.inf)
    distances[0, neutral] = 4.0
    taught = np.zeros(len(classes), bool)
    taught[neutral] = True
    adapted = np.array([[0.30, 0.05, 0.05, 0.10, 0.05, 0.45]])
    fused = fuse(prior, distances, taught, DEFAULT_FUSION_ADAPTED, adapted)
    assert fused.argmax() == angry
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, atol=1e-9)
