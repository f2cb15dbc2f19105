"""Face pipeline on frames the tests build themselves (runs everywhere, no ../shared/data).

Real models throughout (BlazeFace, dlib HOG, OpenCV cascade, dlib embedding)
on scikit-image's public-domain astronaut photograph.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clifer_core.faces import FaceTracker, align_face, as_rgb_uint8, crop_largest_face, crop_rep155, make_detector
from clifer_core.faces.align import alignment_transform, eye_angle_degrees
from clifer_core.faces.detect import Detection
from clifer_core.faces.track import ROS_NAME_TOKEN
from faces_helpers import astronaut_head, paste, rotate


@pytest.fixture(scope="module")
def blazeface():
    return make_detector("blazeface")


@pytest.fixture(scope="module")
def head():
    return astronaut_head(160)


def _inside(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


# ---------------------------------------------------------------- frames


def test_grey_rgba_float_and_16bit_frames_become_rgb_uint8():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(as_rgb_uint8(grey)[:, :, 1], grey) and as_rgb_uint8(grey).shape == (3, 4, 3)
    rgba = np.dstack([grey, grey + 1, grey + 2, np.full_like(grey, 255)])
    assert np.array_equal(as_rgb_uint8(rgba), rgba[:, :, :3])
    unit = np.array([[0.0, 0.5], [1.0, np.nan]])
    assert as_rgb_uint8(unit)[:, :, 0].tolist() == [[0, 128], [255, 0]]
    assert as_rgb_uint8(np.array([[np.inf, 300.0]]))[0, :, 0].tolist() == [0, 255]
    assert as_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255


@pytest.mark.parametrize(
    "bad",
    [None, np.zeros((0, 640, 3), np.uint8), np.zeros((480, 0), np.uint8), np.zeros((4, 4, 5), np.uint8), np.zeros(10, np.uint8), np.ones((4, 4), bool)],
)
def test_invalid_frames_raise_a_clear_value_error(bad, blazeface):
    with pytest.raises(ValueError):
        blazeface.detect(bad)


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("name", ["blazeface", "dlib_hog", "cascade"])
def test_each_detector_finds_the_face_and_nothing_on_a_blank_frame(name, head):
    detector = make_detector(name)
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    found = detector.detect(paste(head, 240, 160))
    assert len(found) == 1
    # The astronaut's face centre sits near (320, 245) in this frame.
    assert _inside((320, 245), found[0].box)
    assert 50 < found[0].width < 110


def test_blazeface_gives_six_keypoints_with_eyes_above_mouth(blazeface, head):
    face = blazeface.detect(paste(head, 240, 160))[0]
    assert face.keypoints.shape == (6, 2)
    left_eye, right_eye = face.eyes()
    assert left_eye[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < face.keypoints[3, 1]  # mouth below the eyes
    assert all(_inside(p, face.box) for p in face.keypoints[:4])


def test_blazeface_same_answer_for_grey_and_rgba_versions(blazeface, head):
    frame = paste(head, 240, 160)
    grey = np.asarray(frame.mean(axis=2), np.uint8)
    rgba = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    colour_box = np.array(blazeface.detect(frame)[0].box)
    assert np.allclose(np.array(blazeface.detect(rgba)[0].box), colour_box)
    assert np.allclose(np.array(blazeface.detect(grey)[0].box), colour_box, atol=6)


def test_blazeface_finds_a_40_pixel_face_in_a_640x480_frame(blazeface):
    found = blazeface.detect(paste(astronaut_head(96), 300, 200))
    assert len(found) == 1 and 36 <= found[0].width <= 50


def test_min_score_is_a_threshold(head):
    frame = paste(head, 240, 160)
    score = make_detector("blazeface", min_score=0.1).detect(frame)[0].score
    assert make_detector("blazeface", min_score=min(score + 0.02, 0.999)).detect(frame) == []
    assert len(make_detector("blazeface", min_score=score - 0.02).detect(frame)) == 1


def test_unknown_detector_name_is_rejected():
    with pytest.raises(ValueError, match="unknown face detector"):
        make_detector("yunet")


def test_face_cut_by_the_border_is_found_and_cropped_with_black_padding(blazeface, head):
    frame = paste(head, -60, 160)
    found = blazeface.detect(frame)
    assert len(found) == 1 and found[0].box[0] < 0 < found[0].box[2]
    crop = align_face(frame, found[0], size=96, margin=0.2, rotate=False)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    assert crop[:, :5].max() == 0 and crop[:, -20:].mean() > 40
    assert crop_rep155(frame, found[0]).shape == (128, 128, 3)


# ---------------------------------------------------------------- alignment


@pytest.mark.parametrize("degrees", [-20, 15])
def test_alignment_levels_the_eyes_of_a_tilted_face(blazeface, head, degrees):
    frame = paste(rotate(head, degrees), 240, 160)
    face = blazeface.detect(frame)[0]
    # rotate() turns the image counter-clockwise, so the eye line tilts by -degrees.
    assert eye_angle_degrees(face) == pytest.approx(-degrees, abs=6)
    matrix = alignment_transform(face, size=96, margin=0.2)
    eyes = np.array(face.eyes())
    moved = eyes @ matrix[:, :2].T + matrix[:, 2]
    assert abs(moved[0, 1] - moved[1, 1]) < 1e-6
    assert moved[0, 0] < 48 < moved[1, 0]


def test_crop_largest_face_returns_the_bigger_face(blazeface, head):
    frame = paste(head, 360, 100)
    frame[300:420, 40:160] = astronaut_head(120)
    faces = blazeface.detect(frame)
    assert len(faces) == 2
    bigger = max(faces, key=lambda d: d.area)
    assert bigger.center[0] > 360
    crop = crop_largest_face(frame, size=64, margin=0.1)
    assert crop.shape == (64, 64, 3)
    assert np.array_equal(crop, align_face(frame, bigger, size=64, margin=0.1))
    assert crop_largest_face(np.full((200, 200, 3), 30, np.uint8)) is None


def test_crop_largest_face_handles_a_pre_cropped_face():
    tight = astronaut_head(160)[35:125, 35:125]  # the face fills the whole image, as in CK+48
    crop = crop_largest_face(tight, size=48)
    assert crop is not None and crop.shape == (48, 48, 3)


def test_rep155_crop_is_centred_scaled_and_zero_padded():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[50:100, 100:200] = 200  # a 100 x 50 box
    crop = crop_rep155(frame, Detection((100.0, 50.0, 200.0, 100.0), 1.0), size=128)
    assert crop.shape == (128, 128, 3)
    assert crop[:30].max() == 0 and crop[-30:].max() == 0  # pad above and below a wide box
    assert crop[40:88, 2:126].min() == 200  # the box fills the full width


@pytest.mark.parametrize("size, margin, box", [(0, 0.2, (0, 0, 10, 10)), (96, float("nan"), (0, 0, 10, 10)), (96, 0.2, (5, 5, 5, 10)), (96, 0.2, (0, 0, np.inf, 10))])
def test_alignment_rejects_bad_geometry(size, margin, box):
    with pytest.raises(ValueError):
        align_face(np.zeros((20, 20, 3), np.uint8), Detection(box, 1.0), size=size, margin=margin)


# ---------------------------------------------------------------- tracking


def test_a_moving_face_keeps_its_track_id(blazeface, head):
    tracker = FaceTracker(min_hits=2, max_misses=3, deterministic_ids=True)
    seen = []
    for step in range(12):
        visible = tracker.update(blazeface.detect(paste(head, 40 + 35 * step, 150 + 5 * step)))
        assert len(visible) == 1
        seen.append((visible[0].face_id, visible[0].confirmed))
    assert {face_id for face_id, _ in seen} == {"f00000"}
    assert [confirmed for _, confirmed in seen] == [False] + [True] * 11


def _box(x, y, side=60.0) -> Detection:
    return Detection((x, y, x + side, y + side), 0.9)


def test_hysteresis_short_dropout_keeps_id_long_absence_ends_track():
    tracker = FaceTracker(min_hits=3, max_misses=2, deterministic_ids=True)
    for _ in range(3):
        visible = tracker.update([_box(100, 100)])
    assert visible[0].confirmed and visible[0].face_id == "f00000"
    assert tracker.update([]) == [] and tracker.ended == []
    assert tracker.update([_box(104, 100)])[0].face_id == "f00000"
    for _ in range(2):
        tracker.update([])
        assert tracker.ended == []
    tracker.update([])
    assert [t.face_id for t in tracker.ended] == ["f00000"]
    assert tracker.update([_box(104, 100)])[0].face_id == "f00001"


def test_a_one_frame_false_detection_is_never_confirmed():
    tracker = FaceTracker(min_hits=2, max_misses=5, deterministic_ids=True)
    assert not tracker.update([_box(10, 10)])[0].confirmed
    tracker.update([])
    assert [t.face_id for t in tracker.ended] == ["f00000"] and tracker.tracks == []


def test_two_faces_keep_distinct_ids_while_moving_towards_each_other():
    tracker = FaceTracker(min_hits=1, max_misses=1, deterministic_ids=True)
    for step in range(8):
        visible = tracker.update([_box(400 - 20 * step, 200), _box(50 + 20 * step, 200)])
        by_position = {t.face_id: t.detection.box[0] for t in visible}
        assert by_position["f00000"] > by_position["f00001"]
    assert len(tracker.tracks) == 2


def test_random_ids_are_unique_ros_name_tokens():
    tracker = FaceTracker(min_hits=1)
    ids = [tracker.update([_box(150 * i, 0)])[0].face_id for i in range(4) for _ in range(1)]
    assert len(set(ids)) == 4 and all(ROS_NAME_TOKEN.match(i) for i in ids)


def test_tracker_ignores_non_finite_boxes_and_rejects_bad_settings():
    tracker = FaceTracker(min_hits=1, deterministic_ids=True)
    assert tracker.update([Detection((math.nan, 0, 10, 10), 0.9), _box(0, 0)])[0].face_id == "f00000"
    assert len(tracker.tracks) == 1
    with pytest.raises(ValueError):
        FaceTracker(min_hits=0)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64]),
        shape=st.tuples(st.integers(0, 6), st.integers(0, 6)) | st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 5)),
    )
)
def test_any_array_becomes_an_rgb_frame_or_a_value_error(array):
    try:
        rgb = as_rgb_uint8(array)
    except ValueError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[:2] == array.shape[:2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.floats(-50, 700), st.floats(-50, 500), st.floats(-5, 120)), max_size=4), max_size=12))
def test_tracker_survives_any_detection_sequence_with_unique_valid_ids(frames):
    tracker = FaceTracker(min_hits=2, max_misses=2, deterministic_ids=True)
    for boxes in frames:
        visible = tracker.update([Detection((x, y, x + side, y + side), 0.9) for x, y, side in boxes])
        ids = [t.face_id for t in tracker.tracks]
        assert len(ids) == len(set(ids)) and all(ROS_NAME_TOKEN.match(i) for i in ids)
        assert len(visible) <= len(boxes) and all(t.visible for t in visible)
