"""CliferLearner with the real packaged models: teaching, answering memories, imagination, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.labels import EXPRESSIONS
from clifer_core.learner import CliferLearner
from frames import face_frame


@pytest.fixture(scope="module")
def crops():
    """Eight aligned crops of the public-domain astronaut, at slightly different positions."""
    from clifer_core.faces import crop_largest_face

    found = [crop_largest_face(face_frame(offset=(5 * i, 3 * i)), size=96) for i in range(8)]
    assert all(c is not None for c in found)
    return np.stack(found)


@pytest.fixture(scope="module")
def shared_models():
    from clifer_core.features import Fer2013Model
    from clifer_core.imagination import Imaginer

    return Fer2013Model(), Imaginer.load()


def make_learner(shared_models, imagination="image", population_model="fer2013") -> CliferLearner:
    fer, imaginer = shared_models
    return CliferLearner(imagination=imagination, feature_model=fer, imaginer=imaginer, population_model=population_model)


class CountingFer:
    """The real FER2013 model, counting how often it runs."""

    def __init__(self, model):
        self.model = model
        self.feature_dim = model.feature_dim
        self.runs = 0

    def predict_proba(self, crops):
        self.runs += 1
        return self.model.predict_proba(crops)

    def features(self, crops):
        self.runs += 1
        return self.model.features(crops)

    def predict_proba_and_features(self, crops):
        self.runs += 1
        return self.model.predict_proba_and_features(crops)


def test_a_strangers_estimates_are_the_priors_and_teaching_is_followed(crops, shared_models):
    learner = make_learner(shared_models, imagination="none")
    prior = shared_models[0].predict_proba(crops)
    before = learner.predict("alice", crops)
    assert before.memory == "prior" and before.labels == EXPRESSIONS and np.all(np.isnan(before.novelty))
    np.testing.assert_array_equal(before.probabilities, prior)
    learner.learn("alice", crops[:4], ["sad"] * 4)
    recognised = learner.predict("alice", crops[:4])
    assert recognised.memory == "fused" and recognised.best == ["sad"] * 4, "the taught frames follow the teaching"
    assert np.all(recognised.novelty < 1.0)
    mine = learner.predict("alice", crops[4:])
    assert mine.memory == "fused" and np.allclose(mine.probabilities.sum(axis=1), 1.0)
    stranger = learner.predict("bob", crops[4:])
    assert stranger.memory == "prior", "someone else's teaching does not change a stranger's estimates"
    np.testing.assert_array_equal(stranger.probabilities, prior[4:])
    fer_outputs = shared_models[0].predict_proba_and_features(crops[4:])
    np.testing.assert_allclose(learner.predict("alice", crops[4:], fer_outputs).probabilities, mine.probabilities, atol=1e-5)
    assert learner.people() == {"alice": 4}


def test_predict_features_fuses_any_population_model_the_same_way(crops, shared_models):
    learner = make_learner(shared_models, imagination="none")
    learner.learn("alice", crops[:4], ["sad"] * 4)
    features = learner.features(crops[4:])
    uniform = np.full((4, len(EXPRESSIONS)), 1.0 / len(EXPRESSIONS))
    fused = learner.predict_features("alice", features, uniform)
    assert fused.memory == "fused" and fused.best == ["sad"] * 4, "with no population preference the memory decides"
    np.testing.assert_allclose(learner.predict_features("carol", features, uniform).probabilities, uniform, atol=1e-7)


def test_a_taught_persons_estimate_adds_the_population_classifier_fine_tuned_on_them(crops, shared_models):
    learner = make_learner(shared_models, imagination="none")
    assert learner.adaptation and learner.fusion.adapted > 0, "the default learner adapts to a taught person"
    learner.learn("alice", crops[:4], ["sad"] * 4)
    features = learner.features(crops[4:])
    sad = EXPRESSIONS.index("sad")
    person = learner.person_classifier(learner.memories["alice"])
    population = learner.population_classifier
    assert person.predict_proba(features)[:, sad].mean() > population.predict_proba(features)[:, sad].mean() + 0.05
    without = CliferLearner(imagination="none", feature_model=shared_models[0], adaptation=False)
    without.learn("alice", crops[:4], ["sad"] * 4)
    assert without.fusion.adapted == 0 and without.population_classifier is None
    assert not np.allclose(without.predict("alice", crops[4:]).probabilities,
                           learner.predict("alice", crops[4:]).probabilities, atol=1e-3)
    taught_faces = learner.features(crops[:4])
    kept, kept_labels = CliferLearner.adaptation_samples(learner.memories["alice"])
    np.testing.assert_allclose(kept, taught_faces, atol=1e-5)
    assert kept_labels.tolist() == [learner.classes.index("sad")] * 4, "adaptation fits the taught faces themselves"
    np.testing.assert_allclose(person.predict_proba(features), population.adapted(
        taught_faces, np.full(4, sad)).predict_proba(features), atol=1e-5)
    learner.learn("bob", crops[4:6], ["happy"] * 2)
    assert learner.merge("bob", "alice")
    merged = learner.person_classifier(learner.memories["alice"])
    assert merged is not person, "a merged memory is adapted again"
    merged_faces, merged_labels = CliferLearner.adaptation_samples(learner.memories["alice"])
    assert len(merged_labels) == 6 and merged_labels.tolist().count(learner.classes.index("happy")) == 2, \
        "a merge carries the taught faces over"
    with pytest.raises(ValueError, match="population classifier needs"):
        CliferLearner(features="shape", imagination="none", population_classifier=population)


def test_with_the_shape_population_a_taught_person_is_adapted_too(crops, shared_models):
    from clifer_core.fusion import DEFAULT_FUSION_SHAPE_ADAPTED, fuse

    learner = make_learner(shared_models, imagination="none", population_model="shape")
    assert learner.adaptation and learner.fusion == DEFAULT_FUSION_SHAPE_ADAPTED and learner.fusion.adapted > 0
    learner.learn("alice", crops[:4], ["sad"] * 4)
    memory = learner.memories["alice"]
    features = learner.features(crops[4:])
    evidence = learner.population_evidence(None, crops[4:])
    distances, taught = CliferLearner.memory_evidence(memory, features)
    adapted = learner.person_classifier(memory).predict_proba(features)
    estimate = learner.predict_features("alice", features, evidence)
    assert estimate.memory == "fused"
    np.testing.assert_allclose(estimate.probabilities, fuse(evidence, distances, taught, DEFAULT_FUSION_SHAPE_ADAPTED,
                                                            adapted), atol=1e-5,
                               err_msg="the shape evidence, the memory and the classifier adapted to alice, fused")


def test_a_person_known_only_from_first_meeting_guesses_gets_the_priors_estimate(crops, shared_models):
    """Sure first-meeting guesses are learned as labels (they prepare the memory), but until someone teaches the
    person their estimate is the population's, unchanged: guesses never lower it."""
    learner = make_learner(shared_models)
    learner.seed("carol", crops[:4], confidence=0.0)
    memory = learner.memories["carol"]
    assert learner.people()["carol"] == 0 and not memory.classes_seen_.any() and len(memory.taught_y_) == 0
    prediction = learner.predict("carol", crops[4:])
    assert prediction.memory == "prior"
    np.testing.assert_array_equal(prediction.probabilities, shared_models[0].predict_proba(crops[4:]))
    learner.learn("carol", crops[:1], ["happy"])
    assert learner.predict("carol", crops[4:]).memory == "fused", "teaching turns the memory on"


def test_teaching_a_face_overrides_a_sure_first_meeting_guess_of_the_same_face(crops, shared_models):
    """The first meeting learns the prior's sure guess; teaching the same faces otherwise must be followed,
    however the seed's imagination re-learned the guess (it outvoted the teaching before guesses were kept
    out of the taught classes and seeded with one presentation)."""
    learner = make_learner(shared_models)
    face = np.repeat(crops[-1:], 10, axis=0)
    guess = EXPRESSIONS[int(np.argmax(shared_models[0].predict_proba(face[:1])))]
    taught = "sad" if guess != "sad" else "surprised"
    learner.seed("dana", face, confidence=0.0)
    memory = learner.memories["dana"]
    assert EXPRESSIONS.index(guess) in set(memory.episodic_.predict(learner.features(face[:1]))), \
        "the seed learned the guess at the face"
    learner.learn("dana", face[:5], [taught] * 5)
    prediction = learner.predict("dana", face[:1])
    assert prediction.memory == "fused" and prediction.best == [taught]
    assert np.flatnonzero(learner.memories["dana"].classes_seen_).tolist() == [EXPRESSIONS.index(taught)], \
        "only the taught class counts as taught"


def test_fer_shape_vectors_are_the_learners_fer_shape_features(crops, shared_models):
    """Evaluation and training build fer+shape features from cached raw vectors with this one function."""
    from clifer_core.learner import fer_shape_vectors

    extractor = make_learner(shared_models, imagination="none").extractor
    raw = extractor.raw(crops[:3])
    np.testing.assert_allclose(fer_shape_vectors(raw[:, :extractor.fer_dim], raw[:, extractor.fer_dim:]),
                               extractor.from_raw(raw), atol=1e-5)


def test_bad_input_raises_and_changes_nothing(crops, shared_models):
    learner = make_learner(shared_models, imagination="none")
    learner.learn("alice", crops[:2], ["happy", "happy"])
    with pytest.raises(ValueError, match="unknown expression label"):
        learner.learn("alice", crops[:1], ["bored"])
    with pytest.raises(ValueError, match="ROS name token"):
        learner.learn("9lives", crops[:1], ["happy"])
    with pytest.raises(ValueError, match="one label per crop"):
        learner.learn("alice", crops[:2], ["happy"])
    with pytest.raises(ValueError, match="not among this learner's classes"):
        CliferLearner(classes=("happy", "sad"), imagination="none", feature_model=shared_models[0]).learn(
            "alice", crops[:1], ["angry"])
    assert learner.people() == {"alice": 2}
    with pytest.raises(ValueError, match="needs imagination"):
        learner.seed("carol", crops)


def test_with_the_shape_population_model_a_stranger_gets_exactly_its_estimate(crops, shared_models):
    from clifer_core.population import PopulationModel
    from clifer_core.shape import ShapeFeatures

    fer = shared_models[0]
    learner = make_learner(shared_models, imagination="none", population_model="shape")
    reference = PopulationModel.load(prior=fer, shape=ShapeFeatures())
    appearance, shape_raw = reference.prior.predict_proba(crops), ShapeFeatures().raw(crops)
    nameless = learner.predict(None, crops)
    assert nameless.memory == "prior" and np.allclose(nameless.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(nameless.probabilities,
                               reference.predict_proba_from(appearance, reference.displacements(shape_raw)), atol=1e-6)
    prior = fer.predict_proba(crops)
    assert not np.allclose(nameless.probabilities, prior, atol=1e-3), "the population model is not the FER2013 prior"
    for first, last in ((0, 4), (4, 8)):
        bob = learner.predict("bob", crops[first:last])
        np.testing.assert_allclose(bob.probabilities, reference.predict_proba_from(
            appearance[first:last], reference.displacements(shape_raw[first:last], "bob"),
            reference.typical_appearance(appearance[first:last], "bob")), atol=1e-6,
            err_msg="a named stranger's shape and appearance are read against their own running references")


def test_taught_estimates_with_the_shape_population_are_distributions_from_one_fer_pass(crops, shared_models):
    counting = CountingFer(shared_models[0])
    learner = CliferLearner(features="fer+shape", imagination="none", feature_model=counting,
                            population_model="shape")
    learner.learn("alice", crops[:4], ["sad"] * 4)
    assert learner.shape_population.shape is learner.extractor.shape.shape, "one face-mesh pass serves both"
    fer_outputs = shared_models[0].predict_proba_and_features(crops[4:])
    counting.runs = 0
    given = learner.predict("alice", crops[4:], fer_outputs)
    assert counting.runs == 0, "the pipeline's FER2013 outputs are reused for the evidence and the features"
    alone = learner.predict("alice", crops[4:])
    assert counting.runs == 1, "without them, FER2013 runs once for the evidence and the features together"
    for prediction in (given, alone):
        assert prediction.memory == "fused" and np.allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert learner.predict("alice", crops[:4]).best == ["sad"] * 4


def test_seeding_and_forgetting_use_the_shape_population_evidence(crops, shared_models):
    learner = make_learner(shared_models, population_model="shape")
    population = learner.shape_population
    learner.seed("alice", crops[:4], confidence=0.0)
    assert population.has_reference("alice")
    evidence = learner.predict("carol", crops[:4]).probabilities
    guessed = {int(i) for i in np.argmax(evidence, axis=1)}
    memory = learner.memories["alice"]
    assert set(memory.episodic_.predict(learner.features(crops[:4]))) == guessed, (
        "first-meeting labels are the population evidence's guesses")
    assert not memory.classes_seen_.any(), "guesses are not taught"
    learner.forget("alice")
    assert not population.has_reference("alice"), "forgetting someone drops their running reference face"
    learner.reset()
    assert not population.has_reference("carol")


def test_image_imagination_is_an_analogy_that_keeps_the_taught_face(crops, shared_models):
    learner = make_learner(shared_models)
    features = learner.features(crops[:3])
    vectors, labels = learner.imagined_samples(crops[:3], features, ["happy"] * 3)
    assert vectors.shape == (3 * len(EXPRESSIONS), features.shape[1])
    assert labels.tolist() == list(range(len(EXPRESSIONS))) * 3
    happy = vectors.reshape(3, len(EXPRESSIONS), -1)[:, EXPRESSIONS.index("happy")]
    assert np.allclose(happy, features, atol=1e-5), "the face imagined with its own expression is the face itself"
    assert not np.allclose(vectors.reshape(3, len(EXPRESSIONS), -1)[:, 0], features, atol=1e-3)


def test_seeding_prepares_a_memory_but_learns_no_unsure_guess_as_a_label(crops, shared_models):
    learner = make_learner(shared_models)
    prior = shared_models[0].predict_proba(crops)
    learner.seed("alice", crops[:4], confidence=1.01)
    seeded = learner.predict("alice", crops[4:])
    assert seeded.memory == "prior", "imagination alone changes nothing a stranger is told"
    np.testing.assert_array_equal(seeded.probabilities, prior[4:])
    memory = learner.memories["alice"]
    assert not memory.classes_seen_.any(), "no guess below the confidence is learned as a label"
    assert set(memory.episodic_.node_labels_[memory.episodic_.node_labels_ >= 0]) == set(range(len(EXPRESSIONS))), (
        "imagination prepared every expression")
    assert learner.people() == {"alice": 0}, "seeding teaches no real labels"

    sure = make_learner(shared_models)
    sure.seed("bob", crops[:4], confidence=0.5)
    guessed = EXPRESSIONS.index(EXPRESSIONS[int(np.argmax(prior[0]))])
    bob = sure.memories["bob"]
    assert bob.episodic_.predict(sure.features(crops[:1]))[0] == guessed, "a confident guess is learned as a label"
    assert not bob.classes_seen_.any() and sure.people() == {"bob": 0}, "and is not taught"


def test_save_load_forget_and_a_corrupt_person_file(tmp_path, crops, shared_models):
    learner = make_learner(shared_models, imagination="none")
    learner.learn("alice", crops[:4], ["sad"] * 4)
    learner.learn("bob", crops[4:], ["angry"] * 4)
    learner.save(tmp_path)
    restored = make_learner(shared_models, imagination="none")
    assert restored.load(tmp_path) == {}
    for person in ("alice", "bob"):
        np.testing.assert_array_equal(restored.predict(person, crops).probabilities,
                                      learner.predict(person, crops).probabilities)
    assert restored.people() == {"alice": 4, "bob": 4}

    (tmp_path / "people" / "bob.npz").write_bytes(b"not a memory")
    again = make_learner(shared_models, imagination="none")
    problems = again.load(tmp_path)
    assert list(problems) == [str(tmp_path / "people" / "bob.npz")]
    assert again.knows("alice") and not again.knows("bob")
    assert (tmp_path / "people" / "bob.npz.corrupt").is_file()

    assert again.forget("alice")
    again.delete_person_files(tmp_path, "alice")
    assert not (tmp_path / "people" / "alice.npz").exists()
    assert "alice" not in (tmp_path / "learner.json").read_text()


def test_a_learner_imagines_with_the_imagination_file_it_is_given(crops, shared_models, tmp_path):
    from clifer_core.imagination.landmark_warp import LandmarkWarpImaginer
    from clifer_core.persistence import StateFileError

    count = len(EXPRESSIONS)
    warp = LandmarkWarpImaginer(48, strength=1.0)
    warp.changes_ = np.zeros((count, count, 468, 2), np.float32)
    warp.changes_[:, EXPRESSIONS.index("surprised"), :, 1] = 0.05
    warp.pair_counts_ = np.ones((count, count), np.int64)
    path = warp.save(tmp_path / "warp.npz")
    learner = CliferLearner(imagination="image", feature_model=shared_models[0], imagination_model=path)
    learner.learn("erin", crops[:3], ["happy"] * 3)
    assert isinstance(learner.imaginer, LandmarkWarpImaginer), "the named file, not the packaged model"
    memory = learner.memories["erin"]
    labels = set(memory.episodic_.node_labels_.tolist())
    assert EXPRESSIONS.index("surprised") in labels, "the one change the warp holds is imagined"
    assert EXPRESSIONS.index("angry") not in labels, "a warp that moves nothing towards angry imagines no angry face"
    with pytest.raises(StateFileError, match="no such state file"):
        CliferLearner(imagination="image", imagination_model=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="landmark warp"):
        CliferLearner(features="caae", imagination="latent", imagination_model=path)
