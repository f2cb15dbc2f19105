"""Run a protocol on a dataset: crops, features and imagination once, then every subject x order in parallel.

The expensive, order-independent work (face crops, FER2013 features and
probabilities, imagined faces' features) runs once per image in this
process and is cached on disk; the memories then run per (subject, order)
task, optionally in ``jobs`` spawned worker processes that import only numpy
(plus the imagination model for latent-space imagination).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np

from clifer_core.data.cache import ArrayCache, default_cache_dir
from clifer_core.evaluation.crops import dataset_crops
from clifer_core.data.datasets import load_dataset
from clifer_core.labels import EXPRESSIONS
from clifer_core.progress import Progress
from clifer_core.evaluation.protocols import (
    CONDITIONS,
    RunConfig,
    SubjectTask,
    class_orders,
    dataset_classes,
    population_rows,
    run_task,
    split_masks,
    teach_only_indices,
)
from clifer_core.evaluation.representations import compute_landmarks, compute_representations


@dataclass
class EvaluationResult:
    """Tidy rows plus what a report needs to describe the run."""

    rows: list[dict]
    classes: tuple[str, ...]
    orders: tuple[tuple[int, ...], ...]
    subjects: int
    train_images: int
    test_images: int
    seconds: dict[str, float]


def evaluate(dataset: str, protocol: str, conditions: Sequence[str] = CONDITIONS, orders: Sequence[int] | None = None,
             subjects: Sequence[str] | None = None, jobs: int = 1, features: str = "fer",
             config: RunConfig | None = None, fold: int = 0, cache: ArrayCache | None = None,
             show_progress: bool = True) -> EvaluationResult:
    """Evaluate ``conditions`` on ``dataset`` (a name or folder) under ``protocol``.

    ``orders`` selects among the dataset's class orders by index (default:
    all), ``subjects`` restricts the subjects. The population baseline
    (packaged FER2013 on each subject's test set) is always included.
    """
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {CONDITIONS}")
    config = config or RunConfig()
    cache = cache if cache is not None else ArrayCache(default_cache_dir())
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    samples = load_dataset(dataset)
    if not samples:
        raise ValueError(f"{dataset}: no labelled images found")
    classes = dataset_classes(samples[0].dataset, [s.expression for s in samples if s.expression])
    samples = [s for s in samples if s.expression in classes and (subjects is None or s.subject in subjects)]
    if not samples:
        raise ValueError(f"{dataset}: no images of classes {classes}" + (f" for subjects {list(subjects)}" if subjects else ""))
    name = samples[0].dataset
    subject_ids = np.array([s.subject for s in samples])
    labels = np.array([classes.index(s.expression) for s in samples])
    train, test = split_masks(subject_ids, labels, [s.group for s in samples], protocol, fold,
                              teach_only_indices(samples[0].dataset, classes))
    if not test.any():
        raise ValueError(f"{name}: the {protocol} protocol leaves no test images: every (subject, class) has a "
                         "single clip/sequence, so no leak-free per-subject split exists")

    all_orders = class_orders(len(classes))
    chosen = list(range(len(all_orders))) if orders is None else list(orders)
    for index in chosen:
        if not 0 <= index < len(all_orders):
            raise ValueError(f"order index {index} out of range 0..{len(all_orders) - 1}")
    if config.imagination_mode == "latent" and features != "caae":
        raise ValueError("latent-space imagination needs CAAE features (features='caae')")

    crops, _ = dataset_crops(samples, cache, show_progress=show_progress)
    seconds["crops"] = time.perf_counter() - started
    imagine_images = "imagination" in conditions and config.imagination_mode == "image"
    representations = compute_representations(crops, cache, features=features, imagination=imagine_images,
                                              imaginer_file=config.imaginer_file, show_progress=show_progress)
    if features == "caae":
        config = replace(config, feature_scale=None)
    seconds["features"] = time.perf_counter() - started - seconds["crops"]

    rows = population_rows(name, protocol, subject_ids, labels, test, representations.prior, classes)
    tasks = []
    for subject_number, subject in enumerate(sorted(set(subject_ids))):
        own = subject_ids == subject
        for index in chosen:
            tasks.append(SubjectTask(
                dataset=name, protocol=protocol, subject=subject, order_index=index, order=all_orders[index],
                classes=classes, features=representations.features[own], labels=labels[own], train=train[own],
                test=test[own], imagined=None if representations.imagined is None else representations.imagined[own],
                conditions=tuple(conditions), config=config, seed=1000 * subject_number + index))
    memory_started = time.perf_counter()
    rows += run_tasks(tasks, jobs, show_progress)
    seconds["memories"] = time.perf_counter() - memory_started
    seconds["total"] = time.perf_counter() - started
    return EvaluationResult(rows, classes, tuple(all_orders[i] for i in chosen), len(set(subject_ids)),
                            int(train.sum()), int(test.sum()), seconds)


def run_tasks(tasks: Sequence[SubjectTask], jobs: int = 1, show_progress: bool = True) -> list[dict]:
    """Run tasks here (``jobs`` <= 1) or in ``jobs`` spawned processes, with progress on stderr."""
    progress = Progress(f"subjects x orders ({jobs} job{'s' if jobs != 1 else ''})", len(tasks), enabled=show_progress)
    rows: list[dict] = []
    if jobs <= 1:
        for task in tasks:
            rows += run_task(task)
            progress.update()
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(run_task, task) for task in tasks]
            for future in as_completed(futures):
                rows += future.result()
                progress.update()
    progress.close()
    return rows


@dataclass
class PartialResult:
    """Rows of the partial-teaching protocol, the fitted fusion weights and what a report needs."""

    rows: list[dict]
    fitted: dict
    classes: tuple[str, ...]
    subjects: list[str]
    imagination_subjects: list[str]
    folds: int
    seconds: dict[str, float]


def shape_raw_vectors(crops: np.ndarray, cache: ArrayCache, show_progress: bool) -> np.ndarray:
    """Raw face-mesh shape vectors of ``crops`` (:class:`~clifer_core.shape.ShapeFeatures`) from cached landmarks."""
    from clifer_core.shape import ShapeFeatures

    return ShapeFeatures().from_landmarks(compute_landmarks(crops, cache, "facemesh", show_progress))


def evaluate_partial(dataset: str, shots: Sequence[int | None] | None = None, orders: Sequence[int] | None = None,
                     subjects: Sequence[str] | None = None, folds: Sequence[int] | None = None,
                     imagination_subjects: Sequence[str] = (), config: RunConfig | None = None,
                     cache: ArrayCache | None = None, show_progress: bool = True,
                     population_model=None, features: str = "fer", classes: Sequence[str] | None = None) -> PartialResult:
    """The partial-teaching protocol (:mod:`clifer_core.evaluation.partial`) on ``dataset``, every fold.

    ``imagination_subjects`` are the people the imagination model never saw:
    only they get the ``clifer_imagination`` condition. ``population_model``
    (a :class:`~clifer_core.population.PopulationModel` that never saw
    ``dataset``) replaces the FER2013 prior as the population evidence of every
    condition that uses one (``prior``, ``nn_prior``, the fused learner); None:
    the FER2013 prior. ``features``: what the memories and the population
    classifier learn, ``fer`` or the learner's default ``fer+shape`` (face-mesh
    shape beside FER; imagination's analogy is FER-only, so ``fer+shape`` has
    no imagination condition). ``classes``: the classes taught and scored
    (default: the dataset's, :func:`dataset_classes`; Taiwanese without disgust,
    as the paper does; pass all of :data:`EXPRESSIONS` to score what the node answers).
    """
    from clifer_core.evaluation.partial import SHOTS, PartialTask, population_model_for, run_partial_task, score
    from clifer_core.evaluation.protocols import fold_count, imagination_analogy, scale_features
    from clifer_core.learner import fer_shape_vectors

    config = config or RunConfig()
    shots = SHOTS if shots is None else tuple(shots)
    cache = cache if cache is not None else ArrayCache(default_cache_dir())
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    samples = load_dataset(dataset)
    classes = tuple(classes) if classes else dataset_classes(samples[0].dataset, [s.expression for s in samples if s.expression])
    samples = [s for s in samples if s.expression in classes and (subjects is None or s.subject in subjects)]
    if not samples:
        raise ValueError(f"{dataset}: no images of classes {classes}")
    name = samples[0].dataset
    subject_ids = np.array([s.subject for s in samples])
    labels = np.array([classes.index(s.expression) for s in samples])
    groups = [s.group for s in samples]
    teach_only = teach_only_indices(name, classes)
    crops, _ = dataset_crops(samples, cache, show_progress=show_progress)
    wants_imagination = bool(set(imagination_subjects) & set(subject_ids))
    own_expressions = np.array([EXPRESSIONS.index(classes[label]) for label in labels])
    representations = compute_representations(crops, cache, imagination=wants_imagination,
                                              imaginer_file=config.imaginer_file, show_progress=show_progress,
                                              own_expressions=own_expressions)
    seconds["features"] = time.perf_counter() - started
    columns = [EXPRESSIONS.index(c) for c in classes]
    evidence = representations.prior
    if population_model is not None:
        evidence = population_evidence(population_model, crops, representations.prior, subject_ids, cache, show_progress)
    prior = evidence[:, columns].astype(np.float64)
    prior /= prior.sum(axis=1, keepdims=True)
    if features not in ("fer", "fer+shape"):
        raise ValueError(f"features must be 'fer' or 'fer+shape', got {features!r}")
    memory_features = scale_features(representations.features, config.feature_scale)
    if features == "fer+shape":
        memory_features = fer_shape_vectors(representations.features, shape_raw_vectors(crops, cache, show_progress),
                                            config.feature_scale or 1.0)
    imagined = None
    if representations.imagined is not None and features == "fer":
        analogy = imagination_analogy(representations.features, representations.imagined, own_expressions)
        imagined = scale_features(analogy[:, columns], config.feature_scale)
    all_orders = class_orders(len(classes))
    chosen = list(range(len(all_orders))) if orders is None else list(orders)
    total_folds = fold_count(subject_ids, labels, groups, teach_only)
    fold_list = list(range(total_folds)) if folds is None else list(folds)
    population_cache: dict = {}
    tasks = []
    for fold in fold_list:
        train, test = split_masks(subject_ids, labels, groups, "fixed", fold, teach_only)
        if not test.any():
            raise ValueError(f"{name}: no leak-free per-person test split exists (one clip per person and class)")
        for subject in sorted(set(subject_ids)):
            own = subject_ids == subject
            model = population_model_for(memory_features, labels, subject_ids, subject, len(classes), population_cache)
            for index in chosen:
                for count in shots:
                    tasks.append(PartialTask(
                        subject=subject, fold=fold, order_index=index, order=all_orders[index], shots=count,
                        features=memory_features[own], population=prior[own], labels=labels[own], train=train[own],
                        test=test[own], imagined=imagined[own] if imagined is not None and subject in imagination_subjects else None,
                        population_model=model, memory_params=dict(config.memory_params)))
    seconds["population"] = time.perf_counter() - started - seconds["features"]
    progress = Progress("people x folds x orders x shots", len(tasks), enabled=show_progress)
    records = []
    for task in tasks:
        records += run_partial_task(task)
        progress.update()
    progress.close()
    seconds["memories"] = time.perf_counter() - started - seconds["features"] - seconds["population"]
    rows, fitted = score(records, name)
    seconds["total"] = time.perf_counter() - started
    imagined_people = sorted(set(imagination_subjects) & set(subject_ids)) if "clifer_imagination" in fitted else []
    return PartialResult(rows, fitted, classes, sorted(set(subject_ids)), imagined_people, len(fold_list), seconds)


def population_evidence(population_model, crops: np.ndarray, fer_prior: np.ndarray, subject_ids: np.ndarray,
                        cache: ArrayCache, show_progress: bool = True) -> np.ndarray:
    """``(N, 7)`` probabilities of the population model on a dataset's crops, from their FER2013 probabilities
    (or its own fine-tuned network's, run here, when it has one).

    Each face's shape is taken as a displacement from the median shape of its
    person's faces, and its appearance reading centred on the person's median
    reading (no labels: what the model's running per-person medians settle
    to, as ``clifer train-population`` trains it).
    """
    from clifer_core.population_training import person_displacements, person_typical_appearance
    from clifer_core.shape import ShapeFeatures

    points = compute_landmarks(crops, cache, population_model.landmark_model, show_progress=show_progress)
    shape_raw = ShapeFeatures(model=population_model.landmark_model).from_landmarks(points)
    appearance = population_model.appearance_proba(crops, fer_prior)
    return population_model.predict_proba_from(appearance, person_displacements(shape_raw, subject_ids),
                                               person_typical_appearance(appearance, subject_ids))


def imagination_held_out(dataset: str, imaginer_file=None) -> list[str]:
    """The ``dataset`` subjects the imagination model never saw, from its metadata (numpy only, no TensorFlow)."""
    from clifer_core.evaluation.representations import imaginer_path
    from clifer_core.persistence import state_manifest

    held_out = state_manifest(imaginer_path(imaginer_file)).get("metadata", {}).get("held_out_subjects", [])
    return sorted(entry.split(":", 1)[1] for entry in held_out if entry.startswith(f"{dataset}:"))
