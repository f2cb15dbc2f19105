"""Per-track identity decisions and reversible merges.

Synthetic embeddings at exact distances test the decision logic anywhere; real
dlib embeddings of real faces (../shared/data) show that the per-track rule
refuses a merge the old per-frame rule makes.
"""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.evaluation.faces import PerFrameRule
from clifer_core.faces.identity import (
    EMBEDDING_SIZE,
    FaceQuality,
    IdentityGallery,
    QualityGates,
    TrackDecider,
    TrackRule,
)

GOOD = FaceQuality(size=120.0, sharpness=500.0, yaw=0.05)
BLURRED = FaceQuality(size=120.0, sharpness=5.0, yaw=0.05)
TINY = FaceQuality(size=24.0, sharpness=500.0, yaw=0.05)
PROFILE = FaceQuality(size=120.0, sharpness=500.0, yaw=0.8)


def unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=EMBEDDING_SIZE)
    return vector / np.linalg.norm(vector)


def at_distance(centre: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """A point exactly ``distance`` from ``centre`` in a random direction."""
    return (centre + distance * unit(rng)).astype(np.float32)


@pytest.fixture
def alice():
    """A gallery with one person, alice, enrolled from one embedding; and that embedding."""
    rng = np.random.default_rng(0)
    centre = (0.3 * unit(rng)).astype(np.float32)
    gallery = IdentityGallery(threshold=0.435, margin=0.06, min_sample_spacing=0.0)
    gallery.enrol(centre, person_id="alice")
    return gallery, centre, rng


def test_one_close_frame_does_not_merge_a_track_the_per_frame_rule_merges(alice):
    gallery, centre, rng = alice
    stranger = [at_distance(centre, d, rng) for d in (0.30, 0.47, 0.46, 0.45)]
    baseline = PerFrameRule(_copy(gallery))
    assert baseline.observe("f1", stranger[0]) == "alice", "precondition: one close frame merges per frame"
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, margin=0.08, min_evidence=3))
    answers = [decider.observe("f1", frame, GOOD) for frame in stranger]
    assert "alice" not in answers
    assert answers[:2] == [None, None] and answers[2] is not None, "decided on the third good frame: someone new"
    assert sorted(gallery.people()) == sorted(["alice", answers[2]]) and gallery.merges() == []


def _copy(gallery: IdentityGallery) -> IdentityGallery:
    copy = IdentityGallery(gallery.threshold, gallery.margin, min_sample_spacing=gallery.min_sample_spacing)
    for person_id in gallery.people():
        copy.enrol(gallery.samples(person_id), person_id=person_id)
    return copy


def test_a_track_merges_only_when_enough_good_frames_agree(alice):
    gallery, centre, rng = alice
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, margin=0.08, min_evidence=3), QualityGates())
    close = [at_distance(centre, 0.2, rng) for _ in range(6)]
    for frame, quality in zip(close[:3], (BLURRED, TINY, PROFILE)):
        assert decider.observe("f1", frame, quality) is None, "a face failing a gate does not vote"
    assert decider.observe("f1", close[3], GOOD) is None and decider.observe("f1", close[4], GOOD) is None
    assert decider.observe("f1", close[5], GOOD) == "alice"
    [record] = gallery.merges("alice")
    assert record.source == "f1" and record.kind == "track" and len(record.evidence) == 3


def test_an_ambiguous_track_between_two_people_becomes_someone_new(alice):
    gallery, centre, rng = alice
    twin = at_distance(centre, 0.1, rng)
    gallery.enrol(twin, person_id="bob")
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, margin=0.08, min_evidence=3, max_evidence=5))
    between = [((centre + twin) / 2 + 0.25 * unit(rng)).astype(np.float32) for _ in range(5)]
    answers = [decider.observe("f1", frame, GOOD) for frame in between]
    assert answers[:4] == [None] * 4, "within the threshold of both, but no margin: undecided"
    assert answers[4] not in (None, "alice", "bob"), "never silently merged: a new person after max_evidence"


def test_a_decided_track_keeps_its_person_but_drops_them_when_the_face_changes(alice):
    gallery, centre, rng = alice
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, keep_threshold=0.5, margin=0.08, min_evidence=3))
    for _ in range(3):
        decider.observe("f1", at_distance(centre, 0.2, rng), GOOD)
    assert decider.person_of("f1") == "alice"
    assert decider.observe("f1", at_distance(centre, 0.45, rng), GOOD) == "alice", "keeping is looser than merging"
    other = (centre + 1.0 * unit(rng)).astype(np.float32)
    answers = [decider.observe("f1", at_distance(other, 0.1, rng), GOOD) for _ in range(3)]
    assert answers[-1] != "alice" and gallery.merges("alice")[-1].source == "f1"


def test_split_restores_two_people_and_survives_save_and_load(alice, tmp_path):
    gallery, centre, rng = alice
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, margin=0.08, min_evidence=3))
    impostor = at_distance(centre, 0.3, rng)
    for _ in range(4):
        decider.observe("f1", at_distance(impostor, 0.05, rng), GOOD)
    assert decider.person_of("f1") == "alice" and len(gallery.samples("alice")) > 1
    gallery.save(tmp_path / "identity.npz")

    restarted = IdentityGallery.load(tmp_path / "identity.npz")
    assert [m.source for m in restarted.merges("alice")] == ["f1"]
    new_person_id, record = restarted.split_last_merge("alice")
    assert record.source == "f1" and new_person_id not in ("alice", None)
    assert np.allclose(restarted.samples("alice"), centre[None]), "alice keeps only her own face"
    assert restarted.identify(np.stack([at_distance(impostor, 0.02, rng) for _ in range(3)])) == new_person_id
    assert restarted.identify(centre) == "alice"
    with pytest.raises(ValueError, match="no merge into alice"):
        restarted.split_last_merge("alice")
    restarted.save(tmp_path / "identity.npz")
    again = IdentityGallery.load(tmp_path / "identity.npz")
    assert sorted(again.people()) == sorted(["alice", new_person_id]) and again.merges() == []


def test_split_moves_a_live_track_to_the_new_person(alice):
    gallery, centre, rng = alice
    decider = TrackDecider(gallery, TrackRule(merge_threshold=0.40, margin=0.08, min_evidence=3))
    for _ in range(3):
        decider.observe("f1", at_distance(centre, 0.25, rng), GOOD)
    assert decider.person_of("f1") == "alice"
    new_person_id, record = gallery.split_last_merge("alice")
    decider.remap(["alice"], new_person_id, origin=record.origin)
    assert decider.person_of("f1") == new_person_id


def test_an_external_identity_merge_of_an_auto_enrolled_id_can_be_undone(alice):
    gallery, centre, rng = alice
    auto_id = gallery.enrol(np.stack([at_distance(centre, 1.0, rng)]))
    auto_face = gallery.samples(auto_id)
    assert gallery.assign_external("carol", auto_face + 0.01) == [auto_id]
    assert auto_id not in gallery.people() and gallery.merges("carol")[-1].source == auto_id
    new_person_id, record = gallery.split_last_merge("carol")
    assert record.kind == "person" and gallery.identify(auto_face) in ("carol", new_person_id)
    assert np.allclose(gallery.samples(new_person_id), auto_face)


def test_old_galleries_load_without_history_and_bad_history_is_refused(tmp_path):
    from clifer_core.persistence import StateFileError, load_state, save_state

    gallery = IdentityGallery()
    gallery.enrol(np.ones((1, EMBEDDING_SIZE), np.float32) * 0.01, person_id="alice")
    path = gallery.save(tmp_path / "identity.npz")
    manifest, arrays = load_state(path, "clifer.identity_gallery", (2,))
    version1 = {k: v for k, v in manifest.items() if k not in ("merges", "next_origin")}
    save_state(tmp_path / "v1.npz", "clifer.identity_gallery", 1, version1,
               {"embeddings": arrays["embeddings"], "owners": arrays["owners"]})
    assert IdentityGallery.load(tmp_path / "v1.npz").people() == ["alice"]
    save_state(tmp_path / "bad.npz", "clifer.identity_gallery", 2,
               {**manifest, "merges": [{"origin": 1, "person": "nobody", "source": "f1", "kind": "track", "time": 0.0}]},
               arrays)
    with pytest.raises(StateFileError, match="inconsistent identity gallery"):
        IdentityGallery.load(tmp_path / "bad.npz")


TW02_ENROLMENT = ("0201a09.jpg", "0201a11.jpg", "0201a16.jpg")
TW03_TRACK = ("0311b03.jpg", "0311b05.jpg", "0311b09.jpg", "0311c01.jpg", "0311c03.jpg", "0311c11.jpg")


def test_real_faces_of_subject_03_are_not_merged_into_subject_02_per_track(data_dir):
    """The issue's pair: dlib puts Taiwanese 02 and 03 about as close as 02's own photos, so one of 03's frames is
    within the threshold of 02 and the per-frame rule merges the track; the per-track rule needs the track's
    frames to agree and leaves it undecided. (Not every track of 03 escapes: see docs/identity.md.)"""
    from clifer_core.data.datasets import load_rgb
    from clifer_core.faces import detect_largest, make_detector
    from clifer_core.faces.identity import FaceEmbedder, face_quality

    folder = data_dir / "taiwanese_fed" / "faces_256x256"
    detector, embedder = make_detector("blazeface"), FaceEmbedder()

    def frames(names):
        for name in names:
            image = load_rgb(folder / name)
            detection = detect_largest(detector, image)
            yield embedder.embed(image, [detection])[0], face_quality(image, detection)

    baseline, decider = PerFrameRule(IdentityGallery.from_config()), TrackDecider(IdentityGallery.from_config())
    for embedding, quality in frames(TW02_ENROLMENT):
        baseline.observe("tw02", embedding)
        subject02 = decider.observe("tw02", embedding, quality)
    assert subject02 is not None and baseline.tracks["tw02"][1] is not None, "02's first track enrols them"
    per_frame, per_track = [], []
    for embedding, quality in frames(TW03_TRACK):
        assert QualityGates().admit(quality), f"a clear dataset photo passes the gates: {quality}"
        per_frame.append(baseline.observe("tw03", embedding))
        per_track.append(decider.observe("tw03", embedding, quality))
    assert baseline.tracks["tw02"][1] in per_frame, "precondition: the per-frame rule merges 03 into 02"
    assert subject02 not in per_track and decider.gallery.merges() == []


def test_a_face_too_small_to_vote_stays_undecided_and_is_embedded_ever_less_often():
    from clifer_core.faces import FaceTracker, make_detector
    from clifer_core.faces.identity import FaceEmbedder, IdentityResolver
    from faces_helpers import astronaut_head, paste

    class CountingEmbedder(FaceEmbedder):
        faces_embedded = 0

        def embed(self, frame, detections):
            self.faces_embedded += len(detections)
            return super().embed(frame, detections)

    detector, embedder = make_detector("blazeface"), CountingEmbedder()
    resolver = IdentityResolver(embedder, IdentityGallery(), burst_count=3, burst_interval_s=0.1, refresh_s=10.0)
    tracker = FaceTracker(min_hits=1, deterministic_ids=True)
    frame = paste(astronaut_head(90), 300, 200)
    [track] = tracker.update(detector.detect(frame))
    assert track.detection.width < QualityGates().min_size
    answers = [resolver.update(frame, tracker.update(detector.detect(frame)), now=0.1 * step) for step in range(30)]
    assert all(answer == {"f00000": None} for answer in answers) and len(resolver.gallery) == 0
    assert embedder.faces_embedded == 3 + TrackRule().max_evidence, "burst rate only for a bounded number of tries"


def synthetic_frames(centres: dict[str, np.ndarray], per_person: int, rng: np.random.Generator):
    from clifer_core.evaluation.faces import SequenceFrames

    subjects = np.repeat(list(centres), per_person)
    embeddings = np.stack([at_distance(centres[s], 0.1, rng) for s in subjects])
    count = len(subjects)
    return SequenceFrames(embeddings, subjects, np.full(count, "g"), np.full(count, "clean"), np.ones(count, bool),
                          np.full(count, GOOD.size), np.full(count, GOOD.sharpness), np.full(count, GOOD.yaw))


def test_the_sequence_measure_counts_tracks_given_to_someone_else():
    from clifer_core.evaluation.faces import sequence_outcomes

    rng = np.random.default_rng(3)
    centres = {name: (0.6 * unit(rng)).astype(np.float32) for name in ("ann", "ben", "cat", "dan")}
    distinct = synthetic_frames(centres, 24, rng)
    outcome = sequence_outcomes(distinct, list(centres), lambda gallery: TrackDecider(gallery), runs=3)
    assert outcome["track_false_merge_rate"] == 0 and outcome["returning_recognised_rate"] == 1.0
    assert outcome["ids_per_person"] == 1.0 and outcome["tracks"] > 3 * len(centres)

    centres["ben"] = at_distance(centres["ann"], 0.05, rng)
    lookalikes = synthetic_frames(centres, 24, rng)
    for make_rule in (lambda gallery: TrackDecider(gallery), lambda gallery: PerFrameRule(gallery)):
        outcome = sequence_outcomes(lookalikes, list(centres), make_rule, runs=3)
        assert outcome["track_false_merge_rate"] > 0.05 and outcome["track_false_merge_rate_worst_person"] > 0.1
