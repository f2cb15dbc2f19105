"""Imagination by warping the person's own face along a landmark change (real face mesh on a real photo)."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.faces.landmarks import MESH_ANCHORS
from clifer_core.imagination.data import FaceSet
from clifer_core.imagination.landmark_warp import LandmarkWarpImaginer
from clifer_core.labels import EXPRESSIONS

SIZE = 96
HAPPY, SURPRISED, NEUTRAL = (EXPRESSIONS.index(e) for e in ("happy", "surprised", "neutral"))
LOWER_LIP = MESH_ANCHORS["lip_bottom"][0]
UPPER_LIP = MESH_ANCHORS["lip_top"][0]


@pytest.fixture(scope="module")
def astronaut():
    from clifer_core.evaluation.imagination import public_domain_face

    return public_domain_face(SIZE)


def mouth_opener(imaginer: LandmarkWarpImaginer, face: np.ndarray) -> LandmarkWarpImaginer:
    """Learned state set by hand: happy -> surprised drops the jaw (every point of ``face`` below the line between
    the lips moves down by a tenth of the eye-corner distance); no other pair moves."""
    from clifer_core.shape import align_to_template

    aligned = align_to_template(imaginer.landmarker(face[None]), imaginer._shape.rigid_indices,
                                imaginer._shape.template)[0]
    between_lips = 0.5 * (aligned[UPPER_LIP, 1] + aligned[LOWER_LIP, 1])
    changes = np.zeros((len(EXPRESSIONS), len(EXPRESSIONS), imaginer._shape.n_points, 2), np.float32)
    changes[HAPPY, SURPRISED, aligned[:, 1] > between_lips, 1] = 0.1
    imaginer.changes_ = changes
    imaginer.pair_counts_ = np.ones((len(EXPRESSIONS),) * 2, np.int64)
    return imaginer


def mouth_gap(imaginer, crops) -> np.ndarray:
    points = imaginer.landmarker(crops)
    return points[:, LOWER_LIP, 1] - points[:, UPPER_LIP, 1]


def test_the_warp_moves_the_persons_own_mouth_and_leaves_the_rest(astronaut):
    imaginer = mouth_opener(LandmarkWarpImaginer(SIZE, strength=1.0), astronaut)
    imagined, latents = imaginer.imagine(astronaut[None], own_expressions="happy")
    assert latents is None and imagined.shape == (1, len(EXPRESSIONS), SIZE, SIZE, 3)
    assert np.array_equal(imagined[0, HAPPY], astronaut), "the own expression returns the face"
    assert np.array_equal(imagined[0, NEUTRAL], astronaut), "a pair nobody showed moves nothing"
    surprised = imagined[0, SURPRISED]
    assert mouth_gap(imaginer, surprised[None])[0] > mouth_gap(imaginer, astronaut[None])[0] + 1.0
    moved = np.abs(surprised.astype(int) - astronaut.astype(int)).max(axis=-1) > 8
    assert moved[: SIZE // 2].mean() < 0.01, "the upper face stays as it was"
    assert moved[SIZE // 2:].any()


def test_the_fitted_change_is_the_one_shown_and_strength_scales_it(astronaut):
    imaginer = mouth_opener(LandmarkWarpImaginer(SIZE, strength=1.0), astronaut)
    opened = imaginer.imagine(astronaut[None], expressions=["surprised"], own_expressions="happy")[0][:, 0]
    brighter = np.clip(astronaut.astype(int) + 25, 0, 255).astype(np.uint8)
    opened_brighter = imaginer.imagine(brighter[None], expressions=["surprised"], own_expressions="happy")[0][:, 0]
    faces = np.stack([astronaut, opened[0], brighter, opened_brighter[0]])
    people = FaceSet(faces, np.array([HAPPY, SURPRISED, HAPPY, SURPRISED]), np.array(["a:1", "a:1", "a:2", "a:2"]))
    fitted = LandmarkWarpImaginer(SIZE, strength=1.0, landmarker=imaginer.landmarker).fit([people])
    assert fitted.pair_counts_[HAPPY, SURPRISED] == 2 and fitted.pair_counts_[HAPPY, NEUTRAL] == 0
    learned = fitted.changes_[HAPPY, SURPRISED]
    assert learned[LOWER_LIP, 1] > 0.02, "the lower lip dropped"
    assert np.abs(learned[MESH_ANCHORS["eye_inner"][0]]).max() < learned[LOWER_LIP, 1] / 4, "the eyes did not move"
    gap = mouth_gap(fitted, astronaut[None])[0]
    once = mouth_gap(fitted, fitted.imagine(astronaut[None], ["surprised"], "happy")[0][:, 0])[0]
    twice = mouth_gap(fitted, fitted.with_strength(2.0).imagine(astronaut[None], ["surprised"], "happy")[0][:, 0])[0]
    assert gap < once < twice


def test_the_warp_refuses_unfitted_use_and_a_missing_own_expression(astronaut):
    with pytest.raises(RuntimeError, match="not fitted"):
        LandmarkWarpImaginer(SIZE).imagine(astronaut[None], own_expressions="happy")
    with pytest.raises(ValueError, match="own_expressions"):
        mouth_opener(LandmarkWarpImaginer(SIZE), astronaut).imagine(astronaut[None])
    with pytest.raises(ValueError, match="strength"):
        LandmarkWarpImaginer(SIZE, strength=-1.0)


def test_the_warp_with_the_mean_change_adds_the_shown_brightening_and_opens_the_mouth(astronaut):
    imaginer = mouth_opener(LandmarkWarpImaginer(SIZE, strength=1.0), astronaut)
    opened = imaginer.imagine(astronaut[None], expressions=["surprised"], own_expressions="happy")[0][0, 0]
    lit = np.clip(opened.astype(int) + 20, 0, 255).astype(np.uint8)
    people = FaceSet(np.stack([astronaut, lit]), np.array([HAPPY, SURPRISED]), np.array(["a:1", "a:1"]))
    both = LandmarkWarpImaginer(SIZE, strength=1.0, landmarker=imaginer.landmarker, texture_strength=1.0).fit([people])
    imagined = both.imagine(astronaut[None], own_expressions="happy")[0][0]
    assert np.array_equal(imagined[HAPPY], astronaut)
    surprised = imagined[SURPRISED].astype(int)
    assert 10 < np.median(surprised - astronaut.astype(int)) < 30, "the mean change brightens the face"
    assert mouth_gap(both, imagined[SURPRISED][None])[0] > mouth_gap(both, astronaut[None])[0] + 0.5
    assert both.with_strength(2.0).texture is both.texture


def test_the_piecewise_affine_warp_keeps_a_still_mesh_and_carries_content_with_a_moved_one():
    from clifer_core.imagination.landmark_warp import _border, piecewise_affine_warp

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    points = np.concatenate([rng.uniform(12, 36, (30, 2)), _border(48)])
    assert np.array_equal(piecewise_affine_warp(image, points, points), image), "no movement, no change"
    square = np.zeros((48, 48, 3), np.uint8)
    square[20:26, 20:26] = 255
    corners = np.array([[18.0, 18.0], [28.0, 18.0], [18.0, 28.0], [28.0, 28.0]])
    moved = piecewise_affine_warp(square, np.concatenate([corners, _border(48)]),
                                  np.concatenate([corners + [4.0, 0.0], _border(48)]))
    assert np.array_equal(moved[20:26, 24:30], square[20:26, 20:26]), "what the mesh carries moves with it"
    assert moved[:, :22].max() == 0


def test_a_saved_warp_loads_back_the_same_and_a_damaged_file_is_refused(astronaut, tmp_path):
    from clifer_core.imagination.imaginer import Imaginer, load_imagination
    from clifer_core.persistence import StateFileError

    imaginer = mouth_opener(LandmarkWarpImaginer(SIZE, strength=2.0), astronaut)
    imaginer.texture = None
    brighter = mouth_opener(LandmarkWarpImaginer(SIZE, strength=2.0, texture_strength=1.0), astronaut)
    brighter.texture.changes_ = np.full((len(EXPRESSIONS),) * 2 + (SIZE, SIZE, 1), 0.1, np.float32)
    brighter.texture.pair_counts_ = np.arange(len(EXPRESSIONS) ** 2, dtype=np.int64).reshape(len(EXPRESSIONS), -1)
    for original in (imaginer, brighter):
        original.metadata = {"held_out_subjects": ["taiwanese:tw03"]}
        path = original.save(tmp_path / "warp.npz")
        loaded = load_imagination(path)
        assert isinstance(loaded, LandmarkWarpImaginer) and loaded.strength == 2.0
        assert loaded.metadata == original.metadata
        np.testing.assert_array_equal(loaded.pair_counts_, original.pair_counts_)
        if original.texture is not None:
            np.testing.assert_array_equal(loaded.texture.pair_counts_, original.texture.pair_counts_)
        np.testing.assert_array_equal(loaded.imagine(astronaut[None], own_expressions="happy")[0],
                                      original.imagine(astronaut[None], own_expressions="happy")[0])
    assert isinstance(load_imagination(), Imaginer), "the packaged trained model loads as before"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(StateFileError, match="corrupt or truncated"):
        load_imagination(path)
    from clifer_core.persistence import load_state, save_state

    path.write_bytes(payload)
    manifest, arrays = load_state(path, "clifer.landmark_warp", (1,))
    arrays["landmarks"] = arrays["landmarks"][:, :, :10]
    save_state(path, manifest.pop("kind"), manifest.pop("schema_version"), manifest, arrays)
    with pytest.raises(StateFileError, match="landmarks"):
        LandmarkWarpImaginer.load(path)


@pytest.mark.parametrize("name", ["mean_change", "landmark_warp"])
def test_fitted_imaginations_keep_unseen_people_themselves(data_dir, name):
    """Fitted on the training people only; each imagined face of a held-out Taiwanese person is nearest (dlib) to
    that person's own source in a gallery of one crop per held-out person."""
    from clifer_core.evaluation.imagination import DlibIdentity, fitted_baseline
    from clifer_core.imagination.data import load_face_set, split_by_subject
    from clifer_core.imagination.imaginer import faces_to_model_input, model_output_to_faces

    imaginer = fitted_baseline(name, ["taiwanese"])
    _, held_out = split_by_subject(load_face_set("taiwanese", imaginer.image_size))
    people = sorted(set(held_out.subjects.tolist()))
    assert not set(people) & set(imaginer.metadata["trained_subjects"])
    first = [int(np.flatnonzero(held_out.subjects == p)[0]) for p in people]
    sources = held_out.faces[first]
    imagined, _ = imaginer.imagine(sources, own_expressions=held_out.labels[first])
    assert np.mean(np.abs(imagined.astype(int) - sources[:, None].astype(int)) > 8) > 0.005, "faces were edited"
    identity = DlibIdentity()
    gallery = identity.embed(model_output_to_faces(faces_to_model_input(sources, imaginer.image_size)))
    embedded = identity.embed(imagined.reshape(-1, *imagined.shape[2:])).reshape(len(people), len(EXPRESSIONS), -1)
    nearest = np.linalg.norm(embedded[:, :, None] - gallery[None, None], axis=-1).argmin(axis=-1)
    assert np.mean(nearest == np.arange(len(people))[:, None]) >= 0.9
