"""The population model for strangers: probabilities over the 7 expressions, clear errors, faithful storage."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.labels import EXPRESSIONS
from clifer_core.persistence import StateFileError
from clifer_core.population import DEFAULT_MODEL_PATH, PopulationModel


@pytest.fixture(scope="module")
def model():
    return PopulationModel.load()


@pytest.fixture(scope="module")
def crops():
    from skimage.data import astronaut

    from clifer_core.faces import crop_largest_face

    face = crop_largest_face(astronaut(), size=96)
    return np.stack([face, face[:, ::-1], np.clip(face.astype(int) + 40, 0, 255).astype(np.uint8)])


def test_the_shipped_model_loads_with_its_model_card(model):
    assert DEFAULT_MODEL_PATH.is_file() and DEFAULT_MODEL_PATH.stat().st_size <= 5_000_000
    card = (DEFAULT_MODEL_PATH.parent / "MODEL_CARD.md").read_text()
    assert "FER2013" in card and "research" in card.lower()
    assert model.labels == EXPRESSIONS and {"fer2013", "taiwanese"} <= set(model.provenance["datasets"])
    assert model.has_own_appearance and model.provenance["appearance"]["epochs"] >= 1
    assert "fine-tuned" in card


def test_a_version_1_file_without_an_appearance_network_still_loads(tmp_path, model, crops):
    from clifer_core.features import Fer2013Model
    from clifer_core.persistence import save_state
    from clifer_core.population import POPULATION_KIND

    manifest = {"prior_weight": 0.5, "shape_weight": 1.0, "landmark_model": "facemesh", "reference_window": 90,
                "labels": list(EXPRESSIONS), "provenance": {}}
    arrays = {"mean": model.classifier.mean, "std": model.classifier.std, "weights": model.classifier.weights,
              "bias": model.classifier.bias, "population_mean": model.population_mean}
    old = PopulationModel.load(save_state(tmp_path / "v1.npz", POPULATION_KIND, 1, manifest, arrays))
    assert not old.has_own_appearance
    np.testing.assert_allclose(old.prior.predict_proba(crops), Fer2013Model().predict_proba(crops), atol=1e-6)


def test_probabilities_cover_the_seven_expressions_and_sum_to_one(model, crops):
    for person in (None, "visitor"):
        probabilities = model.predict_proba(crops, person=person)
        assert probabilities.shape == (len(crops), len(EXPRESSIONS))
        assert np.all(probabilities >= 0)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.predict_proba(crops[:0]).shape == (0, len(EXPRESSIONS))


def test_a_named_person_is_measured_from_their_own_running_median_face(model):
    rows = np.random.default_rng(0).normal(size=(3, len(model.population_mean))).astype(np.float32)
    model.forget("visitor_b")
    np.testing.assert_allclose(model.displacements(rows[:1], person="visitor_b"), 0.0)
    later = model.displacements(rows[1:], person="visitor_b")
    np.testing.assert_allclose(later, rows[1:] - np.median(rows, axis=0), atol=1e-6)
    np.testing.assert_allclose(model.displacements(rows), rows - model.population_mean, atol=1e-6)
    model.forget("visitor_b")


@pytest.mark.parametrize("shape", [(2, 20, 20, 3), (96, 96, 3), (1, 96, 80, 3), (1, 96, 96), (1, 96, 96, 4)])
def test_wrongly_sized_input_is_rejected_with_a_clear_error(model, shape):
    with pytest.raises(ValueError, match=r"expected square RGB face crops \(N, S, S, 3\)"):
        model.predict_proba(np.zeros(shape, np.uint8))


def test_precomputed_inputs_of_the_wrong_size_are_rejected(model):
    with pytest.raises(ValueError, match="prior"):
        model.predict_proba_from(np.full((2, 6), 1 / 6), np.zeros((2, len(model.population_mean))))
    with pytest.raises(ValueError, match="displacements"):
        model.predict_proba_from(np.full((2, 7), 1 / 7), np.zeros((2, 3)))


def synthetic_sets(rng):
    """Shape alone tells the class; the prior is uniform noise: training must lean on shape."""
    from clifer_core.population_training import ShapeSet

    def make(name, count, with_prior):
        labels = rng.integers(0, len(EXPRESSIONS), count)
        displacements = rng.normal(0, 0.3, (count, 6))
        displacements[np.arange(count), labels % 6] += 2.0
        prior = rng.dirichlet(np.ones(len(EXPRESSIONS)), count) if with_prior else None
        subjects = np.array([f"{name}{i % 8}" for i in range(count)])
        return ShapeSet(name, displacements, labels, subjects, prior)

    return [make("taiwanese", 240, True), make("ckplus", 160, True), make("fer2013", 300, False)]


def test_training_chooses_fusion_on_people_and_round_trips_through_storage(tmp_path):
    from clifer_core.population_training import train

    rng = np.random.default_rng(0)
    sets = synthetic_sets(rng)
    trained, scores = train(sets, np.zeros(6, np.float32))
    assert trained.shape_weight > 0 and scores[(trained.prior_weight, trained.shape_weight)] == max(scores.values())
    test = synthetic_sets(np.random.default_rng(1))[0]
    fused = trained.predict_proba_from(test.prior, test.displacements)
    assert np.mean(np.argmax(fused, axis=1) == test.labels) > 0.6
    path = trained.save(tmp_path / "population.npz")
    loaded = PopulationModel.load(path)
    np.testing.assert_allclose(loaded.predict_proba_from(test.prior, test.displacements), fused, atol=1e-5)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StateFileError, match="corrupt or truncated"):
        PopulationModel.load(path)


def test_the_training_command_is_registered():
    from clifer_core.cli import subcommands

    assert subcommands()["train-population"][0] == "clifer_core.population_training"
