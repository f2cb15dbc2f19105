"""Episodic Gamma-GWR: a growing, labelled prototype network with temporal context (docs/design.md §3).

One network of the Growing Dual-Memory. Every rule of docs/design.md §3.2–3.5 is
kept, with the memory defects B-6, B-8, B-11, B-12 and B-19 (docs/design.md §6) fixed (the
original behaviour stays selectable where it is a variant, not a defect):

* two distinct initial neurons from the first two samples, no self-loops,
  label histograms seeded with the true labels (B-6);
* edges age locally (only the best-matching unit's edges, as in the original
  GWR) unless ``global_ageing=True`` (the CLIFER code, B-8);
* ``num_context`` K >= 0 temporal context descriptors, and RNAT replay
  trajectories that follow the temporal synapses when K > 0 (B-11). With
  K = 0 a trajectory is one neuron, so the synapses would never be read and
  are not recorded (the original counts them in a dense N×N matrix);
* regulation ``"V3"`` (CLIFER: a regulated network learns only from
  misclassified samples) or ``"V1"`` (Parisi 2018: learns from every sample,
  inserts only on a mismatch), and the ``(1 - a)`` factor on the BMU update
  as a flag (B-10);
* for speed (B-19): one contiguous float32 weight array grown by doubling,
  cached squared norms, the two best units from one matrix-vector product
  (refined exactly among a few candidates), and neighbour lists of bounded
  degree with timestamped edge ages instead of dense N×N matrices, so memory
  grows O(N·k). When a neuron already has ``max_degree`` neighbours, a new
  edge replaces its oldest one.

Labels are integers ``0 .. n_classes-1``; ``-1`` means unlabelled.
"""

from __future__ import annotations

import inspect
import math
import os
import threading

import numpy as np
from threadpoolctl import ThreadpoolController

from clifer_core.persistence import StateFileError, load_state, save_state

UNLABELLED = -1
REGULATIONS = ("V1", "V3")
_CANDIDATES = 4  # approximate nearest units re-ranked with exact float64 distances


class _SingleBlasThread:
    """While any memory computation runs, BLAS uses one thread (process-wide, reference-counted).

    The products here are small: a second BLAS thread gains little, and on a
    busy CPU waiting for it to be scheduled costs a whole time slice (10-40
    ms measured on a loaded 2-core box, against ~1 ms single-threaded). The
    limit is process-wide in OpenBLAS, so concurrent users share one limit
    and the last one out restores the original setting.
    """

    _lock = threading.Lock()
    _users = 0
    _controller: ThreadpoolController | None = None
    _limiter = None

    def __enter__(self):
        with self._lock:
            if _SingleBlasThread._users == 0:
                if _SingleBlasThread._controller is None:
                    _SingleBlasThread._controller = ThreadpoolController()
                _SingleBlasThread._limiter = _SingleBlasThread._controller.limit(limits=1, user_api="blas")
            _SingleBlasThread._users += 1
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            _SingleBlasThread._users -= 1
            if _SingleBlasThread._users == 0:
                _SingleBlasThread._limiter.restore_original_limits()
                _SingleBlasThread._limiter = None


single_blas_thread = _SingleBlasThread


class NotFittedError(ValueError, AttributeError):
    """The memory was used before it learned anything."""


def context_weights(num_context: int) -> np.ndarray:
    """The α_k of docs/design.md §3.2: e^{-k} / Σ e^{-k'} for k = 0..K."""
    raw = np.exp(-np.arange(num_context + 1, dtype=np.float64))
    return raw / raw.sum()


def habituate(h, tau: float, kappa: float):
    """One habituation step h <- h + τκ(1 - h) - τ (fixed point 1 - 1/κ)."""
    return h + tau * kappa * (1 - h) - tau


def check_samples(X, n_features: int | None, what: str = "X", allow_empty: bool = False) -> np.ndarray:
    """``X`` as a finite float32 ``(n, D)`` array, or a ValueError saying what is wrong."""
    try:
        array = np.asarray(X)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} is not an array of numbers: {error}") from error
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{what} must hold numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{what} is an empty batch (0 samples)")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"{what} has {array.shape[1]} features per sample, this memory expects {n_features}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
        raise ValueError(f"{what} contains NaN or infinite values (in {bad} of {array.shape[0]} samples)")
    return array


def check_labels(y, n_samples: int, n_classes: int, what: str = "y") -> np.ndarray:
    """``y`` as an int64 ``(n,)`` array in ``-1 .. n_classes-1``, or a ValueError."""
    if y is None:
        return np.full(n_samples, UNLABELLED, np.int64)
    array = np.asarray(y)
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise ValueError(f"{what} must have shape ({n_samples},) to match the samples, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{what} must hold integer class labels, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise ValueError(f"{what} must hold integer class labels, got non-integer values")
    labels = array.astype(np.int64)
    outside = labels[(labels < UNLABELLED) | (labels >= n_classes)]
    if outside.size:
        raise ValueError(
            f"{what} has labels outside the known set -1..{n_classes - 1} (n_classes={n_classes}): "
            f"{sorted(set(outside.tolist()))[:5]}"
        )
    return labels


def check_sequences(sequences, n_samples: int) -> np.ndarray:
    """Boolean ``(n,)`` mask of the samples where a new sequence (fresh temporal context) starts."""
    starts = np.zeros(n_samples, bool)
    starts[0] = True
    if sequences is None:
        return starts
    index = np.asarray(sequences)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"sequences must be a 1-D array of start indices, got {index.dtype} {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= n_samples):
        raise ValueError(f"sequences holds start indices outside 0..{n_samples - 1}")
    starts[index] = True
    return starts


class ParamsMixin:
    """scikit-learn's ``get_params``: hyperparameters are exactly the ``__init__`` arguments."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        unknown = set(params) - set(self._param_names())
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{n}={v!r}" for n, v in self.get_params().items() if defaults.get(n) != v]
        return f"{type(self).__name__}({', '.join(changed)})"


class EpisodicGammaGWR(ParamsMixin):
    """One Episodic Gamma-GWR network (docs/design.md §3), scikit-learn estimator style.

    Defaults are CLIFER's episodic-memory values (docs/design.md §3.10). ``max_nodes``
    is the initial capacity (``None``: unbounded); the dual memory changes it
    per increment through :meth:`set_capacity`. ``epochs`` is the number of
    passes of one :meth:`partial_fit` call (a CLIFER "training call").
    """

    STATE_KIND = "clifer.gwr"
    STATE_VERSION = 1

    def __init__(
        self,
        n_classes: int = 6,
        num_context: int = 0,
        beta: float = 0.7,
        activation_threshold: float = 0.4,
        habituation_threshold: float = 0.5,
        epsilon_b: float = 0.2,
        epsilon_n: float = 0.001,
        tau_b: float = 0.3,
        tau_n: float = 0.1,
        kappa: float = 1.05,
        label_increment: float = 1.0,
        label_decrement: float = 0.1,
        max_age: int = 1000,
        max_nodes: int | None = None,
        max_degree: int = 16,
        regulated: bool = False,
        regulation: str = "V3",
        mod_rate: float = 0.01,
        bmu_activity_factor: bool = True,
        global_ageing: bool = False,
        epochs: int = 10,
    ):
        self.n_classes = n_classes
        self.num_context = num_context
        self.beta = beta
        self.activation_threshold = activation_threshold
        self.habituation_threshold = habituation_threshold
        self.epsilon_b = epsilon_b
        self.epsilon_n = epsilon_n
        self.tau_b = tau_b
        self.tau_n = tau_n
        self.kappa = kappa
        self.label_increment = label_increment
        self.label_decrement = label_decrement
        self.max_age = max_age
        self.max_nodes = max_nodes
        self.max_degree = max_degree
        self.regulated = regulated
        self.regulation = regulation
        self.mod_rate = mod_rate
        self.bmu_activity_factor = bmu_activity_factor
        self.global_ageing = global_ageing
        self.epochs = epochs

    # ------------------------------------------------------------------ checks

    def _check_params(self) -> None:
        if int(self.n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if int(self.num_context) < 0:
            raise ValueError(f"num_context must be >= 0, got {self.num_context}")
        if not 0.0 < float(self.activation_threshold) < 1.0:
            raise ValueError(f"activation_threshold must be in (0, 1), got {self.activation_threshold}")
        if self.regulation not in REGULATIONS:
            raise ValueError(f"regulation must be one of {REGULATIONS}, got {self.regulation!r}")
        if int(self.max_degree) < 2:
            raise ValueError(f"max_degree must be >= 2, got {self.max_degree}")
        if self.max_nodes is not None and int(self.max_nodes) < 2:
            raise ValueError(f"max_nodes must be >= 2 or None, got {self.max_nodes}")
        if int(self.epochs) < 1 or int(self.max_age) < 0:
            raise ValueError(f"epochs must be >= 1 and max_age >= 0, got {self.epochs}, {self.max_age}")

    def _check_fitted(self) -> None:
        if getattr(self, "n_nodes_", 0) == 0:
            raise NotFittedError(f"this {type(self).__name__} has not learned anything yet; call partial_fit first")

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "n_nodes_", 0) > 0

    @property
    def classes_(self) -> np.ndarray:
        """The labels ``predict`` answers with, in ``predict_proba``'s column order (scikit-learn's fitted attribute)."""
        self._check_fitted()
        return np.arange(int(self.n_classes))

    # ------------------------------------------------------------- public API

    def fit(self, X, y=None, *, epochs: int | None = None):
        """Forget everything, then learn ``(X, y)`` as one training call."""
        X_checked = check_samples(X, None)
        check_labels(y, len(X_checked), int(self.n_classes))
        self.__dict__ = {k: v for k, v in self.__dict__.items() if k in self._param_names()}
        return self.partial_fit(X_checked, y, epochs=epochs)

    def partial_fit(self, X, y=None, *, epochs: int | None = None, context: bool = True, sequences=None):
        """One training call: ``epochs`` passes over ``X`` in order (docs/design.md §3.3).

        ``context=False`` zeroes the temporal context (replay, imagination,
        semantic memory). ``sequences`` lists the start indices of independent
        sequences in ``X`` (e.g. RNAT trajectories): the context restarts at
        each, and at the start of every epoch. Old edges are pruned after every
        epoch, isolated neurons after the call. Invalid input raises
        ``ValueError`` and changes nothing.
        """
        self._check_params()
        X = check_samples(X, getattr(self, "n_features_in_", None))
        labels = check_labels(y, len(X), int(self.n_classes))
        starts = check_sequences(sequences, len(X))
        epochs = int(self.epochs if epochs is None else epochs)
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if not self.is_fitted:
            self._initialise(X, labels)
        with single_blas_thread():
            for _ in range(epochs):
                previous = -1
                for t in range(len(X)):
                    if starts[t]:
                        previous = -1
                    previous = self._learn_one(X[t], int(labels[t]), previous, context)
                self._prune_old_edges()
        self._prune_isolated()
        return self

    def set_capacity(self, max_nodes: int | None) -> None:
        """Set N_max (``None``: unbounded). Existing neurons are kept; only insertion stops."""
        if max_nodes is not None and int(max_nodes) < 2:
            raise ValueError(f"capacity must be >= 2 or None, got {max_nodes}")
        self.capacity_ = None if max_nodes is None else int(max_nodes)

    def best_matching(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the best-matching units of ``X`` and their distances (batched).

        With K > 0 the test-time context of row t is the raw input of row t-k
        (zeros before the batch starts), as in the original (docs/design.md §3.2).
        """
        self._check_fitted()
        X = check_samples(X, self.n_features_in_)
        with single_blas_thread():
            return self._bmu_batch(X)

    def predict(self, X) -> np.ndarray:
        """The BMU's label (histogram argmax); -1 where the BMU never saw a label."""
        return self._labels_of(self.best_matching(X)[0])

    def predict_proba(self, X) -> np.ndarray:
        """``(n, n_classes)`` normalised label histogram of each BMU (uniform where it has none)."""
        return self._probabilities_of(self.best_matching(X)[0])

    def transform(self, X) -> np.ndarray:
        """The BMU prototypes ``w_b`` of ``X`` (float32 ``(n, D)``)."""
        return self.weights_[self.best_matching(X)[0]]

    def novelty(self, X) -> np.ndarray:
        """BMU distance divided by the insertion distance -ln(a_T).

        A value >= 1 means the sample's activation exp(-d) is below the
        activation threshold a_T: far enough from every prototype that this
        network would grow a neuron for it. 0 means an exact match.
        """
        return self.best_matching(X)[1] / -math.log(float(self.activation_threshold))

    def predict_proba_and_novelty(self, X) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_proba` and :meth:`novelty` from one best-matching search (the per-frame query)."""
        nodes, distances = self.best_matching(X)
        return self._probabilities_of(nodes), distances / -math.log(float(self.activation_threshold))

    def rnats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Recursive neural activity trajectories, one per neuron (docs/design.md §3.5, B-11).

        Trajectory i starts at neuron i and follows the strongest outgoing
        temporal synapse for up to 2K steps (it stops early at a neuron with
        none). Returns ``(vectors (T, D), labels (T,), starts (n_nodes,))``,
        the trajectories concatenated, ready for
        ``partial_fit(vectors, labels, sequences=starts)``. For K = 0 each
        trajectory is the neuron's own prototype and label.
        """
        self._check_fitted()
        paths = self._trajectories()
        lengths = np.array([len(p) for p in paths])
        index = np.concatenate(paths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return self.weights_[index], self.node_labels_[index], starts

    # --------------------------------------------------- learned-state views

    @property
    def weights_(self) -> np.ndarray:
        """``(n_nodes, D)`` float32 prototypes w^(0)."""
        self._check_fitted()
        return self._weights[0, : self.n_nodes_]

    @property
    def contexts_(self) -> np.ndarray:
        """``(K, n_nodes, D)`` temporal context descriptors w^(1..K)."""
        self._check_fitted()
        return self._weights[1:, : self.n_nodes_]

    @property
    def habituation_(self) -> np.ndarray:
        self._check_fitted()
        return self._habituation[: self.n_nodes_]

    @property
    def label_counts_(self) -> np.ndarray:
        """``(n_nodes, n_classes)`` label histograms."""
        self._check_fitted()
        return self._histograms[: self.n_nodes_]

    @property
    def node_labels_(self) -> np.ndarray:
        """Each neuron's label: histogram argmax, -1 for an empty histogram."""
        return self._labels_of(np.arange(self.n_nodes_))

    @property
    def node_probabilities_(self) -> np.ndarray:
        """Each neuron's normalised label histogram (uniform when empty)."""
        return self._probabilities_of(np.arange(self.n_nodes_))

    def _labels_of(self, nodes: np.ndarray) -> np.ndarray:
        counts = self._histograms[nodes]
        return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), UNLABELLED)

    def _probabilities_of(self, nodes: np.ndarray) -> np.ndarray:
        counts = self._histograms[nodes]
        totals = counts.sum(axis=1, keepdims=True)
        uniform = np.full_like(counts, 1.0 / counts.shape[1])
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), uniform)

    @property
    def edges_(self) -> np.ndarray:
        """``(n_edges, 2)`` undirected edges as sorted pairs (i < j)."""
        self._check_fitted()
        rows, slots = np.nonzero(self._neighbours[: self.n_nodes_] >= 0)
        cols = self._neighbours[rows, slots]
        keep = rows < cols
        return np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)

    @property
    def edge_ages_(self) -> np.ndarray:
        """Ages of :attr:`edges_`, in the same order."""
        ages = self._ages(np.arange(self.n_nodes_))
        rows, slots = np.nonzero(self._neighbours[: self.n_nodes_] >= 0)
        keep = rows < self._neighbours[rows, slots]
        return ages[rows[keep], slots[keep]]

    @property
    def temporal_synapses_(self) -> np.ndarray:
        """``(n, 3)`` int64 rows (from, to, count) of the temporal synapses P."""
        self._check_fitted()
        if not self._synapses:
            return np.zeros((0, 3), np.int64)
        return np.array([(a, b, c) for (a, b), c in sorted(self._synapses.items())], np.int64)

    # -------------------------------------------------------------- storage

    def _initialise(self, X: np.ndarray, labels: np.ndarray) -> None:
        """Two distinct neurons from the first two samples, one edge, true-label histograms (B-6)."""
        n_features = X.shape[1]
        depth = int(self.num_context) + 1
        allocated = 64
        self.n_features_in_ = n_features
        self._alphas = context_weights(int(self.num_context))
        self._weights = np.zeros((depth, allocated, n_features), np.float32)
        self._sq_norms = np.zeros((depth, allocated), np.float64)
        self._habituation = np.ones(allocated, np.float64)
        self._histograms = np.zeros((allocated, int(self.n_classes)), np.float64)
        self._neighbours = np.full((allocated, int(self.max_degree)), -1, np.int32)
        self._stamps = np.zeros((allocated, int(self.max_degree)), np.int64)
        self._fires = np.zeros(allocated, np.int64)
        self._synapses: dict[tuple[int, int], int] = {}
        self.clock_ = 0
        if not hasattr(self, "capacity_"):
            self.capacity_ = None if self.max_nodes is None else int(self.max_nodes)
        self.n_nodes_ = 0
        for row in range(min(2, len(X))):
            self._append_node(np.concatenate([X[row : row + 1], np.zeros((depth - 1, n_features), np.float32)]))
            if labels[row] != UNLABELLED:
                self._histograms[row, labels[row]] = float(self.label_increment)
        if self.n_nodes_ == 2:
            self._connect(0, 1)

    def _append_node(self, descriptors: np.ndarray) -> int:
        """Add a neuron with the given ``(K+1, D)`` descriptors; grow storage by doubling."""
        index = self.n_nodes_
        if index == self._weights.shape[1]:
            self._grow_storage(2 * index)
        self._weights[:, index] = descriptors
        self._refresh_norms(index)
        self._habituation[index] = 1.0
        self._histograms[index] = 0.0
        self._neighbours[index] = -1
        self._stamps[index] = 0
        self._fires[index] = 0
        self.n_nodes_ = index + 1
        return index

    def _grow_storage(self, allocated: int) -> None:
        def grown(array, fill=0):
            bigger = np.full((allocated,) + array.shape[1:], fill, array.dtype)
            bigger[: array.shape[0]] = array
            return bigger

        weights = np.zeros((self._weights.shape[0], allocated, self._weights.shape[2]), np.float32)
        weights[:, : self._weights.shape[1]] = self._weights
        norms = np.zeros((self._sq_norms.shape[0], allocated), np.float64)
        norms[:, : self._sq_norms.shape[1]] = self._sq_norms
        self._weights, self._sq_norms = weights, norms
        self._habituation = grown(self._habituation, 1.0)
        self._histograms = grown(self._histograms)
        self._neighbours = grown(self._neighbours, -1)
        self._stamps = grown(self._stamps)
        self._fires = grown(self._fires)

    def _refresh_norms(self, index) -> None:
        vectors = self._weights[:, index].astype(np.float64)
        self._sq_norms[:, index] = np.einsum("k...d,k...d->k...", vectors, vectors)

    # ---------------------------------------------------------------- search

    def _two_best(self, g: np.ndarray) -> tuple[int, int, float]:
        """BMU b, second BMU s (-1 if only one neuron) and d_b for global context ``g`` (K+1, D)."""
        n = self.n_nodes_
        if len(self._alphas) == 1:
            approx = self._sq_norms[0, :n] - 2.0 * (self._weights[0, :n] @ g[0])
        else:
            approx = np.zeros(n)
            for k, alpha in enumerate(self._alphas):
                g_k = g[k].astype(np.float64)
                sq = self._sq_norms[k, :n] + g_k @ g_k - 2.0 * (self._weights[k, :n] @ g[k])
                approx += alpha * np.sqrt(np.maximum(sq, 0.0))
        candidates = []
        for _ in range(min(n, _CANDIDATES)):
            j = int(approx.argmin())
            candidates.append(j)
            approx[j] = np.inf
        candidates.sort()
        exact = self._exact_distances(g, np.array(candidates))
        order = np.argsort(exact, kind="stable")
        b = candidates[order[0]]
        s = candidates[order[1]] if n > 1 else -1
        return b, s, float(exact[order[0]])

    def _exact_distances(self, g: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """Σ_k α_k ‖g^(k) - w_j^(k)‖ in float64 for the given neurons (docs/design.md §3.2)."""
        total = np.zeros(len(nodes))
        for k, alpha in enumerate(self._alphas):
            diff = self._weights[k, nodes].astype(np.float64) - g[k].astype(np.float64)
            total += alpha * np.sqrt(np.einsum("nd,nd->n", diff, diff))
        return total

    def _bmu_batch(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fast approximate scores pick a few candidates per row; exact float64 distances choose the BMU.

        Float32 ``||w||² - 2 w·x`` cannot separate prototypes closer than its rounding
        (near-duplicates), so, as in :meth:`_two_best`, the winner is decided exactly,
        ties going to the lowest index.
        """
        n = self.n_nodes_
        contexts = [X]
        for k in range(1, len(self._alphas)):
            shifted = np.zeros_like(X)
            shifted[k:] = X[:-k]
            contexts.append(shifted)
        if len(self._alphas) == 1:
            scores = X @ self._weights[0, :n].T
            scores *= -2.0
            scores += self._sq_norms[0, :n].astype(np.float32)
        else:
            scores = np.zeros((len(X), n))
            for k, alpha in enumerate(self._alphas):
                g = contexts[k]
                sq = self._sq_norms[k, :n] + np.einsum("nd,nd->n", g, g)[:, None] - 2.0 * (g @ self._weights[k, :n].T)
                scores += alpha * np.sqrt(np.maximum(sq, 0.0))
        rows = np.arange(len(X))
        candidates = np.empty((len(X), min(n, _CANDIDATES)), np.int64)
        for column in range(candidates.shape[1]):  # repeated argmin: far cheaper than argpartition here
            candidates[:, column] = scores.argmin(axis=1)
            scores[rows, candidates[:, column]] = np.inf
        candidates.sort(axis=1)
        exact = np.zeros(candidates.shape)
        for k, alpha in enumerate(self._alphas):
            diff = self._weights[k][candidates].astype(np.float64) - contexts[k][:, None, :].astype(np.float64)
            exact += alpha * np.sqrt(np.einsum("ncd,ncd->nc", diff, diff))
        pick = exact.argmin(axis=1)
        return candidates[rows, pick], exact[rows, pick]

    # -------------------------------------------------------------- learning

    def _global_context(self, x: np.ndarray, previous: int, context: bool) -> np.ndarray:
        """g^(0) = x; g^(k) = β w_prev^(k) + (1-β) w_prev^(k-1), zeros without context (docs/design.md §3.2)."""
        depth = len(self._alphas)
        g = np.zeros((depth, x.shape[0]), np.float32)
        g[0] = x
        if context and previous >= 0:
            beta = float(self.beta)
            for k in range(1, depth):
                g[k] = beta * self._weights[k, previous] + (1.0 - beta) * self._weights[k - 1, previous]
        return g

    def _node_label(self, node: int) -> int:
        counts = self._histograms[node]
        return int(counts.argmax()) if counts.sum() > 0 else UNLABELLED

    def _learn_one(self, x: np.ndarray, label: int, previous: int, context: bool) -> int:
        """One step of docs/design.md §3.3; returns the unit to remember as the previous BMU."""
        g = self._global_context(x, previous, context)
        b, s, distance = self._two_best(g)
        activation = math.exp(-distance)
        mismatch = self._node_label(b) != label
        if self.regulated and self.regulation == "V3" and not mismatch:
            return previous
        has_room = self.capacity_ is None or self.n_nodes_ < self.capacity_
        habituated = self._habituation[b] < float(self.habituation_threshold)
        if self.regulated and self.regulation == "V1":
            insert = mismatch and habituated and has_room
        else:
            insert = activation < float(self.activation_threshold) and habituated and has_room
        if insert:
            self._insert(g, b, s, label, previous)
        else:
            self._adapt(g, b, s, label, previous, activation, mismatch)
        return b

    def _tick(self, b: int) -> None:
        """Age edges: all of them (global clock) or only the BMU's (its firing count)."""
        if self.global_ageing:
            self.clock_ += 1
        else:
            self._fires[b] += 1

    def _insert(self, g: np.ndarray, b: int, s: int, label: int, previous: int) -> None:
        r = self._append_node(0.5 * (self._weights[:, b] + g))
        if label != UNLABELLED:
            self._histograms[r, label] = float(self.label_increment)
        self._tick(b)
        if s >= 0:
            self._disconnect(b, s)
        self._connect(b, r)
        if s >= 0:
            self._connect(s, r)
        if previous >= 0 and self.num_context > 0:
            self._synapses[(previous, r)] = self._synapses.get((previous, r), 0) + 1

    def _adapt(self, g, b: int, s: int, label: int, previous: int, activation: float, mismatch: bool) -> None:
        self._habituation[b] = habituate(float(self._habituation[b]), float(self.tau_b), float(self.kappa))
        if self.regulated and mismatch:
            rate_b = float(self.epsilon_b) * float(self.mod_rate)
            rate_n = float(self.epsilon_n) * float(self.mod_rate)
        else:
            rate_b, rate_n = float(self.epsilon_b), float(self.epsilon_n)
            if label != UNLABELLED:
                counts = self._histograms[b]
                reinforced = counts[label] + float(self.label_increment)
                np.maximum(counts - float(self.label_decrement), 0.0, out=counts)
                counts[label] = reinforced
        factor = rate_b * float(self._habituation[b])
        if self.bmu_activity_factor:
            factor *= 1.0 - activation
        self._weights[:, b] += np.float32(factor) * (g - self._weights[:, b])
        self._refresh_norms(b)
        self._tick(b)
        if s >= 0:
            self._connect(b, s)
        if previous >= 0 and previous != b and self.num_context > 0:
            self._synapses[(previous, b)] = self._synapses.get((previous, b), 0) + 1
        row = self._neighbours[b]
        neighbours = np.sort(row[row >= 0])
        if neighbours.size:
            rates = (rate_n * self._habituation[neighbours]).astype(np.float32)[:, None]
            for k in range(len(self._alphas)):
                self._weights[k, neighbours] += rates * (g[k] - self._weights[k, neighbours])
            self._refresh_norms(neighbours)
            self._habituation[neighbours] = habituate(
                self._habituation[neighbours], float(self.tau_n), float(self.kappa)
            )

    # ----------------------------------------------------------------- edges

    def _ages(self, rows: np.ndarray) -> np.ndarray:
        """Ages of the neighbour slots of ``rows`` (meaningless where a slot is empty)."""
        if self.global_ageing:
            return self.clock_ - self._stamps[rows]
        neighbours = self._neighbours[rows]
        other = self._fires[np.where(neighbours >= 0, neighbours, 0)]
        return self._fires[rows][..., None] + other - self._stamps[rows]

    def _fresh_stamp(self, i: int, j: int) -> int:
        return self.clock_ if self.global_ageing else int(self._fires[i] + self._fires[j])

    def _connect(self, i: int, j: int) -> None:
        """Create or refresh (age 0) the edge i–j, evicting each end's oldest edge when full."""
        stamp = self._fresh_stamp(i, j)
        for a, c in ((i, j), (j, i)):
            row = self._neighbours[a]
            hit = np.flatnonzero(row == c)
            if hit.size:
                self._stamps[a, hit[0]] = stamp
                continue
            free = np.flatnonzero(row < 0)
            if free.size == 0:
                ages = self._ages(np.array([a]))[0]
                oldest = np.lexsort((row, -ages))[0]
                self._disconnect(a, int(row[oldest]))
                free = np.flatnonzero(row < 0)
            self._neighbours[a, free[0]] = c
            self._stamps[a, free[0]] = stamp

    def _disconnect(self, i: int, j: int) -> None:
        for a, c in ((i, j), (j, i)):
            row = self._neighbours[a]
            row[row == c] = -1

    def _prune_old_edges(self) -> None:
        """Delete every edge older than ``max_age`` (after each epoch)."""
        n = self.n_nodes_
        present = self._neighbours[:n] >= 0
        stale = present & (self._ages(np.arange(n)) > int(self.max_age))
        if stale.any():
            self._neighbours[:n][stale] = -1

    def _prune_isolated(self) -> None:
        """Delete neurons without edges, lowest index first, never below 2 neurons (after a call)."""
        n = self.n_nodes_
        isolated = np.flatnonzero((self._neighbours[:n] >= 0).sum(axis=1) == 0)
        isolated = isolated[: max(0, min(len(isolated), n - 2))]
        if isolated.size == 0:
            return
        keep = np.ones(n, bool)
        keep[isolated] = False
        new_index = np.cumsum(keep) - 1
        kept = int(keep.sum())
        self._weights[:, :kept] = self._weights[:, :n][:, keep]
        self._sq_norms[:, :kept] = self._sq_norms[:, :n][:, keep]
        for name in ("_habituation", "_histograms", "_stamps", "_fires"):
            array = getattr(self, name)
            array[:kept] = array[:n][keep]
        neighbours = self._neighbours[:n][keep]
        self._neighbours[:kept] = np.where(neighbours >= 0, new_index[np.maximum(neighbours, 0)], -1)
        self._neighbours[kept:n] = -1
        self._synapses = {
            (int(new_index[a]), int(new_index[b])): c for (a, b), c in self._synapses.items() if keep[a] and keep[b]
        }
        self.n_nodes_ = kept

    def _trajectories(self) -> list[np.ndarray]:
        length = 2 * int(self.num_context) + 1
        strongest: dict[int, tuple[int, int]] = {}
        for (a, b), count in self._synapses.items():
            best = strongest.get(a)
            if best is None or count > best[0] or (count == best[0] and b < best[1]):
                strongest[a] = (count, b)
        paths = []
        for start in range(self.n_nodes_):
            path = [start]
            while len(path) < length and path[-1] in strongest:
                path.append(strongest[path[-1]][1])
            paths.append(np.array(path, np.int64))
        return paths

    # ----------------------------------------------------------- persistence

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(manifest, arrays)`` describing the whole learned state (JSON-able manifest)."""
        manifest = {"hyperparameters": self.get_params()}
        if not self.is_fitted:
            return manifest, {}
        n = self.n_nodes_
        manifest.update(
            n_nodes=n, n_features=int(self.n_features_in_), clock=int(self.clock_), capacity=self.capacity_,
        )
        arrays = {
            "weights": self._weights[:, :n],
            "habituation": self._habituation[:n],
            "label_counts": self._histograms[:n],
            "neighbours": self._neighbours[:n],
            "edge_stamps": self._stamps[:n],
            "bmu_counts": self._fires[:n],
            "temporal_synapses": self.temporal_synapses_,
        }
        return manifest, arrays

    @classmethod
    def from_state(cls, manifest: dict, arrays: dict[str, np.ndarray]) -> "EpisodicGammaGWR":
        """Rebuild a network from :meth:`state`; a ValueError if the pieces do not fit together."""
        network = cls(**manifest["hyperparameters"])
        network._check_params()
        if "n_nodes" not in manifest:
            return network
        try:
            n, n_features = int(manifest["n_nodes"]), int(manifest["n_features"])
            depth, degree = int(network.num_context) + 1, int(network.max_degree)
            expected = {
                "weights": (depth, n, n_features), "habituation": (n,), "label_counts": (n, int(network.n_classes)),
                "neighbours": (n, degree), "edge_stamps": (n, degree), "bmu_counts": (n,),
            }
            for name, shape in expected.items():
                if arrays[name].shape != shape:
                    raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            neighbours = arrays["neighbours"]
            if neighbours.size and (neighbours.min() < -1 or neighbours.max() >= n):
                raise ValueError("neighbour indices out of range")
            synapses = arrays["temporal_synapses"].reshape(-1, 3)
            if synapses.size and (synapses[:, :2].min() < 0 or synapses[:, :2].max() >= n):
                raise ValueError("temporal synapse indices out of range")
            if not np.all(np.isfinite(arrays["weights"])):
                raise ValueError("weights contain NaN or infinite values")
        except KeyError as error:
            raise ValueError(f"missing array {error}") from error
        network._alphas = context_weights(int(network.num_context))
        network.n_features_in_ = n_features
        network._weights = np.ascontiguousarray(arrays["weights"], np.float32)
        network._sq_norms = np.zeros((depth, n), np.float64)
        network._habituation = np.asarray(arrays["habituation"], np.float64).copy()
        network._histograms = np.asarray(arrays["label_counts"], np.float64).copy()
        network._neighbours = np.asarray(neighbours, np.int32).copy()
        network._stamps = np.asarray(arrays["edge_stamps"], np.int64).copy()
        network._fires = np.asarray(arrays["bmu_counts"], np.int64).copy()
        network._synapses = {(int(a), int(b)): int(c) for a, b, c in synapses}
        network.clock_ = int(manifest["clock"])
        network.capacity_ = manifest["capacity"]
        network.n_nodes_ = n
        network._refresh_norms(np.arange(n))
        return network

    def save(self, path: str | os.PathLike) -> None:
        """Write the network atomically as a versioned npz + JSON manifest (never pickled)."""
        manifest, arrays = self.state()
        save_state(path, self.STATE_KIND, self.STATE_VERSION, manifest, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EpisodicGammaGWR":
        """Read a file written by :meth:`save`; :class:`StateFileError` if it is unusable."""
        manifest, arrays = load_state(path, cls.STATE_KIND, (cls.STATE_VERSION,))
        try:
            return cls.from_state(manifest, arrays)
        except (ValueError, TypeError, KeyError) as error:
            raise StateFileError(f"{path}: inconsistent network state ({error})") from error
