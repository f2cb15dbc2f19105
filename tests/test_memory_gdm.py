"""Growing Dual-Memory (docs/design.md §3): increments, G-SM routing (B-4), capacity (B-7), replay, imagination, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.memory import GrowingDualMemory, NotFittedError
from clifer_core.persistence import StateFileError
from memory_helpers import assert_same_state, class_blocks, snapshot


def shifted_imagination(centres):
    """A stand-in CAAE: each prototype, plus one 'translated' copy per class halfway to that class's centre."""

    def imagine(prototypes, labels):
        vectors, targets = [prototypes], [labels]
        for c, centre in enumerate(centres):
            vectors.append((0.5 * prototypes + 0.5 * centre).astype(np.float32))
            targets.append(np.full(len(prototypes), c))
        return np.concatenate(vectors), np.concatenate(targets)

    return imagine


def seen(blocks, upto):
    return np.concatenate([b[0] for b in blocks[:upto]]), np.concatenate([b[1] for b in blocks[:upto]])


def test_class_incremental_learning_remembers_every_class_seen():
    blocks, _ = class_blocks(np.random.default_rng(0), 30)
    memory = GrowingDualMemory()
    for k, (X, y) in enumerate(blocks, start=1):
        memory.partial_fit(X, y)
        X_seen, y_seen = seen(blocks, k)
        assert (memory.predict(X_seen) == y_seen).mean() == 1.0
        assert (memory.predict_semantic(X_seen) == y_seen).mean() >= 0.9
    assert memory.classes_seen_.all() and memory.samples_seen_ == 180
    assert memory.semantic_.n_nodes_ < memory.episodic_.n_nodes_, "the semantic memory is the compact one"


def test_guessed_labels_are_learned_but_not_taught():
    blocks, _ = class_blocks(np.random.default_rng(2), 20)
    memory = GrowingDualMemory(taught_samples=50)
    memory.partial_fit(*blocks[0])
    guessed_X, guessed_y = blocks[1]
    memory.partial_fit(guessed_X, guessed_y, taught=False)
    assert (memory.predict(guessed_X) == guessed_y).mean() == 1.0, "the networks learn the guesses"
    assert np.flatnonzero(memory.classes_seen_).tolist() == [int(blocks[0][1][0])], "only the taught class counts"
    assert len(memory.taught_y_) == len(blocks[0][1]), "guesses are not kept as taught samples"
    assert memory.samples_seen_ == len(blocks[0][1]) + len(guessed_y)


def test_semantic_memory_is_queried_with_episodic_prototypes():
    blocks, _ = class_blocks(np.random.default_rng(1), 20)
    memory = GrowingDualMemory()
    for X, y in blocks[:3]:
        memory.partial_fit(X, y)
    X, _ = seen(blocks, 3)
    np.testing.assert_array_equal(memory.predict(X, memory="semantic"),
                                  memory.semantic_.predict(memory.episodic_.transform(X)))
    np.testing.assert_array_equal(memory.predict_proba(X, memory="semantic"),
                                  memory.semantic_.predict_proba(memory.transform(X)))
    np.testing.assert_array_equal(memory.novelty(X, memory="semantic"),
                                  memory.semantic_.novelty(memory.transform(X)))
    np.testing.assert_array_equal(memory.predict_episodic(X), memory.episodic_.predict(X))
    for name in ("episodic", "semantic"):
        probabilities, novelty = memory.predict_proba_and_novelty(X, memory=name)
        np.testing.assert_array_equal(probabilities, memory.predict_proba(X, memory=name))
        np.testing.assert_array_equal(novelty, memory.novelty(X, memory=name))
    with pytest.raises(ValueError, match="memory must be one of"):
        memory.predict(X, memory="working")


def test_novelty_is_high_for_an_unseen_expression_and_low_for_a_seen_one():
    blocks, _ = class_blocks(np.random.default_rng(2), 30)
    memory = GrowingDualMemory().partial_fit(*blocks[0])
    seen_novelty, unseen_novelty = memory.novelty(blocks[0][0]), memory.novelty(blocks[1][0])
    assert np.median(seen_novelty) < 1.0 < unseen_novelty.min()


@pytest.mark.parametrize(
    "policy, max_nodes, expected",
    [("first_class", None, [(25, 12), (25, 12)]), ("grow", None, [(25, 12), (50, 25)]),
     ("grow", 30, [(25, 12), (30, 15)]), ("fixed", 40, [(40, 20), (40, 20)])],
)
def test_capacity_policies(policy, max_nodes, expected):
    blocks, _ = class_blocks(np.random.default_rng(3), 25)
    memory = GrowingDualMemory(capacity=policy, max_nodes=max_nodes)
    for (X, y), capacities in zip(blocks[:2], expected):
        memory.partial_fit(X, y)
        assert (memory.episodic_.capacity_, memory.semantic_.capacity_) == capacities
        assert memory.episodic_.n_nodes_ <= capacities[0] and memory.semantic_.n_nodes_ <= max(2, capacities[1])


def test_first_class_capacity_forgets_where_growing_capacity_remembers():
    blocks, _ = class_blocks(np.random.default_rng(4), 20)
    blocks[0] = (blocks[0][0][:3], blocks[0][1][:3])
    scores = {}
    for policy in ("first_class", "grow"):
        memory = GrowingDualMemory(capacity=policy, global_ageing=policy == "first_class")
        for X, y in blocks:
            memory.partial_fit(X, y)
        X_all, y_all = seen(blocks, 6)
        scores[policy] = (memory.predict(X_all) == y_all).mean()
    assert scores["grow"] == 1.0 and scores["first_class"] < 0.6


def test_imagination_is_called_once_per_increment_and_teaches_unseen_classes():
    blocks, centres = class_blocks(np.random.default_rng(5), 20)
    calls = []
    imagine = shifted_imagination(centres)

    def recording(prototypes, labels):
        calls.append((prototypes.copy(), labels.copy()))
        return imagine(prototypes, labels)

    plain = GrowingDualMemory().partial_fit(*blocks[0])
    dreaming = GrowingDualMemory().partial_fit(*blocks[0], imagine=recording)
    assert len(calls) == 1
    prototypes, labels = calls[0]
    assert prototypes.shape == (20, 8) and prototypes.dtype == np.float32
    assert set(labels.tolist()) == {0}
    X_all, y_all = seen(blocks, 6)
    unseen = y_all > 0
    assert (plain.predict(X_all[unseen]) == y_all[unseen]).mean() == 0.0
    assert (dreaming.predict(X_all[unseen]) == y_all[unseen]).mean() > 0.5


def test_imagination_receives_the_episodic_prototypes_of_the_batch():
    blocks, centres = class_blocks(np.random.default_rng(6), 15)
    memory = GrowingDualMemory().partial_fit(*blocks[0])
    received = []

    def spy(prototypes, labels):
        received.append((prototypes, labels))
        return prototypes[:0], labels[:0]

    expected = memory.transform(blocks[1][0])
    before = memory.episodic_.n_nodes_
    memory.partial_fit(*blocks[1], imagine=spy)
    prototypes, labels = received[0]
    assert memory.episodic_.n_nodes_ > before
    assert prototypes.shape == expected.shape
    np.testing.assert_array_equal(labels, memory.episodic_.predict(prototypes))


def test_replay_changes_learning_and_keeps_memories_consistent():
    blocks, _ = class_blocks(np.random.default_rng(7), 15)
    plain, replaying = GrowingDualMemory(), GrowingDualMemory(replay=True)
    for X, y in blocks[:3]:
        plain.partial_fit(X, y)
        replaying.partial_fit(X, y)
    X_seen, y_seen = seen(blocks, 3)
    assert (replaying.predict(X_seen) == y_seen).mean() == 1.0
    assert not np.array_equal(plain.episodic_.habituation_, replaying.episodic_.habituation_), "replay ran"


@pytest.mark.parametrize(
    "X, y, imagine, message",
    [
        (np.zeros((3, 5), np.float32), [0, 0, 0], None, "features"),
        (np.full((3, 8), np.nan, np.float32), [0, 0, 0], None, "NaN"),
        (np.zeros((0, 8), np.float32), [], None, "empty"),
        (np.zeros((3, 8), np.float32), [0, 7, 0], None, "outside the known set"),
        (np.zeros((3, 8), np.float32), [0, 0, 0], "not callable", "callable"),
        (np.zeros((3, 8), np.float32), [0, 0, 0], lambda p, l: (p[:, :2], l), "imagined vectors"),
        (np.zeros((3, 8), np.float32), [0, 0, 0], lambda p, l: (p, l + 9), "imagined labels"),
        (np.zeros((3, 8), np.float32), [0, 0, 0], lambda p, l: p, "tuple"),
    ],
)
def test_bad_input_or_bad_imagination_leaves_the_memory_unchanged(X, y, imagine, message):
    blocks, _ = class_blocks(np.random.default_rng(8), 12)
    memory = GrowingDualMemory().partial_fit(*blocks[0])
    before = snapshot(memory)
    with pytest.raises(ValueError, match=message):
        memory.partial_fit(X, y, imagine=imagine)
    assert_same_state(before, snapshot(memory))


def test_unfitted_memory_and_bad_settings_are_reported():
    with pytest.raises(NotFittedError, match="partial_fit"):
        GrowingDualMemory().predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="capacity"):
        GrowingDualMemory(capacity="elastic").partial_fit(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="max_nodes"):
        GrowingDualMemory(capacity="fixed").partial_fit(np.eye(3), [0, 1, 2])


def test_a_single_labelled_sample_per_class_is_enough():
    blocks, _ = class_blocks(np.random.default_rng(9), 1)
    memory = GrowingDualMemory()
    for X, y in blocks:
        memory.partial_fit(X, y)
    X_all, y_all = seen(blocks, 6)
    assert (memory.predict(X_all) == y_all).all()


def test_save_load_round_trip_and_continued_learning(tmp_path):
    blocks, centres = class_blocks(np.random.default_rng(10), 15)
    memory = GrowingDualMemory(num_context=1, replay=True)
    for X, y in blocks[:2]:
        memory.partial_fit(X, y, imagine=shifted_imagination(centres))
    path = tmp_path / "person.npz"
    memory.save(path)
    loaded = GrowingDualMemory.load(path)
    assert loaded.get_params() == memory.get_params()
    X_all, _ = seen(blocks, 6)
    for which in ("episodic", "semantic"):
        np.testing.assert_array_equal(loaded.predict(X_all, memory=which), memory.predict(X_all, memory=which))
        np.testing.assert_array_equal(loaded.predict_proba(X_all, memory=which),
                                      memory.predict_proba(X_all, memory=which))
    memory.partial_fit(*blocks[2])
    loaded.partial_fit(*blocks[2])
    assert_same_state(snapshot(memory), snapshot(loaded))
    empty = tmp_path / "empty.npz"
    GrowingDualMemory(chunk_size=7).save(empty)
    assert GrowingDualMemory.load(empty).chunk_size == 7 and not GrowingDualMemory.load(empty).is_fitted
    memory.episodic_.save(tmp_path / "network.npz")
    with pytest.raises(StateFileError, match="expected 'clifer.gdm'"):
        GrowingDualMemory.load(tmp_path / "network.npz")


def test_taught_samples_keeps_the_newest_labelled_inputs_as_given(tmp_path):
    blocks, centres = class_blocks(np.random.default_rng(11), 4)
    memory = GrowingDualMemory(taught_samples=6)
    X0, y0 = blocks[0]
    unlabelled = np.full(len(y0), -1)
    memory.partial_fit(X0, unlabelled)
    assert len(memory.taught_y_) == 0, "unlabelled inputs are not taught"
    for X, y in blocks[:3]:
        memory.partial_fit(X, y, imagine=shifted_imagination(centres))
    X_taught, y_taught = seen(blocks, 3)
    np.testing.assert_array_equal(memory.taught_X_, X_taught[-6:])
    np.testing.assert_array_equal(memory.taught_y_, y_taught[-6:])
    assert len(GrowingDualMemory().partial_fit(X0, y0).taught_y_) == 0, "none kept by default (CLIFER's memory)"

    path = tmp_path / "person.npz"
    memory.save(path)
    loaded = GrowingDualMemory.load(path)
    np.testing.assert_array_equal(loaded.taught_X_, memory.taught_X_)
    np.testing.assert_array_equal(loaded.taught_y_, memory.taught_y_)


def test_a_version_1_memory_file_loads_with_no_taught_samples_and_a_bad_one_is_refused(tmp_path):
    from clifer_core.persistence import load_state, save_state

    blocks, _ = class_blocks(np.random.default_rng(12), 4)
    memory = GrowingDualMemory(taught_samples=5).partial_fit(*blocks[0])
    path = tmp_path / "person.npz"
    memory.save(path)
    manifest, arrays = load_state(path, GrowingDualMemory.STATE_KIND, (GrowingDualMemory.STATE_VERSION,))
    del manifest["hyperparameters"]["taught_samples"]
    old = {name: array for name, array in arrays.items() if not name.startswith("taught_")}
    save_state(tmp_path / "old.npz", GrowingDualMemory.STATE_KIND, 1, manifest, old)
    loaded = GrowingDualMemory.load(tmp_path / "old.npz")
    assert loaded.taught_samples == 0 and len(loaded.taught_y_) == 0
    np.testing.assert_array_equal(loaded.predict(blocks[0][0]), memory.predict(blocks[0][0]))

    manifest["hyperparameters"]["taught_samples"] = 2
    save_state(tmp_path / "bad.npz", GrowingDualMemory.STATE_KIND, 2, manifest, arrays)
    with pytest.raises(StateFileError, match="at most 2"):
        GrowingDualMemory.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="taught_samples must be >= 0"):
        GrowingDualMemory(taught_samples=-1).partial_fit(*blocks[0])
