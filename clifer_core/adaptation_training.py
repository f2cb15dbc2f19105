"""``clifer train-adaptation``: fit the population classifier a learner fine-tunes on each person it is taught.

The classifier lives in the memories' feature space (``fer`` or the
learner's default ``fer+shape``, :mod:`clifer_core.adaptation`), so it is
trained on the posed datasets whose faces that space was built for:
Taiwanese, CK+48 and Yale, every labelled image, each image weighted
equally. FER2013's own 48x48 faces are left out: the FER2013 network that
makes the features was trained on them, so their features are separable in
a way no new face's is. The evaluation (``clifer evaluate --protocol
partial``) never uses these weights on the people it scores: it fits the same
classifier without each scored person.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clifer_core.adaptation import REPRESENTATIONS, PopulationClassifier, shipped_path
from clifer_core.labels import EXPRESSIONS

HELP = "train the population classifier the learner fine-tunes on each taught person"
DATASETS = ("taiwanese", "ckplus", "yale")


def dataset_features(name: str, representation: str, cache, show_progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memory features, EXPRESSIONS labels and subjects of one dataset's labelled faces (cached crops/features)."""
    from clifer_core.data.datasets import load_dataset
    from clifer_core.evaluation.crops import dataset_crops
    from clifer_core.evaluation.protocols import scale_features
    from clifer_core.evaluation.representations import compute_representations
    from clifer_core.evaluation.runner import shape_raw_vectors
    from clifer_core.learner import DEFAULT_FEATURE_SCALE, fer_shape_vectors

    samples = [s for s in load_dataset(name) if s.expression in EXPRESSIONS]
    crops, _ = dataset_crops(samples, cache, show_progress=show_progress)
    fer = compute_representations(crops, cache, imagination=False, show_progress=show_progress).features
    if representation == "fer+shape":
        features = fer_shape_vectors(fer, shape_raw_vectors(crops, cache, show_progress))
    else:
        features = scale_features(fer, DEFAULT_FEATURE_SCALE)
    labels = np.array([EXPRESSIONS.index(s.expression) for s in samples])
    return features, labels, np.array([f"{name}/{s.subject}" for s in samples])


def train(representation: str, datasets=DATASETS, cache=None, show_progress: bool = True) -> PopulationClassifier:
    from clifer_core.data.cache import ArrayCache, default_cache_dir

    cache = cache or ArrayCache(default_cache_dir())
    parts = [dataset_features(name, representation, cache, show_progress) for name in datasets]
    features = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    provenance = {"datasets": list(datasets), "images": int(len(labels)),
                  "people": int(len(np.unique(np.concatenate([p[2] for p in parts])))),
                  "per_class": {EXPRESSIONS[k]: int(np.sum(labels == k)) for k in range(len(EXPRESSIONS))},
                  "terms": "research use only (the datasets' licences; ../shared/data/README.md)"}
    return PopulationClassifier(len(EXPRESSIONS), representation, provenance).fit(features, labels)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", choices=REPRESENTATIONS, default="fer+shape",
                        help="the memories' feature space (default fer+shape, the learner's default)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=None, help="weights to write (default: the shipped file)")
    parser.add_argument("--cache", type=Path, default=None, help="crop/feature cache (default ~/.cache/clifer/evaluation)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args) -> int:
    from clifer_core.data.cache import ArrayCache, default_cache_dir
    from clifer_core.data.datasets import default_data_dir

    if default_data_dir() is None:
        raise SystemExit("no data folder: set $CLIFER_DATA_DIR or put the data in ../shared/data")
    classifier = train(args.features, args.datasets, ArrayCache(args.cache or default_cache_dir()), not args.quiet)
    path = classifier.save(args.out or shipped_path(args.features))
    print(f"{args.features}: {classifier.provenance['images']} images of {classifier.provenance['people']} people, "
          f"{classifier.n_features_in_} features; wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0
