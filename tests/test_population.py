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
    assert 0 < model.appearance_centring <= 1 and model.appearance_reference.shape == (len(EXPRESSIONS),)
    assert f"`appearance_centring` {model.appearance_centring}" in card


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
    chosen = (trained.appearance_centring, trained.prior_weight, trained.shape_weight)
    assert trained.shape_weight > 0 and scores[chosen] == max(scores.values())
    test = synthetic_sets(np.random.default_rng(1))[0]
    fused = trained.predict_proba_from(test.prior, test.displacements)
    assert np.mean(np.argmax(fused, axis=1) == test.labels) > 0.6
    path = trained.save(tmp_path / "population.npz")
    loaded = PopulationModel.load(path)
    np.testing.assert_allclose(loaded.predict_proba_from(test.prior, test.displacements), fused, atol=1e-5)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StateFileError, match="corrupt or truncated"):
        PopulationModel.load(path)


def biased_people_sets(rng):
    """Shape says nothing; the prior reads the expression, but every person looks like one class to it."""
    from clifer_core.population_training import ShapeSet

    def make(name, people, per_person):
        subjects = np.repeat([f"{name}{i}" for i in range(people)], per_person)
        labels = np.tile(np.arange(len(EXPRESSIONS)), people * per_person // len(EXPRESSIONS))
        bias = np.zeros((people, len(EXPRESSIONS)))
        bias[np.arange(people), rng.integers(0, len(EXPRESSIONS), people)] = 2.5
        logits = 1.5 * np.eye(len(EXPRESSIONS))[labels] + np.repeat(bias, per_person, axis=0)
        logits += rng.normal(0, 0.5, logits.shape)
        prior = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return ShapeSet(name, rng.normal(0, 1, (len(labels), 6)), labels, subjects, prior)

    return [make("taiwanese", 16, 21), make("ckplus", 12, 21)]


def test_training_centres_appearance_on_the_person_when_people_bias_it():
    from clifer_core.population_training import macro_f1_per_subject, person_typical_appearance, train

    trained, scores = train(biased_people_sets(np.random.default_rng(0)), np.zeros(6, np.float32))
    assert trained.appearance_centring > 0
    assert max(scores.values()) > max(v for (centring, _, _), v in scores.items() if centring == 0) + 0.1
    test = biased_people_sets(np.random.default_rng(1))[0]
    typical = person_typical_appearance(test.prior, test.subjects)
    classes = EXPRESSIONS
    centred_f1 = macro_f1_per_subject(trained.predict_proba_from(test.prior, test.displacements, typical),
                                      test.labels, test.subjects, classes)
    plain_f1 = macro_f1_per_subject(test.prior, test.labels, test.subjects, classes)
    assert np.mean(centred_f1) > np.mean(plain_f1) + 0.1


def test_a_persons_typical_reading_is_centred_to_the_populations():
    from clifer_core.population import centred_log_probabilities, fuse

    reference = np.log(np.array([0.3, 0.1, 0.1, 0.2, 0.1, 0.1, 0.1]))
    looks_sad = np.array([[0.05, 0.05, 0.05, 0.05, 0.6, 0.1, 0.1]])
    no_shape = np.zeros_like(looks_sad)

    def read(centring):
        log_sad = np.log(looks_sad)
        return fuse(centred_log_probabilities(log_sad, log_sad, reference, centring), no_shape, 1.0, 0.0)

    np.testing.assert_allclose(read(1.0), np.exp(reference)[None], atol=1e-6)
    np.testing.assert_allclose(read(0.0), looks_sad, atol=1e-6)


def test_each_face_gets_its_own_persons_median():
    from clifer_core.population_training import medians_by_person, person_displacements, person_medians

    values = np.array([[1.0, 10.0], [3.0, 30.0], [20.0, 50.0], [100.0, 0.0], [200.0, 2.0]])
    subjects = np.array(["b", "b", "b", "a", "a"])
    people, medians = medians_by_person(values, subjects)
    assert list(people) == ["a", "b"]
    np.testing.assert_allclose(medians, [[150.0, 1.0], [3.0, 30.0]])
    np.testing.assert_allclose(person_medians(values, subjects), [[3, 30], [3, 30], [3, 30], [150, 1], [150, 1]])
    np.testing.assert_allclose(person_displacements(values, subjects), values - person_medians(values, subjects))


def test_a_centring_model_keeps_each_persons_running_typical_reading(tmp_path, model, crops):
    centring = PopulationModel(model.classifier, model.population_mean, 0.5, 0.5, appearance_centring=0.5,
                               appearance_reference=np.log(np.full(len(EXPRESSIONS), 1 / len(EXPRESSIONS))),
                               prior=model.prior)
    readings = np.random.default_rng(0).dirichlet(np.ones(len(EXPRESSIONS)), 3)
    assert centring.typical_appearance(readings) is None
    assert centring.typical_appearance(readings[:0], "nobody_yet") is None
    np.testing.assert_allclose(centring.typical_appearance(readings[:1], "ann"), np.log(readings[:1]), atol=1e-6)
    later = centring.typical_appearance(readings[1:], "ann")
    np.testing.assert_allclose(later, np.broadcast_to(np.median(np.log(readings), axis=0), (2, 7)), atol=1e-6)
    centring.forget("ann")
    np.testing.assert_allclose(centring.typical_appearance(readings[2:], "ann"), np.log(readings[2:]), atol=1e-6)

    expected = centring.predict_proba_from(model.prior.predict_proba(crops),
                                           centring.displacements(centring.shape.raw(crops), "bob"),
                                           centring.typical_appearance(model.prior.predict_proba(crops), "bob"))
    centring.forget("bob")
    np.testing.assert_allclose(centring.predict_proba(crops, person="bob"), expected, atol=1e-5)
    plain = PopulationModel(model.classifier, model.population_mean, 0.5, 0.5, prior=model.prior)
    assert not np.allclose(centring.predict_proba(crops[:1], person="carol"),
                           plain.predict_proba(crops[:1], person="carol"), atol=1e-3)
    loaded = PopulationModel.load(centring.save(tmp_path / "centring.npz"))
    assert loaded.appearance_centring == 0.5
    np.testing.assert_allclose(loaded.appearance_reference, centring.appearance_reference)


@pytest.mark.parametrize("centring, reference", [(1.5, np.zeros(7)), (-0.1, np.zeros(7)), (0.5, None),
                                                 (0.5, np.zeros(6)), (0.5, np.full(7, np.nan))])
def test_an_impossible_centring_is_refused(model, centring, reference):
    with pytest.raises(ValueError, match="centring"):
        PopulationModel(model.classifier, model.population_mean, 0.5, 0.5, appearance_centring=centring,
                        appearance_reference=reference)


def test_a_file_with_an_impossible_centring_is_refused_at_load(tmp_path, model):
    from clifer_core.persistence import save_state
    from clifer_core.population import POPULATION_KIND, POPULATION_VERSION

    manifest = {"prior_weight": 0.5, "shape_weight": 1.0, "landmark_model": "facemesh", "reference_window": 90,
                "labels": list(EXPRESSIONS), "provenance": {}, "appearance_centring": 0.5}
    arrays = {"mean": model.classifier.mean, "std": model.classifier.std, "weights": model.classifier.weights,
              "bias": model.classifier.bias, "population_mean": model.population_mean}
    path = save_state(tmp_path / "no_reference.npz", POPULATION_KIND, POPULATION_VERSION, manifest, arrays)
    with pytest.raises(StateFileError, match="centring"):
        PopulationModel.load(path)


def test_the_training_command_is_registered():
    from clifer_core.cli import subcommands

    assert subcommands()["train-population"][0] == "clifer_core.population_training"
