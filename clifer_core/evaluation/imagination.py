"""Quality of imagination models on people they never saw, judged by models that played no part in training them.

``identity_kept``: share of imagined faces whose dlib 128-d embedding lies
under the dataset's calibrated same-person threshold from the source face's
(real same-person pairs at the same resolution are reported beside it).
``expression_hit_over_real``: how often a judge finds an imagined face showing
its target expression, over that judge's accuracy on the real faces of the
same people. Two judges: the population model refitted without the evaluated
people (``population``; FER2013 prior x face shape), and the FER2013
classifier alone (``fer2013``). The edit models never see FER2013's outputs or
activations; the CAAE used FER2013 activations as its perceptual term, so its
``fer2013`` number is not from an independent judge.

Every model is checked against its metadata: a person it trained on is never
scored. Beside the models, baselines show the trade-off: the trivial edit
that returns the input (``input``: identity 1 by construction, expression
hit = the judge's real accuracy on the one target that is the face's own
judged class, i.e. 1/7), and three imaginations fitted on the training
people without a network: ``mean_change`` (their mean face change from the
own expression to the target, added to the face), ``landmark_warp`` (the
face warped along their mean landmark change) and ``warp_and_change``
(both). ``clifer evaluate-imagination`` runs it and writes a JSON report and a grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clifer_core.imagination.data import CROP_MARGIN, FaceSet, load_face_set, split_by_subject
from clifer_core.imagination.imaginer import Imaginer, faces_to_model_input, load_imagination, model_output_to_faces
from clifer_core.labels import EXPRESSIONS

SAME_PERSON_THRESHOLDS = {"taiwanese": 0.45, "yale": 0.52, "ckplus": 0.58}
"""Equal-error thresholds of dlib's embedding per dataset (../shared/data/README.md)."""
DLIB_INPUT_SIDE = 160
MAX_SOURCES = 120
EVALUATION_LIST_SIZE = 48
"""Crop size used only to list the held-out people (any size finds the same faces)."""
ASTRONAUT_EXPRESSION = "happy"
"""What the public-domain face of the grids shows (she smiles)."""
FITTED_BASELINES = ("mean_change", "landmark_warp", "warp_and_change")
"""``--model`` names of the imaginations fitted on the training people without a network:
:mod:`clifer_core.imagination.mean_change`, :mod:`clifer_core.imagination.landmark_warp`, and the warp with the
mean change added."""


class DlibIdentity:
    """dlib ResNet face descriptor of a square face crop, aligned with the 5-point landmark model."""

    def __init__(self, margin: float = CROP_MARGIN):
        import dlib
        import face_recognition_models

        self._landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._describe = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        box = DLIB_INPUT_SIDE / (1.0 + 2.0 * margin)
        low = int(round((DLIB_INPUT_SIDE - box) / 2))
        self._box = dlib.rectangle(low, low, low + int(round(box)), low + int(round(box)))

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """``(N, 128)`` descriptors; the face is taken to fill the crop minus its margin."""
        import cv2

        out = np.empty((len(faces), 128), np.float32)
        for i, face in enumerate(faces):
            image = np.ascontiguousarray(cv2.resize(face, (DLIB_INPUT_SIDE, DLIB_INPUT_SIDE), interpolation=cv2.INTER_CUBIC))
            shape = self._landmarks(image, self._box)
            out[i] = np.asarray(self._describe.compute_face_descriptor(image, shape))
        return out


def _spread(count: int, limit: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(int)) if count else np.zeros(0, int)


class InputImaginer:
    """The trivial edit: every "imagined" expression is the input face itself (the identity-kept ceiling)."""

    expressions = EXPRESSIONS

    def __init__(self, image_size: int = 48):
        self.image_size = image_size
        self.metadata = {}

    def imagine(self, faces, own_expressions=None) -> tuple[np.ndarray, None]:
        resized = model_output_to_faces(faces_to_model_input(faces, self.image_size))
        return np.repeat(resized[:, None], len(EXPRESSIONS), axis=1), None


def population_judge(excluded_subjects, data_dir=None, show_progress: bool = False):
    """The population model (FER2013 prior x shape softmax) refitted on every named person but ``excluded_subjects``
    (``dataset:subject`` ids), cached in the imagination cache folder, outside the repository. It judges faces
    without naming their person, so it is fitted without appearance centring."""
    import hashlib

    from clifer_core.data.cache import ArrayCache, default_cache_dir
    from clifer_core.data.datasets import default_data_dir
    from clifer_core.imagination.data import cache_dir
    from clifer_core.population import PopulationModel
    from clifer_core.population_training import prepare, train

    excluded = sorted(set(excluded_subjects))
    key = hashlib.sha1("\n".join(excluded).encode()).hexdigest()[:12]
    path = cache_dir() / f"population_judge_{key}.npz"
    if path.is_file():
        return PopulationModel.load(path)
    root = Path(data_dir) if data_dir else default_data_dir()
    sets, population_mean, _ = prepare(root, ArrayCache(default_cache_dir()), show_progress=show_progress,
                                       with_faces=False)
    kept = [s.subset(~np.isin(np.array([f"{s.name}:{x}" for x in s.subjects]), excluded)) for s in sets.values()]
    model, _ = train(kept, population_mean, centring_grid=(0.0,))
    model.provenance["excluded_subjects"] = excluded
    model.save(path)
    return model


def fitted_baseline(name: str, datasets, image_size: int = 48):
    """The :data:`FITTED_BASELINES` imagination ``name`` fitted on the training people of ``datasets`` (never the
    held-out ones), at its chosen strength."""
    from clifer_core.imagination.landmark_warp import WARP_AND_CHANGE_STRENGTHS, LandmarkWarpImaginer
    from clifer_core.imagination.mean_change import MeanChangeImaginer

    warp, texture = WARP_AND_CHANGE_STRENGTHS
    imaginer = {"mean_change": lambda: MeanChangeImaginer(image_size),
                "landmark_warp": lambda: LandmarkWarpImaginer(image_size),
                "warp_and_change": lambda: LandmarkWarpImaginer(image_size, warp, texture_strength=texture)}[name]()
    return imaginer.fit([split_by_subject(load_face_set(d, image_size))[0] for d in datasets])


def _check_unseen(name: str, imaginer, subjects) -> None:
    """ValueError if the model's metadata says it trained on any of ``subjects`` (or does not say)."""
    if isinstance(imaginer, InputImaginer):
        return
    if "trained_subjects" in imaginer.metadata:
        seen = sorted(set(subjects) & set(imaginer.metadata["trained_subjects"]))
        if seen:
            raise ValueError(f"{name}: fitted on {seen[:5]}, so they are not scored")
        return
    held_out = set(imaginer.metadata.get("held_out_subjects", []))
    seen = sorted(set(subjects) - held_out)
    if seen:
        raise ValueError(f"{name}: the model's metadata does not list {seen[:5]} as held out; "
                         "it may have trained on them, so they are not scored")


def evaluate_people(imaginer, people: FaceSet, threshold: float, judges: dict, identity: DlibIdentity,
                    max_sources: int = MAX_SOURCES) -> dict:
    """All metrics on one dataset's held-out people (at most ``max_sources`` evenly spaced source faces).

    Each source is imagined from its labelled own expression, as the learner does for taught faces (a residual edit
    returns the input for it); the ``*_changed_expression`` numbers leave the own expression out.

    ``people`` are crops at the model's size; ``judges`` maps a name to a function of RGB crops -> (N, 7) probabilities.
    """
    sources = people.subset(_spread(len(people), max_sources))
    imagined, imagined_z = imaginer.imagine(sources.faces, own_expressions=sources.labels)
    count, kinds = imagined.shape[:2]
    targets = np.tile(np.arange(kinds), count)
    changed = targets != np.repeat(sources.labels, kinds)
    owners = np.repeat(sources.subjects, kinds)
    flat = imagined.reshape(-1, *imagined.shape[2:])
    real = model_output_to_faces(faces_to_model_input(people.faces, imaginer.image_size))
    source_faces = model_output_to_faces(faces_to_model_input(sources.faces, imaginer.image_size))
    report = {"people": int(len(set(people.subjects))), "real_faces": int(len(people)), "source_faces": int(count),
              "imagined_faces": int(count * kinds), "judges": {}}
    for name, judge in judges.items():
        real_hit = judge(real).argmax(axis=1) == people.labels
        imagined_hit = judge(flat).argmax(axis=1) == targets
        per_person = [float(np.mean(imagined_hit[owners == p]) / max(np.mean(real_hit[people.subjects == p]), 1e-9))
                      for p in sorted(set(sources.subjects))]
        report["judges"][name] = {
            "accuracy_real": float(np.mean(real_hit)), "hit_imagined": float(np.mean(imagined_hit)),
            "expression_hit_over_real": float(np.mean(imagined_hit) / max(np.mean(real_hit), 1e-9)),
            "hit_imagined_changed_expression": float(np.mean(imagined_hit[changed])),
            "per_person_ratio_median": float(np.median(per_person)),
            "hit_per_expression": {EXPRESSIONS[k]: float(np.mean(imagined_hit[targets == k])) for k in range(kinds)}}
    source_embedding = identity.embed(source_faces)
    imagined_embedding = identity.embed(flat).reshape(count, kinds, -1)
    distances = np.linalg.norm(imagined_embedding - source_embedding[:, None], axis=-1)
    kept_per_person = [float(np.mean(distances[sources.subjects == p] < threshold)) for p in sorted(set(sources.subjects))]
    same, different = [], []
    for i in range(count):
        for j in range(i + 1, count):
            distance = float(np.linalg.norm(source_embedding[i] - source_embedding[j]))
            (same if sources.subjects[i] == sources.subjects[j] else different).append(distance)
    report.update({
        "identity_threshold": threshold,
        "identity_kept": float(np.mean(distances < threshold)),
        "identity_kept_changed_expression": float(np.mean(distances.reshape(-1)[changed] < threshold)),
        "identity_kept_per_person_mean": float(np.mean(kept_per_person)),
        "identity_kept_per_person_sd": float(np.std(kept_per_person)),
        "identity_distance_imagined_median": float(np.median(distances)),
        "identity_distance_same_person_real_median": float(np.median(same)) if same else None,
        "identity_fraction_same_person_real_under_threshold": float(np.mean(np.asarray(same) < threshold)) if same else None,
        "identity_distance_other_person_real_median": float(np.median(different)) if different else None,
        "change_l1": float(np.mean(np.abs(imagined.astype(np.float32) - source_faces[:, None].astype(np.float32))) / 255),
    })
    if imagined_z is not None:
        z = imaginer.encode(sources.faces)
        reconstructed = np.stack([imagined[i, sources.labels[i]] for i in range(count)])
        report["reconstruction_l1"] = float(np.mean(np.abs(reconstructed.astype(np.float32) - source_faces.astype(np.float32))) / 255)
        report["latent_classifier_accuracy_real"] = float(np.mean(imaginer.classify_latents(z).argmax(1) == sources.labels))
        report["latent_classifier_accuracy_imagined"] = float(np.mean(
            imaginer.classify_latents(imagined_z.reshape(-1, imaginer.latent_dim)).argmax(1) == targets))
    return report


def evaluate(imaginers: dict, datasets=("taiwanese", "ckplus", "yale"), max_sources: int = MAX_SOURCES,
             log=print) -> dict:
    """``{model: {dataset: metrics}}`` on the held-out people of :func:`~clifer_core.imagination.data.split_by_subject`,
    every model and the ``input`` baseline on the same people with the same judges, plus a ``summary`` per model
    (each dataset weighing the same)."""
    from clifer_core.features import Fer2013Model

    identity, fer = DlibIdentity(), Fer2013Model()
    held = {}
    for dataset in datasets:
        _, held_out = split_by_subject(load_face_set(dataset, EVALUATION_LIST_SIZE))
        held[dataset] = held_out
    evaluated = sorted({s for h in held.values() for s in h.subjects.tolist()})
    population = population_judge(evaluated)
    judges = {"population": population.predict_proba, "fer2013": fer.predict_proba}
    imaginers = {**imaginers, "input": InputImaginer()}
    report = {}
    for name, imaginer in imaginers.items():
        _check_unseen(name, imaginer, evaluated)
        report[name] = {}
        for dataset in datasets:
            _, people = split_by_subject(load_face_set(dataset, imaginer.image_size))
            threshold = SAME_PERSON_THRESHOLDS.get(dataset, SAME_PERSON_THRESHOLDS["taiwanese"])
            report[name][dataset] = evaluate_people(imaginer, people, threshold, judges, identity, max_sources)
            report[name][dataset]["held_out_subjects"] = sorted(set(people.subjects.tolist()))
            log(f"{name} / {dataset}: identity_kept {report[name][dataset]['identity_kept']:.3f}, expression_hit_over_real "
                + ", ".join(f"{j} {v['expression_hit_over_real']:.3f}" for j, v in report[name][dataset]["judges"].items()))
        per_dataset = [report[name][d] for d in datasets]
        report[name]["summary"] = {
            "identity_kept": float(np.mean([r["identity_kept"] for r in per_dataset])),
            **{f"expression_hit_over_real_{j}": float(np.mean([r["judges"][j]["expression_hit_over_real"] for r in per_dataset]))
               for j in judges}}
    return report


MIN_IDENTITY_KEPT = 0.85
"""Edit strength rule: the strongest expression hit whose identity_kept stays at or above this, on training people."""


def choose_edit_strength(imaginer, strengths, datasets=("taiwanese", "ckplus", "yale"),
                         max_sources: int = 60, log=print) -> tuple[float, dict]:
    """Pick the edit strength of a residual model or a :data:`FITTED_BASELINES` imagination on the people it trained on,
    never on the people reported.

    Each candidate is scored with the population judge (refitted without the held-out people) and dlib; the rule is
    :data:`MIN_IDENTITY_KEPT`. Returns the chosen strength and ``{strength: (identity_kept, hit_over_real)}``.
    """
    identity = DlibIdentity()
    trained, evaluated = {}, []
    for dataset in datasets:
        train_people, held_out = split_by_subject(load_face_set(dataset, imaginer.image_size))
        trained[dataset] = train_people
        evaluated += held_out.subjects.tolist()
    judges = {"population": population_judge(evaluated).predict_proba}
    scores = {}
    for strength in strengths:
        candidate = imaginer.with_strength(strength)
        per_dataset = [evaluate_people(candidate, trained[d], SAME_PERSON_THRESHOLDS.get(d, 0.45), judges, identity,
                                       max_sources) for d in datasets]
        scores[strength] = (float(np.mean([r["identity_kept"] for r in per_dataset])),
                            float(np.mean([r["judges"]["population"]["expression_hit_over_real"] for r in per_dataset])))
        log(f"edit strength {strength}: training people identity_kept {scores[strength][0]:.3f}, "
            f"expression_hit_over_real (population) {scores[strength][1]:.3f}")
    allowed = [s for s in strengths if scores[s][0] >= MIN_IDENTITY_KEPT] or [min(strengths)]
    return max(allowed, key=lambda s: scores[s][1]), scores


def public_domain_face(size: int) -> np.ndarray:
    """A face that may appear in the docs: NASA's public-domain astronaut portrait shipped with scikit-image."""
    from skimage import data

    from clifer_core.faces import crop_largest_face

    crop = crop_largest_face(data.astronaut(), size=size)
    if crop is None:
        raise RuntimeError("no face found in skimage.data.astronaut()")
    return crop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", default=None,
                        help="model files, each NAME=PATH or PATH (default: the packaged default); the packaged "
                             "default is always scored beside them as 'shipped', the imaginations fitted on the "
                             f"training people without a network as {', '.join(FITTED_BASELINES)}, and the "
                             "return-the-input edit as 'input'; those names alone pick one (for --choose-strength)")
    parser.add_argument("--data", nargs="+", default=["taiwanese", "ckplus", "yale"])
    parser.add_argument("--max-sources", type=int, default=MAX_SOURCES, help="source faces per dataset")
    parser.add_argument("--out", type=Path, default=Path("imagination_report"), help="folder for report.json and grids")
    parser.add_argument("--choose-strength", type=float, nargs="+", default=None, metavar="S",
                        help="instead of evaluating: score the (first) residual --model at each edit strength on the "
                             "people it trained on and write it with the chosen one to OUT/chosen.npz")
    parser.add_argument("--no-shipped", action="store_true",
                        help="leave the packaged default out (a quick look; the input edit stays as the baseline)")


def _named_models(specs, datasets, with_shipped: bool = True) -> dict:
    models = {"shipped": Imaginer.load()} if with_shipped else {}
    for spec in specs or []:
        if spec in FITTED_BASELINES:
            models[spec] = fitted_baseline(spec, datasets)
            continue
        name, _, path = spec.rpartition("=")
        models[name or Path(path).stem] = load_imagination(path)
    return models


def run(args: argparse.Namespace) -> int:
    from clifer_core.imagination.training import save_grid

    models = _named_models(args.model, args.data, not args.no_shipped)
    if args.choose_strength:
        name, imaginer = next((n, m) for n, m in models.items() if n != "shipped")
        chosen, scores = choose_edit_strength(imaginer, args.choose_strength, args.data, min(args.max_sources, 60))
        if not isinstance(imaginer, Imaginer):
            print(f"{name}: strength {chosen} (set it where the imagination is fitted)")
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        metadata = {**imaginer.metadata, "edit_strength_choice": {
            "rule": f"largest population-judge hit over real with identity_kept >= {MIN_IDENTITY_KEPT} on training people",
            "scores": {str(k): v for k, v in scores.items()}}}
        path = Imaginer(imaginer.networks, metadata, chosen).save(args.out / "chosen.npz")
        print(f"{name}: edit strength {chosen}; wrote {path}")
        return 0
    models.update({name: fitted_baseline(name, args.data) for name in FITTED_BASELINES if name not in models})
    report = evaluate(models, args.data, args.max_sources)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, imaginer in models.items():
        save_grid(imaginer, public_domain_face(imaginer.image_size)[None], args.out / f"grid_{name}.png",
                  title=f"{name}: imagined from a public-domain face (NASA astronaut portrait)",
                  own_expressions=ASTRONAUT_EXPRESSION)
    print(f"{'model':12s} {'dataset':10s} identity_kept  hit/real(population)  hit/real(fer2013)")
    for name, per_dataset in report.items():
        for dataset, numbers in per_dataset.items():
            if dataset == "summary":
                print(f"{name:12s} {'mean':10s} {numbers['identity_kept']:.3f}          "
                      f"{numbers['expression_hit_over_real_population']:.3f}                 "
                      f"{numbers['expression_hit_over_real_fer2013']:.3f}")
            else:
                judges = numbers["judges"]
                print(f"{name:12s} {dataset:10s} {numbers['identity_kept']:.3f}          "
                      f"{judges['population']['expression_hit_over_real']:.3f} "
                      f"({judges['population']['hit_imagined']:.2f}/{judges['population']['accuracy_real']:.2f})     "
                      f"{judges['fer2013']['expression_hit_over_real']:.3f} "
                      f"({judges['fer2013']['hit_imagined']:.2f}/{judges['fer2013']['accuracy_real']:.2f})")
    print(f"wrote {args.out / 'report.json'} and the grids")
    return 0
