"""Expression features that see the face's shape, and the population model for strangers: accuracy and cost.

On ../shared/data (Taiwanese, CK+48, Yale, FER2013 48x48), everything leak-free:

* **Per-person ceiling (1-NN)** on the images a person was taught, per feature
  set (``fer``, ``shape``, ``fer+shape``) and landmark model (face mesh, dlib 68).
  Taiwanese: each emotion's performance types are held out in turn (3 folds;
  neutral, one calm recording, is taught and never scored). CK+48 has one
  sequence per (subject, class), so no per-person split exists without
  near-duplicates: there each person is tested against every other person's
  faces (leave-subject-out 1-NN), features taken relative to each person's
  median face. The shape weight of ``fer+shape`` is
  chosen per outer fold of people on the *other* people (nested, 5 folds).
* **The learner's memory** (``GrowingDualMemory`` with the learner's
  defaults) taught every class of a person on the default features, scored
  the same way, no imagination; and **the default learner** (memory fused
  with the FER2013 prior and the population classifier fine-tuned on the
  person, fitted without them: ``clifer evaluate --protocol partial
  --features fer+shape``) after every class is taught, all shots, which is
  what ``final_macro_f1_taiwanese`` and ``scared_recall_taiwanese`` report.
* **Population model**: leave-dataset-out (trained on the other datasets and
  FER2013, scored on one) and leave-subject-out (3 folds of the scored
  dataset's people in 3 folds, its other people added to training); fusion weights chosen
  inside training only. Baseline: the FER2013 model on the same images.
  FER2013 images are never scored. Leave-dataset-out also with the model's
  own appearance network (``--appearance-epochs``, default as
  ``clifer train-population``: the FER2013 network fine-tuned on the training
  faces, three times per model), which is what ``prior_gain_*`` report when
  it is on; leave-subject-out keeps the packaged FER2013 network (18 more
  fine-tunes would take about 45 min).
* **Cost**: landmarks + shape features per face (median ms), beside the
  FER2013 model's per-face time in the same process.

Every per-image computation (crops, FER2013 outputs, landmarks) is cached
(``~/.cache/clifer/evaluation``). Writes ``out/benchmarks/features.md`` (the
per-class recall tables, copied into docs/features.md) and ends with one JSON line.

Run: ``nice -n 10 .venv/bin/python benchmarks/features.py`` (about 30 min on 2
cores: the population model's 24 shape fits on 36k faces, and 6 fine-tunes of
the appearance network at 2.5 min each; the first run adds ~5 min of FER2013
landmarks). Fine-tuning turns TensorFlow's oneDNN kernels off for the whole
process (clifer_core/appearance_training.py), so the FER2013 cost below is
measured without them. Without ../shared/data it reports the
cost alone, on crops of scikit-image's astronaut photograph.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from clifer_core.data.cache import ArrayCache, default_cache_dir
from clifer_core.data.datasets import default_data_dir
from clifer_core.evaluation import metrics
from clifer_core.evaluation.representations import compute_landmarks
from clifer_core.labels import EXPRESSIONS
from clifer_core.learner import DEFAULT_FEATURE_SCALE, DEFAULT_FEATURES, DEFAULT_MEMORY_PARAMS, fer_shape_vectors
from clifer_core.appearance_training import require_trainable_tensorflow
from clifer_core.population_training import (DEFAULT_APPEARANCE_EPOCHS, SCORED_CLASSES, macro_f1_per_subject,
                                             person_displacements, person_typical_appearance, prepare, train)
from clifer_core.shape import ShapeFeatures

SHAPE_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
SUBJECT_FOLDS = 5
POPULATION_SUBJECT_FOLDS = 3
"""Leave-subject-out folds of the population model (each refits on 36k faces, so fewer than the weight choice's)."""
COST_FACES = 200


# ------------------------------------------------------------------ splits

def person_splits(dataset: str, subjects: np.ndarray, labels: np.ndarray, groups: np.ndarray):
    """``(subject, taught indices, tested indices)`` of every fold (see the module docstring).

    CK+48 has one sequence per (subject, class), so no class can be both taught
    and tested within one person without near-duplicate frames: there, a person
    is tested against everyone else's faces (leave-subject-out), on features
    taken relative to each person's median (see :func:`person_centred`).
    """
    classes = [EXPRESSIONS.index(c) for c in SCORED_CLASSES[dataset]]
    for subject in np.unique(subjects):
        own = (subjects == subject) & np.isin(labels, classes)
        if dataset == "taiwanese":
            for held in ("t1", "t2", "t3"):
                tested = own & (groups == held)
                if tested.any():
                    yield subject, np.flatnonzero(own & ~tested), np.flatnonzero(tested)
        else:
            yield subject, np.flatnonzero(~(subjects == subject) & np.isin(labels, classes)), np.flatnonzero(own)


def person_centred(rows: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Each row minus its person's median row (no labels): who the person is cancels, what the face does stays."""
    return person_displacements(np.asarray(rows, np.float32), subjects)


def uncentred(model, scores: dict):
    """``model`` with the fusion weights its validation chose among the candidates that do not centre appearance,
    and no centring: what the same training gives without centring, for comparison."""
    _, prior_weight, shape_weight = max((c for c in scores if c[0] == 0), key=scores.get)
    variant = copy.copy(model)
    variant.appearance_centring, variant.prior_weight, variant.shape_weight = 0.0, prior_weight, shape_weight
    return variant


def subject_folds(subjects: np.ndarray, folds: int = SUBJECT_FOLDS, seed: int = 0) -> dict:
    people = np.random.default_rng(seed).permutation(np.unique(subjects))
    return {person: i % folds for i, person in enumerate(people)}


# --------------------------------------------------------------- scoring

def scores_of(truth: dict, predicted: dict) -> tuple[np.ndarray, dict]:
    """Per-subject macro-F1 and pooled per-class recall."""
    per_subject = np.array([metrics.macro_f1(np.array(truth[s]), np.array(predicted[s]), labels=sorted(set(truth[s])))
                            for s in sorted(truth)])
    all_truth = np.concatenate([truth[s] for s in sorted(truth)])
    all_predicted = np.concatenate([predicted[s] for s in sorted(truth)])
    present = sorted(set(all_truth))
    recall = dict(zip((EXPRESSIONS[c] for c in present), metrics.per_class_recall(all_truth, all_predicted, present)))
    return per_subject, recall


def nearest_neighbour(features: np.ndarray, labels: np.ndarray, splits, only=None) -> tuple[dict, dict]:
    truth: dict = {}
    predicted: dict = {}
    for subject, taught, tested in splits:
        if only is not None and subject not in only:
            continue
        distances = ((features[tested][:, None] - features[taught][None]) ** 2).sum(-1)
        truth.setdefault(subject, []).extend(labels[tested])
        predicted.setdefault(subject, []).extend(labels[taught][np.argmin(distances, axis=1)])
    return truth, predicted


def memory_predictions(features: np.ndarray, labels: np.ndarray, splits) -> tuple[dict, dict]:
    """The learner's memory taught one class at a time (all classes), answering from episodic memory."""
    from clifer_core.memory import GrowingDualMemory

    truth: dict = {}
    predicted: dict = {}
    for subject, taught, tested in splits:
        present = sorted(set(labels[taught]))
        memory = GrowingDualMemory(n_classes=len(EXPRESSIONS), **DEFAULT_MEMORY_PARAMS)
        for label in present:
            chosen = taught[labels[taught] == label]
            memory.partial_fit(features[chosen], np.full(len(chosen), label))
        probabilities = memory.predict_proba(features[tested], memory="episodic")
        truth.setdefault(subject, []).extend(labels[tested])
        predicted.setdefault(subject, []).extend(np.argmax(probabilities, axis=1))
    return truth, predicted


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def combined(fer_raw: np.ndarray, shape_raw: np.ndarray, weight: float) -> np.ndarray:
    """The learner's fer+shape map on cached raw features, with shape weight ``weight``."""
    return fer_shape_vectors(fer_raw, shape_raw, DEFAULT_FEATURE_SCALE, weight)


def nested_weight_choice(fer_raw, shape_raw, labels, splits, subjects, post) -> tuple[np.ndarray, list[float]]:
    """Per outer fold of people: the shape weight whose 1-NN macro-F1 is best on the other people.

    ``post`` maps the built features (CK+: relative to each person's median). Returns ``(features built with
    each person's fold's weight, the weights chosen)``.
    """
    folds = subject_folds(subjects)
    candidates = {w: post(combined(fer_raw, shape_raw, w)) for w in SHAPE_WEIGHTS}
    validation = {w: dict(zip(sorted(set(subjects) & {s for s, _, _ in splits}),
                              scores_of(*nearest_neighbour(candidates[w], labels, splits))[0]))
                  for w in SHAPE_WEIGHTS}
    out = np.zeros_like(candidates[SHAPE_WEIGHTS[0]])
    chosen = []
    for fold in range(SUBJECT_FOLDS):
        held = {s for s, f in folds.items() if f == fold}
        best = max(SHAPE_WEIGHTS, key=lambda w: np.mean([v for s, v in validation[w].items() if s not in held]))
        chosen.append(best)
        mask = np.isin(subjects, list(held))
        out[mask] = candidates[best][mask]
    return out, chosen


def mean_sd(values) -> str:
    values = np.asarray(values, float)
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# ------------------------------------------------------------------ cost

def cost_per_face(crops: np.ndarray) -> dict:
    """Median ms per single face: face-mesh / dlib landmarks + shape features, and the FER2013 model."""
    from clifer_core.faces.landmarks import make_landmarker
    from clifer_core.features import Fer2013Model

    result = {}
    fer = Fer2013Model()
    for crop in crops[:5]:
        fer.predict_proba_and_features(crop[None])
    timings = []
    for crop in crops:
        started = time.perf_counter()
        fer.predict_proba_and_features(crop[None])
        timings.append(time.perf_counter() - started)
    result["fer2013_ms_per_face"] = 1000 * statistics.median(timings)
    for model in ("facemesh", "dlib68"):
        shape = ShapeFeatures(make_landmarker(model))
        for crop in crops[:5]:
            shape.raw(crop[None])
        timings = []
        for crop in crops:
            started = time.perf_counter()
            shape.raw(crop[None])
            timings.append(time.perf_counter() - started)
        result[f"{model}_ms_per_face"] = 1000 * statistics.median(timings)
    return result


def synthetic_crops(count: int) -> np.ndarray:
    """Aligned crops of the public-domain astronaut photograph, shifted and tilted (no data needed)."""
    import cv2
    from skimage.data import astronaut

    from clifer_core.faces import crop_largest_face

    base = crop_largest_face(astronaut(), size=96)
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(count):
        matrix = cv2.getRotationMatrix2D((48 + rng.uniform(-3, 3), 48 + rng.uniform(-3, 3)), rng.uniform(-8, 8), 1.0)
        crops.append(cv2.warpAffine(base, matrix, (96, 96), borderMode=cv2.BORDER_REFLECT))
    return np.stack(crops)


# ------------------------------------------------------------------ main

def default_learner_final(cache) -> tuple[float, dict[str, float]]:
    """The default learner's macro-F1 and per-class recall on Taiwanese after every class is taught (all shots,
    mean over people of each person's folds and orders), from the leak-free partial-teaching protocol."""
    from clifer_core.evaluation import partial
    from clifer_core.evaluation.runner import evaluate_partial

    result = evaluate_partial("taiwanese", cache=cache, show_progress=False, features=DEFAULT_FEATURES)
    final = partial.mean_over_people(result.rows, "clifer_adapted", "macro_f1", "all", "final")[0]
    recall = {}
    for index, name in enumerate(result.classes):
        mean = partial.mean_over_people(result.rows, "clifer_adapted", f"{partial.FINAL_RECALL}{index}", "all", "final")[0]
        if np.isfinite(mean):
            recall[name] = float(mean)
    return float(final), recall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--appearance-epochs", type=int, default=DEFAULT_APPEARANCE_EPOCHS,
                        help="fine-tuning epochs of the population model's own appearance network (0: none)")
    args = parser.parse_args(argv)
    show = not args.quiet
    if args.appearance_epochs > 0:
        require_trainable_tensorflow()
    data_dir = default_data_dir()
    summary: dict = {}
    if data_dir is None:
        cost = cost_per_face(synthetic_crops(COST_FACES))
        summary["landmarks_ms_per_face"] = round(cost["facemesh_ms_per_face"], 3)
        summary["landmarks_vs_fer2013"] = round(cost["facemesh_ms_per_face"] / cost["fer2013_ms_per_face"], 3)
        print("no data folder: only the cost on synthetic crops", file=sys.stderr)
        print(json.dumps(summary))
        return 0

    cache = ArrayCache(default_cache_dir())
    sets, population_mean, raw = prepare(Path(data_dir), cache, show_progress=show,
                                         with_faces=args.appearance_epochs > 0)
    lines = ["# Features and the population model (benchmarks/features.py)", ""]

    # cost
    cost = cost_per_face(raw["taiwanese"][0][:COST_FACES])
    lines += ["## Cost per face (median ms, one face at a time)", "", "| part | ms |", "|---|---|"]
    lines += [f"| {name.replace('_ms_per_face', '')} | {value:.2f} |" for name, value in cost.items()] + [""]

    # per-person 1-NN ceiling, per feature set and landmark model
    lines += ["## Per-person 1-NN on the taught images (macro-F1 ± SD over people; per-class recall)", ""]
    nn1 = {}
    chosen_weights = {}
    default_features = {}
    for dataset in ("taiwanese", "ckplus"):
        crops, shape_raw, fer_raw, _, samples = raw[dataset]
        subjects = np.array([s.subject for s in samples])
        labels = np.array([EXPRESSIONS.index(s.expression) for s in samples])
        groups = np.array([s.group for s in samples])
        splits = list(person_splits(dataset, subjects, labels, groups))
        dlib_raw = ShapeFeatures(model="dlib68").from_landmarks(compute_landmarks(crops, cache, "dlib68",
                                                                                  show_progress=show))
        post = (lambda rows: person_centred(rows, subjects)) if dataset == "ckplus" else (lambda rows: rows)
        variants = {"fer": post(unit(fer_raw)), "shape (face mesh)": post(shape_raw), "shape (dlib 68)": post(dlib_raw)}
        variants["fer+shape (face mesh)"], chosen_weights[dataset] = nested_weight_choice(
            fer_raw, shape_raw, labels, splits, subjects, post)
        variants["fer+shape (dlib 68)"], _ = nested_weight_choice(fer_raw, dlib_raw, labels, splits, subjects, post)
        default_features[dataset] = (variants["fer+shape (face mesh)"] if DEFAULT_FEATURES == "fer+shape"
                                     else variants[{"fer": "fer", "shape": "shape (face mesh)"}[DEFAULT_FEATURES]])
        classes = SCORED_CLASSES[dataset]
        lines += [f"### {dataset}", "", "| features | macro-F1 | " + " | ".join(c for c in classes if c != "neutral") + " |",
                  "|---|---|" + "---|" * len([c for c in classes if c != "neutral"])]
        for name, features in variants.items():
            per_subject, recall = scores_of(*nearest_neighbour(features, labels, splits))
            nn1[(dataset, name)] = (per_subject, recall)
            lines.append(f"| {name} | {mean_sd(per_subject)} | "
                         + " | ".join(f"{recall.get(c, float('nan')):.2f}" for c in classes if c != "neutral") + " |")
        lines += ["", f"fer+shape (face mesh) shape weight chosen per outer fold: {chosen_weights[dataset]}", ""]
        if dataset == "taiwanese":
            learner_rows = []
            for name, features in (("fer", DEFAULT_FEATURE_SCALE * unit(fer_raw)),
                                   (f"{DEFAULT_FEATURES} (default)", default_features[dataset])):
                per_subject, recall = scores_of(*memory_predictions(features, labels, splits))
                nn1[("memory", name)] = (per_subject, recall)
                learner_rows.append(f"| memory, {name} | {mean_sd(per_subject)} | "
                                    + " | ".join(f"{recall.get(c, float('nan')):.2f}" for c in classes if c != "neutral")
                                    + " |")
            lines += ["### taiwanese: the learner's memory (GrowingDualMemory, defaults, every class taught, no "
                      "imagination)", "", "| learner | macro-F1 | " + " | ".join(c for c in classes if c != "neutral")
                      + " |", "|---|---|" + "---|" * len([c for c in classes if c != "neutral"])] + learner_rows + [""]

    # population model
    lines += ["## Population model vs the FER2013 model on people neither was trained on", "",
              "Macro-F1 ± SD over people; shape displacements from each person's median face and appearance centred "
              "on each person's median reading (all their images, no labels).", "",
              "| scored on | protocol | FER2013 | population model | gain | centring; fusion (prior, shape) |",
              "|---|---|---|---|---|---|"]
    gains = {}
    for dataset in ("taiwanese", "ckplus"):
        target = sets[dataset]
        classes = SCORED_CLASSES[dataset]
        baseline = macro_f1_per_subject(target.prior, target.labels, target.subjects, classes)
        others = [s for name, s in sets.items() if name != dataset]

        def add_row(key: str, protocol: str, model, appearance: np.ndarray, centred: bool = True) -> None:
            typical = person_typical_appearance(appearance, target.subjects) if centred else None
            scored = macro_f1_per_subject(model.predict_proba_from(appearance, target.displacements, typical),
                                          target.labels, target.subjects, classes)
            gains[key] = float(np.mean(scored) - np.mean(baseline))
            lines.append(f"| {dataset} | {protocol} | {mean_sd(baseline)} | {mean_sd(scored)} | {gains[key]:+.3f} | "
                         f"{model.appearance_centring if centred else 0.0}; "
                         f"({model.prior_weight}, {model.shape_weight}) |")

        model, _ = train(others, population_mean)
        add_row(dataset, "leave-dataset-out, FER2013 network x shape", model, target.prior)
        if args.appearance_epochs > 0:
            model, scores = train(others, population_mean, appearance_epochs=args.appearance_epochs,
                                  show_progress=show)
            appearance = model.prior.predict_proba(target.faces)
            alone = macro_f1_per_subject(appearance, target.labels, target.subjects, classes)
            gains[f"{dataset}_appearance_only"] = float(np.mean(alone) - np.mean(baseline))
            lines.append(f"| {dataset} | leave-dataset-out, fine-tuned network alone ({args.appearance_epochs} "
                         f"epoch(s)) | {mean_sd(baseline)} | {mean_sd(alone)} | "
                         f"{gains[f'{dataset}_appearance_only']:+.3f} | 0.0; (1, 0) |")
            add_row(f"{dataset}_appearance_uncentred", "leave-dataset-out, fine-tuned network x shape, not centred",
                    uncentred(model, scores), appearance, centred=False)
            add_row(f"{dataset}_appearance", "leave-dataset-out, fine-tuned network x shape (the shipped kind)",
                    model, appearance)
        folds = subject_folds(target.subjects, POPULATION_SUBJECT_FOLDS)
        fused = np.zeros_like(target.prior)
        weights = []
        for fold in range(POPULATION_SUBJECT_FOLDS):
            held = np.array([folds[s] == fold for s in target.subjects])
            model, _ = train(others + [target.subset(~held)], population_mean)
            fused[held] = model.predict_proba_from(target.prior[held], target.displacements[held],
                                                   person_typical_appearance(target.prior[held], target.subjects[held]))
            weights.append((model.appearance_centring, model.prior_weight, model.shape_weight))
        scored = macro_f1_per_subject(fused, target.labels, target.subjects, classes)
        gains[f"{dataset}_subject"] = float(np.mean(scored) - np.mean(baseline))
        lines.append(f"| {dataset} | leave-subject-out ({POPULATION_SUBJECT_FOLDS} folds) | {mean_sd(baseline)} | {mean_sd(scored)} | "
                     f"{gains[f'{dataset}_subject']:+.3f} | {sorted(set(weights))} |")
    lines.append("")

    args.out.mkdir(parents=True, exist_ok=True)
    memory_scores, memory_recall = nn1[("memory", f"{DEFAULT_FEATURES} (default)")]
    learner_final, learner_recall = default_learner_final(cache)
    lines += ["## The default learner after every class is taught (Taiwanese, partial-teaching protocol)", "",
              "| learner | macro-F1 | " + " | ".join(learner_recall) + " |", "|---|---|" + "---|" * len(learner_recall),
              f"| {DEFAULT_FEATURES}, fused with the FER2013 prior and the person-adapted population classifier | "
              f"{learner_final:.3f} | " + " | ".join(f"{v:.2f}" for v in learner_recall.values()) + " |", ""]
    (args.out / "features.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    summary = {
        "final_macro_f1_taiwanese": round(learner_final, 4),
        "final_macro_f1_taiwanese_note": "the default learner (default features, fused with the FER2013 prior and the "
                                         "person-adapted population classifier), partial-teaching protocol, all classes "
                                         "and shots taught, every fold",
        "final_macro_f1_taiwanese_memory_only": round(float(np.mean(memory_scores)), 4),
        "scared_recall_taiwanese_memory_only": round(float(memory_recall["scared"]), 4),
        "nn1_macro_f1_taiwanese": round(float(np.mean(nn1[("taiwanese", "fer+shape (face mesh)")][0])), 4),
        "nn1_macro_f1_ckplus": round(float(np.mean(nn1[("ckplus", "fer+shape (face mesh)")][0])), 4),
        "nn1_macro_f1_taiwanese_fer": round(float(np.mean(nn1[("taiwanese", "fer")][0])), 4),
        "nn1_macro_f1_ckplus_fer": round(float(np.mean(nn1[("ckplus", "fer")][0])), 4),
        "scared_recall_taiwanese": round(learner_recall["scared"], 4),
        "prior_gain_taiwanese": round(gains.get("taiwanese_appearance", gains["taiwanese"]), 4),
        "prior_gain_ckplus": round(gains.get("ckplus_appearance", gains["ckplus"]), 4),
        "prior_gain_note": ("leave-dataset-out, the population model with its own fine-tuned appearance network, centred on the person"
                            if args.appearance_epochs > 0 else "leave-dataset-out, FER2013 network x shape"),
    }
    variants = (("uncentred", "_appearance_uncentred"), ("packaged_network", ""), ("network_alone", "_appearance_only"),
                ("leave_subject_out", "_subject"))
    summary.update({f"prior_gain_{dataset}_{variant}": (round(gains[dataset + suffix], 4)
                                                         if dataset + suffix in gains else None)
                    for variant, suffix in variants for dataset in ("taiwanese", "ckplus")})
    summary["landmarks_ms_per_face"] = round(cost["facemesh_ms_per_face"], 3)
    summary["landmarks_vs_fer2013"] = round(cost["facemesh_ms_per_face"] / cost["fer2013_ms_per_face"], 3)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
