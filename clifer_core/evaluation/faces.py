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
* sequences: people come and go as face tracks built from their images
  (:func:`plan_visits`, :func:`run_sequence`); ``track_false_merge_rate`` is
  the share of tracks given, at any frame, to a person another subject's
  track enrolled. The track rule the node runs (:class:`TrackDecider`) is fed
  exactly as the node feeds it; :class:`PerFrameRule` is the old rule.

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
from clifer_core.faces.identity import (
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    EMBEDDING_SIZE,
    FaceEmbedder,
    FaceQuality,
    IdentityGallery,
    face_quality,
    load_identity_config,
)


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


# ----------------------------------------------------------------- sequences
#
# Tracks of people coming and going, built from still images: a visit of a
# person is a track whose frames are some of their images (one performance
# per visit where the dataset has them, so a returning person is mostly
# matched against other performances than the one that enrolled them).
# Every image is embedded once; 40 % of them as a far (small) or blurred
# face, as a robot sees people walk in, so the quality gates have something
# to refuse. The rule under test is fed exactly as the node feeds it.

FRAME_VARIANTS = ("clean", "far", "blur")


@dataclass
class SequenceFrames:
    """Each image once as a track frame: its embedding (NaN where no face), quality, subject and group."""

    embeddings: np.ndarray
    subjects: np.ndarray
    groups: np.ndarray
    variants: np.ndarray
    found: np.ndarray
    size: np.ndarray
    sharpness: np.ndarray
    yaw: np.ndarray

    FIELDS = ("embeddings", "subjects", "groups", "variants", "found", "size", "sharpness", "yaw")

    def quality(self, index: int) -> FaceQuality:
        return FaceQuality(float(self.size[index]), float(self.sharpness[index]), float(self.yaw[index]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{name: getattr(self, name) for name in self.FIELDS})

    @classmethod
    def load(cls, path: Path) -> "SequenceFrames":
        with np.load(path, allow_pickle=False) as arrays:
            return cls(*(arrays[name] for name in cls.FIELDS))


def _degrade(image: np.ndarray, box_width: float, variant: str, rng: np.random.Generator) -> np.ndarray:
    """``far``: the whole image shrunk so the face is 18-36 px wide, on a plain canvas; ``blur``: a Gaussian blur
    of 3-6 % of the face width."""
    import cv2

    if variant == "far":
        scale = rng.uniform(18, 36) / max(box_width, 1.0)
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((max(3 * small.shape[0], 160), max(3 * small.shape[1], 160), 3), 90, np.uint8)
        top = int(rng.integers(0, canvas.shape[0] - small.shape[0]))
        left = int(rng.integers(0, canvas.shape[1] - small.shape[1]))
        canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
        return canvas
    sigma = box_width * rng.uniform(0.03, 0.06)
    return cv2.GaussianBlur(image, (0, 0), sigma)


def embed_sequence_frames(
    samples: list[FaceSample],
    detector: FaceDetector,
    embedder: FaceEmbedder,
    degraded_share: float = 0.4,
    seed: int = 0,
    progress: bool = False,
) -> tuple[EmbeddedSet, SequenceFrames]:
    """Every image embedded as is (for rank-1 and open set) and as a track frame (degraded for ``degraded_share``)."""
    rng = np.random.default_rng(seed)
    count = len(samples)
    clean = np.full((count, EMBEDDING_SIZE), np.nan, np.float32)
    frames = np.full((count, EMBEDDING_SIZE), np.nan, np.float32)
    clean_found, found = np.zeros(count, bool), np.zeros(count, bool)
    size, sharpness, yaw = np.zeros(count), np.zeros(count), np.zeros(count)
    variants = rng.choice(FRAME_VARIANTS, size=count, p=[1 - degraded_share, degraded_share / 2, degraded_share / 2])
    for index, sample in enumerate(samples):
        image = load_rgb(sample.path)
        detection = detect_largest(detector, image)
        if detection is not None:
            clean[index] = embedder.embed(image, [detection])[0]
            clean_found[index] = True
            frame = image
            if variants[index] != "clean":
                frame = _degrade(image, detection.width, str(variants[index]), rng)
                detection = detect_largest(detector, frame)
            if detection is not None:
                frames[index] = clean[index] if variants[index] == "clean" else embedder.embed(frame, [detection])[0]
                quality = face_quality(frame, detection)
                size[index], sharpness[index], yaw[index] = quality.size, quality.sharpness, quality.yaw
                found[index] = True
        if progress and ((index + 1) % 100 == 0 or index + 1 == count):
            print(f"  embedded {index + 1}/{count} images", file=sys.stderr, flush=True)
    subjects = np.array([s.subject for s in samples])
    return (EmbeddedSet(clean, subjects, clean_found),
            SequenceFrames(frames, subjects, np.array([s.group for s in samples]), variants.astype(str), found,
                           size, sharpness, yaw))


@dataclass
class Visit:
    """One track: ``subject``'s frames (row indices into :class:`SequenceFrames`)."""

    subject: str
    frames: list[int]


def plan_visits(frames: SequenceFrames, people: list[str], rng: np.random.Generator, clear_per_visit=(3, 6),
                degraded_per_visit=(1, 3), single_visit_share: float = 0.25) -> list[Visit]:
    """Visits of ``people`` in a random order, each a person walking in and staying a moment.

    A person's images are pooled by group (a performance, a recording; groups
    too small for a visit share one pool); each pool gives visits of 3-6 clear
    frames and 1-3 degraded ones: the far ones first (arriving), the blurred
    ones among the clear ones. A share of the people come only once
    (strangers who never return); the others come back once per visit cut.
    """
    visits = []
    for subject in people:
        rows = np.flatnonzero((frames.subjects == subject) & frames.found)
        groups, counts = np.unique(frames.groups[rows], return_counts=True)
        large = groups[counts >= clear_per_visit[0] + degraded_per_visit[0]]
        pools = [rows[frames.groups[rows] == g] for g in large] + [rows[~np.isin(frames.groups[rows], large)]]
        pools = [pools[i] for i in rng.permutation(len(pools)) if len(pools[i])]
        if rng.random() < single_visit_share:
            pools = pools[:1]
        for pool in pools:
            clear = list(rng.permutation(pool[frames.variants[pool] == "clean"]))
            degraded = list(rng.permutation(pool[frames.variants[pool] != "clean"]))
            while len(clear) >= clear_per_visit[0]:
                taken = [clear.pop() for _ in range(min(len(clear), int(rng.integers(clear_per_visit[0], clear_per_visit[1] + 1))))]
                extra = [degraded.pop() for _ in range(min(len(degraded), int(rng.integers(degraded_per_visit[0], degraded_per_visit[1] + 1))))]
                far = [i for i in extra if frames.variants[i] == "far"]
                rest = taken + [i for i in extra if frames.variants[i] != "far"]
                visits.append(Visit(subject, [int(i) for i in far + list(rng.permutation(rest))]))
    return [visits[i] for i in rng.permutation(len(visits))]


class PerFrameRule:
    """The rule the node used before per-track decisions (the baseline): every embedding re-decides.

    The track's last ``evidence_size`` embeddings are matched with the
    gallery's per-image threshold and margin; a match names the track at once
    (and adds the frame to that person if it is within threshold - margin); a
    track that matches no one after ``burst_count`` frames and is farther than
    the threshold from everyone is enrolled. No quality gates.
    """

    def __init__(self, gallery: IdentityGallery, burst_count: int = 3, evidence_size: int = 8):
        self.gallery = gallery
        self.burst_count = burst_count
        self.evidence_size = evidence_size
        self.tracks: dict[str, tuple[list, str | None]] = {}

    def observe(self, face_id: str, embedding: np.ndarray, quality=None, now: float = 0.0) -> str | None:
        evidence, person_id = self.tracks.get(face_id, ([], None))
        evidence = (evidence + [embedding])[-self.evidence_size :]
        match = self.gallery.match(np.asarray(evidence))
        if match.person_id is not None:
            person_id = match.person_id
            if match.distance <= self.gallery.threshold - self.gallery.margin:
                self.gallery.add_samples(match.person_id, embedding)
        elif person_id is None and len(evidence) >= self.burst_count and self.gallery.is_clearly_unknown(match):
            person_id = self.gallery.enrol(np.asarray(evidence))
        self.tracks[face_id] = (evidence, person_id)
        return person_id

    def end(self, face_id: str) -> None:
        self.tracks.pop(face_id, None)


@dataclass
class SequenceOutcome:
    """What one rule did with one run of visits; rates are over tracks."""

    tracks: int
    exposed_tracks: int
    """Tracks that started while someone else was enrolled (a false merge was possible)."""
    false_merges: int
    """Tracks assigned, at any frame, to a person whose id another subject's track created."""
    stranger_tracks: int
    stranger_false_merges: int
    returning_tracks: int
    returning_recognised: int
    """Returning tracks whose last answer was one of their own ids."""
    ids_per_person: float
    undecided_tracks: int
    by_person: dict[str, tuple[int, int]]
    """Per subject: (exposed tracks, false merges)."""

    @staticmethod
    def pooled(outcomes: list["SequenceOutcome"]) -> dict:
        total = {name: sum(getattr(o, name) for o in outcomes) for name in
                 ("tracks", "exposed_tracks", "false_merges", "stranger_tracks", "stranger_false_merges",
                  "returning_tracks", "returning_recognised", "undecided_tracks")}
        per_run = [o.false_merges / max(o.exposed_tracks, 1) for o in outcomes]
        people: dict[str, list[int]] = {}
        for outcome in outcomes:
            for subject, (exposed, false) in outcome.by_person.items():
                counts = people.setdefault(subject, [0, 0])
                counts[0], counts[1] = counts[0] + exposed, counts[1] + false
        per_person = [false / exposed for exposed, false in people.values() if exposed]
        return {
            "track_false_merge_rate": round(total["false_merges"] / max(total["exposed_tracks"], 1), 4),
            "track_false_merge_rate_std_over_runs": round(float(np.std(per_run)), 4),
            "track_false_merge_rate_std_over_people": round(float(np.std(per_person)), 4) if per_person else None,
            "track_false_merge_rate_worst_person": round(float(max(per_person)), 4) if per_person else None,
            "stranger_false_merge_rate": round(total["stranger_false_merges"] / max(total["stranger_tracks"], 1), 4),
            "returning_recognised_rate": round(total["returning_recognised"] / max(total["returning_tracks"], 1), 4),
            "undecided_track_rate": round(total["undecided_tracks"] / max(total["tracks"], 1), 4),
            "ids_per_person": round(float(np.mean([o.ids_per_person for o in outcomes])), 3),
            "tracks": total["tracks"],
            "runs": len(outcomes),
        }


def run_sequence(frames: SequenceFrames, visits: list[Visit], rule, rng: np.random.Generator, max_faces: int = 5,
                 frame_interval_s: float = 0.3) -> SequenceOutcome:
    """Play ``visits`` through ``rule`` (``observe``/``end``), up to ``max_faces`` people in view at once.

    Each step every track in view shows its next frame; a track ends after its
    last frame and the next waiting visit of someone not in view takes its place.
    """
    owner: dict[str, str] = {}
    waiting = list(visits)
    in_view: dict[str, tuple[Visit, int, bool, bool]] = {}
    assigned: dict[str, list[str | None]] = {}
    results = {"tracks": 0, "exposed": 0, "false": 0, "strangers": 0, "stranger_false": 0, "returning": 0,
               "recognised": 0, "undecided": 0}
    by_person: dict[str, tuple[int, int]] = {}
    counter, step = 0, 0
    faces_now = int(rng.integers(1, max_faces + 1))
    while waiting or in_view:
        while len(in_view) < faces_now and waiting:
            present = {visit.subject for visit, *_ in in_view.values()}
            choice = next((i for i, v in enumerate(waiting) if v.subject not in present), None)
            if choice is None:
                break
            visit = waiting.pop(choice)
            face_id = f"f{counter:05d}"
            counter += 1
            known = set(owner.values())
            in_view[face_id] = (visit, 0, bool(known - {visit.subject}), visit.subject in known)
            assigned[face_id] = []
        for face_id in list(in_view):
            visit, position, exposed, returning = in_view[face_id]
            row = visit.frames[position]
            person = rule.observe(face_id, frames.embeddings[row], frames.quality(row), step * frame_interval_s)
            if person is not None and person not in owner:
                owner[person] = visit.subject
            assigned[face_id].append(person)
            if position + 1 < len(visit.frames):
                in_view[face_id] = (visit, position + 1, exposed, returning)
                continue
            rule.end(face_id)
            del in_view[face_id]
            answers = assigned.pop(face_id)
            wrong = any(p is not None and owner.get(p) != visit.subject for p in answers)
            results["tracks"] += 1
            results["exposed"] += exposed
            results["false"] += wrong and exposed
            exposed_so_far, false_so_far = by_person.get(visit.subject, (0, 0))
            by_person[visit.subject] = (exposed_so_far + exposed, false_so_far + (wrong and exposed))
            results["undecided"] += answers[-1] is None
            if returning:
                results["returning"] += 1
                results["recognised"] += answers[-1] is not None and owner.get(answers[-1]) == visit.subject
            elif exposed:
                results["strangers"] += 1
                results["stranger_false"] += wrong
            if rng.random() < 0.2:
                faces_now = int(rng.integers(1, max_faces + 1))
        step += 1
    subjects = {visit.subject for visit in visits}
    ids = [sum(1 for o in owner.values() if o == s) for s in subjects]
    return SequenceOutcome(results["tracks"], results["exposed"], results["false"], results["strangers"],
                           results["stranger_false"], results["returning"], results["recognised"],
                           float(np.mean(ids)) if ids else 0.0, results["undecided"], by_person)


def sequence_outcomes(frames: SequenceFrames, people: list[str], make_rule, runs: int = 5, seed: int = 0,
                      max_faces: int = 5) -> dict:
    """Pooled :class:`SequenceOutcome` of ``runs`` random runs; ``make_rule(gallery)`` builds a fresh rule per run."""
    outcomes = []
    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        visits = plan_visits(frames, people, rng)
        gallery = IdentityGallery.from_config(max_samples_per_person=24)
        outcomes.append(run_sequence(frames, visits, make_rule(gallery), rng, max_faces))
    return SequenceOutcome.pooled(outcomes)


def split_people(subjects, seed: int = 0) -> tuple[list[str], list[str]]:
    """People into a tuning half and a reported half (fixed by ``seed``)."""
    people = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(people))
    tune = sorted(people[i] for i in order[: len(people) // 2])
    return tune, sorted(p for p in people if p not in tune)
