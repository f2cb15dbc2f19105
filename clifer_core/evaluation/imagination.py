"""Quality of an imagination model, judged by models it was not trained against, on held-out people.

- expression: the packaged FER2013 classifier's agreement with each imagined
  face's target expression, next to its accuracy on the real faces of the
  same people (its own ceiling on this data);
- identity: dlib's 128-d face-recognition embedding distance between each
  source face and its imagined faces, and the fraction under the dataset's
  calibrated same-person threshold; real same-person and different-person
  pairs at the same resolution are reported beside it as reference points;
- reconstruction L1 (pixels in [0, 1]) and the latent classifier's accuracy
  on real and imagined latents (what the memories see).

Caveat: the FER2013 network is also the training-time perceptual term
(activations only, never its class output), so the expression number is not
from a wholly independent judge; dlib never takes part in training.
``clifer evaluate-imagination`` runs it and writes a JSON report and a grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from clifer_core.imagination.data import CROP_MARGIN, FaceSet, load_face_set, split_by_subject
from clifer_core.imagination.imaginer import Imaginer, faces_to_model_input
from clifer_core.labels import EXPRESSIONS

SAME_PERSON_THRESHOLDS = {"taiwanese": 0.45, "yale": 0.52, "ckplus": 0.58}
"""Equal-error thresholds of dlib's embedding per dataset (../shared/data/README.md)."""
DLIB_INPUT_SIDE = 160
MAX_SOURCES = 120


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


def evaluate_people(imaginer: Imaginer, people: FaceSet, threshold: float, fer, identity: DlibIdentity,
                    max_sources: int = MAX_SOURCES) -> dict:
    """All metrics on one dataset's held-out people (at most ``max_sources`` evenly spaced source faces)."""
    sources = people.subset(_spread(len(people), max_sources))
    imagined, imagined_z = imaginer.imagine(sources.faces)
    count, kinds = imagined.shape[:2]
    targets = np.tile(np.arange(kinds), count)
    flat = imagined.reshape(-1, *imagined.shape[2:])
    judged = fer.predict_proba(flat).argmax(axis=1)
    changed = targets != np.repeat(sources.labels, kinds)
    real_judged = fer.predict_proba(people.faces).argmax(axis=1)
    resized = (faces_to_model_input(sources.faces, imaginer.image_size) + 1.0) * 127.5
    real_at_model_size = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    source_embedding = identity.embed(real_at_model_size)
    imagined_embedding = identity.embed(flat).reshape(count, kinds, -1)
    distances = np.linalg.norm(imagined_embedding - source_embedding[:, None], axis=-1)
    same, different = [], []
    for i in range(count):
        for j in range(i + 1, count):
            distance = float(np.linalg.norm(source_embedding[i] - source_embedding[j]))
            (same if sources.subjects[i] == sources.subjects[j] else different).append(distance)
    z = imaginer.encode(sources.faces)
    reconstructed = imaginer.decode(z, sources.labels)
    reconstruction_l1 = float(np.mean(np.abs(reconstructed.astype(np.float32) - real_at_model_size.astype(np.float32))) / 255)
    per_expression = {EXPRESSIONS[k]: float(np.mean(judged[targets == k] == k)) for k in range(kinds)}
    return {
        "people": int(len(set(people.subjects))), "real_faces": int(len(people)), "source_faces": int(count),
        "imagined_faces": int(count * kinds),
        "fer_accuracy_real": float(np.mean(real_judged == people.labels)),
        "fer_accuracy_imagined": float(np.mean(judged == targets)),
        "fer_accuracy_imagined_changed_expression": float(np.mean(judged[changed] == targets[changed])),
        "fer_accuracy_imagined_per_expression": per_expression,
        "identity_threshold": threshold,
        "identity_distance_imagined_median": float(np.median(distances)),
        "identity_fraction_imagined_under_threshold": float(np.mean(distances < threshold)),
        "identity_distance_same_person_real_median": float(np.median(same)) if same else None,
        "identity_fraction_same_person_real_under_threshold": float(np.mean(np.asarray(same) < threshold)) if same else None,
        "identity_distance_other_person_real_median": float(np.median(different)) if different else None,
        "reconstruction_l1": reconstruction_l1,
        "latent_classifier_accuracy_real": float(np.mean(imaginer.classify_latents(z).argmax(1) == sources.labels)),
        "latent_classifier_accuracy_imagined": float(np.mean(
            imaginer.classify_latents(imagined_z.reshape(-1, imaginer.latent_dim)).argmax(1) == targets)),
    }


def evaluate(imaginer: Imaginer, datasets=("taiwanese", "ckplus", "yale"), max_sources: int = MAX_SOURCES) -> dict:
    """Metrics per dataset on the held-out people of :func:`clifer_core.imagination.data.split_by_subject`."""
    from clifer_core.features import Fer2013Model

    fer, identity = Fer2013Model(), DlibIdentity()
    report = {}
    for dataset in datasets:
        _, held_out = split_by_subject(load_face_set(dataset, imaginer.image_size))
        threshold = SAME_PERSON_THRESHOLDS.get(dataset, SAME_PERSON_THRESHOLDS["taiwanese"])
        report[dataset] = evaluate_people(imaginer, held_out, threshold, fer, identity, max_sources)
        report[dataset]["held_out_subjects"] = sorted(set(held_out.subjects.tolist()))
    return report


def public_domain_face(size: int) -> np.ndarray:
    """A face that may appear in the docs: NASA's public-domain astronaut portrait shipped with scikit-image."""
    from skimage import data

    from clifer_core.faces import crop_largest_face

    crop = crop_largest_face(data.astronaut(), size=size)
    if crop is None:
        raise RuntimeError("no face found in skimage.data.astronaut()")
    return crop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the packaged default)")
    parser.add_argument("--data", nargs="+", default=["taiwanese", "ckplus", "yale"])
    parser.add_argument("--max-sources", type=int, default=MAX_SOURCES, help="source faces per dataset")
    parser.add_argument("--out", type=Path, default=Path("imagination_report"), help="folder for report.json and grid.png")


def run(args: argparse.Namespace) -> int:
    from clifer_core.imagination.training import save_grid

    imaginer = Imaginer.load(args.model)
    report = evaluate(imaginer, args.data, args.max_sources)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_grid(imaginer, public_domain_face(imaginer.image_size)[None], args.out / "grid.png",
              title="imagined from a public-domain face (NASA astronaut portrait)")
    for dataset, numbers in report.items():
        print(dataset, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in numbers.items()
                                   if k not in ("held_out_subjects", "fer_accuracy_imagined_per_expression")}))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'grid.png'}")
    return 0
