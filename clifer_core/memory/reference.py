"""Slow reference Episodic Gamma-GWR, written the way the original code is.

The same rules as :class:`clifer_core.memory.gwr.EpisodicGammaGWR` (fixes,
flags and the bounded degree included), implemented plainly: a Python loop
over neurons for the best-matching-unit search, dense N×N edge, age and
temporal-synapse matrices, every age incremented on every step in global
mode, and arrays re-allocated on each insertion or deletion. It exists only
as the baseline of ``benchmarks/memory.py`` and as the oracle of the
equivalence tests; nothing else should import it.
"""

from __future__ import annotations

import math

import numpy as np

from clifer_core.memory.gwr import (
    UNLABELLED,
    EpisodicGammaGWR,
    NotFittedError,
    ParamsMixin,
    check_labels,
    check_samples,
    check_sequences,
    context_weights,
    habituate,
)


class ReferenceGammaGWR(ParamsMixin):
    """Dense, loop-based twin of :class:`EpisodicGammaGWR` (same hyperparameters)."""

    __init__ = EpisodicGammaGWR.__init__
    _check_params = EpisodicGammaGWR._check_params

    @classmethod
    def _param_names(cls) -> list[str]:
        return EpisodicGammaGWR._param_names()

    @classmethod
    def from_network(cls, network: EpisodicGammaGWR) -> "ReferenceGammaGWR":
        """A dense copy of a fast network's current state (benchmark set-up)."""
        twin = cls(**network.get_params())
        n = network.n_nodes_
        twin.n_features_in_ = network.n_features_in_
        twin.alphas = context_weights(int(twin.num_context))
        twin.weights = np.transpose(network._weights[:, :n], (1, 0, 2)).copy()
        twin.habituation = network.habituation_.copy()
        twin.histograms = network.label_counts_.copy()
        twin.edges = np.zeros((n, n), np.int32)
        twin.ages = np.zeros((n, n), np.int64)
        for (i, j), age in zip(network.edges_, network.edge_ages_):
            twin.edges[i, j] = twin.edges[j, i] = 1
            twin.ages[i, j] = twin.ages[j, i] = age
        twin.synapses = np.zeros((n, n), np.int64)
        for a, b, count in network.temporal_synapses_:
            twin.synapses[a, b] = count
        twin.capacity_ = network.capacity_
        return twin

    @property
    def n_nodes_(self) -> int:
        return len(self.weights) if hasattr(self, "weights") else 0

    @property
    def is_fitted(self) -> bool:
        return self.n_nodes_ > 0

    @property
    def weights_(self) -> np.ndarray:
        return self.weights[:, 0]

    @property
    def node_labels_(self) -> np.ndarray:
        return np.array([self._node_label(j) for j in range(self.n_nodes_)], np.int64)

    def set_capacity(self, max_nodes) -> None:
        self.capacity_ = None if max_nodes is None else int(max_nodes)

    def partial_fit(self, X, y=None, *, epochs=None, context=True, sequences=None):
        self._check_params()
        X = check_samples(X, getattr(self, "n_features_in_", None))
        labels = check_labels(y, len(X), int(self.n_classes))
        starts = check_sequences(sequences, len(X))
        if self.n_nodes_ == 0:
            self._initialise(X, labels)
        for _ in range(int(self.epochs if epochs is None else epochs)):
            previous = -1
            for t in range(len(X)):
                if starts[t]:
                    previous = -1
                previous = self._learn_one(X[t], int(labels[t]), previous, context)
            old = (self.edges == 1) & (self.ages > int(self.max_age))
            self.edges[old] = 0
        self._remove_isolated()
        return self

    def _initialise(self, X, labels) -> None:
        depth = int(self.num_context) + 1
        self.n_features_in_ = X.shape[1]
        self.alphas = context_weights(int(self.num_context))
        first = min(2, len(X))
        self.weights = np.zeros((first, depth, X.shape[1]), np.float32)
        self.weights[:, 0] = X[:first]
        self.habituation = np.ones(first)
        self.histograms = np.zeros((first, int(self.n_classes)))
        for row in range(first):
            if labels[row] != UNLABELLED:
                self.histograms[row, labels[row]] = float(self.label_increment)
        self.edges = np.zeros((first, first), np.int32)
        self.ages = np.zeros((first, first), np.int64)
        self.synapses = np.zeros((first, first), np.int64)
        if first == 2:
            self.edges[0, 1] = self.edges[1, 0] = 1
        if not hasattr(self, "capacity_"):
            self.capacity_ = None if self.max_nodes is None else int(self.max_nodes)

    def _distance(self, g64, j) -> float:
        """Σ_k α_k ‖g^(k) - w_j^(k)‖ for one neuron, ``g64`` the float64 global context."""
        total = 0.0
        for k in range(len(self.alphas)):
            diff = self.weights[j, k].astype(np.float64) - g64[k]
            total += self.alphas[k] * math.sqrt(float(np.dot(diff, diff)))
        return total

    def _node_label(self, j) -> int:
        counts = self.histograms[j]
        return int(np.argmax(counts)) if counts.sum() > 0 else UNLABELLED

    def _learn_one(self, x, label, previous, context) -> int:
        depth = len(self.alphas)
        g = np.zeros((depth, x.shape[0]), np.float32)
        g[0] = x
        if context and previous >= 0:
            beta = float(self.beta)
            for k in range(1, depth):
                g[k] = beta * self.weights[previous, k] + (1.0 - beta) * self.weights[previous, k - 1]
        g64 = g.astype(np.float64)
        distances = [self._distance(g64, j) for j in range(self.n_nodes_)]
        b = int(np.argmin(distances))
        s = -1
        if self.n_nodes_ > 1:
            rest = list(distances)
            rest[b] = np.inf
            s = int(np.argmin(rest))
        activation = math.exp(-distances[b])
        mismatch = self._node_label(b) != label
        if self.regulated and self.regulation == "V3" and not mismatch:
            return previous
        room = self.capacity_ is None or self.n_nodes_ < self.capacity_
        habituated = self.habituation[b] < float(self.habituation_threshold)
        if self.regulated and self.regulation == "V1":
            insert = mismatch and habituated and room
        else:
            insert = activation < float(self.activation_threshold) and habituated and room
        if insert:
            self._insert(g, b, s, label, previous)
        else:
            self._adapt(g, b, s, label, previous, activation, mismatch)
        return b

    def _age(self, b) -> None:
        if self.global_ageing:
            self.ages += 1
        else:
            for n in range(self.n_nodes_):
                if self.edges[b, n]:
                    self.ages[b, n] += 1
                    self.ages[n, b] += 1

    def _insert(self, g, b, s, label, previous) -> None:
        n = self.n_nodes_
        self.weights = np.concatenate([self.weights, (0.5 * (self.weights[b] + g))[None]])
        self.habituation = np.append(self.habituation, 1.0)
        new_counts = np.zeros((1, int(self.n_classes)))
        if label != UNLABELLED:
            new_counts[0, label] = float(self.label_increment)
        self.histograms = np.concatenate([self.histograms, new_counts])
        self.edges = np.pad(self.edges, ((0, 1), (0, 1)))
        self.ages = np.pad(self.ages, ((0, 1), (0, 1)))
        self.synapses = np.pad(self.synapses, ((0, 1), (0, 1)))
        self._age(b)
        if s >= 0:
            self.edges[b, s] = self.edges[s, b] = 0
        self._connect(b, n)
        if s >= 0:
            self._connect(s, n)
        if previous >= 0 and self.num_context > 0:
            self.synapses[previous, n] += 1

    def _adapt(self, g, b, s, label, previous, activation, mismatch) -> None:
        self.habituation[b] = habituate(float(self.habituation[b]), float(self.tau_b), float(self.kappa))
        if self.regulated and mismatch:
            rate_b = float(self.epsilon_b) * float(self.mod_rate)
            rate_n = float(self.epsilon_n) * float(self.mod_rate)
        else:
            rate_b, rate_n = float(self.epsilon_b), float(self.epsilon_n)
            if label != UNLABELLED:
                for c in range(int(self.n_classes)):
                    if c == label:
                        self.histograms[b, c] += float(self.label_increment)
                    else:
                        self.histograms[b, c] = max(0.0, self.histograms[b, c] - float(self.label_decrement))
        factor = rate_b * float(self.habituation[b])
        if self.bmu_activity_factor:
            factor *= 1.0 - activation
        for k in range(len(self.alphas)):
            self.weights[b, k] += np.float32(factor) * (g[k] - self.weights[b, k])
        self._age(b)
        if s >= 0:
            self._connect(b, s)
        if previous >= 0 and previous != b and self.num_context > 0:
            self.synapses[previous, b] += 1
        for n in range(self.n_nodes_):
            if self.edges[b, n]:
                rate = np.float32(rate_n * self.habituation[n])
                for k in range(len(self.alphas)):
                    self.weights[n, k] += rate * (g[k] - self.weights[n, k])
                self.habituation[n] = habituate(self.habituation[n], float(self.tau_n), float(self.kappa))

    def _connect(self, i, j) -> None:
        for a in (i, j):
            other = j if a == i else i
            if not self.edges[a, other] and self.edges[a].sum() >= int(self.max_degree):
                candidates = [n for n in range(self.n_nodes_) if self.edges[a, n]]
                oldest = max(candidates, key=lambda n: (self.ages[a, n], -n))
                self.edges[a, oldest] = self.edges[oldest, a] = 0
        self.edges[i, j] = self.edges[j, i] = 1
        self.ages[i, j] = self.ages[j, i] = 0

    def _remove_isolated(self) -> None:
        index = 0
        while index < self.n_nodes_:
            if self.edges[index].sum() == 0 and self.n_nodes_ > 2:
                self.weights = np.delete(self.weights, index, axis=0)
                self.habituation = np.delete(self.habituation, index)
                self.histograms = np.delete(self.histograms, index, axis=0)
                for name in ("edges", "ages", "synapses"):
                    matrix = np.delete(getattr(self, name), index, axis=0)
                    setattr(self, name, np.delete(matrix, index, axis=1))
            else:
                index += 1

    def _best(self, X):
        if self.n_nodes_ == 0:
            raise NotFittedError("the reference network has not learned anything yet")
        X = check_samples(X, self.n_features_in_)
        best, distances = [], []
        for t in range(len(X)):
            g = np.zeros((len(self.alphas), X.shape[1]), np.float32)
            for k in range(len(self.alphas)):
                if t - k >= 0:
                    g[k] = X[t - k]
            g64 = g.astype(np.float64)
            row = [self._distance(g64, j) for j in range(self.n_nodes_)]
            best.append(int(np.argmin(row)))
            distances.append(row[best[-1]])
        return np.array(best, np.int64), np.array(distances)

    def best_matching(self, X):
        return self._best(X)

    def predict(self, X) -> np.ndarray:
        return self.node_labels_[self._best(X)[0]]

    def predict_proba(self, X) -> np.ndarray:
        counts = self.histograms[self._best(X)[0]]
        totals = counts.sum(axis=1, keepdims=True)
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / counts.shape[1])

    def transform(self, X) -> np.ndarray:
        return self.weights_[self._best(X)[0]]

    def novelty(self, X) -> np.ndarray:
        return self._best(X)[1] / -math.log(float(self.activation_threshold))

    def rnats(self):
        length = 2 * int(self.num_context) + 1
        vectors, labels, starts = [], [], []
        for i in range(self.n_nodes_):
            starts.append(len(vectors))
            node = i
            for step in range(length):
                vectors.append(self.weights[node, 0])
                labels.append(self._node_label(node))
                if step + 1 < length:
                    if self.synapses[node].max() == 0:
                        break
                    node = int(np.argmax(self.synapses[node]))
        return np.array(vectors, np.float32), np.array(labels, np.int64), np.array(starts, np.int64)
