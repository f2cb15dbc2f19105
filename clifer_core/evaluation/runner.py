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
)
from clifer_core.evaluation.representations import compute_representations


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
    train, test = split_masks(subject_ids, labels, [s.group for s in samples], protocol, fold)
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
