"""Partial teaching: does teaching a person ever make the robot read them worse than the population model?

For each person, held-out performance (fold), class order and number of
shots per class, a fresh CLIFER memory is taught one class at a time; after
every step *every* class is scored on the person's held-out performance:
overall macro-F1, recall on the classes taught so far and recall on those
not yet taught, each beside the population prior's. Conditions:

- ``prior``: the population model alone (the packaged FER2013 classifier);
- ``nn``: 1-nearest-neighbour over the person's taught faces;
- ``nn_prior``: 1-NN, but the prior's class wherever the prior picks a class
  not yet taught (nothing fitted, no imagination);
- ``population_person``: a softmax-regression population classifier trained
  on the *other* people of the dataset, then fine-tuned on the person's
  taught faces with an L2 pull back to the population weights
  (:meth:`~clifer_core.adaptation.PopulationClassifier.adapted`, not tuned);
- ``clifer``: the learner's fused estimate (:mod:`clifer_core.fusion`) from a
  GrowingDualMemory taught as the learner teaches it;
- ``clifer_imagination``: the same with image-space imagination, only for
  people the imagination model never saw (``imagination_subjects``);
- ``population``: the softmax-regression population classifier alone, and
  ``clifer_population``: CLIFER's fusion with that classifier as the
  population evidence in place of FER2013 (the same memory, the same code:
  the learner's prior is any ``predict_proba`` model);
- ``clifer_adapted``: CLIFER's fusion with the FER2013 prior and, as a
  further term, that population classifier fine-tuned on the taught faces
  the memory kept (the learner's default, :mod:`clifer_core.adaptation`);
  ``clifer_imagination_adapted``: the same with imagination.

The fusion weights are fitted by cross-fitting over people: each person is
scored with weights fitted on the other people only (:func:`score`). Worker
tasks import only numpy and scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clifer_core.evaluation import metrics
from clifer_core.adaptation import PopulationClassifier
from clifer_core.fusion import fit_fusion, fuse_terms, fusion_terms, expected_calibration_error
from clifer_core.learner import DEFAULT_MEMORY_PARAMS, CliferLearner

SHOTS: tuple[int | None, ...] = (1, 3, None)
"""Taught faces per class: 1, 3, or every taught face of that class (None)."""
FUSED = ("clifer", "clifer_imagination", "clifer_population", "clifer_adapted", "clifer_imagination_adapted")
ADAPTED = ("clifer_adapted", "clifer_imagination_adapted")
"""Fused conditions with the person-adapted population classifier's term."""
CLASS_F1 = "f1_class_"
"""Metric prefix of each scored class's F1 after every step (``f1_class_<class index>``)."""
FINAL_RECALL = "final_recall_class_"
"""Metric prefix of per-class recall after the last step (``final_recall_class_<class index>``)."""
WITH_IMAGINATION = ("clifer_imagination", "clifer_imagination_adapted")
"""Fused conditions whose memory holds imagined prototypes (only people the imagination model never saw)."""
CROSS_FIT_GROUPS = 5


def shots_name(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


@dataclass
class PartialTask:
    """One person, fold, class order and shot count."""

    subject: str
    fold: int
    order_index: int
    order: tuple[int, ...]
    shots: int | None
    features: np.ndarray
    """``(n, D)`` scaled memory features of the person's faces."""
    population: np.ndarray
    """``(n, C)`` the prior's probabilities over the dataset's classes."""
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    imagined: np.ndarray | None = None
    """``(n, C, D)`` scaled imagined features per class (analogy), or None: no imagination condition."""
    population_model: PopulationClassifier | None = None
    """The population classifier fitted without this person."""
    memory_params: dict = field(default_factory=lambda: dict(DEFAULT_MEMORY_PARAMS))


@dataclass
class StepRecord:
    """What one step of one task needs for scoring: truth, baseline answers and the fusion's terms."""

    subject: str
    fold: int
    order_index: int
    shots: str
    step: int
    taught: np.ndarray
    labels: np.ndarray
    predictions: dict[str, np.ndarray]
    terms: dict[str, np.ndarray]
    """condition -> ``(8, n_test, C)`` fusion terms (see :func:`clifer_core.fusion.fusion_terms`)."""


def taught_indices(task: PartialTask, label: int) -> np.ndarray:
    """The first ``shots`` taught faces of class ``label`` (file order)."""
    indices = np.flatnonzero(task.train & (task.labels == label))
    return indices if task.shots is None else indices[:task.shots]


def _nearest(train_features: np.ndarray, train_labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    distances = ((query[:, None, :] - train_features[None, :, :]) ** 2).sum(axis=-1)
    return train_labels[np.argmin(distances, axis=1)]


def _new_memory(task: PartialTask, n_classes: int):
    from clifer_core.memory import GrowingDualMemory

    return GrowingDualMemory(**dict(task.memory_params, n_classes=n_classes))


def _memory_terms(memory, features: np.ndarray, population: np.ndarray, adapted: np.ndarray | None = None) -> np.ndarray:
    distances, taught = CliferLearner.memory_evidence(memory, features)
    return fusion_terms(population, distances, taught, adapted)


def run_partial_task(task: PartialTask) -> list[StepRecord]:
    """Teach one class per step; after each, every condition's answers (or fusion terms) on the test faces."""
    n_classes = task.population.shape[1]
    order = [c for c in task.order if np.any(task.train & (task.labels == c))]
    test = np.flatnonzero(task.test)
    test_features, test_labels = task.features[test], task.labels[test]
    prior_best = np.argmax(task.population[test], axis=1)
    memories = {"clifer": _new_memory(task, n_classes)}
    if task.imagined is not None:
        memories["clifer_imagination"] = _new_memory(task, n_classes)
    taught_so_far: list[int] = []
    records = []
    for step, new_class in enumerate(order, start=1):
        new = taught_indices(task, new_class)
        taught_so_far += new.tolist()
        for name, memory in memories.items():
            imagine = _imagined_from(task, new, n_classes) if name == "clifer_imagination" else None
            memory.partial_fit(task.features[new], task.labels[new], imagine=imagine)
        taught = np.zeros(n_classes, bool)
        taught[order[:step]] = True
        taught_features, taught_labels = task.features[taught_so_far], task.labels[taught_so_far]
        nearest = _nearest(taught_features, taught_labels, test_features)
        predictions = {"prior": prior_best, "nn": nearest,
                       "nn_prior": np.where(taught[prior_best], nearest, prior_best)}
        terms = {name: _memory_terms(memory, test_features, task.population[test]) for name, memory in memories.items()}
        if task.population_model is not None:
            model = task.population_model.adapted(taught_features, taught_labels)
            predictions["population_person"] = model.predict(test_features)
            population = task.population_model.predict_proba(test_features)
            predictions["population"] = np.argmax(population, axis=1)
            terms["clifer_population"] = _memory_terms(memories["clifer"], test_features, population)
            for plain, adapted_name in (("clifer", "clifer_adapted"), ("clifer_imagination", "clifer_imagination_adapted")):
                if plain in memories:
                    samples, sample_labels = CliferLearner.adaptation_samples(memories[plain])
                    adapted = task.population_model.adapted(samples, sample_labels).predict_proba(test_features)
                    terms[adapted_name] = _memory_terms(memories[plain], test_features, task.population[test], adapted)
        records.append(StepRecord(task.subject, task.fold, task.order_index, shots_name(task.shots), step, taught,
                                  test_labels, predictions, terms))
    return records


def cross_fit_groups(subjects: Sequence[str], groups: int = CROSS_FIT_GROUPS) -> dict[str, int]:
    """Subjects (sorted) dealt round-robin into ``groups`` groups for cross-fitting."""
    ordered = sorted(set(subjects))
    return {subject: i % min(groups, len(ordered)) for i, subject in enumerate(ordered)}


def fit_weights(records: Sequence[StepRecord], condition: str, groups: dict[str, int]) -> dict[int, object]:
    """Fusion weights per subject group, each fitted on the records of the *other* groups only."""
    weights = {}
    use_imagination = condition in WITH_IMAGINATION
    for group in sorted(set(groups.values())):
        others = [r for r in records if condition in r.terms and groups[r.subject] != group]
        if not others:
            continue
        terms = np.concatenate([r.terms[condition] for r in others], axis=1)
        labels = np.concatenate([r.labels for r in others])
        weights[group] = fit_fusion(terms, labels, use_imagination=use_imagination, use_adapted=condition in ADAPTED)
    return weights


def _scores(labels: np.ndarray, predicted: np.ndarray, taught: np.ndarray) -> dict[str, float]:
    present = np.unique(labels)
    recalls = metrics.per_class_recall(labels, predicted, present)
    taught_here, untaught_here = taught[present], ~taught[present]
    return {"macro_f1": metrics.macro_f1(labels, predicted, labels=present),
            "accuracy": metrics.accuracy(labels, predicted),
            "recall_taught": float(np.mean(recalls[taught_here])) if taught_here.any() else np.nan,
            "recall_untaught": float(np.mean(recalls[untaught_here])) if untaught_here.any() else np.nan}


def score(records: Sequence[StepRecord], dataset: str, groups: dict[str, int] | None = None) -> tuple[list[dict], dict]:
    """Tidy rows (one per record, condition and metric) and the fitted weights and calibration per condition.

    Fusion weights are cross-fitted: a subject's fused answers use weights
    fitted on the other subject groups (for the imagination condition, with
    one group per subject: it covers few people). A condition with a single
    group cannot be cross-fitted and is left out.
    """
    rows: list[dict] = []
    fitted: dict[str, dict] = {}
    for condition in FUSED:
        own = [r for r in records if condition in r.terms]
        if not own:
            continue
        condition_groups = groups or cross_fit_groups([r.subject for r in own])
        if condition in WITH_IMAGINATION:
            condition_groups = {s: i for i, s in enumerate(sorted({r.subject for r in own}))}
        if len(set(condition_groups.values())) < 2:
            for record in records:
                record.terms.pop(condition, None)
            continue
        weights = fit_weights(own, condition, condition_groups)
        probabilities, labels = [], []
        for record in own:
            fused = fuse_record(record, condition, weights[condition_groups[record.subject]])
            record.predictions[condition] = np.argmax(fused, axis=1)
            probabilities.append(fused)
            labels.append(record.labels)
        probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
        every_person = fit_fusion(np.concatenate([r.terms[condition] for r in own], axis=1),
                                  np.concatenate([r.labels for r in own]), condition in WITH_IMAGINATION,
                                  use_adapted=condition in ADAPTED)
        fitted[condition] = {"weights": {g: w.as_dict() for g, w in weights.items()},
                             "every_person": every_person.as_dict(),
                             "ece": expected_calibration_error(probabilities, labels),
                             "ece_prior": expected_calibration_error(
                                 np.concatenate([np.exp(r.terms[condition][0]) for r in own]), labels),
                             "nll": float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12))))}
    last_step: dict[tuple, int] = {}
    for record in records:
        key = (record.subject, record.fold, record.order_index, record.shots)
        last_step[key] = max(last_step.get(key, 0), record.step)
    for record in records:
        final = record.step == last_step[(record.subject, record.fold, record.order_index, record.shots)]
        base = dict(dataset=dataset, subject=record.subject, fold=record.fold, order=record.order_index,
                    shots=record.shots, step=record.step, final=final)
        for condition, predicted in record.predictions.items():
            for metric, value in _scores(record.labels, predicted, record.taught).items():
                rows.append(dict(base, condition=condition, metric=metric, value=value))
            present = np.unique(record.labels)
            for label, f1 in zip(present, metrics.per_class_f1(record.labels, predicted, present)):
                rows.append(dict(base, condition=condition, metric=f"{CLASS_F1}{int(label)}", value=float(f1)))
            if final:
                for label, recall in zip(present, metrics.per_class_recall(record.labels, predicted, present)):
                    rows.append(dict(base, condition=condition, metric=f"{FINAL_RECALL}{int(label)}", value=float(recall)))
    return rows, fitted


def fuse_record(record: StepRecord, condition: str, weights) -> np.ndarray:
    return fuse_terms(record.terms[condition], weights)


def person_means(rows: Sequence[dict], condition: str, metric: str, shots: str, step: int | str | None = None,
                 subjects: Sequence[str] | None = None) -> dict[str, float]:
    """``{subject: mean over folds and orders}`` of one metric at ``step`` (``"final"``: each run's last
    step; None: averaged over steps). A person's runs are averaged first, so ± is over people."""
    values: dict[str, list[float]] = {}
    for row in rows:
        at_step = step is None or (row["final"] if step == "final" else row["step"] == step)
        if (row["condition"] == condition and row["metric"] == metric and row["shots"] == shots and at_step
                and (subjects is None or row["subject"] in subjects) and np.isfinite(row["value"])):
            values.setdefault(row["subject"], []).append(row["value"])
    return {subject: float(np.mean(v)) for subject, v in values.items()}


def population_model_for(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray, subject: str,
                         n_classes: int, cache: dict) -> PopulationClassifier:
    """The population classifier fitted on every other subject, all their images (memoised per subject)."""
    if subject not in cache:
        others = subjects != subject
        cache[subject] = PopulationClassifier(n_classes).fit(features[others], labels[others])
    return cache[subject]



def mean_over_people(rows, condition, metric, shots, step=None, subjects=None) -> tuple[float, float, int]:
    """Mean, sd and count over people of :func:`person_means`."""
    values = list(person_means(rows, condition, metric, shots, step, subjects).values())
    if not values:
        return float("nan"), float("nan"), 0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def paired_gap(rows, condition, baseline, metric, shots, step=None, subjects=None) -> float:
    """Mean over people of (condition - baseline), on the people both have."""
    mine = person_means(rows, condition, metric, shots, step, subjects)
    theirs = person_means(rows, baseline, metric, shots, step, subjects)
    common = sorted(set(mine) & set(theirs))
    return float(np.mean([mine[s] - theirs[s] for s in common])) if common else float("nan")


def untaught_gains(rows, shots_levels: Sequence[str] = ("1", "3", "all")) -> dict[str, float]:
    """What imagination adds on classes not yet taught, on the people it was run for (those the imagination model
    never saw): recall on untaught classes, mean over people (each person's steps, folds and orders averaged
    first) and over ``shots_levels``, of the learner with imagination minus the prior's (``*_vs_prior``) and minus
    the same learner's without imagination (``*_vs_no_imagination``); memory only and person-adapted."""
    people = sorted({row["subject"] for row in rows if row["condition"] in WITH_IMAGINATION})
    pairs = {"untaught_gain_vs_prior": ("clifer_imagination", "prior"),
             "untaught_gain_vs_no_imagination": ("clifer_imagination", "clifer"),
             "adapted_untaught_gain_vs_prior": ("clifer_imagination_adapted", "prior"),
             "adapted_untaught_gain_vs_no_imagination": ("clifer_imagination_adapted", "clifer_adapted")}
    gains = {name: float(np.mean([paired_gap(rows, mine, theirs, "recall_untaught", shots, None, people)
                                  for shots in shots_levels])) if people else float("nan")
             for name, (mine, theirs) in pairs.items()}
    return {**gains, "people": len(people)}


def steps_of(rows) -> list[int]:
    return sorted({row["step"] for row in rows})


def shots_of(rows) -> list[str]:
    return [name for name in ("1", "3", "all") if any(row["shots"] == name for row in rows)]


def worst_class_margin(rows, condition: str, prior: str = "prior", subjects=None) -> tuple[float, dict]:
    """The product promise per expression: the smallest, over steps, shots and scored classes, of the
    people-mean paired gap in that class's F1 (``condition`` − ``prior``; a person's folds and orders
    averaged first), and where it falls. NaN when the rows hold no per-class F1."""
    values: dict[tuple, list[float]] = {}
    for row in rows:
        if (row["condition"] in (condition, prior) and row["metric"].startswith(CLASS_F1)
                and (subjects is None or row["subject"] in subjects) and np.isfinite(row["value"])):
            key = (row["condition"], row["shots"], row["step"], row["metric"], row["subject"])
            values.setdefault(key, []).append(row["value"])
    gaps: dict[tuple, list[float]] = {}
    for (name, shots, step, metric, subject), own in values.items():
        other = values.get((prior, shots, step, metric, subject)) if name == condition else None
        if other:
            gaps.setdefault((shots, step, metric), []).append(float(np.mean(own)) - float(np.mean(other)))
    if not gaps:
        return float("nan"), {}
    (shots, step, metric), people = min(gaps.items(), key=lambda item: float(np.mean(item[1])))
    return float(np.mean(people)), {"class": int(metric[len(CLASS_F1):]), "step": step, "shots": shots}


def headline(rows, fitted: dict, condition: str = "clifer_adapted", prior: str = "prior", fallback: str = "nn_prior",
             subjects=None) -> dict[str, float]:
    """The no-regret figures of ``condition`` against ``prior`` over every step and shot count.

    ``no_regret_margin``: the smallest (over steps and shots) people-mean gap in
    overall macro-F1; ``untaught_recall_ratio``: recall on classes not yet
    taught over the prior's, averaged over steps that have some and shots;
    ``steps_macro_f1_vs_fallback``: mean gap to ``fallback`` over steps and
    shots; ``final_macro_f1``: after every class is taught, every shot.
    """
    gaps, ratios, fallback_gaps = [], [], []
    for shots in shots_of(rows):
        for step in steps_of(rows):
            gaps.append(paired_gap(rows, condition, prior, "macro_f1", shots, step, subjects))
            fallback_gaps.append(paired_gap(rows, condition, fallback, "macro_f1", shots, step, subjects))
            mine = mean_over_people(rows, condition, "recall_untaught", shots, step, subjects)[0]
            theirs = mean_over_people(rows, prior, "recall_untaught", shots, step, subjects)[0]
            if np.isfinite(mine) and np.isfinite(theirs) and theirs > 0:
                ratios.append(mine / theirs)
    worst = worst_class_margin(rows, condition, prior, subjects)
    return {"no_regret_margin": float(np.nanmin(gaps)),
            "worst_class_f1_margin": worst[0],
            "untaught_recall_ratio": float(np.mean(ratios)) if ratios else float("nan"),
            "steps_macro_f1_vs_fallback": float(np.nanmean(fallback_gaps)),
            "final_macro_f1": mean_over_people(rows, condition, "macro_f1", "all", "final", subjects)[0],
            "ece_fused": float(fitted.get(condition, {}).get("ece", float("nan")))}


CONDITION_NAMES = {"prior": "prior (FER2013)", "nn": "1-NN", "nn_prior": "1-NN + prior for untaught",
                   "population": "population classifier", "population_person": "population classifier + person",
                   "clifer_adapted": "**CLIFER fused** (FER2013 prior, memory, person-adapted classifier)",
                   "clifer": "CLIFER fused, memory only (FER2013 prior, memory)",
                   "clifer_population": "CLIFER fused (population classifier as prior, memory)",
                   "clifer_imagination_adapted": "**CLIFER fused** + imagination",
                   "clifer_imagination": "CLIFER fused, memory only + imagination"}


def markdown(rows, fitted: dict, subjects=None, title: str = "", evidence: str = "FER2013") -> str:
    """Per shot count: overall macro-F1 per step for every condition (mean ± sd over people), then recall
    on taught and untaught classes for CLIFER beside the prior. ``evidence`` names the population evidence
    the prior, fallback and fusion used."""
    names = {c: name.replace("FER2013", evidence) for c, name in CONDITION_NAMES.items()}
    conditions = [c for c in CONDITION_NAMES if any(r["condition"] == c for r in rows)]
    steps = steps_of(rows)
    lines = [title] if title else []
    for shots in shots_of(rows):
        lines += ["", f"Overall macro-F1 after each step, {shots} shot(s) per class (mean ± sd over people):", "",
                  "| condition | " + " | ".join(f"step {s}" for s in steps) + " | mean over steps | people |",
                  "|---|" + "---|" * (len(steps) + 2)]
        for condition in conditions:
            cells = []
            for step in steps:
                mean, sd, count = mean_over_people(rows, condition, "macro_f1", shots, step, subjects)
                cells.append(f"{mean:.3f} ± {sd:.3f}" if count else "–")
            overall = mean_over_people(rows, condition, "macro_f1", shots, None, subjects)
            lines.append(f"| {names[condition]} | " + " | ".join(cells) + f" | {overall[0]:.3f} | {overall[2]} |")
        for metric in ("recall_taught", "recall_untaught"):
            for condition in [c for c in ("clifer_adapted", "clifer", "prior") if c in conditions]:
                cells = []
                for step in steps:
                    mean, sd, count = mean_over_people(rows, condition, metric, shots, step, subjects)
                    cells.append(f"{mean:.3f}" if count else "–")
                lines.append(f"| {metric.replace('_', ' ')}: {names[condition]} | " + " | ".join(cells) + " | | |")
    lines += ["", "| fused condition | ECE fused | ECE of its population evidence | NLL |", "|---|---|---|---|"]
    for condition, values in fitted.items():
        lines.append(f"| {names[condition]} | {values['ece']:.3f} | {values['ece_prior']:.3f} | {values['nll']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path, subjects=None, title: str = "") -> None:
    """Overall macro-F1 per step, one panel per shot count, every condition scored on every person; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots_list = shots_of(rows)
    steps = steps_of(rows)
    figure, axes = plt.subplots(1, len(shots_list), figsize=(5 * len(shots_list), 4), sharey=True, squeeze=False)
    for axis, shots in zip(axes[0], shots_list):
        for condition, name in CONDITION_NAMES.items():
            if condition in WITH_IMAGINATION and subjects is None:
                continue
            means = [mean_over_people(rows, condition, "macro_f1", shots, step, subjects)[0] for step in steps]
            if np.all(np.isnan(means)):
                continue
            axis.plot(steps, means, marker="o", label=name.replace("*", ""),
                      linewidth=2.5 if condition == "clifer_adapted" else 1.2, linestyle="--" if condition == "prior" else "-")
        axis.set_title(f"{title} {shots} shot(s) per class".strip())
        axis.set_xlabel("classes taught")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("overall macro-F1 (held-out performance)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _imagined_from(task, taught: np.ndarray, n_classes: int):
    """The ``imagine`` hook adding the taught faces' imagined expressions to the memory's prototypes."""
    imagined = task.imagined[taught].reshape(-1, task.imagined.shape[-1])
    imagined_labels = np.tile(np.arange(n_classes), len(taught))

    def imagine(prototypes, labels):
        return np.concatenate([prototypes, imagined]), np.concatenate([labels, imagined_labels])
    return imagine
