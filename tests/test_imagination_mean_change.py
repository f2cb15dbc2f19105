"""The mean-change baseline: the simplest imagination, which every trained imagination model must beat."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.evaluation.imagination import _check_unseen
from clifer_core.imagination.data import FaceSet
from clifer_core.imagination.mean_change import MeanChangeImaginer
from clifer_core.labels import EXPRESSIONS

SIZE = 16
HAPPY, NEUTRAL, SURPRISED = (EXPRESSIONS.index(e) for e in ("happy", "neutral", "surprised"))


def expression_pattern(expression: int) -> np.ndarray:
    """A grey change per expression: a band whose row depends on the expression."""
    pattern = np.zeros((SIZE, SIZE), np.int16)
    pattern[2 * expression:2 * expression + 2] = 40
    return pattern


def face(person_level: int, expression: int) -> np.ndarray:
    grey = np.clip(person_level + expression_pattern(expression), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def people(levels: dict, expressions=(HAPPY, NEUTRAL, SURPRISED)) -> FaceSet:
    faces, labels, subjects = [], [], []
    for name, level in levels.items():
        for expression in expressions:
            faces.append(face(level, expression))
            labels.append(expression)
            subjects.append(name)
    return FaceSet(np.stack(faces), np.array(labels), np.array(subjects))


def test_mean_change_adds_the_trained_change_to_a_new_persons_own_face():
    imaginer = MeanChangeImaginer(SIZE, strength=1.0).fit([people({"a:1": 60, "a:2": 100})])
    stranger = face(140, NEUTRAL)[None]
    imagined, latents = imaginer.imagine(stranger, own_expressions="neutral")
    assert latents is None and imagined.shape == (1, len(EXPRESSIONS), SIZE, SIZE, 3)
    assert np.array_equal(imagined[0, NEUTRAL], stranger[0]), "the own expression returns the face"
    assert np.abs(imagined[0, HAPPY].astype(int) - face(140, HAPPY).astype(int)).max() <= 1
    assert np.abs(imagined[0, SURPRISED].astype(int) - face(140, SURPRISED).astype(int)).max() <= 1
    assert np.array_equal(imagined[0, EXPRESSIONS.index("angry")], stranger[0]), "no one showed angry: no change"
    assert imaginer.pair_counts_[NEUTRAL, HAPPY] == 2 and imaginer.pair_counts_[NEUTRAL, 0] == 0


def test_mean_change_strength_scales_the_change_and_colour_faces_get_a_grey_change():
    imaginer = MeanChangeImaginer(SIZE, strength=1.0).fit([people({"a:1": 60, "a:2": 100})])
    colour = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 90, 120, 150
    once, _ = imaginer.imagine(colour, expressions=["happy"], own_expressions="neutral")
    twice, _ = imaginer.with_strength(2.0).imagine(colour, expressions=["happy"], own_expressions="neutral")
    change_once = once[0, 0].astype(int) - colour[0].astype(int)
    change_twice = twice[0, 0].astype(int) - colour[0].astype(int)
    assert change_once.any() and np.all(change_once == change_once[..., :1]), "the same change in every channel"
    assert np.abs(change_twice - 2 * change_once).max() <= 1


def test_mean_change_refuses_unfitted_use_a_missing_own_expression_and_bad_strength():
    faces = np.full((1, SIZE, SIZE, 3), 100, np.uint8)
    with pytest.raises(RuntimeError, match="not fitted"):
        MeanChangeImaginer(SIZE).imagine(faces, own_expressions="happy")
    fitted = MeanChangeImaginer(SIZE).fit([people({"a:1": 60})])
    with pytest.raises(ValueError, match="own_expressions"):
        fitted.imagine(faces)
    with pytest.raises(ValueError, match="unknown|expression"):
        fitted.imagine(faces, own_expressions="bored")
    with pytest.raises(ValueError, match="strength"):
        MeanChangeImaginer(SIZE, strength=0.0)
    with pytest.raises(ValueError, match="no faces"):
        MeanChangeImaginer(SIZE).fit([])


def test_a_person_the_baseline_was_fitted_on_is_never_scored():
    imaginer = MeanChangeImaginer(SIZE).fit([people({"a:1": 60, "a:2": 100})])
    _check_unseen("mean_change", imaginer, ["a:3"])
    with pytest.raises(ValueError, match="fitted on"):
        _check_unseen("mean_change", imaginer, ["a:2", "a:3"])
