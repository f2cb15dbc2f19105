"""The fast memory and the dense, loop-based reference follow the same rules: same stream, same seed, same result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from clifer_core.memory import EpisodicGammaGWR, GrowingDualMemory
from clifer_core.memory.reference import ReferenceGammaGWR
from memory_helpers import class_blocks, clustered_stream, streams

FLAG_SETS = [
    {},
    {"global_ageing": True, "max_age": 30},
    {"num_context": 2},
    {"regulated": True, "activation_threshold": 0.2, "habituation_threshold": 0.2, "epsilon_b": 0.02},
    {"regulated": True, "regulation": "V1"},
    {"bmu_activity_factor": False, "max_degree": 3, "max_age": 15},
    {"max_nodes": 25, "global_ageing": True, "max_age": 40},
]


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "defaults")
def test_network_matches_the_reference_on_a_stream(flags):
    X, y, _ = clustered_stream(np.random.default_rng(11), 160, dim=6, spread=0.6)
    y = np.where(np.arange(160) % 7 == 3, -1, y)
    fast, reference = EpisodicGammaGWR(epochs=2, **flags), ReferenceGammaGWR(epochs=2, **flags)
    for start in range(0, 160, 40):
        fast.partial_fit(X[start:start + 40], y[start:start + 40])
        reference.partial_fit(X[start:start + 40], y[start:start + 40])
        assert fast.n_nodes_ == reference.n_nodes_
        np.testing.assert_array_equal(fast.predict(X), reference.predict(X))
    np.testing.assert_allclose(fast.weights_, reference.weights_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.habituation_, reference.habituation, rtol=1e-12)
    np.testing.assert_array_equal(fast.label_counts_, reference.histograms)
    dense = np.zeros((fast.n_nodes_, fast.n_nodes_), np.int32)
    dense[tuple(fast.edges_.T)] = 1
    np.testing.assert_array_equal(dense + dense.T, reference.edges)
    np.testing.assert_allclose(fast.novelty(X), reference.novelty(X), rtol=1e-12)
    for ours, theirs in zip(fast.rnats(), reference.rnats()):
        np.testing.assert_array_equal(ours, theirs)


def test_reference_copy_of_a_fast_network_continues_identically():
    X, y, _ = clustered_stream(np.random.default_rng(12), 120, dim=5)
    fast = EpisodicGammaGWR(epochs=1, global_ageing=True).partial_fit(X[:60], y[:60])
    reference = ReferenceGammaGWR.from_network(fast)
    fast.partial_fit(X[60:], y[60:])
    reference.partial_fit(X[60:], y[60:])
    np.testing.assert_array_equal(fast.predict(X), reference.predict(X))
    np.testing.assert_allclose(fast.weights_, reference.weights_, atol=1e-6)


@pytest.mark.parametrize("replay, imagine", [(False, False), (True, False), (False, True)])
def test_dual_memory_matches_the_reference_networks(replay, imagine):
    blocks, centres = class_blocks(np.random.default_rng(13), 12, dim=6)

    def imagination(prototypes, labels):
        halfway = [(0.5 * prototypes + 0.5 * c).astype(np.float32) for c in centres]
        targets = [labels] + [np.full(len(labels), c) for c in range(6)]
        return np.concatenate([prototypes, *halfway]), np.concatenate(targets)

    fast = GrowingDualMemory(replay=replay, capacity="first_class")
    reference = GrowingDualMemory(replay=replay, capacity="first_class")
    reference.network_class = ReferenceGammaGWR
    X_all = np.concatenate([b[0] for b in blocks])
    for X, y in blocks[:3]:
        fast.partial_fit(X, y, imagine=imagination if imagine else None)
        reference.partial_fit(X, y, imagine=imagination if imagine else None)
        for memory in ("episodic", "semantic"):
            np.testing.assert_array_equal(fast.predict(X_all, memory=memory), reference.predict(X_all, memory=memory))
        assert fast.semantic_.n_nodes_ == reference.semantic_.n_nodes_
        assert fast.episodic_.n_nodes_ == reference.episodic_.n_nodes_


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_network_matches_the_reference_for_random_settings_and_streams(stream):
    params, batches = stream
    fast, reference = EpisodicGammaGWR(**params), ReferenceGammaGWR(**params)
    for X, y in batches:
        fast.partial_fit(X, y)
        reference.partial_fit(X, y)
        assert fast.n_nodes_ == reference.n_nodes_
        np.testing.assert_allclose(fast.weights_, reference.weights_, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(fast.label_counts_, reference.histograms)
        np.testing.assert_array_equal(fast.predict(X), reference.predict(X))
