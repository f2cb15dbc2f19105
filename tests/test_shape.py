"""Face-shape features: invariant to where the face is, how large and how tilted; different when it smiles."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from clifer_core.shape import MEASURE_WEIGHT, MEASURES, PersonReference, ShapeFeatures, align_to_template


@pytest.fixture(scope="module")
def shape():
    return ShapeFeatures(model="facemesh")


@pytest.fixture(scope="module")
def astronaut_crop():
    from skimage.data import astronaut

    from clifer_core.faces import crop_largest_face

    crop = crop_largest_face(astronaut(), size=128)
    assert crop is not None
    return crop


def similarity(points: np.ndarray, angle_degrees: float, scale: float, shift) -> np.ndarray:
    angle = math.radians(angle_degrees)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rotation.T + np.asarray(shift)


def warp(image: np.ndarray, angle_degrees: float, scale: float, shift) -> np.ndarray:
    """The image rotated about its centre, scaled and shifted (edges reflected, as a nearby background)."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle_degrees, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_alignment_undoes_any_similarity_of_the_landmarks_exactly(shape, astronaut_crop):
    points = shape.landmarks(astronaut_crop[None])
    reference = shape.from_landmarks(points)
    for angle, scale, shift in [(25.0, 1.0, (0, 0)), (0.0, 2.5, (0, 0)), (0.0, 1.0, (40, -17)), (-40.0, 0.3, (5, 9))]:
        moved = similarity(points[0], angle, scale, shift)[None]
        np.testing.assert_allclose(shape.from_landmarks(moved), reference, atol=1e-4)


def test_alignment_maps_the_rigid_points_onto_the_template():
    template = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.4]])
    points = similarity(template, 30.0, 80.0, (100, 50))[None]
    aligned = align_to_template(points, np.arange(3), template)
    np.testing.assert_allclose(aligned[0], template, atol=1e-9)


def test_shape_features_barely_change_when_the_face_moves_scales_or_tilts_in_the_frame(shape):
    """End to end on real pixels: the frame is warped, the pipeline crops the face again, the mesh re-runs.

    What is left is landmark noise: a few hundredths of the eye-corner distance,
    against some tenths for a smile (the data test below).
    """
    from skimage.data import astronaut

    from clifer_core.faces import crop_largest_face

    frame = astronaut()
    original = shape.raw(crop_largest_face(frame, size=96)[None])[0]
    for angle, scale, shift in [(20.0, 1.0, (0, 0)), (0.0, 0.6, (0, 0)), (0.0, 1.0, (40, -30)), (-25.0, 0.8, (-30, 20))]:
        crop = crop_largest_face(warp(frame, angle, scale, shift), size=96)
        moved = shape.raw(crop[None])[0]
        points = slice(0, shape.dim - len(MEASURES))
        measures = slice(shape.dim - len(MEASURES), shape.dim)
        assert np.sqrt(np.mean((moved[points] - original[points]) ** 2)) < 0.035, (angle, scale, shift)
        assert np.max(np.abs(moved[measures] - original[measures])) / MEASURE_WEIGHT < 0.09, (angle, scale, shift)


def test_without_alignment_the_same_warps_would_move_the_landmarks_a_lot(shape):
    """The invariance above is the alignment's doing: in the frame the landmarks move by many pixels."""
    from skimage.data import astronaut

    from clifer_core.faces.landmarks import make_landmarker

    frame = astronaut()
    landmarker = make_landmarker("facemesh")
    before = landmarker(frame[None])[0]
    after = landmarker(warp(frame, 20.0, 0.8, (30, -20))[None])[0]
    assert np.sqrt(np.mean((after - before) ** 2)) > 10.0


def test_shape_features_reject_bad_landmarks_and_crops(shape):
    with pytest.raises(ValueError, match="landmarks"):
        shape.from_landmarks(np.zeros((2, 10, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        shape.from_landmarks(np.zeros((1, shape.n_points, 2)))
    with pytest.raises(ValueError, match="face crops"):
        shape.raw(np.zeros((1, 8, 8, 3), np.uint8))
    assert shape.raw(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0, shape.dim)


def test_person_reference_is_a_running_median_of_the_last_frames():
    reference = PersonReference(window=3)
    with pytest.raises(ValueError, match="no reference"):
        reference.displacement(np.zeros((1, 2)))
    reference.update(np.array([[0.0, 0.0], [10.0, 10.0], [1.0, 2.0], [2.0, 4.0]]))
    assert len(reference) == 3
    np.testing.assert_allclose(reference.median(), [2.0, 4.0])
    np.testing.assert_allclose(reference.displacement(np.array([[3.0, 3.0]])), [[1.0, -1.0]])


def test_dlib_landmarks_give_features_of_their_own_topology(astronaut_crop):
    dlib_shape = ShapeFeatures(model="dlib68")
    features = dlib_shape.raw(astronaut_crop[None])
    assert features.shape == (1, dlib_shape.dim) and np.all(np.isfinite(features))


def _taiwanese_crops(data_dir, subject: str):
    from clifer_core.data.datasets import load_rgb, load_taiwanese
    from clifer_core.faces import crop_largest_face

    samples = [s for s in load_taiwanese(data_dir) if s.subject == subject]
    neutral = [s for s in samples if s.expression == "neutral"][:2]
    happy = [s for s in samples if s.expression == "happy" and s.group == "t1"][:1]
    assert len(neutral) == 2 and len(happy) == 1
    return np.stack([crop_largest_face(load_rgb(s.path), size=96) for s in neutral + happy])


def test_a_smile_changes_the_shape_more_than_another_neutral_frame_does(shape, data_dir):
    crops = _taiwanese_crops(data_dir, "tw01")
    features = shape.raw(crops)
    neutral_a, neutral_b, smiling = features
    assert np.linalg.norm(smiling - neutral_a) > 2.0 * np.linalg.norm(neutral_b - neutral_a)
    measures = features[:, -len(MEASURES):]
    width, corners = MEASURES.index("mouth_width"), MEASURES.index("lip_corner_height")
    assert measures[2, width] > measures[0, width]
    assert measures[2, corners] < measures[0, corners]


def test_learner_feature_choices_build_the_matching_extractor(astronaut_crop):
    from clifer_core.learner import DEFAULT_FEATURE_SCALE, DEFAULT_FEATURES, DEFAULT_SHAPE_WEIGHT, FEATURES, CliferLearner

    assert DEFAULT_FEATURES in FEATURES and {"fer", "shape", "fer+shape", "caae"} <= set(FEATURES)
    crops = np.stack([astronaut_crop, astronaut_crop[:, ::-1]])
    combined = CliferLearner(features="fer+shape", imagination="none")
    shape_only = CliferLearner(features="shape", imagination="none")
    fer_only = CliferLearner(features="fer", imagination="none", feature_model=combined.extractor.fer.model)
    both = combined.features(crops)
    assert both.shape == (2, combined.extractor.dim) == (2, 128 + shape_only.extractor.dim)
    np.testing.assert_allclose(both[:, :128], fer_only.features(crops), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(both[:, :128], axis=1), DEFAULT_FEATURE_SCALE, rtol=1e-5)
    np.testing.assert_allclose(both[:, 128:], shape_only.features(crops), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shape_only.features(crops),
                               DEFAULT_FEATURE_SCALE * DEFAULT_SHAPE_WEIGHT * shape_only.extractor.raw(crops), rtol=1e-5)
    with pytest.raises(ValueError, match="fer\\+shape"):
        CliferLearner(features="texture")
    with pytest.raises(ValueError, match="raw fer\\+shape"):
        combined.extractor.from_raw(np.zeros((1, 5)))


def test_the_face_mesh_gives_the_same_landmarks_when_two_threads_share_it(astronaut_crop):
    """The node's inference and learning threads share the learner's landmark model."""
    from concurrent.futures import ThreadPoolExecutor

    from clifer_core.faces.landmarks import make_landmarker

    landmarker = make_landmarker("facemesh")
    crops = [astronaut_crop, astronaut_crop[:, ::-1].copy(), warp(astronaut_crop, 10.0, 0.9, (3, -2))]
    expected = [landmarker(crop[None]) for crop in crops]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda i: [landmarker(crops[i % 3][None]) for _ in range(20)], range(3)))
    for i, repeated in enumerate(results):
        for points in repeated:
            np.testing.assert_allclose(points, expected[i % 3], atol=1e-4)
