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


def make_learner(shared_models, imagination="image") -> CliferLearner:
    fer, imaginer = shared_models
    return CliferLearner(imagination=imagination, feature_model=fer, imaginer=imaginer)


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
    assert sure.memories["bob"].classes_seen_[guessed], "a confident guess is learned as a label"


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
