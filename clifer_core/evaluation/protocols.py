"""The per-subject class-incremental protocols (docs/design.md §5) on precomputed features.

For each subject, class order and condition, a fresh model learns the
subject's classes one at a time; after every step it is tested on three
sets: *novel* (the class just taught), *all_seen* (the classes taught so
far) and *overall* (every class, including those not yet taught: only
imagination can score there). Two protocols:

- ``faithful``: the original code's protocol: the test sets are the training
  frames themselves (B-2, docs/design.md §6), so the episodic memory's scores measure
  memorisation.
- ``fixed``: each subject's frames are split by :attr:`FaceSample.group`
  (performance type, sequence, clip): in every (subject, class) cell one
  group is held out for testing and the others are taught. No frame, and no
  near-duplicate of one, is both taught and tested.

Conditions (docs/design.md §5.4): ``mlp`` (the incremental MLP), ``gdm``, ``replay``
(GDM+Replay), ``imagination`` (GDM+Imagination). A class a subject lacks
(in the training split) is dropped from that subject's order, so that
subject has fewer steps. This module imports only numpy, so runs can go to
worker processes; latent-space imagination loads the imagination model in
the worker that needs it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from clifer_core.evaluation import metrics
from clifer_core.labels import EXPRESSIONS, GDM_EXPRESSIONS
from clifer_core.learner import DEFAULT_FEATURE_SCALE, DEFAULT_MEMORY_PARAMS, imagination_analogy

PROTOCOLS = ("faithful", "fixed")
CONDITIONS = ("mlp", "gdm", "replay", "imagination")
TEST_SETS = ("novel", "all_seen", "overall")
SPEC_ORDERS: tuple[tuple[int, ...], ...] = (
    (0, 4, 3, 5, 1, 2), (1, 3, 0, 5, 2, 4), (2, 3, 4, 0, 5, 1),
    (3, 1, 2, 4, 5, 0), (4, 2, 0, 3, 5, 1), (5, 1, 4, 0, 2, 3),
)
"""The original code's six Latin-square-like class orders (docs/design.md §5.2), as class-list positions."""
CKPLUS_CLASSES = ("angry", "disgusted", "scared", "happy", "sad", "surprised")
DATASET_CLASSES = {"taiwanese": GDM_EXPRESSIONS, "ckplus": CKPLUS_CLASSES, "yale": ("happy", "sad", "surprised", "neutral")}
TEACH_ONLY = {"taiwanese": ("neutral",)}
"""Classes taught but never scored: Taiwanese neutral is one calm recording per person, so any split of it
puts near-duplicates on both sides (data README)."""


def dataset_classes(dataset: str, expressions: Sequence[str]) -> tuple[str, ...]:
    """The class list a dataset is evaluated on.

    Taiwanese: the paper's six (disgust dropped, as the paper does);
    CK+48: its own six (no neutral; contempt is skipped by the reader);
    any other: its expressions in :data:`EXPRESSIONS` order, without
    disgust when that leaves the paper's six.
    """
    if dataset in DATASET_CLASSES:
        return DATASET_CLASSES[dataset]
    present = [e for e in EXPRESSIONS if e in set(expressions)]
    if set(present) - {"disgusted"} == set(GDM_EXPRESSIONS):
        return GDM_EXPRESSIONS
    return tuple(present)


def class_orders(n_classes: int) -> tuple[tuple[int, ...], ...]:
    """The original's six orders for six classes; otherwise the ``n`` rotations of ``0..n-1``."""
    if n_classes == 6:
        return SPEC_ORDERS
    return tuple(tuple((start + i) % n_classes for i in range(n_classes)) for start in range(n_classes))


def split_masks(subjects: Sequence[str], labels: Sequence[int], groups: Sequence[str], protocol: str,
                fold: int = 0, teach_only: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` boolean masks over the samples.

    ``faithful``: every sample in both. ``fixed``: within each (subject,
    class) cell with two or more groups, the groups sorted by name, group
    ``-(1 + fold) mod n`` is tested and the rest are taught (fold 0 tests
    the last: Taiwanese type 3); a cell with one group, or of a class in
    ``teach_only``, is taught only.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    count = len(labels)
    if protocol == "faithful":
        return np.ones(count, bool), np.ones(count, bool)
    cells: dict[tuple[str, int], list[int]] = {}
    for i, (subject, label) in enumerate(zip(subjects, labels)):
        cells.setdefault((subject, int(label)), []).append(i)
    test = np.zeros(count, bool)
    for members in cells.values():
        names = sorted({groups[i] for i in members})
        if len(names) < 2 or labels[members[0]] in teach_only:
            continue
        held_out = names[-(1 + fold) % len(names)]
        test[[i for i in members if groups[i] == held_out]] = True
    return ~test, test


def fold_count(subjects: Sequence[str], labels: Sequence[int], groups: Sequence[str],
               teach_only: Sequence[int] = ()) -> int:
    """How many folds rotate the held-out group: the most groups any scored (subject, class) cell has."""
    cells: dict[tuple[str, int], set[str]] = {}
    for subject, label, group in zip(subjects, labels, groups):
        if int(label) not in teach_only:
            cells.setdefault((subject, int(label)), set()).add(group)
    return max((len(names) for names in cells.values()), default=1)


def teach_only_indices(dataset: str, classes: Sequence[str]) -> tuple[int, ...]:
    return tuple(classes.index(c) for c in TEACH_ONLY.get(dataset, ()) if c in classes)


@dataclass
class RunConfig:
    """How the memories are built and fed (everything a worker needs besides the data); defaults = the learner's."""

    memory_params: dict = field(default_factory=lambda: dict(DEFAULT_MEMORY_PARAMS))
    feature_scale: float | None = DEFAULT_FEATURE_SCALE
    """FER features are L2-normalised and multiplied by this (the learner's FerFeatures); None: used raw."""
    imagination_mode: str = "image"
    """``image``: precomputed features of faces imagined from each taught crop; ``latent``:
    decode G-EM's prototypes to each expression and re-encode them (needs CAAE features)."""
    imagination_offset: bool = True
    """Image-space imagination as a feature-space analogy: f(x) + f(G(x, k)) - f(G(x, own label)),
    so the generator's blur (common to every imagined face) cancels out; False: f(G(x, k)) as is."""
    imaginer_file: str | None = None


@dataclass
class SubjectTask:
    """One subject under one class order: what a worker runs for every condition asked."""

    dataset: str
    protocol: str
    subject: str
    order_index: int
    order: tuple[int, ...]
    classes: tuple[str, ...]
    features: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    imagined: np.ndarray | None
    conditions: tuple[str, ...]
    config: RunConfig
    seed: int = 0


def scale_features(raw: np.ndarray, scale: float | None) -> np.ndarray:
    """The learner's FER feature map: L2-normalise, then scale (``None``: unchanged)."""
    raw = np.asarray(raw, np.float32)
    if scale is None:
        return raw
    norms = np.linalg.norm(raw, axis=-1, keepdims=True)
    return (float(scale) * raw / np.maximum(norms, 1e-12)).astype(np.float32)


_IMAGINERS: dict[str, object] = {}


def _latent_imaginer(path: str | None):
    """The imagination model, loaded once per worker process (only latent-space imagination needs it)."""
    key = str(path)
    if key not in _IMAGINERS:
        from clifer_core.imagination.imaginer import Imaginer

        _IMAGINERS[key] = Imaginer.load(path)
    return _IMAGINERS[key]


def _imagination_callback(task: SubjectTask, taught: np.ndarray):
    """The ``imagine`` hook of one increment: the taught faces (or prototypes) as every class."""
    targets = np.asarray([EXPRESSIONS.index(c) for c in task.classes])
    class_indices = np.arange(len(task.classes))
    if task.config.imagination_mode == "latent":
        imaginer = _latent_imaginer(task.config.imaginer_file)

        def from_prototypes(prototypes, labels):
            tiled = np.repeat(prototypes, len(targets), axis=0)
            imagined = imaginer.reencode(tiled, np.tile(targets, len(prototypes)))
            return (np.concatenate([prototypes, imagined]),
                    np.concatenate([labels, np.tile(class_indices, len(prototypes))]))
        return from_prototypes
    if task.imagined is None:
        raise ValueError("the imagination condition needs imagined features (compute them with imagination on)")
    imagined = task.imagined[taught][:, targets].reshape(-1, task.imagined.shape[-1])
    imagined_labels = np.tile(class_indices, int(taught.sum()))

    def from_faces(prototypes, labels):
        return np.concatenate([prototypes, imagined]), np.concatenate([labels, imagined_labels])
    return from_faces


def _imagined_features(task: SubjectTask) -> np.ndarray:
    """Raw imagined features ``(n, 7, D)``, shifted by each face's own-expression reconstruction if asked."""
    if not task.config.imagination_offset:
        return task.imagined
    own_expression = np.asarray([EXPRESSIONS.index(task.classes[label]) for label in task.labels])
    return imagination_analogy(task.features, task.imagined, own_expression)


def _rows_for(task: SubjectTask, condition: str, step: int, test_set: str, memory: str,
              y_true: np.ndarray, y_pred: np.ndarray) -> list[dict]:
    base = dict(dataset=task.dataset, protocol=task.protocol, condition=condition, order=task.order_index,
                subject=task.subject, step=step, test_set=test_set, memory=memory)
    present = np.unique(y_true)
    rows = [dict(base, metric="accuracy", value=metrics.accuracy(y_true, y_pred)),
            dict(base, metric="macro_f1", value=metrics.macro_f1(y_true, y_pred, labels=present))]
    if test_set == "overall":
        recalls = metrics.per_class_recall(y_true, y_pred, range(len(task.classes)))
        rows += [dict(base, metric=f"recall:{name}", value=float(value))
                 for name, value in zip(task.classes, recalls) if np.isfinite(value)]
    return rows


def _new_model(task: SubjectTask, condition: str, n_features: int):
    if condition == "mlp":
        from clifer_core.evaluation.mlp import IncrementalMLP

        return IncrementalMLP(n_features, len(task.classes), seed=task.seed)
    from clifer_core.memory import GrowingDualMemory

    params = dict(task.config.memory_params, n_classes=len(task.classes), replay=condition == "replay")
    return GrowingDualMemory(**params)


def run_condition(task: SubjectTask, condition: str) -> list[dict]:
    """Every step of one condition for one subject and order: tidy result rows."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    scale = task.config.feature_scale
    features = scale_features(task.features, scale)
    if task.imagined is not None and task.config.imagination_mode == "image":
        task = replace(task, imagined=scale_features(_imagined_features(task), scale))
    order = [c for c in task.order if np.any(task.train & (task.labels == c))]
    model = _new_model(task, condition, features.shape[1])
    memories = ("mlp",) if condition == "mlp" else ("episodic", "semantic")
    rows: list[dict] = []
    base = dict(dataset=task.dataset, protocol=task.protocol, condition=condition, order=task.order_index,
                subject=task.subject)
    task_scores = {memory: np.full((len(order), len(order)), np.nan) for memory in memories}
    for step, new_class in enumerate(order, start=1):
        taught = task.train & (task.labels == new_class)
        started = time.perf_counter()
        if condition == "mlp":
            model.partial_fit(features[taught], task.labels[taught])
        else:
            imagine = _imagination_callback(task, taught) if condition == "imagination" else None
            model.partial_fit(features[taught], task.labels[taught], imagine=imagine)
        seconds = time.perf_counter() - started
        rows.append(dict(base, step=step, test_set="-", memory="-", metric="train_seconds", value=seconds))
        if condition != "mlp":
            rows += [dict(base, step=step, test_set="-", memory=memory, metric="nodes",
                          value=float(len(getattr(model, memory + "_").weights_))) for memory in memories]
        seen = np.isin(task.labels, order[:step])
        sets = {"novel": task.test & (task.labels == new_class), "all_seen": task.test & seen, "overall": task.test}
        for test_set, mask in sets.items():
            if not mask.any():
                continue
            for memory in memories:
                predicted = model.predict(features[mask]) if condition == "mlp" else model.predict(features[mask], memory=memory)
                predicted = np.asarray(predicted)
                rows += _rows_for(task, condition, step, test_set, memory, task.labels[mask], predicted)
                if test_set == "overall":
                    task_scores[memory][step - 1] = metrics.per_class_recall(task.labels[mask], predicted, order)
    for memory, matrix in task_scores.items():
        rows += [dict(base, step=len(order), test_set="cl", memory=memory, metric=name, value=value)
                 for name, value in continual_learning_summaries(matrix).items()]
    return rows


def continual_learning_summaries(matrix: np.ndarray) -> dict[str, float]:
    """Average accuracy, average incremental accuracy, backward and forward transfer, forgetting of ``R``.

    ``R[i, j]`` is the recall, on the test set, of the class taught at step
    ``j`` after step ``i`` (a class absent from the test split gives NaN).
    Forward transfer is measured against 0, the recall of a class no model
    can predict before it is taught: only imagination makes it positive.
    """
    if len(matrix) == 0:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: classes absent from the test split
        return {"average_accuracy": metrics.average_accuracy(matrix),
                "average_incremental_accuracy": metrics.average_incremental_accuracy(matrix),
                "backward_transfer": metrics.backward_transfer(matrix),
                "forgetting": metrics.forgetting(matrix),
                "forward_transfer": metrics.forward_transfer(matrix, 0.0)}


def run_task(task: SubjectTask) -> list[dict]:
    """All conditions of one subject and order (the unit of work of a worker process)."""
    rows = []
    for condition in task.conditions:
        rows += run_condition(task, condition)
    return rows


def population_rows(dataset: str, protocol: str, subjects: np.ndarray, labels: np.ndarray, test: np.ndarray,
                    prior: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """The population-only baseline: the packaged FER2013 classifier on each subject's test set.

    Its 7 probabilities are restricted to the dataset's classes before the
    argmax. It learns nothing, so it is one row per subject and metric,
    reported at the last step.
    """
    columns = [EXPRESSIONS.index(c) for c in classes]
    predicted = np.argmax(prior[:, columns], axis=1)
    rows = []
    for subject in sorted(set(subjects[test])):
        mask = test & (subjects == subject)
        present = np.unique(labels[mask])
        base = dict(dataset=dataset, protocol=protocol, condition="population", order=-1, subject=subject,
                    step=len(present), memory="fer2013")
        for test_set in ("all_seen", "overall"):
            rows.append(dict(base, test_set=test_set, metric="accuracy",
                             value=metrics.accuracy(labels[mask], predicted[mask])))
            rows.append(dict(base, test_set=test_set, metric="macro_f1",
                             value=metrics.macro_f1(labels[mask], predicted[mask], labels=present)))
    return rows
