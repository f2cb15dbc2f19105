"""What ROS4HRI's aligned crops cost the population evidence: the FER2013 prior on REP-155 crops vs the node's own.

In ``input: ros4hri`` the node sees ``hri_face_detect``'s 128x128 aligned
crop (the face box fitted in, no margin), resized to ``crop_size``; with a
camera it sees its own eye-levelled crop with ``crop_margin`` around the box.
On every labelled image of Taiwanese FED and Yale (../shared/data; images
without one of the seven expressions skipped) this detects the face once
(BlazeFace) and makes both crops from the same detection: the node's own
(:func:`clifer_core.faces.align_face`, the baseline) and the REP-155 aligned
one as this project's stand-in makes it (:func:`clifer_core.faces.align_rep155`;
the real node's YuNet box differs). It reports the FER2013 prior's accuracy
per person, mean ± standard deviation over people, the paired per-person
difference (REP-155 minus own), and how often the two crops get the same
answer. The FER2013 model never saw these datasets; nothing is tuned here.

    nice -n 10 .venv/bin/python benchmarks/ros4hri_crops.py

Ends with one JSON line: per dataset ``<name>_own_accuracy``, ``<name>_rep155_accuracy``
(means over people), ``<name>_own_sd`` / ``<name>_rep155_sd`` (over people),
``<name>_gain`` / ``<name>_gain_sd`` (per-person REP-155 minus own accuracy: mean, sd over people),
``<name>_people_better`` (people whose accuracy is higher on REP-155 crops), ``<name>_agreement``
(share of images with the same answer), ``<name>_people``, ``<name>_images``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

import numpy as np

from clifer_core.data.datasets import default_data_dir, load_dataset, load_rgb
from clifer_core.faces import align_face, align_rep155, find_largest_face
from clifer_core.features import Fer2013Model
from clifer_core.labels import EXPRESSIONS
from clifer_core.pipeline import PipelineConfig, resize_crop

DATASETS = ("taiwanese", "yale")


def crops_of(samples) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Own and REP-155 crops (both ``crop_size``) of every labelled image with a face; subjects; expressions."""
    config = PipelineConfig()
    own, rep155, subjects, expressions = [], [], [], []
    for sample in samples:
        if sample.expression not in EXPRESSIONS:
            continue
        image = load_rgb(sample.path)
        detection = find_largest_face(image)
        if detection is None:
            continue
        own.append(align_face(image, detection, size=config.crop_size, margin=config.crop_margin))
        rep155.append(resize_crop(align_rep155(image, detection), config.crop_size))
        subjects.append(sample.subject)
        expressions.append(sample.expression)
    return np.stack(own), np.stack(rep155), subjects, expressions


def per_person_accuracy(predicted: list[str], truth: list[str], subjects: list[str]) -> list[float]:
    """Accuracy of each person (in order of first appearance)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for guess, label, subject in zip(predicted, truth, subjects):
        hits[subject].append(guess == label)
    return [float(np.mean(values)) for values in hits.values()]


def main() -> int:
    if default_data_dir() is None:
        print("no data folder (../shared/data or $CLIFER_DATA_DIR): nothing to measure")
        print(json.dumps({}))
        return 0
    model = Fer2013Model()
    result = {}
    for name in DATASETS:
        own, rep155, subjects, truth = crops_of(load_dataset(name))
        own_labels = [EXPRESSIONS[i] for i in model.predict_proba(own).argmax(axis=1)]
        rep155_labels = [EXPRESSIONS[i] for i in model.predict_proba(rep155).argmax(axis=1)]
        own_accuracy = per_person_accuracy(own_labels, truth, subjects)
        rep155_accuracy = per_person_accuracy(rep155_labels, truth, subjects)
        agreement = float(np.mean([a == b for a, b in zip(own_labels, rep155_labels)]))
        gains = [b - a for a, b in zip(own_accuracy, rep155_accuracy)]
        print(f"{name}: {len(truth)} images of {len(own_accuracy)} people; FER2013 prior accuracy per person: "
              f"own crops {statistics.mean(own_accuracy):.3f} ± {statistics.stdev(own_accuracy):.3f}, "
              f"REP-155 aligned crops {statistics.mean(rep155_accuracy):.3f} ± {statistics.stdev(rep155_accuracy):.3f}; "
              f"per-person gain {statistics.mean(gains):+.3f} ± {statistics.stdev(gains):.3f} "
              f"({sum(g > 0 for g in gains)} better, {sum(g < 0 for g in gains)} worse); "
              f"same answer on {agreement:.1%} of images")
        result.update({
            f"{name}_own_accuracy": round(statistics.mean(own_accuracy), 4),
            f"{name}_own_sd": round(statistics.stdev(own_accuracy), 4),
            f"{name}_rep155_accuracy": round(statistics.mean(rep155_accuracy), 4),
            f"{name}_rep155_sd": round(statistics.stdev(rep155_accuracy), 4),
            f"{name}_gain": round(statistics.mean(gains), 4),
            f"{name}_gain_sd": round(statistics.stdev(gains), 4),
            f"{name}_people_better": sum(g > 0 for g in gains),
            f"{name}_agreement": round(agreement, 4),
            f"{name}_people": len(own_accuracy),
            f"{name}_images": len(truth),
        })
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
