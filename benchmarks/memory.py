"""Speed and memory of the Episodic Gamma-GWR against the dense, loop-based reference, like for like.

For N = 100, 1k, 5k, 20k neurons and D = 50, 128 it builds the same network
state in both implementations (random clustered prototypes, a random
bounded-degree graph) with room to grow to 2N neurons, then feeds both the
very same training calls: ``--calls`` one-epoch ``partial_fit`` calls of the
same B samples each (B = 32 up to 1k neurons, fewer above, identical on both
sides), half of them near existing prototypes (updates) and half from new
clusters (so neurons are inserted: growth is timed too), and the same batch
of 64 predictions. The reference is skipped above 5k neurons, where its dense
N×N matrices would need gigabytes (its memory is then computed, not measured).
Prints one line per (N, D), writes a plot to ``out/benchmarks/memory.png`` and
ends with one JSON line. Its keys, all at the headline D (the last ``--dims``):

* ``N_compared``: the largest N at which both implementations ran.
* ``fit_us_fast`` / ``fit_us_reference``: median over the calls of the call's
  wall time divided by its B samples, in µs, at ``N_compared``.
* ``speedup_partial_fit``: ``fit_us_reference / fit_us_fast``.
* ``nodes_added_fast`` / ``nodes_added_reference``: net change in neurons
  over those calls: insertions minus the neurons left without edges that each
  call prunes (equal when the two implementations agree).
* ``predict64_ms_fast`` / ``predict64_ms_reference``: median wall time of one
  ``predict`` on the same 64 samples, in ms, at ``N_compared``.
* ``speedup_predict64``: ``predict64_ms_reference / predict64_ms_fast``.
* ``N_largest``, ``fit_us_largest_fast``, ``predict64_ms_largest_fast``: the
  same fast-side figures at the largest N measured.
* ``state_mb_largest_fast``: bytes of the fast network's learned state at
  ``N_largest`` after the calls, in MiB; ``state_mb_largest_reference``: the
  reference's, measured when it ran at that N, else computed from its layout.
* ``D_headline``: the D of these figures.

Run: ``nice -n 10 .venv/bin/python benchmarks/memory.py`` (short: ``--sizes 100 1000 --dims 128``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from clifer_core.memory.gwr import EpisodicGammaGWR
from clifer_core.memory.reference import ReferenceGammaGWR

SIZES = (100, 1_000, 5_000, 20_000)
DIMENSIONS = (50, 128)
REFERENCE_MAX_NODES = 5_000
DEGREE = 6


def synthetic_network(n_nodes: int, n_features: int, rng: np.random.Generator) -> EpisodicGammaGWR:
    """``n_nodes`` clustered prototypes with a random degree-6 graph and room to grow to twice as many."""
    network = EpisodicGammaGWR(max_nodes=2 * n_nodes, epochs=1)
    centres = rng.normal(0.0, 1.0, (32, n_features))
    weights = centres[rng.integers(0, 32, n_nodes)] + rng.normal(0.0, 0.3, (n_nodes, n_features))
    neighbours = np.full((n_nodes, network.max_degree), -1, np.int32)
    degree = np.zeros(n_nodes, int)
    for i in range(n_nodes):
        for j in rng.choice(n_nodes, DEGREE // 2, replace=False):
            if j != i and degree[i] < DEGREE and degree[j] < DEGREE and j not in neighbours[i]:
                neighbours[i, degree[i]], neighbours[j, degree[j]] = j, i
                degree[i] += 1
                degree[j] += 1
    labels = np.zeros((n_nodes, network.n_classes))
    labels[np.arange(n_nodes), rng.integers(0, network.n_classes, n_nodes)] = 1.0
    manifest = {
        "hyperparameters": network.get_params(), "n_nodes": n_nodes, "n_features": n_features,
        "clock": 0, "capacity": 2 * n_nodes,
    }
    arrays = {
        "weights": weights[None].astype(np.float32), "habituation": rng.uniform(0.05, 1.0, n_nodes),
        "label_counts": labels, "neighbours": neighbours, "edge_stamps": np.zeros_like(neighbours, np.int64),
        "bmu_counts": np.zeros(n_nodes, np.int64), "temporal_synapses": np.zeros((0, 3), np.int64),
    }
    return EpisodicGammaGWR.from_state(manifest, arrays)


def training_stream(network, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random labels on samples alternately near a random prototype (an update) and from a new cluster (an insertion)."""
    weights = network.weights_
    near = weights[rng.integers(0, len(weights), n_samples)] + rng.normal(0.0, 0.2, (n_samples, weights.shape[1]))
    novel = rng.normal(0.0, 1.0, (n_samples, weights.shape[1])) * 4.0
    X = np.where((np.arange(n_samples) % 2 == 0)[:, None], near, novel)
    return X.astype(np.float32), rng.integers(0, network.n_classes, n_samples)


def batch_size(n_nodes: int) -> int:
    """Samples per partial_fit call, the same for both implementations (fewer for big networks: the reference is slow)."""
    return max(4, min(32, 100_000 // n_nodes))


def fit_calls(network, X, y, calls: int, size: int) -> tuple[float, int]:
    """Median over ``calls`` one-epoch partial_fit calls of ``size`` samples of the time per sample; net neurons added."""
    times = []
    before = network.n_nodes_
    for c in range(calls):
        start = time.perf_counter()
        network.partial_fit(X[c * size : (c + 1) * size], y[c * size : (c + 1) * size], epochs=1)
        times.append((time.perf_counter() - start) / size)
    return statistics.median(times), network.n_nodes_ - before


def predict_seconds(network, X, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        network.predict(X)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def state_bytes(network) -> int:
    if isinstance(network, ReferenceGammaGWR):
        return sum(a.nbytes for a in (network.weights, network.habituation, network.histograms,
                                      network.edges, network.ages, network.synapses))
    return sum(a.nbytes for a in (network._weights, network._sq_norms, network._habituation, network._histograms,
                                  network._neighbours, network._stamps, network._fires))


def reference_bytes_estimate(n_nodes: int, n_features: int, n_classes: int = 6) -> int:
    """Dense reference state: float32 weights, float64 habituation/histograms, int32 edges, int64 ages/synapses."""
    return n_nodes * (4 * n_features + 8 + 8 * n_classes) + n_nodes * n_nodes * (4 + 8 + 8)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for dim in DIMENSIONS:
        rows = [r for r in results if r["D"] == dim]
        left.plot([r["N"] for r in rows], [r["fit_us_fast"] for r in rows], "o-", label=f"fast D={dim}")
        ref = [r for r in rows if r.get("fit_us_reference")]
        left.plot([r["N"] for r in ref], [r["fit_us_reference"] for r in ref], "s--", label=f"reference D={dim}")
        right.plot([r["N"] for r in rows], [r["predict64_ms_fast"] for r in rows], "o-", label=f"fast D={dim}")
    left.set(xscale="log", yscale="log", xlabel="neurons N", ylabel="µs per training sample", title="partial_fit")
    right.set(xscale="log", yscale="log", xlabel="neurons N", ylabel="ms per batch of 64", title="predict")
    right.axhline(1.0, color="grey", linestyle=":", label="1 ms goal")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMENSIONS))
    parser.add_argument("--calls", type=int, default=5, help="partial_fit calls timed per side")
    parser.add_argument("--plot", type=Path, default=Path("out/benchmarks/memory.png"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    results = []
    for dim in args.dims:
        for n_nodes in args.sizes:
            fast = synthetic_network(n_nodes, dim, rng)
            size = batch_size(n_nodes)
            X, y = training_stream(fast, size * args.calls, rng)
            batch = training_stream(fast, 64, rng)[0]
            row = {"N": n_nodes, "D": dim, "B": size}
            if n_nodes <= REFERENCE_MAX_NODES:
                reference = ReferenceGammaGWR.from_network(fast)
                seconds, row["nodes_added_reference"] = fit_calls(reference, X, y, args.calls, size)
                row["fit_us_reference"] = 1e6 * seconds
                row["predict64_ms_reference"] = 1e3 * predict_seconds(reference, batch, 3)
                row["bytes_reference"] = state_bytes(reference)
            else:
                row["bytes_reference_estimated"] = reference_bytes_estimate(n_nodes, dim)
            seconds, row["nodes_added_fast"] = fit_calls(fast, X, y, args.calls, size)
            row["fit_us_fast"] = 1e6 * seconds
            row["predict64_ms_fast"] = 1e3 * predict_seconds(fast, batch, 50)
            row["bytes_fast"] = state_bytes(fast)
            if "fit_us_reference" in row:
                row["speedup_fit"] = row["fit_us_reference"] / row["fit_us_fast"]
                row["speedup_predict"] = row["predict64_ms_reference"] / row["predict64_ms_fast"]
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), file=sys.stderr)
    plot(results, args.plot)
    print(f"plot: {args.plot}", file=sys.stderr)

    dim = args.dims[-1]
    rows = [r for r in results if r["D"] == dim]
    compared = max((r for r in rows if "fit_us_reference" in r), key=lambda r: r["N"], default={})
    largest = max(rows, key=lambda r: r["N"])
    mib = lambda value: value and round(value / 2**20, 1)  # noqa: E731
    rounded = lambda row, key: round(row[key], 3) if key in row else None  # noqa: E731
    headline = {
        "N_compared": compared.get("N"),
        "fit_us_fast": rounded(compared, "fit_us_fast"),
        "fit_us_reference": rounded(compared, "fit_us_reference"),
        "speedup_partial_fit": rounded(compared, "speedup_fit"),
        "nodes_added_fast": compared.get("nodes_added_fast"),
        "nodes_added_reference": compared.get("nodes_added_reference"),
        "predict64_ms_fast": rounded(compared, "predict64_ms_fast"),
        "predict64_ms_reference": rounded(compared, "predict64_ms_reference"),
        "speedup_predict64": rounded(compared, "speedup_predict"),
        "N_largest": largest["N"],
        "fit_us_largest_fast": rounded(largest, "fit_us_fast"),
        "predict64_ms_largest_fast": rounded(largest, "predict64_ms_fast"),
        "state_mb_largest_fast": mib(largest["bytes_fast"]),
        "state_mb_largest_reference": mib(largest.get("bytes_reference") or largest.get("bytes_reference_estimated")),
        "D_headline": dim,
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
