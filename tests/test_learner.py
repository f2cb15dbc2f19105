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


def test_before_teaching_the_prior_answers_then_the_person_and_the_population(crops, shared_models):
    learner = make_learner(shared_models, imagination="none")
    before = learner.predict("alice", crops)
    assert before.memory == "prior" and before.labels == EXPRESSIONS and np.all(np.isnan(before.novelty))
    learner.learn("alice", crops[:4], ["sad"] * 4)
    mine = learner.predict("alice", crops[4:])
    assert mine.memory == "episodic" and mine.best == ["sad"] * 4
    assert np.allclose(mine.probabilities.sum(axis=1), 1.0)
    stranger = learner.predict("bob", crops[4:])
    assert stranger.memory == "semantic" and stranger.best == ["sad"] * 4
    assert learner.people() == {"alice": 4}


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


def test_a_seeded_memory_answers_before_any_teaching_and_imagination_covers_untaught_classes(crops, shared_models):
    learner = make_learner(shared_models)
    learner.seed("alice", crops[:4])
    seeded = learner.predict("alice", crops[4:])
    assert seeded.memory == "episodic", "imagination alone gives a first-met person a memory"
    assert learner.people() == {"alice": 0}, "seeding teaches no real labels"
    taught = make_learner(shared_models)
    taught.learn("bob", crops[:4], ["happy"] * 4)
    memory = taught.memories["bob"]
    assert set(memory.episodic_.node_labels_[memory.episodic_.node_labels_ >= 0]) == set(range(len(EXPRESSIONS))), (
        "one taught expression, every expression imagined")


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
