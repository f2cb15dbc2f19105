"""The fusion rule on its own (numpy only): a distribution, untaught classes keep the population's evidence,
a recognised face follows what was taught, weights fitted by likelihood, calibration measured."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.fusion import (
    DEFAULT_FUSION,
    FusionWeights,
    class_distances,
    expected_calibration_error,
    fit_fusion,
    fuse,
    fusion_terms,
)

CLASSES = ("angry", "scared", "happy", "sad", "surprised", "neutral")
ANGRY, NEUTRAL = CLASSES.index("angry"), CLASSES.index("neutral")


def only(index: int) -> np.ndarray:
    taught = np.zeros(len(CLASSES), bool)
    taught[index] = True
    return taught


def test_fused_output_is_a_distribution_whatever_the_evidence():
    rng = np.random.default_rng(3)
    population = rng.dirichlet(np.ones(len(CLASSES)) * 0.3, size=200)
    population[:10] = 0.0
    population[:10, 2] = 1.0
    distances = rng.exponential(3.0, size=(200, len(CLASSES)))
    distances[rng.random(distances.shape) < 0.4] = np.inf
    for taught in (np.zeros(len(CLASSES), bool), only(NEUTRAL), rng.random(len(CLASSES)) < 0.5, np.ones(len(CLASSES), bool)):
        fused = fuse(population, distances, taught)
        assert fused.shape == population.shape and np.all(np.isfinite(fused)) and np.all(fused >= 0)
        np.testing.assert_allclose(fused.sum(axis=1), 1.0, atol=1e-9)


def test_a_class_taught_only_as_neutral_still_lets_the_priors_angry_through():
    population = np.array([[0.80, 0.05, 0.02, 0.05, 0.03, 0.05]])
    unlike_the_taught_neutral = np.full((1, len(CLASSES)), np.inf)
    unlike_the_taught_neutral[0, NEUTRAL] = 4.0
    fused = fuse(population, unlike_the_taught_neutral, only(NEUTRAL))
    assert fused.argmax() == ANGRY, "an untaught class the population reads keeps its lead"

    like_the_taught_neutral = unlike_the_taught_neutral.copy()
    like_the_taught_neutral[0, NEUTRAL] = 0.3
    assert fuse(population, like_the_taught_neutral, only(NEUTRAL)).argmax() == NEUTRAL, "a recognised face follows its teaching"


def test_nothing_taught_gives_back_the_population_evidence_shape_and_imagination_weighs_nothing_by_default():
    population = np.array([[0.1, 0.2, 0.3, 0.1, 0.2, 0.1]])
    imagined_only = np.array([[0.2, 5.0, 5.0, 5.0, 5.0, 5.0]])
    fused = fuse(population, imagined_only, np.zeros(len(CLASSES), bool))
    assert DEFAULT_FUSION.imagined == 0.0 and DEFAULT_FUSION.imagined_bias == 0.0
    assert fused.argmax() == population.argmax()


def test_class_distances_take_the_nearest_prototype_of_each_class():
    prototypes = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    labels = np.array([0, 0, 2])
    distances = class_distances(np.array([[3.0, 4.0]]), prototypes, labels, 3, insertion_distance=2.0)
    np.testing.assert_allclose(distances, [[2.0, np.inf, 1.5]])


def test_fitting_recovers_the_weights_that_generated_the_data_and_can_pin_imagination_at_zero():
    rng = np.random.default_rng(11)
    truth = FusionWeights(prior=0.7, taught=1.2, taught_bias=3.0, nearest=1.0, recognised=2.0)
    count = 6000
    population = rng.dirichlet(np.ones(len(CLASSES)), size=count)
    distances = rng.uniform(0.5, 6.0, size=(count, len(CLASSES)))
    taught = rng.random((count, len(CLASSES))) < 0.5
    probabilities = fuse(population, distances, taught, truth)
    labels = np.array([rng.choice(len(CLASSES), p=p) for p in probabilities])
    terms = fusion_terms(population, distances, taught)
    fitted = fit_fusion(terms, labels, use_imagination=False, regularisation=0.0)
    assert fitted.imagined == 0.0 and fitted.imagined_bias == 0.0
    np.testing.assert_allclose(fitted.as_vector()[:5], truth.as_vector()[:5], atol=0.35)
    with pytest.raises(ValueError, match="need terms"):
        fit_fusion(terms[:3], labels)


def test_expected_calibration_error_is_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(5)
    confidence = rng.uniform(0.4, 1.0, size=20000)
    correct = rng.random(20000) < confidence
    labels = np.where(correct, 0, 1)
    calibrated = np.stack([confidence, 1 - confidence], axis=1)
    assert expected_calibration_error(calibrated, labels) < 0.02
    overconfident = np.stack([np.full(20000, 0.99), np.full(20000, 0.01)], axis=1)
    assert expected_calibration_error(overconfident, labels) > 0.2
