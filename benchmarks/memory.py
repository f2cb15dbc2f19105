"""Speed and memory of the Episodic Gamma-GWR against the dense, loop-based reference.

For N = 100, 1k, 5k, 20k neurons and D = 50, 128 it builds the same network
state in both implementations (random clustered prototypes, a random
bounded-degree graph, capacity full so N stays fixed), then measures the
median cost per training sample of ``partial_fit`` (one-epoch calls on
samples near the prototypes) and of a batch of 64 predictions, and the bytes
of learned state. The reference is skipped at 20k neurons, where its dense
N×N matrices would need about 8 GB (its memory is then computed, not
measured). Prints progress, writes a plot to ``out/benchmarks/memory.png``
and ends with one JSON line of headline figures.

Run: ``nice -n 10 .venv/bin/python benchmarks/memory.py``
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
    """A full network of ``n_nodes`` clustered prototypes with a random degree-6 graph."""
    network = EpisodicGammaGWR(max_nodes=n_nodes, epochs=1)
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
        "clock": 0, "capacity": n_nodes,
    }
    arrays = {
        "weights": weights[None].astype(np.float32), "habituation": rng.uniform(0.05, 1.0, n_nodes),
        "label_counts": labels, "neighbours": neighbours, "edge_stamps": np.zeros_like(neighbours, np.int64),
        "bmu_counts": np.zeros(n_nodes, np.int64), "temporal_synapses": np.zeros((0, 3), np.int64),
    }
    return EpisodicGammaGWR.from_state(manifest, arrays)


def stream_near(network, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Samples near random prototypes, with random labels (a mix of matches and mismatches)."""
    weights = network.weights_
    picks = rng.integers(0, len(weights), n_samples)
    X = weights[picks] + rng.normal(0.0, 0.2, (n_samples, weights.shape[1])).astype(np.float32)
    return X.astype(np.float32), rng.integers(0, network.n_classes, n_samples)


def per_sample_fit_seconds(network, X, y, calls: int) -> float:
    """Median over ``calls`` one-epoch partial_fit calls of the time per sample."""
    times = []
    size = len(X) // calls
    for c in range(calls):
        start = time.perf_counter()
        network.partial_fit(X[c * size : (c + 1) * size], y[c * size : (c + 1) * size], epochs=1)
        times.append((time.perf_counter() - start) / size)
    return statistics.median(times)


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
    parser.add_argument("--plot", type=Path, default=Path("out/benchmarks/memory.png"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    results = []
    for dim in args.dims:
        for n_nodes in args.sizes:
            fast = synthetic_network(n_nodes, dim, rng)
            row = {"N": n_nodes, "D": dim, "bytes_fast": state_bytes(fast)}
            X, y = stream_near(fast, 1_000, rng)
            batch = X[:64]
            if n_nodes <= REFERENCE_MAX_NODES:
                reference = ReferenceGammaGWR.from_network(fast)
                row["bytes_reference"] = state_bytes(reference)
                samples = max(6, min(60, 300_000 // n_nodes))
                row["fit_us_reference"] = 1e6 * per_sample_fit_seconds(reference, X[:samples], y[:samples], 3)
                row["predict64_ms_reference"] = 1e3 * 64 / 4 * predict_seconds(reference, batch[:4], 3)
            else:
                row["bytes_reference_estimated"] = reference_bytes_estimate(n_nodes, dim)
            row["fit_us_fast"] = 1e6 * per_sample_fit_seconds(fast, X, y, 10)
            row["predict64_ms_fast"] = 1e3 * predict_seconds(fast, batch, 200)
            if "fit_us_reference" in row:
                row["speedup_fit"] = row["fit_us_reference"] / row["fit_us_fast"]
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), file=sys.stderr)
    plot(results, args.plot)
    print(f"plot: {args.plot}", file=sys.stderr)

    def pick(n_nodes, dim, key):
        return next((round(r[key], 3) for r in results if r["N"] == n_nodes and r["D"] == dim and key in r), None)

    headline = {
        "speedup_partial_fit_5k": pick(5_000, 128, "speedup_fit"),
        "predict64_5k_ms": pick(5_000, 128, "predict64_ms_fast"),
        "speedup_partial_fit_5k_d50": pick(5_000, 50, "speedup_fit"),
        "predict64_5k_ms_d50": pick(5_000, 50, "predict64_ms_fast"),
        "fit_us_5k_fast": pick(5_000, 128, "fit_us_fast"),
        "fit_us_5k_reference": pick(5_000, 128, "fit_us_reference"),
        "fit_us_20k_fast": pick(20_000, 128, "fit_us_fast"),
        "predict64_20k_ms": pick(20_000, 128, "predict64_ms_fast"),
        "state_mb_20k_fast": pick(20_000, 128, "bytes_fast") and round(pick(20_000, 128, "bytes_fast") / 2**20, 1),
        "state_mb_20k_reference_estimated": pick(20_000, 128, "bytes_reference_estimated")
        and round(pick(20_000, 128, "bytes_reference_estimated") / 2**20, 1),
        "D_headline": 128,
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
