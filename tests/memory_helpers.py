"""Builders shared by the memory tests: networks in a chosen state, synthetic streams, state snapshots."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from clifer_core.memory.gwr import EpisodicGammaGWR


def network_from(weights, edges=(), habituation=None, labels=None, ages=None, synapses=(),
                 **params) -> EpisodicGammaGWR:
    """A fitted network with exactly these prototypes, edges (i, j), habituation, labels and edge ages.

    Non-zero ages are set through the global clock, so they need ``global_ageing=True``.
    """
    weights = np.asarray(weights, np.float32)
    n, dim = weights.shape
    network = EpisodicGammaGWR(**params)
    if not network.global_ageing and ages is not None and any(ages):
        raise ValueError("non-zero ages need global_ageing=True in this helper")
    degree = int(network.max_degree)
    neighbours = np.full((n, degree), -1, np.int32)
    stamps = np.zeros((n, degree), np.int64)
    ages = list(ages) if ages is not None else [0] * len(edges)
    clock = max(ages, default=0)
    for (i, j), age in zip(edges, ages):
        for a, c in ((i, j), (j, i)):
            slot = int(np.flatnonzero(neighbours[a] < 0)[0])
            neighbours[a, slot] = c
            stamps[a, slot] = clock - age
    counts = np.zeros((n, int(network.n_classes)))
    for node, label in enumerate(labels if labels is not None else [-1] * n):
        if label >= 0:
            counts[node, label] = 1.0
    manifest = {
        "hyperparameters": network.get_params(), "n_nodes": n, "n_features": dim,
        "clock": clock if network.global_ageing else 0, "capacity": network.max_nodes,
    }
    arrays = {
        "weights": weights[None] if int(network.num_context) == 0 else np.concatenate(
            [weights[None], np.zeros((int(network.num_context), n, dim), np.float32)]),
        "habituation": np.ones(n) if habituation is None else np.asarray(habituation, np.float64),
        "label_counts": counts, "neighbours": neighbours, "edge_stamps": stamps,
        "bmu_counts": np.zeros(n, np.int64), "temporal_synapses": np.array(list(synapses), np.int64).reshape(-1, 3),
    }
    return EpisodicGammaGWR.from_state(manifest, arrays)


def clustered_stream(rng: np.random.Generator, n_samples: int, dim: int = 8, n_classes: int = 6, spread: float = 0.3,
                     scale: float = 1.5):
    """Samples around one centre per class, labels in ``0..n_classes-1``, in random order."""
    centres = rng.normal(0.0, scale, (n_classes, dim))
    labels = rng.integers(0, n_classes, n_samples)
    samples = centres[labels] + rng.normal(0.0, spread, (n_samples, dim))
    return samples.astype(np.float32), labels, centres


def class_blocks(rng: np.random.Generator, per_class: int, dim: int = 8, n_classes: int = 6):
    """One ``(X, y)`` block per class (class-incremental order) and the class centres."""
    centres = rng.normal(0.0, 1.5, (n_classes, dim))
    blocks = []
    for c in range(n_classes):
        X = (centres[c] + rng.normal(0.0, 0.3, (per_class, dim))).astype(np.float32)
        blocks.append((X, np.full(per_class, c)))
    return blocks, centres


def snapshot(network) -> dict:
    """Every learned array and scalar of a network or dual memory, for bit-identity checks."""
    if hasattr(network, "episodic_"):
        parts = {f"{m}.{k}": v for m in ("episodic", "semantic")
                 for k, v in snapshot(getattr(network, m + "_")).items()}
        capacities = (network.episodic_.capacity_, network.semantic_.capacity_)
        return parts | {"samples_seen": network.samples_seen_, "capacities": capacities}
    manifest, arrays = network.state()
    return {**{k: np.array(v, copy=True) for k, v in arrays.items()}, "manifest": manifest}


def assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], np.ndarray):
            assert before[key].dtype == after[key].dtype and np.array_equal(before[key], after[key]), key
        else:
            assert before[key] == after[key], key


network_settings = st.fixed_dictionaries({
    "num_context": st.integers(0, 2),
    "regulated": st.booleans(),
    "regulation": st.sampled_from(["V1", "V3"]),
    "global_ageing": st.booleans(),
    "bmu_activity_factor": st.booleans(),
    "max_degree": st.integers(2, 5),
    "max_age": st.integers(0, 30),
    "max_nodes": st.one_of(st.none(), st.integers(2, 20)),
    "activation_threshold": st.floats(0.05, 0.95),
    "habituation_threshold": st.floats(0.05, 0.95),
    "epochs": st.integers(1, 3),
    "n_classes": st.integers(1, 6),
})


@st.composite
def streams(draw):
    """Random network settings and 1-4 batches of small, often near-duplicate, partly unlabelled samples."""
    params = draw(network_settings)
    dim = draw(st.integers(1, 4))
    calls = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(calls):
        n = draw(st.integers(1, 25))
        scale = draw(st.sampled_from([0.01, 0.5, 3.0]))
        X = (rng.normal(0, scale, (n, dim)) + rng.integers(-2, 3, (n, 1))).astype(np.float32)
        y = rng.integers(-1, params["n_classes"], n)
        batches.append((X, y))
    return params, batches
