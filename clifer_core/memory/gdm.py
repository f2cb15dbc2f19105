"""Growing Dual-Memory: episodic (G-EM) + semantic (G-SM) Gamma-GWR, replay and imagination (docs/design.md §3.9).

``partial_fit(X, y)`` is one class increment (or any labelled batch),
learned as in CLIFER's ``train_GDM``: in chunks of ``chunk_size`` samples,
each trained for ``epochs`` passes into G-EM; G-SM then learns G-EM's
best-matching prototypes with G-EM's labels. With ``replay=True`` (condition
GDM+Replay) the RNATs of G-EM are replayed into both memories after every
chunk but the first. An ``imagine`` callable (condition GDM+Imagination) runs
once per call after the real data: it receives G-EM's prototypes of the
batch and their labels, and what it returns, plus G-EM's own prototypes
(replay), is trained into both memories for ``imagination_epochs``.

Defects fixed here (docs/design.md §6): G-SM is always queried with G-EM prototypes,
in training and in prediction (B-4); capacity follows an explicit policy
(B-7): ``"first_class"`` (CLIFER: N_max,EM = size of the first call),
``"grow"`` (N_max,EM += size of each call, optionally capped by
``max_nodes``) or ``"fixed"`` (``max_nodes``); N_max,SM =
``semantic_capacity_ratio`` × N_max,EM. Replay is one batched call of all
trajectories instead of one call per neuron (B-19).

``taught_samples`` > 0 (not in CLIFER) also keeps the most recent labelled
inputs as they were given (``taught_X_``, ``taught_y_``): prototypes average
near faces together, and what is fine-tuned on a person (person adaptation)
fits better on the faces themselves. The networks never read them.
"""

from __future__ import annotations

import copy
import os

import numpy as np

from clifer_core.memory.gwr import (
    EpisodicGammaGWR,
    NotFittedError,
    ParamsMixin,
    check_labels,
    check_samples,
)
from clifer_core.persistence import StateFileError, load_state, save_state

CAPACITY_POLICIES = ("first_class", "grow", "fixed")
MEMORIES = ("episodic", "semantic")


class GrowingDualMemory(ParamsMixin):
    """CLIFER's dual memory for one person, scikit-learn estimator style.

    Defaults are the CLIFER values of docs/design.md §3.10, with the fixes on
    (local edge ageing, ``capacity="grow"``); ``global_ageing=True`` and
    ``capacity="first_class"`` give the original behaviour.
    """

    STATE_KIND = "clifer.gdm"
    STATE_VERSION = 2
    READABLE_VERSIONS = (1, 2)
    """Version 1 files predate ``taught_samples``: they load with none kept."""
    network_class = EpisodicGammaGWR

    def __init__(
        self,
        n_classes: int = 6,
        num_context: int = 0,
        beta: float = 0.7,
        chunk_size: int = 5,
        epochs: int = 10,
        replay: bool = False,
        replay_epochs: int = 3,
        imagination_epochs: int = 5,
        capacity: str = "grow",
        max_nodes: int | None = None,
        semantic_capacity_ratio: float = 0.5,
        episodic_activation_threshold: float = 0.4,
        episodic_habituation_threshold: float = 0.5,
        episodic_epsilon_b: float = 0.2,
        episodic_epsilon_n: float = 0.001,
        episodic_max_age: int = 1000,
        semantic_activation_threshold: float = 0.2,
        semantic_habituation_threshold: float = 0.2,
        semantic_epsilon_b: float = 0.02,
        semantic_epsilon_n: float = 0.001,
        semantic_max_age: int = 2000,
        regulation: str = "V3",
        mod_rate: float = 0.01,
        bmu_activity_factor: bool = True,
        global_ageing: bool = False,
        max_degree: int = 16,
        tau_b: float = 0.3,
        tau_n: float = 0.1,
        kappa: float = 1.05,
        label_increment: float = 1.0,
        label_decrement: float = 0.1,
        taught_samples: int = 0,
    ):
        self.n_classes = n_classes
        self.num_context = num_context
        self.beta = beta
        self.chunk_size = chunk_size
        self.epochs = epochs
        self.replay = replay
        self.replay_epochs = replay_epochs
        self.imagination_epochs = imagination_epochs
        self.capacity = capacity
        self.max_nodes = max_nodes
        self.semantic_capacity_ratio = semantic_capacity_ratio
        self.episodic_activation_threshold = episodic_activation_threshold
        self.episodic_habituation_threshold = episodic_habituation_threshold
        self.episodic_epsilon_b = episodic_epsilon_b
        self.episodic_epsilon_n = episodic_epsilon_n
        self.episodic_max_age = episodic_max_age
        self.semantic_activation_threshold = semantic_activation_threshold
        self.semantic_habituation_threshold = semantic_habituation_threshold
        self.semantic_epsilon_b = semantic_epsilon_b
        self.semantic_epsilon_n = semantic_epsilon_n
        self.semantic_max_age = semantic_max_age
        self.regulation = regulation
        self.mod_rate = mod_rate
        self.bmu_activity_factor = bmu_activity_factor
        self.global_ageing = global_ageing
        self.max_degree = max_degree
        self.tau_b = tau_b
        self.tau_n = tau_n
        self.kappa = kappa
        self.label_increment = label_increment
        self.label_decrement = label_decrement
        self.taught_samples = taught_samples

    # ----------------------------------------------------------------- setup

    def _check_params(self) -> None:
        if self.capacity not in CAPACITY_POLICIES:
            raise ValueError(f"capacity must be one of {CAPACITY_POLICIES}, got {self.capacity!r}")
        if self.capacity == "fixed" and (self.max_nodes is None or int(self.max_nodes) < 4):
            raise ValueError(f"capacity='fixed' needs max_nodes >= 4, got {self.max_nodes}")
        if not 0.0 < float(self.semantic_capacity_ratio) <= 1.0:
            raise ValueError(f"semantic_capacity_ratio must be in (0, 1], got {self.semantic_capacity_ratio}")
        for name in ("chunk_size", "epochs", "replay_epochs", "imagination_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.taught_samples) < 0:
            raise ValueError(f"taught_samples must be >= 0, got {self.taught_samples}")

    def _network_params(self, memory: str) -> dict:
        shared = dict(
            n_classes=self.n_classes, beta=self.beta, tau_b=self.tau_b, tau_n=self.tau_n, kappa=self.kappa,
            label_increment=self.label_increment, label_decrement=self.label_decrement, max_degree=self.max_degree,
            regulation=self.regulation, mod_rate=self.mod_rate, bmu_activity_factor=self.bmu_activity_factor,
            global_ageing=self.global_ageing, epochs=self.epochs,
        )
        prefix = memory + "_"
        network_names = set(self.network_class._param_names())
        own = {
            name[len(prefix):]: value
            for name, value in self.get_params().items()
            if name.startswith(prefix) and name[len(prefix):] in network_names
        }
        context = self.num_context if memory == "episodic" else 0
        return {**shared, **own, "num_context": context, "regulated": memory == "semantic"}

    def _new_networks(self) -> None:
        self.episodic_ = self.network_class(**self._network_params("episodic"))
        self.semantic_ = self.network_class(**self._network_params("semantic"))
        self.samples_seen_ = 0
        self.classes_seen_ = np.zeros(int(self.n_classes), bool)
        self.taught_X_ = np.zeros((0, 0), np.float32)
        self.taught_y_ = np.zeros(0, np.int64)

    def _update_capacity(self, n_new: int) -> None:
        """Apply the capacity policy (B-7) before learning ``n_new`` more samples."""
        if self.capacity == "first_class":
            if self.samples_seen_:
                return
            episodic = max(2, n_new)
        elif self.capacity == "fixed":
            episodic = int(self.max_nodes)
        else:
            episodic = max(2, self.samples_seen_ + n_new)
            if self.max_nodes is not None:
                episodic = min(episodic, int(self.max_nodes))
        self.episodic_.set_capacity(episodic)
        self.semantic_.set_capacity(max(2, int(episodic * float(self.semantic_capacity_ratio))))

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "episodic_") and self.episodic_.is_fitted

    @property
    def classes_(self) -> np.ndarray:
        """The labels ``predict`` answers with, in ``predict_proba``'s column order (scikit-learn's fitted attribute)."""
        self._check_fitted()
        return np.arange(int(self.n_classes))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("this GrowingDualMemory has not learned anything yet; call partial_fit first")

    @property
    def n_features_in_(self) -> int:
        self._check_fitted()
        return self.episodic_.n_features_in_

    # -------------------------------------------------------------- learning

    def fit(self, X, y, imagine=None):
        """Forget everything, then learn ``(X, y)`` as one increment."""
        self._check_params()
        X_checked = check_samples(X, None)
        check_labels(y, len(X_checked), int(self.n_classes))
        self._new_networks()
        return self.partial_fit(X_checked, y, imagine=imagine)

    def partial_fit(self, X, y, imagine=None, taught: bool = True):
        """Learn one increment ``(X, y)`` in order (labels -1 = unlabelled), then imagine.

        ``taught=False`` learns ``y`` as guesses: the networks learn them like
        labels, but ``classes_seen_`` and the kept taught samples stay as they
        were, so a guessed class never counts as taught.

        ``imagine(prototypes (n, D) float32, labels (n,) int) -> (vectors (m, D),
        labels (m,))`` is called once, after the real data, with G-EM's
        best-matching prototypes of ``X`` and their G-EM labels; its output is
        learned as returned (CLIFER's includes the prototypes themselves),
        followed by G-EM's prototypes. Any ValueError (bad input or a bad
        imagination result) leaves the memory exactly as it was.
        """
        self._check_params()
        n_features = self.episodic_.n_features_in_ if self.is_fitted else None
        X = check_samples(X, n_features)
        labels = check_labels(y, len(X), int(self.n_classes))
        if imagine is not None and not callable(imagine):
            raise ValueError(f"imagine must be a callable or None, got {type(imagine).__name__}")
        snapshot = copy.deepcopy(self.__dict__)
        try:
            if not hasattr(self, "episodic_"):
                self._new_networks()
            self._update_capacity(len(X))
            self._learn_chunks(X, labels)
            if imagine is not None:
                self._learn_imagined(X, imagine)
            self.samples_seen_ += len(X)
            if taught:
                self.classes_seen_[labels[labels >= 0]] = True
                self._keep_taught(X[labels >= 0], labels[labels >= 0])
        except BaseException:
            self.__dict__ = snapshot
            raise
        return self

    def _keep_taught(self, X: np.ndarray, labels: np.ndarray) -> None:
        """Append labelled inputs to the kept ones, keeping the newest ``taught_samples``."""
        keep = int(self.taught_samples)
        if keep == 0 or len(X) == 0:
            return
        self.taught_X_ = np.concatenate([self.taught_X_.reshape(-1, X.shape[1]), X])[-keep:]
        self.taught_y_ = np.concatenate([self.taught_y_, labels])[-keep:]

    def _learn_chunks(self, X: np.ndarray, labels: np.ndarray) -> None:
        trajectories = None
        size = int(self.chunk_size)
        for start in range(0, len(X), size):
            chunk, chunk_labels = X[start : start + size], labels[start : start + size]
            self.episodic_.partial_fit(chunk, chunk_labels, epochs=int(self.epochs))
            prototypes, episodic_labels = self._episodic_route(chunk)
            self.semantic_.partial_fit(prototypes, episodic_labels, epochs=int(self.epochs), context=False)
            if self.replay:
                if trajectories is not None:
                    self._replay(*trajectories)
                trajectories = self.episodic_.rnats()

    def _replay(self, vectors: np.ndarray, labels: np.ndarray, starts: np.ndarray) -> None:
        """Replay RNATs into both memories as one call each (trajectories keep their context in G-EM)."""
        epochs = int(self.replay_epochs)
        self.episodic_.partial_fit(vectors, labels, epochs=epochs, sequences=starts)
        self.semantic_.partial_fit(vectors, labels, epochs=epochs, context=False, sequences=starts)

    def _learn_imagined(self, X: np.ndarray, imagine) -> None:
        prototypes, episodic_labels = self._episodic_route(X)
        result = imagine(prototypes, episodic_labels)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ValueError("imagine must return a tuple (vectors (m, D), labels (m,))")
        imagined = check_samples(result[0], X.shape[1], what="imagined vectors", allow_empty=True)
        imagined_labels = check_labels(result[1], len(imagined), int(self.n_classes), what="imagined labels")
        block = np.concatenate([imagined, self.episodic_.weights_])
        block_labels = np.concatenate([imagined_labels, self.episodic_.node_labels_])
        epochs = int(self.imagination_epochs)
        self.episodic_.partial_fit(block, block_labels, epochs=epochs, context=False)
        self.semantic_.partial_fit(block, block_labels, epochs=epochs, context=False)

    def _episodic_route(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """G-EM's best-matching prototypes of ``X`` and their labels: G-SM's input (B-4)."""
        best = self.episodic_.best_matching(X)[0]
        return self.episodic_.weights_[best], self.episodic_.node_labels_[best]

    # ------------------------------------------------------------ prediction

    def _check_memory(self, memory: str) -> None:
        if memory not in MEMORIES:
            raise ValueError(f"memory must be one of {MEMORIES}, got {memory!r}")

    def _route(self, X, memory: str):
        """The network answering for ``memory`` and the input it should see."""
        self._check_memory(memory)
        self._check_fitted()
        X = check_samples(X, self.episodic_.n_features_in_)
        if memory == "episodic":
            return self.episodic_, X
        return self.semantic_, self.episodic_.transform(X)

    def predict(self, X, memory: str = "episodic") -> np.ndarray:
        """Labels from G-EM (default) or G-SM; -1 where the best unit never saw a label."""
        network, inputs = self._route(X, memory)
        return network.predict(inputs)

    def predict_proba(self, X, memory: str = "episodic") -> np.ndarray:
        """``(n, n_classes)`` normalised label histograms of the best-matching units."""
        network, inputs = self._route(X, memory)
        return network.predict_proba(inputs)

    def predict_episodic(self, X) -> np.ndarray:
        return self.predict(X, memory="episodic")

    def predict_semantic(self, X) -> np.ndarray:
        return self.predict(X, memory="semantic")

    def transform(self, X) -> np.ndarray:
        """G-EM's best-matching prototypes of ``X``."""
        network, inputs = self._route(X, "episodic")
        return network.transform(inputs)

    def novelty(self, X, memory: str = "episodic") -> np.ndarray:
        """Per-sample novelty: BMU distance / -ln(a_T) of that memory (>= 1: would grow a neuron).

        With the CLIFER defaults the episodic unit is -ln 0.4 = 0.92 and the
        semantic one -ln 0.2 = 1.61 (distances in input units).
        """
        network, inputs = self._route(X, memory)
        return network.novelty(inputs)

    def predict_proba_and_novelty(self, X, memory: str = "episodic") -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_proba` and :meth:`novelty` of one memory, routing ``X`` and searching once."""
        network, inputs = self._route(X, memory)
        return network.predict_proba_and_novelty(inputs)

    # ----------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write both memories atomically as one versioned npz + JSON manifest (never pickled)."""
        manifest = {"hyperparameters": self.get_params()}
        arrays = {}
        if hasattr(self, "episodic_"):
            manifest["samples_seen"] = int(self.samples_seen_)
            arrays["classes_seen"] = self.classes_seen_
            arrays["taught_X"], arrays["taught_y"] = self.taught_X_, self.taught_y_
            for memory in MEMORIES:
                network_manifest, network_arrays = getattr(self, memory + "_").state()
                manifest[memory] = network_manifest
                arrays.update({f"{memory}.{name}": array for name, array in network_arrays.items()})
        save_state(path, self.STATE_KIND, self.STATE_VERSION, manifest, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GrowingDualMemory":
        """Read a file written by :meth:`save`; :class:`StateFileError` if it is unusable."""
        manifest, arrays = load_state(path, cls.STATE_KIND, cls.READABLE_VERSIONS)
        try:
            memory = cls(**manifest["hyperparameters"])
            memory._check_params()
            if "episodic" in manifest:
                for name in MEMORIES:
                    prefix = name + "."
                    own = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
                    setattr(memory, name + "_", cls.network_class.from_state(manifest[name], own))
                memory.samples_seen_ = int(manifest["samples_seen"])
                memory.classes_seen_ = np.asarray(arrays["classes_seen"], bool).copy()
                memory.taught_X_, memory.taught_y_ = _taught_arrays(arrays, memory)
        except (ValueError, TypeError, KeyError) as error:
            raise StateFileError(f"{path}: inconsistent dual-memory state ({error})") from error
        return memory


def _taught_arrays(arrays: dict[str, np.ndarray], memory: GrowingDualMemory) -> tuple[np.ndarray, np.ndarray]:
    """The kept taught inputs of a loaded file (none in a version 1 file), checked against the memory."""
    if "taught_X" not in arrays:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    X, y = np.asarray(arrays["taught_X"], np.float32).copy(), np.asarray(arrays["taught_y"], np.int64).copy()
    if len(y):
        check_samples(X, memory.episodic_.n_features_in_, "taught_X")
        check_labels(y, len(X), int(memory.n_classes), "taught_y")
        if np.any(y < 0) or len(y) > int(memory.taught_samples):
            raise ValueError(f"taught_y holds {len(y)} labels (at most {memory.taught_samples}, none unlabelled)")
    return X, y
