"""Invariants of the Episodic Gamma-GWR over random streams and settings (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clifer_core.memory import EpisodicGammaGWR, GrowingDualMemory
from memory_helpers import streams

def check_invariants(network: EpisodicGammaGWR) -> None:
    n = network.n_nodes_
    assert np.isfinite(network.weights_).all() and np.isfinite(network.contexts_).all()
    assert ((network.habituation_ > 0) & (network.habituation_ <= 1)).all()
    assert (network.label_counts_ >= 0).all()
    labels = network.node_labels_
    assert ((labels >= -1) & (labels < network.n_classes)).all()
    neighbours = network._neighbours[:n]
    for i in range(n):
        row = neighbours[i][neighbours[i] >= 0]
        assert len(set(row.tolist())) == len(row), "no duplicate edges"
        assert i not in row, "no self-loops"
        for j in row:
            assert i in neighbours[j], "edges are symmetric"
    assert ((neighbours >= 0).sum(axis=1) <= network.max_degree).all()
    assert (network.edge_ages_ >= 0).all()
    if network.capacity_ is not None:
        assert n <= max(2, network.capacity_)
    synapses = network.temporal_synapses_
    assert ((synapses[:, :2] >= 0) & (synapses[:, :2] < n)).all() and (synapses[:, 2] > 0).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_network_invariants_hold_over_random_streams(stream):
    params, batches = stream
    network = EpisodicGammaGWR(**params)
    for X, y in batches:
        network.partial_fit(X, y)
        check_invariants(network)
        vectors, labels, starts = network.rnats()
        longest = 2 * params["num_context"] + 1
        assert len(starts) == network.n_nodes_ and len(vectors) == len(labels) <= network.n_nodes_ * longest
        assert network.predict(X).shape == (len(X),)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.booleans(), st.sampled_from(["first_class", "grow"]))
def test_dual_memory_invariants_hold_over_random_increments(stream, replay, capacity):
    params, batches = stream
    memory = GrowingDualMemory(n_classes=params["n_classes"], num_context=params["num_context"], replay=replay,
                               capacity=capacity, epochs=params["epochs"], chunk_size=4,
                               global_ageing=params["global_ageing"], max_degree=params["max_degree"])
    for X, y in batches:
        memory.partial_fit(X, y)
        check_invariants(memory.episodic_)
        check_invariants(memory.semantic_)
        probabilities = memory.predict_proba(X, memory="semantic")
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
