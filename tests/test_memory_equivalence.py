"""The fast memory and the dense, loop-based reference follow the same rules: same stream, same seed, same result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings

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


def _column(*values: float) -> np.ndarray:
    return np.array(values, np.float32).reshape(-1, 1)


# Streams on which the fast network once predicted -1 (an unlabelled neuron) where the reference found a
# labelled one (issue #17): V1 regulation grows near-duplicate prototypes that the float32 ||w||² - 2w·x
# of the batched prediction could not tell apart; the exact distance now decides, as in learning.
NEAR_DUPLICATES_OVER_THREE_BATCHES = (
    {
        "num_context": 0, "regulated": True, "regulation": "V1", "global_ageing": False,
        "bmu_activity_factor": False, "max_degree": 2, "max_age": 2, "max_nodes": None,
        "activation_threshold": 0.5, "habituation_threshold": 0.75, "epochs": 1, "n_classes": 1,
    },
    [
        (
            _column(-0.6196465492248535, -3.255702495574951, 5.076902866363525, 0.9050578474998474,
                    0.6977117657661438),
            np.array([0, 0, -1, -1, -1]),
        ),
        (
            _column(0.5123803615570068, 1.105502724647522, 1.7956308126449585),
            np.array([-1, 0, -1]),
        ),
        (
            _column(-1.9872825145721436, 1.9888688325881958, 1.0123138427734375, 2.0096757411956787,
                    1.9962550401687622, -0.010578337125480175, 1.9967595338821411, 0.9902146458625793,
                    2.0082249641418457, 2.000190019607544, -1.0127754211425781, -1.9961752891540527,
                    -0.006690974347293377, 2.0013034343719482, 0.9859362840652466, -1.0073593854904175,
                    2.0232646465301514, -0.9944431185722351, -2.0057213306427, 2.0116841793060303),
            np.array([0, 0, -1, 0, 0, 0, 0, 0, -1, 0, -1, 0, -1, 0, 0, -1, 0, -1, -1, -1]),
        ),
    ],
)
NEAR_DUPLICATES_IN_ONE_BATCH = (
    {
        "num_context": 0, "regulated": True, "regulation": "V1", "global_ageing": False,
        "bmu_activity_factor": False, "max_degree": 2, "max_age": 0, "max_nodes": None,
        "activation_threshold": 0.5, "habituation_threshold": 0.5, "epochs": 1, "n_classes": 1,
    },
    [
        (
            _column(0.9992110133171082, -2.004239559173584, -1.984290361404419, 0.9892658591270447,
                    1.0041885375976562, 1.0024584531784058, -2.0080747604370117, -0.9930549263954163,
                    0.0008989453199319541, 1.0006725788116455, 1.997709035873413, 1.0038526058197021,
                    0.010904669761657715, -1.998845100402832, -1.9899182319641113, -1.9922664165496826,
                    0.002271348377689719, -0.01157327275723219, 1.985083818435669, -1.0210888385772705,
                    -1.0065091848373413, 2.0097179412841797, -1.9984254837036133, -0.9937312602996826,
                    -0.017108233645558357),
            np.array([-1, 0, 0, 0, -1, 0, -1, -1, 0, 0, 0, 0, -1, -1, -1, -1, -1, 0, 0, -1, -1, -1, -1, 0, -1]),
        ),
    ],
)


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


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
@example(NEAR_DUPLICATES_OVER_THREE_BATCHES)
@example(NEAR_DUPLICATES_IN_ONE_BATCH)
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
