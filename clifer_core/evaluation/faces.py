"""Measure the face pipeline on labelled folders: detection rate, rank-1, open-set errors, ROC.

Protocols (each person is a ``subject`` in :mod:`clifer_core.data.datasets`):

* verification ROC: every pair of embedded images; genuine = same subject.
  Its equal-error threshold is what ``clifer calibrate-identity`` writes.
* rank-1: every subject enrolled from ``enrol_per_person`` random images into
  an :class:`IdentityGallery`; each other image is probed; nearest person wins.
* open set: a random half of the subjects enrolled as above, the other half
  are impostors. A genuine probe is a false reject unless the gallery accepts
  it as the right person; an impostor probe is a false accept if the gallery
  accepts it as anyone. Repeated over several random splits and pooled.

Also the ``clifer evaluate-faces`` sub-command.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clifer_core.data.datasets import FaceSample, load_dataset, load_rgb
from clifer_core.faces.detect import FaceDetector, detect_largest, make_detector
from clifer_core.faces.identity import DEFAULT_MARGIN, DEFAULT_THRESHOLD, EMBEDDING_SIZE, FaceEmbedder, IdentityGallery, load_identity_config


@dataclass
class EmbeddedSet:
    """One embedding per image (NaN rows where no face was found) and its subject."""

    embeddings: np.ndarray
    subjects: np.ndarray
    found: np.ndarray

    @property
    def detection_rate(self) -> float:
        return float(self.found.mean()) if len(self.found) else float("nan")

    def usable(self) -> "EmbeddedSet":
        return EmbeddedSet(self.embeddings[self.found], self.subjects[self.found], self.found[self.found])


def subsample(samples: list[FaceSample], per_subject: int | None, seed: int = 0) -> list[FaceSample]:
    """At most ``per_subject`` random images of each subject (all when None), in a fixed order."""
    if per_subject is None:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[FaceSample]] = {}
    for sample in samples:
        by_subject.setdefault(sample.subject, []).append(sample)
    chosen = []
    for subject in sorted(by_subject):
        group = by_subject[subject]
        picks = rng.choice(len(group), size=min(per_subject, len(group)), replace=False)
        chosen.extend(group[i] for i in sorted(picks))
    return chosen


def embed_samples(
    samples: list[FaceSample],
    detector: FaceDetector | None = None,
    embedder: FaceEmbedder | None = None,
    progress: bool = False,
) -> EmbeddedSet:
    """Detect the largest face in each image and embed it."""
    detector = detector or make_detector("blazeface")
    embedder = embedder or FaceEmbedder()
    embeddings = np.full((len(samples), EMBEDDING_SIZE), np.nan, np.float32)
    found = np.zeros(len(samples), bool)
    for index, sample in enumerate(samples):
        image = load_rgb(sample.path)
        detection = detect_largest(detector, image)
        if detection is not None:
            embeddings[index] = embedder.embed(image, [detection])[0]
            found[index] = True
        if progress and ((index + 1) % 50 == 0 or index + 1 == len(samples)):
            print(f"  embedded {index + 1}/{len(samples)} images ({found[: index + 1].sum()} faces)", file=sys.stderr, flush=True)
    return EmbeddedSet(embeddings, np.array([s.subject for s in samples]), found)


def pair_distances(data: EmbeddedSet) -> tuple[np.ndarray, np.ndarray]:
    """Distances of all genuine (same subject) and impostor pairs of usable images."""
    usable = data.usable()
    x = usable.embeddings.astype(np.float64)
    squared = (x * x).sum(1)
    distances = np.sqrt(np.clip(squared[:, None] + squared[None] - 2 * x @ x.T, 0, None))
    upper = np.triu_indices(len(x), k=1)
    same = (usable.subjects[:, None] == usable.subjects[None])[upper]
    pairs = distances[upper]
    return pairs[same], pairs[~same]


def error_rates(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False accept and false reject rates of "same person iff distance <= threshold"."""
    genuine, impostor = np.sort(genuine), np.sort(impostor)
    far = np.searchsorted(impostor, thresholds, side="right") / max(len(impostor), 1)
    frr = 1.0 - np.searchsorted(genuine, thresholds, side="right") / max(len(genuine), 1)
    return far, frr


def equal_error_threshold(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """The threshold where false accepts equal false rejects, and that rate."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    far, frr = error_rates(genuine, impostor, thresholds)
    best = int(np.argmin(np.abs(far - frr)))
    return float(thresholds[best]), float((far[best] + frr[best]) / 2)


def _enrolment_split(subjects: np.ndarray, enrol_per_person: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    enrol = np.zeros(len(subjects), bool)
    for subject in np.unique(subjects):
        members = np.flatnonzero(subjects == subject)
        enrol[rng.choice(members, size=min(enrol_per_person, len(members) - 1), replace=False)] = True
    return enrol, ~enrol


def _person_id(subject: str) -> str:
    return "s" + "".join(c if c.isalnum() else "_" for c in subject)


def _build_gallery(data: EmbeddedSet, mask: np.ndarray) -> IdentityGallery:
    """A gallery of the masked images; its threshold is unused, as protocols read raw distances."""
    gallery = IdentityGallery(max_samples_per_person=1000, min_sample_spacing=0.0)
    for subject in np.unique(data.subjects[mask]):
        rows = mask & (data.subjects == subject)
        gallery.enrol(data.embeddings[rows], person_id=_person_id(subject))
    return gallery


def rank1_accuracy(data: EmbeddedSet, enrol_per_person: int = 3, repeats: int = 5, seed: int = 0) -> float:
    """Closed-set rank-1 over ``repeats`` random enrolment draws (images with no face count as errors)."""
    usable = data.usable()
    rng = np.random.default_rng(seed)
    correct = total = 0
    for _ in range(repeats):
        enrol, probe = _enrolment_split(usable.subjects, enrol_per_person, rng)
        gallery = _build_gallery(usable, enrol)
        for index in np.flatnonzero(probe):
            correct += gallery.match(usable.embeddings[index]).nearest == _person_id(usable.subjects[index])
            total += 1
    missed = int((~data.found).sum()) * repeats
    return correct / max(total + missed, 1)


THRESHOLDS = np.round(np.arange(0.30, 0.701, 0.005), 3)
MARGINS = np.round(np.arange(0.0, 0.161, 0.01), 3)


@dataclass
class OpenSetTrials:
    """Every open-set probe: genuine or impostor, whether its nearest person is right, and its two distances.

    Decisions for any (threshold, margin) follow the gallery's rule: accept
    the nearest person when ``nearest <= threshold`` and
    ``runner_up - nearest >= margin``.
    """

    genuine: np.ndarray
    nearest_is_right: np.ndarray
    nearest: np.ndarray
    runner_up: np.ndarray

    @staticmethod
    def pooled(trials: list["OpenSetTrials"]) -> "OpenSetTrials":
        fields = ("genuine", "nearest_is_right", "nearest", "runner_up")
        return OpenSetTrials(*(np.concatenate([getattr(t, f) for t in trials]) for f in fields))

    def rates(self, thresholds, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """False-accept and false-reject rates, one per threshold."""
        thresholds = np.atleast_1d(np.asarray(thresholds, np.float64))
        accepted = (self.nearest[None] <= thresholds[:, None]) & (self.runner_up - self.nearest >= margin)[None]
        impostor = ~self.genuine
        false_accept = accepted[:, impostor].mean(axis=1) if impostor.any() else np.zeros(len(thresholds))
        right = accepted[:, self.genuine] & self.nearest_is_right[self.genuine][None]
        false_reject = 1.0 - right.mean(axis=1) if self.genuine.any() else np.zeros(len(thresholds))
        return false_accept, false_reject

    def best_operating_point(self, target_false_reject: float, margins=MARGINS, thresholds=THRESHOLDS) -> dict:
        """(threshold, margin) with the fewest false accepts among those with false rejects <= target.

        Ties go to fewer false rejects. Empty when no setting meets the target.
        """
        best: dict = {}
        for margin in np.atleast_1d(margins):
            false_accept, false_reject = self.rates(thresholds, float(margin))
            for index in np.flatnonzero(false_reject <= target_false_reject):
                if not best or (false_accept[index], false_reject[index]) < (best["false_accept"], best["false_reject"]):
                    best = {
                        "threshold": float(thresholds[index]),
                        "margin": float(margin),
                        "false_accept": float(false_accept[index]),
                        "false_reject": float(false_reject[index]),
                    }
        return best


def open_set_trials(data: EmbeddedSet, enrol_per_person: int = 3, repeats: int = 10, seed: int = 0) -> OpenSetTrials:
    """Probe an :class:`IdentityGallery` holding a random half of the people, ``repeats`` times."""
    usable = data.usable()
    rng = np.random.default_rng(seed)
    people = np.unique(usable.subjects)
    genuine, right, nearest, runner_up = [], [], [], []
    for _ in range(repeats):
        enrolled_people = rng.choice(people, size=len(people) // 2, replace=False)
        is_enrolled = np.isin(usable.subjects, enrolled_people)
        enrol, probe = _enrolment_split(usable.subjects, enrol_per_person, rng)
        gallery = _build_gallery(usable, enrol & is_enrolled)
        for index in np.flatnonzero(probe):
            ranked = sorted(gallery.distances(usable.embeddings[index]).items(), key=lambda item: item[1])
            genuine.append(is_enrolled[index])
            right.append(ranked[0][0] == _person_id(usable.subjects[index]))
            nearest.append(ranked[0][1])
            runner_up.append(ranked[1][1] if len(ranked) > 1 else np.inf)
    return OpenSetTrials(np.array(genuine, bool), np.array(right, bool), np.array(nearest), np.array(runner_up))


def plot_curves(
    path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str, marker: float | None = None
) -> None:
    """Save error curves as a PNG, with a dashed vertical line at ``marker`` (the chosen threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4))
    for name, (x, y) in curves.items():
        axes.plot(x, y, label=name)
    if marker is not None:
        axes.axvline(marker, color="grey", linestyle="--", label=f"chosen {marker:.3f}")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def evaluate(
    datasets: list[str],
    detector_name: str = "blazeface",
    per_subject: int | None = None,
    threshold: float | None = None,
    margin: float | None = None,
    plot_dir: Path | None = None,
) -> dict:
    """All measurements for each dataset, as a JSON-ready dict (threshold and margin default to the config)."""
    config = load_identity_config()
    threshold = threshold if threshold is not None else config.get("threshold", DEFAULT_THRESHOLD)
    margin = margin if margin is not None else config.get("margin", DEFAULT_MARGIN)
    detector, embedder = make_detector(detector_name), FaceEmbedder()
    report: dict = {"detector": detector_name, "threshold": threshold, "margin": margin}
    curves = {}
    for name in datasets:
        samples = subsample(load_dataset(name), per_subject)
        print(f"{name}: {len(samples)} images", file=sys.stderr, flush=True)
        data = embed_samples(samples, detector, embedder, progress=True)
        report[Path(name).name], trials = measure(data, threshold, margin)
        curve_far, curve_frr = trials.rates(THRESHOLDS, margin)
        curves[f"{Path(name).name} false accept"] = (THRESHOLDS, curve_far)
        curves[f"{Path(name).name} false reject"] = (THRESHOLDS, curve_frr)
    if plot_dir is not None:
        plot_curves(Path(plot_dir) / "identity_open_set.png", curves, f"Open-set identification (margin {margin})", "distance threshold", "rate", threshold)
    return report


def measure(data: EmbeddedSet, threshold: float, margin: float) -> tuple[dict, OpenSetTrials]:
    """Detection rate, rank-1, pairwise EER and open-set error rates of one embedded dataset, and its trials."""
    genuine, impostor = pair_distances(data)
    eer_threshold, eer = equal_error_threshold(genuine, impostor)
    trials = open_set_trials(data)
    false_accept, false_reject = trials.rates(threshold, margin)
    best = trials.best_operating_point(0.05)
    report = {
        "images": int(len(data.found)),
        "detection_rate": round(data.detection_rate, 4),
        "rank1": round(rank1_accuracy(data), 4),
        "eer": round(eer, 4),
        "eer_threshold": round(eer_threshold, 4),
        "false_accept_at_threshold": round(float(false_accept[0]), 4),
        "false_reject_at_threshold": round(float(false_reject[0]), 4),
        "false_accept_at_frr5": round(best.get("false_accept", float("nan")), 4),
        "operating_point_at_frr5": best,
    }
    return report, trials


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", default=["taiwanese", "yale"], help="dataset names (taiwanese, yale, ckplus) or labelled folders")
    parser.add_argument("--detector", default="blazeface", help="blazeface, blazeface_short, dlib_hog or cascade")
    parser.add_argument("--per-subject", type=int, default=None, help="at most this many images per subject (default: all)")
    parser.add_argument("--threshold", type=float, default=None, help="distance threshold (default: config/identity.yaml)")
    parser.add_argument("--margin", type=float, default=None, help="required lead of the nearest person over the runner-up (default: config)")
    parser.add_argument("--plot-dir", type=Path, default=None, help="write identity_open_set.png here")


def run(args: argparse.Namespace) -> int:
    report = evaluate(args.data, args.detector, args.per_subject, args.threshold, args.margin, args.plot_dir)
    print(json.dumps(report, sort_keys=True))
    return 0
