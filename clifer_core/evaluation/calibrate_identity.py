"""``clifer calibrate-identity``: choose the identity threshold and margin on labelled folders.

It embeds every face and computes (1) the pairwise verification ROC and its
equal-error threshold, and (2) the open-set error rates of the gallery as it
is used at run time (people enrolled from a few images, nearest neighbour
with a margin over the runner-up, unenrolled people as impostors). The
pairwise EER threshold is too lenient for that gallery: matching against
several samples per person gives an impostor several chances. So by default
it writes the open-set (threshold, margin) with the fewest false accepts at
false rejects <= ``--target-frr``; ``--criterion eer`` writes the pairwise
equal-error threshold instead. Both are recorded in the YAML, and the curves
are plotted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from clifer_core.data.datasets import load_dataset
from clifer_core.faces.detect import make_detector
from clifer_core.evaluation.faces import (
    THRESHOLDS,
    EmbeddedSet,
    OpenSetTrials,
    embed_samples,
    equal_error_threshold,
    error_rates,
    open_set_trials,
    pair_distances,
    plot_curves,
    subsample,
)
from clifer_core.faces.identity import DEFAULT_MARGIN, IDENTITY_CONFIG, FaceEmbedder
from clifer_core.persistence import atomic_write_bytes


def calibrate(datasets: list[EmbeddedSet], criterion: str = "open_set", target_frr: float = 0.05, margin: float = DEFAULT_MARGIN) -> tuple[dict, dict]:
    """The chosen threshold and margin with their measured error rates, and the curves to plot."""
    if criterion not in ("open_set", "eer"):
        raise ValueError(f"criterion must be 'open_set' or 'eer', got {criterion!r}")
    for data in datasets:
        people = len(np.unique(data.usable().subjects))
        if people < 4:
            raise ValueError(f"need faces of at least 4 people in each folder to calibrate, found {people}")
    pairs = [pair_distances(data) for data in datasets]
    genuine = np.concatenate([g for g, _ in pairs])
    impostor = np.concatenate([i for _, i in pairs])
    eer_threshold, eer = equal_error_threshold(genuine, impostor)
    trials = OpenSetTrials.pooled([open_set_trials(data) for data in datasets])
    best = trials.best_operating_point(target_frr) if criterion == "open_set" else {}
    threshold = best.get("threshold", eer_threshold)
    margin = best.get("margin", margin)
    false_accept, false_reject = trials.rates(threshold, margin)
    result = {
        "threshold": round(float(threshold), 4),
        "margin": round(float(margin), 4),
        "criterion": criterion if best or criterion == "eer" else "eer (no open-set setting met the target)",
        "target_false_reject": target_frr,
        "open_set_false_accept": round(float(false_accept[0]), 4),
        "open_set_false_reject": round(float(false_reject[0]), 4),
        "eer": round(eer, 4),
        "eer_threshold": round(eer_threshold, 4),
        "images": int(sum(len(d.found) for d in datasets)),
        "people": int(sum(len(np.unique(d.usable().subjects)) for d in datasets)),
        "detection_rate": round(float(np.mean(np.concatenate([d.found for d in datasets]))), 4),
    }
    pair_far, pair_frr = error_rates(genuine, impostor, THRESHOLDS)
    open_far, open_frr = trials.rates(THRESHOLDS, margin)
    curves = {
        "pairs: false accept": (THRESHOLDS, pair_far),
        "pairs: false reject": (THRESHOLDS, pair_frr),
        f"open set (margin {margin:.2f}): false accept": (THRESHOLDS, open_far),
        f"open set (margin {margin:.2f}): false reject": (THRESHOLDS, open_frr),
    }
    return result, curves


def write_config(path: Path, result: dict, sources: list[str]) -> Path:
    """Write the calibration as YAML, atomically, with a header saying where it came from."""
    import yaml

    header = (
        "# Identity matching settings, written by `clifer calibrate-identity`.\n"
        f"# Data: {', '.join(sources)}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.\n"
        "# Read by clifer_core.faces.identity.IdentityGallery.from_config.\n"
    )
    return atomic_write_bytes(path, (header + yaml.safe_dump(result, sort_keys=False)).encode("utf-8"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, nargs="+", help="labelled folders (or dataset names: taiwanese, yale, ckplus)")
    parser.add_argument("--output", type=Path, default=IDENTITY_CONFIG, help="YAML file to write (default: config/identity.yaml)")
    parser.add_argument("--criterion", choices=("open_set", "eer"), default="open_set")
    parser.add_argument("--target-frr", type=float, default=0.05, help="false-reject rate allowed by the open-set criterion")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="margin written with --criterion eer")
    parser.add_argument("--detector", default="blazeface")
    parser.add_argument("--per-subject", type=int, default=None, help="at most this many images per person (default: all)")
    parser.add_argument("--plot", type=Path, default=Path("out/calibration/identity_roc.png"))


def run(args: argparse.Namespace) -> int:
    detector, embedder = make_detector(args.detector), FaceEmbedder()
    embedded = []
    for source in args.data:
        samples = subsample(load_dataset(source), args.per_subject)
        if not samples:
            print(f"{source}: no labelled images found", file=sys.stderr)
            return 2
        print(f"{source}: embedding {len(samples)} images of {len({s.subject for s in samples})} people", file=sys.stderr, flush=True)
        embedded.append(embed_samples(samples, detector, embedder, progress=True))
    try:
        result, curves = calibrate(embedded, args.criterion, args.target_frr, args.margin)
    except ValueError as error:
        print(f"cannot calibrate: {error}", file=sys.stderr)
        return 2
    write_config(args.output, result, args.data)
    plot_curves(args.plot, curves, "Identity threshold calibration", "distance threshold", "error rate", result["threshold"])
    print(f"wrote {args.output} and {args.plot}", file=sys.stderr)
    print(json.dumps(result))
    return 0
