"""Synthetic per-subject data for the evaluation tests: well-separated expression clusters."""

from __future__ import annotations

import numpy as np

from clifer_core.evaluation.protocols import RunConfig, SubjectTask
from clifer_core.labels import EXPRESSIONS, GDM_EXPRESSIONS


def clustered_task(conditions=("gdm", "imagination"), protocol="fixed", per_class=8, seed=0,
                   imagination_noise=0.05, memory_params=None) -> SubjectTask:
    """One subject, six classes as tight clusters 3 units apart; half of each class's clips held out.

    The imagined features are the true centres of each target expression
    (plus noise): an ideal imagination model, so imagination must let the
    memory recognise classes it was never taught.
    """
    rng = np.random.default_rng(seed)
    classes = GDM_EXPRESSIONS
    centres = {name: rng.normal(size=16) for name in EXPRESSIONS}
    for name in centres:
        centres[name] *= 3.0 / np.linalg.norm(centres[name])
    labels = np.repeat(np.arange(len(classes)), per_class)
    features = np.stack([centres[classes[k]] for k in labels]) + rng.normal(0, 0.1, (len(labels), 16))
    imagined = np.stack([np.stack([centres[e] for e in EXPRESSIONS]) for _ in labels])
    imagined = imagined + rng.normal(0, imagination_noise, imagined.shape)
    clip = np.tile(np.arange(per_class) % 2, len(classes))
    test = clip == 1 if protocol == "fixed" else np.ones(len(labels), bool)
    train = clip == 0 if protocol == "fixed" else np.ones(len(labels), bool)
    config = RunConfig(memory_params=memory_params or {"capacity": "fixed", "max_nodes": 200}, feature_scale=None)
    return SubjectTask(dataset="synthetic", protocol=protocol, subject="s1", order_index=0, order=(0, 4, 3, 5, 1, 2),
                       classes=classes, features=features.astype(np.float32), labels=labels, train=train, test=test,
                       imagined=imagined.astype(np.float32), conditions=tuple(conditions), config=config)


def value(rows, **where) -> float:
    """The one row's value matching ``where`` (fails loudly if not exactly one)."""
    found = [r["value"] for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]
