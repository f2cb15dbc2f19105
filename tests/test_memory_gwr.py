"""Episodic Gamma-GWR (docs/design.md §3): sanity checks, fixed defects, the API contract, bad input, persistence."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from clifer_core.memory import EpisodicGammaGWR, NotFittedError
from clifer_core.memory.gwr import habituate
from clifer_core.persistence import StateFileError
from memory_helpers import assert_same_state, clustered_stream, network_from, snapshot

D_INSERT_EM = -math.log(0.4)


# ---------------------------------------------------------------- sanity checks (docs/design.md §3.3)

def test_habituation_crosses_thresholds_after_two_and_five_firings():
    network = EpisodicGammaGWR(epochs=1)
    x = np.zeros((1, 3), np.float32)
    history = []
    for _ in range(6):
        network.partial_fit(x, [0])
        history.append(float(network.habituation_[0]))
    assert network.n_nodes_ == 1
    np.testing.assert_allclose(history[:5], [0.7, 0.4945, 0.3537325, 0.2573068, 0.1912551], atol=1e-6)
    assert history[0] >= 0.5 > history[1]
    assert history[3] >= 0.2 > history[4]
    fixed_point = 1 - 1 / 1.05
    h = 1.0
    for _ in range(500):
        h = habituate(h, 0.3, 1.05)
    assert h == pytest.approx(fixed_point, abs=1e-9)


def test_insertion_adds_one_neuron_and_two_edges_and_removes_the_bmu_second_edge():
    network = network_from([[0, 0], [0.5, 0], [3, 3]], edges=[(0, 1), (1, 2)], habituation=[0.3, 0.3, 0.3],
                           labels=[0, 0, 1])
    edges_before = {tuple(e) for e in network.edges_}
    x = np.array([[-1.5, 0.0]], np.float32)
    assert network.best_matching(x)[1][0] > D_INSERT_EM
    network.partial_fit(x, [2], epochs=1)
    assert network.n_nodes_ == 4
    edges_after = {tuple(e) for e in network.edges_}
    assert edges_after == (edges_before - {(0, 1)}) | {(0, 3), (1, 3)}
    np.testing.assert_allclose(network.weights_[3], [-0.75, 0.0])
    assert network.node_labels_[3] == 2 and network.habituation_[3] == 1.0
    np.testing.assert_array_equal(network.weights_[:3], [[0, 0], [0.5, 0], [3, 3]])


def test_no_insertion_when_the_bmu_is_not_habituated_or_the_memory_is_full():
    fresh = network_from([[0, 0], [0.5, 0]], edges=[(0, 1)], habituation=[1.0, 1.0], labels=[0, 0])
    fresh.partial_fit([[-1.5, 0.0]], [2], epochs=1)
    assert fresh.n_nodes_ == 2
    full = network_from([[0, 0], [0.5, 0]], edges=[(0, 1)], habituation=[0.3, 0.3], labels=[0, 0], max_nodes=2)
    full.partial_fit([[-1.5, 0.0]], [2], epochs=1)
    assert full.n_nodes_ == 2


def test_regulated_v3_memory_is_bit_identical_after_a_correctly_classified_sample():
    network = network_from([[0, 0], [1, 0], [0, 1]], edges=[(0, 1), (0, 2)], habituation=[0.5, 0.7, 0.9],
                           labels=[2, 3, 4], regulated=True, regulation="V3")
    before = snapshot(network)
    network.partial_fit([[0.1, 0.05]], [2], epochs=3)
    assert_same_state(before, snapshot(network))
    network.partial_fit([[0.1, 0.05]], [4], epochs=1)
    assert network.habituation_[0] < 0.5, "a misclassified sample is learned"


def test_regulated_v1_learns_correct_samples_and_inserts_only_on_a_mismatch():
    correct = network_from([[0, 0], [1, 0]], edges=[(0, 1)], habituation=[0.1, 0.1], labels=[2, 3],
                           regulated=True, regulation="V1")
    correct.partial_fit([[0.05, 0.0]], [2], epochs=1)
    assert correct.n_nodes_ == 2
    assert correct.habituation_[0] < 0.1 and correct.weights_[0, 0] > 0, "V1 adapts on a correct sample"
    assert correct.label_counts_[0, 2] == 2.0, "and reinforces its label"
    near_mismatch = network_from([[0, 0], [1, 0]], edges=[(0, 1)], habituation=[0.1, 0.1], labels=[2, 3],
                                 regulated=True, regulation="V1")
    near_mismatch.partial_fit([[0.05, 0.0]], [4], epochs=1)
    assert near_mismatch.n_nodes_ == 3, "V1 inserts on a mismatch even at high activation"
    v3 = network_from([[0, 0], [1, 0]], edges=[(0, 1)], habituation=[0.1, 0.1], labels=[2, 3], regulated=True)
    v3.partial_fit([[0.05, 0.0]], [4], epochs=1)
    assert v3.n_nodes_ == 2, "V3 also needs a < a_T"
    assert v3.label_counts_[0].tolist() == [0, 0, 1, 0, 0, 0], "V3 never updates histograms after insertion"


def test_rnat_equals_the_neurons_own_prototype_for_k0():
    X, y, _ = clustered_stream(np.random.default_rng(1), 60)
    network = EpisodicGammaGWR(epochs=2).partial_fit(X, y)
    vectors, labels, starts = network.rnats()
    np.testing.assert_array_equal(vectors, network.weights_)
    np.testing.assert_array_equal(labels, network.node_labels_)
    np.testing.assert_array_equal(starts, np.arange(network.n_nodes_))


def test_rnat_follows_the_strongest_temporal_synapses_when_k_positive():
    weights = [[0, 0], [1, 0], [2, 0], [3, 0]]
    network = network_from(weights, edges=[(0, 1), (1, 2), (2, 3)], labels=[0, 1, 2, 3], num_context=1,
                           synapses=[(0, 1, 5), (0, 3, 2), (1, 2, 3), (1, 0, 3), (3, 2, 1)])
    vectors, labels, starts = network.rnats()
    trajectories = [labels[a:b].tolist() for a, b in zip(starts, list(starts[1:]) + [len(labels)])]
    assert trajectories == [[0, 1, 0], [1, 0, 1], [2], [3, 2]]
    np.testing.assert_array_equal(vectors[:3], np.array(weights, np.float32)[[0, 1, 0]])


def test_temporal_synapses_record_consecutive_bmus_and_context_descriptors_learn():
    rng = np.random.default_rng(3)
    anchors = rng.normal(0, 2, (3, 4)).astype(np.float32)
    sequence = np.concatenate([anchors + rng.normal(0, 0.05, anchors.shape).astype(np.float32) for _ in range(20)])
    network = EpisodicGammaGWR(num_context=2, epochs=1).partial_fit(sequence, np.tile([0, 1, 2], 20))
    synapses = network.temporal_synapses_
    assert synapses.shape[0] > 0 and synapses[:, 2].sum() > 0
    assert np.abs(network.contexts_).sum() > 0, "context descriptors move towards the global context"
    vectors, labels, starts = network.rnats()
    lengths = np.diff(np.append(starts, len(labels)))
    assert lengths.max() == 5 and lengths.min() >= 1
    steps = np.concatenate([np.diff(labels[a:a + length]) % 3 for a, length in zip(starts, lengths)])
    assert np.mean(steps == 1) > 0.8, "trajectories replay the learned order 0→1→2"


# ------------------------------------------------------------------ fixed defects

def test_initial_neurons_are_distinct_unlooped_and_labelled_with_the_true_labels():
    network = EpisodicGammaGWR(epochs=1).partial_fit([[0, 0], [4, 4]], [3, 5])
    assert network.n_nodes_ == 2
    assert not np.allclose(network.weights_[0], network.weights_[1])
    assert network.edges_.tolist() == [[0, 1]]
    assert network.node_labels_.tolist() == [3, 5]


def test_global_ageing_ages_every_edge_and_local_ageing_only_the_bmus():
    weights = [[0, 0], [0.2, 0], [10, 10], [10.2, 10]]
    for global_ageing, survivors in ((True, 2), (False, 4)):
        network = network_from(weights, edges=[(0, 1), (2, 3)], labels=[0, 0, 1, 1], max_age=5,
                               global_ageing=global_ageing)
        network.partial_fit(np.zeros((8, 2), np.float32), np.zeros(8, int), epochs=1)
        assert network.n_nodes_ == survivors
    weights = [[0, 0], [0.2, 0], [-5, 0], [10, 10], [10.2, 10]]
    expected = {True: {(0, 1): 0, (0, 2): 3, (3, 4): 3}, False: {(0, 1): 0, (0, 2): 3, (3, 4): 0}}
    for global_ageing, ages in expected.items():
        network = network_from(weights, edges=[(0, 1), (0, 2), (3, 4)], labels=[0, 0, 0, 1, 1], max_age=100,
                               global_ageing=global_ageing)
        network.partial_fit(np.zeros((3, 2), np.float32), np.zeros(3, int), epochs=1)
        assert dict(zip(map(tuple, network.edges_.tolist()), network.edge_ages_.tolist())) == ages


def test_bmu_update_with_and_without_the_one_minus_activation_factor():
    x = np.array([[0.5, 0.0]], np.float32)
    for flag in (True, False):
        network = network_from([[0, 0], [5, 5]], edges=[(0, 1)], labels=[0, 1], bmu_activity_factor=flag)
        network.partial_fit(x, [0], epochs=1)
        h = 0.7
        step = 0.2 * h * ((1 - math.exp(-0.5)) if flag else 1.0) * 0.5
        assert network.weights_[0, 0] == pytest.approx(step, rel=1e-5)


def test_a_full_neuron_replaces_its_oldest_edge():
    weights = [[0, 0], [3, 0], [0, 3], [0.3, 0]]
    network = network_from(weights, edges=[(0, 1), (0, 2), (1, 3)], ages=[7, 2, 0], labels=[0] * 4, max_degree=2,
                           global_ageing=True)
    network.partial_fit([[0.1, 0.0]], [0], epochs=1)
    neighbours_of_0 = {int(j) for i, j in network.edges_ if i == 0} | {int(i) for i, j in network.edges_ if j == 0}
    assert neighbours_of_0 == {2, 3}
    assert (np.bincount(network.edges_.ravel(), minlength=network.n_nodes_) <= 2).all()


def test_capacity_is_explicit_and_respected():
    X, y, _ = clustered_stream(np.random.default_rng(2), 200, dim=6, spread=1.0)
    network = EpisodicGammaGWR(max_nodes=12, epochs=2).partial_fit(X, y)
    assert network.n_nodes_ <= 12 and network.capacity_ == 12
    network.set_capacity(40)
    network.partial_fit(X, y)
    assert 12 < network.n_nodes_ <= 40
    with pytest.raises(ValueError, match="capacity"):
        network.set_capacity(1)


# ----------------------------------------------------------------- API contract

def test_estimator_contract_and_outputs():
    X, y, centres = clustered_stream(np.random.default_rng(4), 120)
    network = EpisodicGammaGWR(epochs=3, max_degree=8)
    assert network.get_params()["max_degree"] == 8 and not network.is_fitted
    with pytest.raises(NotFittedError):
        network.predict(X)
    assert network.partial_fit(X, y) is network
    assert network.n_features_in_ == 8
    assert (network.predict(X) == y).mean() > 0.95
    probabilities = network.predict_proba(X)
    assert probabilities.shape == (120, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), network.predict(X))
    prototypes = network.transform(X)
    assert prototypes.dtype == np.float32 and prototypes.shape == X.shape
    best, distances = network.best_matching(X)
    np.testing.assert_allclose(distances, np.linalg.norm(X - network.weights_[best], axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(network.novelty(X), distances / D_INSERT_EM)
    far = centres[:1] + 50.0
    assert network.novelty(far.astype(np.float32))[0] > 1.0 > network.novelty(network.weights_[:1])[0]
    refit = EpisodicGammaGWR(epochs=3, max_degree=8).fit(X[:10], y[:10])
    assert refit.fit(X, y).n_nodes_ == network.n_nodes_, "fit forgets the previous state"


def test_prediction_picks_the_exact_nearest_of_prototypes_closer_than_float32_rounding():
    """||w||² - 2w·x in float32 cannot separate these two; the exact distance must decide (issue #17)."""
    network = network_from([[2.010958], [2.011321], [-3.0]], edges=[(0, 1), (1, 2)], labels=[-1, 0, 0], n_classes=1)
    x = np.array([[2.0116842]], np.float32)
    best, distance = network.best_matching(x)
    assert best.tolist() == [1]
    np.testing.assert_allclose(distance, np.abs(x[0] - network.weights_[1]), rtol=1e-6)
    assert network.predict(x).tolist() == [0]


def test_unlabelled_samples_learn_without_labels():
    network = EpisodicGammaGWR(epochs=1).partial_fit([[0, 0], [5, 5]])
    assert network.node_labels_.tolist() == [-1, -1]
    np.testing.assert_allclose(network.predict_proba([[0, 0]]), [[1 / 6] * 6])
    assert network.predict([[0, 0]]).tolist() == [-1]


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.zeros((2, 3)), [0, 1], "features"),
        (np.array([[0, np.nan, 0, 0]]), [0], "NaN"),
        (np.array([[0, np.inf, 0, 0]]), [0], "NaN or infinite"),
        (np.zeros((0, 4)), [], "empty"),
        (np.zeros(4), [0], "2-D"),
        (np.zeros((2, 4)), [0, 6], "outside the known set"),
        (np.zeros((2, 4)), [0, -2], "outside the known set"),
        (np.zeros((2, 4)), [0], "shape"),
        (np.zeros((2, 4)), [0.5, 1], "integer"),
        ([["a", "b", "c", "d"]], [0], "numbers"),
    ],
)
def test_bad_input_raises_a_clear_error_and_changes_nothing(X, y, message):
    network = EpisodicGammaGWR(epochs=1).partial_fit(np.eye(4, dtype=np.float32), [0, 1, 2, 3])
    before = snapshot(network)
    with pytest.raises(ValueError, match=message):
        network.partial_fit(X, y)
    assert_same_state(before, snapshot(network))


def test_bad_hyperparameters_are_reported_at_fit():
    with pytest.raises(ValueError, match="regulation"):
        EpisodicGammaGWR(regulation="V2").partial_fit(np.eye(2))
    with pytest.raises(ValueError, match="activation_threshold"):
        EpisodicGammaGWR(activation_threshold=1.5).partial_fit(np.eye(2))


# ------------------------------------------------------------------ persistence

def test_save_load_round_trip_predicts_and_learns_identically(tmp_path):
    X, y, _ = clustered_stream(np.random.default_rng(5), 150)
    network = EpisodicGammaGWR(num_context=1, epochs=2).partial_fit(X[:100], y[:100])
    path = tmp_path / "em.npz"
    network.save(path)
    loaded = EpisodicGammaGWR.load(path)
    assert loaded.get_params() == network.get_params()
    np.testing.assert_array_equal(loaded.predict(X), network.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), network.predict_proba(X))
    np.testing.assert_array_equal(loaded.novelty(X), network.novelty(X))
    network.partial_fit(X[100:], y[100:])
    loaded.partial_fit(X[100:], y[100:])
    assert_same_state(snapshot(network), snapshot(loaded))


def test_corrupt_or_wrong_files_raise_and_a_failed_save_keeps_the_last_good_file(tmp_path, monkeypatch):
    X, y, _ = clustered_stream(np.random.default_rng(6), 40)
    network = EpisodicGammaGWR(epochs=1).partial_fit(X, y)
    path = tmp_path / "em.npz"
    network.save(path)
    good = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(StateFileError, match="corrupt or truncated"):
        EpisodicGammaGWR.load(truncated)
    with pytest.raises(StateFileError, match="no such"):
        EpisodicGammaGWR.load(tmp_path / "missing.npz")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        network.partial_fit(X, y).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em.npz", "truncated.npz"], "no temporary file left"
    assert EpisodicGammaGWR.load(path).n_nodes_ > 0


def test_inconsistent_arrays_are_rejected(tmp_path):
    from clifer_core.persistence import save_state

    network = EpisodicGammaGWR(epochs=1).partial_fit(np.eye(3, dtype=np.float32), [0, 1, 2])
    manifest, arrays = network.state()
    arrays["neighbours"] = arrays["neighbours"] + 50
    save_state(tmp_path / "bad.npz", EpisodicGammaGWR.STATE_KIND, 1, manifest, arrays)
    with pytest.raises(StateFileError, match="out of range"):
        EpisodicGammaGWR.load(tmp_path / "bad.npz")


def test_blas_thread_limit_is_restored_after_concurrent_use():
    import threading

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    original = blas_threads()
    X, y, _ = clustered_stream(np.random.default_rng(7), 200)

    def learn_and_predict():
        network = EpisodicGammaGWR(epochs=2).partial_fit(X, y)
        for _ in range(20):
            network.predict(X)

    workers = [threading.Thread(target=learn_and_predict) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert blas_threads() == original
