"""The labelled-bag scenario with a population classifier that never saw the bag's people.

The shipped person-adaptation classifier (``clifer_core/adaptation_default``)
was trained on every Taiwanese person, so the taught bag runs of
``benchmarks/personalisation.py`` test behaviour, not accuracy. Here the
same bag (8 Taiwanese people; neutral held for 6 frames and taught, then
their other expressions, never taught) is evaluated in-process with a
classifier trained on the other Taiwanese people, CK+48 and Yale, beside
the shipped classifier, the learner without adaptation and the prior on the
same frames: accuracy, macro-F1 and each class's recall and F1.

    .venv/bin/python benchmarks/bag_leak_free.py [--people 8]

Needs ../shared/data (without it, says so and skips). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from clifer_core.adaptation import PopulationClassifier
from clifer_core.adaptation_training import DATASETS, dataset_features
from clifer_core.data.cache import ArrayCache, default_cache_dir
from clifer_core.data.datasets import default_data_dir, load_dataset
from clifer_core.evaluation.bag_report import Scores, score
from clifer_core.labels import EXPRESSIONS
from clifer_core.learner import CliferLearner

LEAD_FRAMES = 6


def class_f1(scores: Scores) -> dict[str, float]:
    """F1 of each class present in the truth, from the confusion matrix (rows: truth, columns: answer)."""
    confusion = scores.confusion.astype(float)
    result = {}
    for index, name in enumerate(EXPRESSIONS):
        true_positive, present = confusion[index, index], confusion[index].sum()
        if present:
            answered = confusion[:, index].sum()
            result[name] = float(2 * true_positive / (present + answered))
    return result


def leak_free_classifier(excluded: list[str], cache) -> PopulationClassifier:
    """The fer+shape population classifier fitted without the ``excluded`` Taiwanese people."""
    parts = [dataset_features(name, "fer+shape", cache, False) for name in DATASETS]
    features = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    keep = ~np.isin(np.concatenate([p[2] for p in parts]), [f"taiwanese/{s}" for s in excluded])
    return PopulationClassifier(len(EXPRESSIONS), "fer+shape").fit(features[keep], labels[keep])


def main(argv=None) -> int:
    from clifer_ros.bags.evaluate import evaluate_in_process
    from clifer_ros.bags.make import make_bag

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=8)
    args = parser.parse_args(argv)
    if default_data_dir() is None:
        print("no ../shared/data (or $CLIFER_DATA_DIR): nothing to measure", file=sys.stderr)
        print(json.dumps({"skipped": "no data"}))
        return 0
    bag_people = sorted({s.subject for s in load_dataset("taiwanese")})[:args.people]
    classifier = leak_free_classifier(bag_people, ArrayCache(default_cache_dir()))
    learners = {"leak_free": CliferLearner(population_classifier=classifier), "shipped": CliferLearner(),
                "no_adaptation": CliferLearner(adaptation=False)}
    figures: dict = {"people": bag_people}
    with tempfile.TemporaryDirectory() as folder:
        bag = Path(folder) / "lead_neutral"
        make_bag("taiwanese", bag, people=args.people, lead_expression="neutral", lead_frames=LEAD_FRAMES)
        prior = {r.stamp_ns: r for r in evaluate_in_process(bag)}
        for name, learner in learners.items():
            results = [r for r in evaluate_in_process(bag, learner=learner, teach_first=LEAD_FRAMES) if not r.taught]
            mine, theirs = score(results), score([prior[r.stamp_ns] for r in results])
            figures[name] = {"accuracy": mine.accuracy, "macro_f1": mine.macro_f1, "recall": mine.recall,
                             "f1": class_f1(mine)}
            figures.setdefault("prior", {"accuracy": theirs.accuracy, "macro_f1": theirs.macro_f1,
                                         "recall": theirs.recall, "f1": class_f1(theirs)})
            print(f"{name}: accuracy {mine.accuracy:.3f} (prior {theirs.accuracy:.3f}), F1 "
                  + ", ".join(f"{k} {v:.2f} ({figures['prior']['f1'].get(k, float('nan')):.2f})"
                              for k, v in figures[name]["f1"].items()), file=sys.stderr)
    worst = min((figures["leak_free"]["f1"][k] - figures["prior"]["f1"][k], k) for k in figures["leak_free"]["f1"])
    figures["leak_free_worst_class_f1_margin"] = {"margin": worst[0], "class": worst[1]}
    print(json.dumps(figures, default=lambda value: round(value, 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
