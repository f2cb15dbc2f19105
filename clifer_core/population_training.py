"""``clifer train-population``: fit the population model on face datasets, with fusion weights chosen fairly.

Shape data: every face's mesh geometry (:mod:`clifer_core.shape`) as a
displacement from its person's median face (Taiwanese, CK+48 and Yale name
their people) or from the population's median face (FER2013 has no
identities). The shape softmax learns from all of them, each dataset and
each class weighted equally (FER2013 by ``fer2013_weight``), so 34,050 web
faces do not drown 2,000 posed ones. The fusion weights with the FER2013
prior are chosen on out-of-fold predictions over the posed datasets'
people (never on FER2013, whose images the prior was trained on), then the
softmax is refitted on everything. With ``--appearance-epochs N`` the
model also gets its own appearance network, the FER2013 network fine-tuned
on the same faces (:mod:`clifer_core.appearance_training`); the fusion
weights are then chosen on the out-of-fold people's fine-tuned probabilities,
from networks fine-tuned without them. :func:`prepare` and :func:`train` are
shared with ``benchmarks/features.py``, which scores the model
leave-dataset-out and leave-subject-out.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.labels import EXPRESSIONS, GDM_EXPRESSIONS

HELP = "train the population model (fine-tuned FER2013 network x face-shape softmax) on the shared datasets"
POSED_DATASETS = ("taiwanese", "ckplus", "yale")
SCORED_CLASSES = {"taiwanese": GDM_EXPRESSIONS, "ckplus": ("angry", "disgusted", "scared", "happy", "sad", "surprised"),
                  "yale": ("happy", "sad", "surprised", "neutral")}
"""Classes each dataset is scored on (as the protocols do): Taiwanese without disgust, CK+ without neutral."""
FUSION_GRID = tuple((a, b) for a in (0.5, 1.0) for b in (0.0, 0.25, 0.5, 1.0, 2.0))
"""(prior weight, shape weight) candidates of the log-linear fusion."""
CENTRING_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Shares of the person's typical appearance reading taken off, chosen with the fusion weights."""
DEFAULT_L2 = 1e-2
DEFAULT_FER2013_WEIGHT = 1.0
DEFAULT_APPEARANCE_EPOCHS = 1
VALIDATION_FOLDS = 2


@dataclass
class ShapeSet:
    """One dataset's faces as the population model sees them."""

    name: str
    displacements: np.ndarray
    labels: np.ndarray
    """indices into EXPRESSIONS"""
    subjects: np.ndarray
    prior: np.ndarray | None
    """FER2013 probabilities; None for FER2013 itself (contaminated)."""
    faces: np.ndarray | None = None
    """``(N, 64, 64)`` uint8 grey faces for fine-tuning the appearance network (None: not prepared)."""

    def subset(self, mask: np.ndarray) -> "ShapeSet":
        return ShapeSet(self.name, self.displacements[mask], self.labels[mask], self.subjects[mask],
                        None if self.prior is None else self.prior[mask],
                        None if self.faces is None else self.faces[mask])


def medians_by_person(values: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The people (sorted) and ``(people, D)`` the median of each one's rows."""
    people = np.unique(subjects)
    values = np.asarray(values)
    return people, np.stack([np.median(values[subjects == person], axis=0) for person in people])


def person_medians(values: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Each row replaced by the median of its person's rows (a stand-in for the running median, no labels)."""
    people, medians = medians_by_person(values, subjects)
    return medians[np.searchsorted(people, subjects)].astype(np.float64)


def person_displacements(shape_raw: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Each face's shape minus the median shape of that person's faces."""
    return (shape_raw - person_medians(shape_raw, subjects)).astype(np.float32)


def person_typical_appearance(appearance: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Each face's person's median appearance log-probabilities (``PopulationModel.predict_proba_from``'s)."""
    from clifer_core.population import log_probabilities

    return person_medians(log_probabilities(appearance), subjects)


def population_typical_appearance(sets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``(7,)`` the population's typical appearance log-probabilities: over ``(appearance, subjects)`` sets, the
    mean of each set's mean over people of their median (sets and people counting equally)."""
    from clifer_core.population import log_probabilities

    return np.mean([medians_by_person(log_probabilities(appearance), subjects)[1].mean(axis=0)
                    for appearance, subjects in sets], axis=0).astype(np.float32)


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Weights summing to 1 with every present class counting equally."""
    counts = {label: np.sum(labels == label) for label in np.unique(labels)}
    weights = np.array([1.0 / counts[label] for label in labels])
    return weights / weights.sum()


def fer2013_crops(images: np.ndarray, size: int = 96) -> np.ndarray:
    """FER2013's 48x48 grey faces as the RGB crops the pipeline makes of pre-cropped faces."""
    from clifer_core.evaluation.crops import whole_image_crop

    return np.stack([whole_image_crop(np.repeat(image[..., None], 3, axis=-1), size) for image in images])


def prepare(data_dir: Path, cache, landmark_model: str = "facemesh", datasets=POSED_DATASETS,
            with_fer2013: bool = True, show_progress: bool = True,
            with_faces: bool = True) -> tuple[dict[str, ShapeSet], np.ndarray, dict]:
    """Shape sets of the posed datasets (and FER2013), the population median shape, and raw arrays for reuse.

    ``with_faces``: also the 64 px grey faces that fine-tuning needs (converting FER2013's takes seconds).

    The third value maps each dataset name to ``(crops, shape_raw, fer_raw, prior, samples)`` (FER2013:
    ``(None, shape_raw, None, None, labels)``), so a caller can also build per-person features.
    """
    from clifer_core.appearance_training import grey_faces
    from clifer_core.data.datasets import load_dataset
    from clifer_core.evaluation.crops import dataset_crops
    from clifer_core.evaluation.representations import compute_landmarks, compute_representations
    from clifer_core.shape import ShapeFeatures

    shape = ShapeFeatures(model=landmark_model)
    raw: dict = {}
    for name in datasets:
        samples = [s for s in load_dataset(name) if s.expression is not None]
        crops, _ = dataset_crops(samples, cache, show_progress=show_progress)
        representations = compute_representations(crops, cache, "fer", imagination=False, show_progress=show_progress)
        points = compute_landmarks(crops, cache, landmark_model, show_progress=show_progress)
        raw[name] = (crops, shape.from_landmarks(points), representations.features, representations.prior, samples)
    if with_fer2013:
        archive = np.load(Path(data_dir) / "fer2013" / "fer2013_48.npz", allow_pickle=False)
        points = compute_landmarks(fer2013_crops(archive["images"]), cache, landmark_model, show_progress=show_progress)
        raw["fer2013"] = (None, shape.from_landmarks(points), None, None, archive["labels"].astype(np.int64))
    population_mean = np.median(raw["fer2013"][1] if with_fer2013 else np.concatenate([raw[n][1] for n in datasets]),
                                axis=0).astype(np.float32)
    sets = {}
    for name in datasets:
        crops, shape_raw, _, prior, samples = raw[name]
        subjects = np.array([s.subject for s in samples])
        labels = np.array([EXPRESSIONS.index(s.expression) for s in samples])
        sets[name] = ShapeSet(name, person_displacements(shape_raw, subjects), labels, subjects, prior,
                              grey_faces(crops) if with_faces else None)
    if with_fer2013:
        shape_raw, labels = raw["fer2013"][1], raw["fer2013"][4]
        sets["fer2013"] = ShapeSet("fer2013", shape_raw - population_mean, labels,
                                   np.array([f"fer{i}" for i in range(len(labels))]), None,
                                   grey_faces(archive["images"]) if with_faces else None)
    return sets, population_mean, raw


def macro_f1_per_subject(probabilities: np.ndarray, labels: np.ndarray, subjects: np.ndarray,
                         classes) -> np.ndarray:
    """Macro-F1 of each subject's faces, the argmax restricted to ``classes`` (faces of other classes skipped)."""
    from clifer_core.evaluation import metrics

    columns = [EXPRESSIONS.index(c) for c in classes]
    keep = np.isin(labels, columns)
    predicted = np.asarray(columns)[np.argmax(probabilities[:, columns], axis=1)]
    scores = []
    for subject in np.unique(subjects[keep]):
        mask = keep & (subjects == subject)
        scores.append(metrics.macro_f1(labels[mask], predicted[mask], labels=sorted(set(labels[mask]))))
    return np.asarray(scores)


def _training_arrays(sets: list[ShapeSet], fer2013_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.concatenate([s.displacements for s in sets])
    y = np.concatenate([s.labels for s in sets])
    weights = np.concatenate([class_balanced_weights(s.labels) * (fer2013_weight if s.name == "fer2013" else 1.0)
                              for s in sets])
    return X, y, weights


def _fine_tuned(sets: list[ShapeSet], fer2013_weight: float, epochs: int, learning_rate: float, seed: int,
                label: str, show_progress: bool) -> list[np.ndarray]:
    """The appearance network fine-tuned on ``sets``' faces, each dataset and class weighted as the softmax's data."""
    from clifer_core.appearance_training import batches_per_run, fine_tune
    from clifer_core.progress import Progress

    if any(s.faces is None for s in sets):
        raise ValueError("fine-tuning the appearance network needs every set's faces (prepare() gives them)")
    _, labels, weights = _training_arrays(sets, fer2013_weight)
    faces = np.concatenate([s.faces for s in sets])
    progress = Progress(label, batches_per_run(len(faces), epochs), enabled=show_progress)
    try:
        return fine_tune(faces, labels, weights, epochs=epochs, learning_rate=learning_rate, seed=seed,
                         progress=progress)
    finally:
        progress.close()


def _appearance_proba(weights: list[np.ndarray], faces: np.ndarray) -> np.ndarray:
    from clifer_core.features import Fer2013Model

    return Fer2013Model(weights=weights).predict_proba(faces)


def train(sets: list[ShapeSet], population_mean: np.ndarray, landmark_model: str = "facemesh", l2: float = DEFAULT_L2,
          fer2013_weight: float = DEFAULT_FER2013_WEIGHT, seed: int = 0, progress=None, appearance_epochs: int = 0,
          learning_rate: float | None = None, show_progress: bool = False, centring_grid=CENTRING_GRID):
    """A :class:`~clifer_core.population.PopulationModel` fitted on ``sets``; fusion weights and appearance
    centring from out-of-fold people.

    ``appearance_epochs`` > 0 also fine-tunes its own appearance network (per
    validation fold, then on everything; ``show_progress`` draws each run).
    ``centring_grid``: the appearance centrings to choose from (``(0.0,)``: a model that never centres, for
    callers that cannot name the person). The population's typical appearance reading comes from the
    out-of-fold probabilities, as the network reads strangers.
    Returns the model and the validation macro-F1 of every ``(centring, prior weight, shape weight)`` candidate.
    """
    from clifer_core.appearance_training import DEFAULT_LEARNING_RATE
    from clifer_core.population import (PopulationModel, centred_log_probabilities, fit_shape_softmax, fuse,
                                        log_probabilities)

    posed = [s for s in sets if s.prior is not None]
    if not posed:
        raise ValueError("fusion weights are chosen on datasets with a FER2013 prior and named people; none given")
    rng = np.random.default_rng(seed)
    folds = {}
    for s in posed:
        people = rng.permutation(np.unique(s.subjects))
        folds[s.name] = {person: i % VALIDATION_FOLDS for i, person in enumerate(people)}
    learning_rate = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
    out_of_fold = {s.name: np.zeros((len(s.labels), len(EXPRESSIONS))) for s in posed}
    appearance = {s.name: s.prior.copy() for s in posed}
    for fold in range(VALIDATION_FOLDS):
        held = {s.name: np.array([folds[s.name][p] == fold for p in s.subjects]) for s in posed}
        training = [s.subset(~held[s.name]) if s.name in held else s for s in sets]
        classifier = fit_shape_softmax(*_training_arrays(training, fer2013_weight), l2=l2)
        for s in posed:
            out_of_fold[s.name][held[s.name]] = classifier.log_proba(s.displacements[held[s.name]])
        if appearance_epochs > 0:
            network = _fine_tuned(training, fer2013_weight, appearance_epochs, learning_rate, seed,
                                  f"appearance network, validation fold {fold + 1}/{VALIDATION_FOLDS}", show_progress)
            for s in posed:
                appearance[s.name][held[s.name]] = _appearance_proba(network, s.faces[held[s.name]])
        if progress is not None:
            progress.update()

    reference = population_typical_appearance([(appearance[s.name], s.subjects) for s in posed])
    typical = {s.name: person_typical_appearance(appearance[s.name], s.subjects) for s in posed}
    log_appearance = {s.name: log_probabilities(appearance[s.name]) for s in posed}

    def validation_score(centring, prior_weight, shape_weight) -> float:
        return float(np.mean([np.mean(macro_f1_per_subject(
            fuse(centred_log_probabilities(log_appearance[s.name], typical[s.name], reference, centring),
                 out_of_fold[s.name], prior_weight, shape_weight),
            s.labels, s.subjects, SCORED_CLASSES.get(s.name, EXPRESSIONS))) for s in posed]))

    candidates = [(centring, a, b) for centring in centring_grid for a, b in FUSION_GRID]
    scores = {candidate: validation_score(*candidate) for candidate in candidates}
    centring, prior_weight, shape_weight = max(candidates, key=lambda c: scores[c])
    classifier = fit_shape_softmax(*_training_arrays(sets, fer2013_weight), l2=l2)
    network = None
    if appearance_epochs > 0:
        network = _fine_tuned(sets, fer2013_weight, appearance_epochs, learning_rate, seed,
                              "appearance network, all faces", show_progress)
    if progress is not None:
        progress.update()
    provenance = {"datasets": sorted(s.name for s in sets), "faces": int(sum(len(s.labels) for s in sets)),
                  "l2": l2, "fer2013_weight": fer2013_weight,
                  "appearance": ({"epochs": appearance_epochs, "learning_rate": learning_rate, "seed": seed}
                                 if network is not None else None),
                  "validation_macro_f1": {f"centring{c}:{a}x{b}": round(v, 4) for (c, a, b), v in scores.items()}}
    model = PopulationModel(classifier, population_mean, prior_weight, shape_weight, landmark_model,
                            provenance=provenance, appearance_weights=network, appearance_centring=centring,
                            appearance_reference=reference)
    return model, scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clifer_core.population import DEFAULT_MODEL_PATH

    parser.add_argument("--data", type=Path, default=None, help="data folder (default $CLIFER_DATA_DIR or ../shared/data)")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH, help=f"weights to write (default {DEFAULT_MODEL_PATH})")
    parser.add_argument("--datasets", nargs="+", choices=POSED_DATASETS, default=list(POSED_DATASETS),
                        help="posed datasets with named people to train on")
    parser.add_argument("--no-fer2013", action="store_true", help="leave FER2013's 48x48 faces out")
    parser.add_argument("--fer2013-weight", type=float, default=DEFAULT_FER2013_WEIGHT,
                        help="FER2013's share beside one posed dataset (default 1)")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help="softmax weight decay")
    parser.add_argument("--appearance-epochs", type=int, default=DEFAULT_APPEARANCE_EPOCHS,
                        help=f"epochs of fine-tuning the FER2013 network into the model's own appearance network "
                             f"(default {DEFAULT_APPEARANCE_EPOCHS}, about 2.5 min each on a 2-core CPU, run "
                             f"{VALIDATION_FOLDS + 1} times; 0: keep the packaged FER2013 model)")
    parser.add_argument("--learning-rate", type=float, default=None, help="fine-tuning learning rate (default 1e-4)")
    parser.add_argument("--cache", type=Path, default=None, help="crop/landmark cache (default ~/.cache/clifer/evaluation)")
    parser.add_argument("--deterministic", action="store_true",
                        help="bit-reproducible fine-tuning: deterministic kernels, one thread per op (about 1.7x slower)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args) -> int:
    from clifer_core.data.cache import ArrayCache, default_cache_dir
    from clifer_core.data.datasets import default_data_dir
    from clifer_core.progress import Progress

    if args.appearance_epochs < 0:
        raise SystemExit("--appearance-epochs must be >= 0")
    if args.learning_rate is not None and not (np.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise SystemExit("--learning-rate must be a positive number")
    data_dir = args.data or default_data_dir()
    if data_dir is None or not Path(data_dir).is_dir():
        raise SystemExit("no data folder: pass --data or set $CLIFER_DATA_DIR")
    if args.deterministic:
        from clifer_core.tensorflow_startup import deterministic_tensorflow

        deterministic_tensorflow()
    if args.appearance_epochs > 0:
        from clifer_core.appearance_training import require_trainable_tensorflow

        require_trainable_tensorflow()
    cache = ArrayCache(args.cache or default_cache_dir())
    sets, population_mean, _ = prepare(Path(data_dir), cache, datasets=args.datasets, with_fer2013=not args.no_fer2013,
                                       show_progress=not args.quiet, with_faces=args.appearance_epochs > 0)
    progress = Progress("population model fits", VALIDATION_FOLDS + 1, enabled=not args.quiet)
    model, scores = train(list(sets.values()), population_mean, l2=args.l2, fer2013_weight=args.fer2013_weight,
                          progress=progress, appearance_epochs=args.appearance_epochs,
                          learning_rate=args.learning_rate, show_progress=not args.quiet)
    progress.close()
    path = model.save(args.out)
    print(f"appearance centring {model.appearance_centring}, fusion weights (prior, shape) = ({model.prior_weight}, "
          f"{model.shape_weight}), validation macro-F1 "
          f"{scores[(model.appearance_centring, model.prior_weight, model.shape_weight)]:.3f}; wrote {path} "
          f"({path.stat().st_size / 1e3:.0f} kB)")
    return 0
