"""Identity: the open-set gallery (on embeddings the tests construct) and the dlib embedder and
resolver (on the public-domain astronaut photograph). Runs everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.faces import FaceTracker, make_detector
from clifer_core.faces.identity import EMBEDDING_SIZE, FaceEmbedder, IdentityGallery, IdentityResolver, TrackRule
from clifer_core.faces.track import ROS_NAME_TOKEN
from clifer_core.persistence import StateFileError
from faces_helpers import astronaut_head, paste, rotate


def _person(seed: int) -> np.ndarray:
    """A unit-ish 'identity' direction; people are ~1.0 apart, samples of one person ~0.2."""
    vector = np.random.default_rng(seed).normal(size=EMBEDDING_SIZE)
    return (vector / np.linalg.norm(vector) * 0.7).astype(np.float32)


def _samples(centre: np.ndarray, count: int, spread: float = 0.02, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(scale=spread, size=(count, EMBEDDING_SIZE))
    return (centre + noise).astype(np.float32)


def test_gallery_identifies_enrolled_people_and_rejects_strangers():
    gallery = IdentityGallery(threshold=0.5, margin=0.05)
    alice, bob, stranger = _person(1), _person(2), _person(3)
    alice_id = gallery.enrol(_samples(alice, 3, seed=1))
    bob_id = gallery.enrol(_samples(bob, 3, seed=2))
    assert alice_id != bob_id and all(ROS_NAME_TOKEN.match(p) for p in (alice_id, bob_id))
    assert gallery.identify(_samples(alice, 1, seed=10)) == alice_id
    assert gallery.identify(_samples(bob, 4, seed=11)) == bob_id
    unknown = gallery.match(_samples(stranger, 1, seed=12))
    assert unknown.person_id is None and gallery.is_clearly_unknown(unknown)


def test_margin_rejects_a_face_between_two_people():
    gallery = IdentityGallery(threshold=0.8, margin=0.1)
    a, b = _person(1), _person(2)
    gallery.enrol(a, person_id="alice")
    gallery.enrol(b, person_id="bob")
    halfway = (a + b) / 2
    match = gallery.match(halfway)
    assert match.distance < 0.8 and match.person_id is None and not gallery.is_clearly_unknown(match)
    assert gallery.identify(0.9 * a + 0.1 * b) == "alice"


def test_evidence_from_several_frames_outvotes_one_bad_frame():
    gallery = IdentityGallery(threshold=0.5, margin=0.05)
    a, b = _person(1), _person(2)
    gallery.enrol(a, person_id="alice")
    gallery.enrol(b, person_id="bob")
    track = np.vstack([_samples(a, 4, seed=5), b[None]])  # one frame looks like bob
    assert gallery.identify(track) == "alice"


def test_gallery_save_load_round_trip_keeps_ids_and_matches(tmp_path):
    gallery = IdentityGallery(threshold=0.45, margin=0.03, auto_enrol=False)
    ids = [gallery.enrol(_samples(_person(s), 2, seed=s)) for s in range(4)]
    gallery.assign_external("alice", _samples(_person(9), 2, seed=9))
    path = gallery.save(tmp_path / "gallery.npz")
    loaded = IdentityGallery.load(path)
    assert loaded.people() == gallery.people() and loaded.threshold == 0.45 and loaded.auto_enrol is False
    assert loaded.is_external("alice") and not loaded.is_external(ids[0])
    for seed, person_id in enumerate(ids):
        assert loaded.identify(_samples(_person(seed), 1, seed=100 + seed)) == person_id
        assert np.array_equal(loaded.samples(person_id), gallery.samples(person_id))


def test_corrupt_gallery_file_is_a_clear_error_and_the_last_good_gallery_is_kept(tmp_path):
    gallery = IdentityGallery()
    person_id = gallery.enrol(_person(1))
    good = gallery.save(tmp_path / "gallery.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(StateFileError):
        IdentityGallery.load(corrupt)
    with pytest.raises(StateFileError):
        gallery.restore(tmp_path / "missing.npz")
    with pytest.raises(StateFileError):
        gallery.restore(corrupt)
    assert gallery.people() == [person_id] and gallery.identify(_person(1)) == person_id
    gallery.enrol(_person(2))
    gallery.threshold = 0.3
    gallery.restore(good)
    assert gallery.people() == [person_id] and gallery.threshold == 0.3


def test_forget_removes_a_person_everywhere(tmp_path):
    gallery = IdentityGallery()
    alice = gallery.enrol(_person(1))
    bob = gallery.enrol(_person(2))
    revision = gallery.revision
    assert gallery.forget(alice) and not gallery.forget(alice)
    assert gallery.revision > revision
    assert gallery.identify(_person(1)) is None and gallery.people() == [bob]
    assert alice not in IdentityGallery.load(gallery.save(tmp_path / "g.npz"))


def test_external_identity_takes_over_an_auto_enrolled_person():
    gallery = IdentityGallery(threshold=0.5, margin=0.05)
    auto_id = gallery.enrol(_samples(_person(1), 2))
    merged = gallery.assign_external("carol", _samples(_person(1), 1, seed=3))
    assert merged == [auto_id] and gallery.people() == ["carol"]
    assert gallery.identify(_person(1)) == "carol"


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, EMBEDDING_SIZE)), np.full(EMBEDDING_SIZE, np.nan)])
def test_bad_embeddings_and_ids_are_rejected_without_changing_the_gallery(bad):
    gallery = IdentityGallery()
    person_id = gallery.enrol(_person(1))
    with pytest.raises(ValueError):
        gallery.enrol(bad)
    with pytest.raises(ValueError):
        gallery.identify(bad)
    with pytest.raises(ValueError):
        gallery.enrol(_person(2), person_id="9 not a token")
    assert gallery.people() == [person_id]
    with pytest.raises(ValueError):
        IdentityGallery(threshold=0.0)


def test_samples_per_person_are_capped_and_near_duplicates_skipped():
    gallery = IdentityGallery(max_samples_per_person=3, min_sample_spacing=0.05)
    person_id = gallery.enrol(_person(1))
    gallery.add_samples(person_id, np.vstack([_person(1)] * 5))
    assert len(gallery.samples(person_id)) == 1
    gallery.add_samples(person_id, _samples(_person(1), 6, spread=0.1, seed=4))
    assert len(gallery.samples(person_id)) == 3


# ---------------------------------------------------------------- real embedder on the astronaut


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder()


@pytest.fixture(scope="module")
def detector():
    return make_detector("blazeface")


def test_embeddings_of_one_face_are_close_under_pose_size_and_light_changes(embedder, detector):
    head = astronaut_head(160)
    variants = [
        paste(head, 240, 160),
        paste(rotate(head, 12), 100, 60),
        paste(astronaut_head(220), 300, 200),
        np.clip(paste(head, 240, 160).astype(int) * 0.6, 0, 255).astype(np.uint8),
    ]
    vectors = np.vstack([embedder.embed(frame, detector.detect(frame)) for frame in variants])
    assert vectors.shape == (4, EMBEDDING_SIZE) and np.all(np.isfinite(vectors))
    assert np.linalg.norm(vectors - vectors[0], axis=1).max() < 0.4
    assert embedder.embed(variants[0], []).shape == (0, EMBEDDING_SIZE)
    cut = paste(head, -60, 160)
    cut_vector = embedder.embed(cut, detector.detect(cut))
    assert cut_vector.shape == (1, EMBEDDING_SIZE) and np.all(np.isfinite(cut_vector))


class CountingEmbedder(FaceEmbedder):
    """The real embedder, counting the faces it embeds."""

    faces_embedded = 0

    def embed(self, frame, detections):
        self.faces_embedded += len(detections)
        return super().embed(frame, detections)


def test_resolver_enrols_once_then_recognises_the_same_person_after_a_restart(detector, tmp_path):
    head = astronaut_head(160)
    embedder = CountingEmbedder()
    gallery = IdentityGallery(threshold=0.5)
    resolver = IdentityResolver(embedder, gallery, refresh_s=3.0, burst_count=3, burst_interval_s=0.2)
    tracker = FaceTracker(min_hits=2, max_misses=2, deterministic_ids=True)
    answers = []
    for step in range(10):
        frame = paste(head, 200 + 4 * step, 150)
        visible = tracker.update(detector.detect(frame))
        answers.append(resolver.update(frame, visible, tracker.ended, now=0.1 * step))
    person_id = answers[-1]["f00000"]
    assert answers[0] == {"f00000": None}  # not confirmed yet: not embedded
    assert answers[3] == {"f00000": None}, "two frames are not yet evidence enough to decide"
    assert person_id is not None and gallery.people() == [person_id]
    # Confirmed at 0.1 s, embedded then, at 0.3 and at 0.5 s (the burst); the next refresh is due at 3.5 s.
    assert embedder.faces_embedded == 3
    assert resolver.update(frame, visible, now=3.4)["f00000"] == person_id and embedder.faces_embedded == 3
    assert resolver.update(frame, visible, now=3.6)["f00000"] == person_id and embedder.faces_embedded == 4
    gallery.save(tmp_path / "gallery.npz")

    restarted = IdentityResolver(embedder, IdentityGallery.load(tmp_path / "gallery.npz"))
    tracker = FaceTracker(min_hits=1, deterministic_ids=True)
    returning = []
    for step, degrees in enumerate((-8, -4, 4)):
        frame = paste(rotate(head, degrees), 300 + 3 * step, 220)
        returning.append(restarted.update(frame, tracker.update(detector.detect(frame)), now=0.3 * step))
    assert returning == [{"f00000": None}, {"f00000": None}, {"f00000": person_id}]
    assert restarted.gallery.people() == [person_id] and len(restarted.gallery.merges(person_id)) == 1


def test_external_identity_wins_for_a_track_and_is_remembered(embedder, detector):
    gallery = IdentityGallery(threshold=0.5)
    resolver = IdentityResolver(embedder, gallery, burst_count=1, rule=TrackRule(min_evidence=1))
    tracker = FaceTracker(min_hits=1, deterministic_ids=True)
    frame = paste(astronaut_head(160), 240, 160)
    auto_id = resolver.update(frame, tracker.update(detector.detect(frame)), now=0.0)["f00000"]
    assert auto_id is not None and auto_id.startswith("p")
    resolver.set_external_identity("f00000", "eileen")
    assert resolver.person_of("f00000") == "eileen" and gallery.people() == ["eileen"]
    fresh = IdentityResolver(embedder, gallery, rule=TrackRule(min_evidence=1))
    other_frame = paste(astronaut_head(180), 100, 100)
    tracker = FaceTracker(min_hits=1, deterministic_ids=True)
    assert fresh.update(other_frame, tracker.update(detector.detect(other_frame)), now=0.0) == {"f00000": "eileen"}
    assert fresh.forget("eileen") and fresh.person_of("f00000") is None and len(gallery) == 0


def test_calibrate_command_refuses_a_folder_with_too_few_people(tmp_path):
    from PIL import Image

    from clifer_core.cli import main

    folder = tmp_path / "faces" / "eileen" / "neutral"
    folder.mkdir(parents=True)
    for index, degrees in enumerate((0, 5, -5, 10)):
        Image.fromarray(rotate(astronaut_head(200), degrees)).save(folder / f"{index}.png")
    output = tmp_path / "identity.yaml"
    code = main(["calibrate-identity", "--data", str(tmp_path / "faces"), "--output", str(output), "--plot", str(tmp_path / "roc.png")])
    assert code == 2 and not output.exists()


def test_resolver_embeds_at_most_one_face_per_frame_and_forgets_ended_tracks(detector):
    embedder = CountingEmbedder()
    resolver = IdentityResolver(embedder, IdentityGallery(), burst_count=1, refresh_s=10.0, rule=TrackRule(min_evidence=1))
    tracker = FaceTracker(min_hits=1, max_misses=0, deterministic_ids=True)
    frame = paste(astronaut_head(150), 40, 150)
    frame[150:300, 420:570] = astronaut_head(150)
    visible = tracker.update(detector.detect(frame))
    assert len(visible) == 2
    first = resolver.update(frame, visible, now=0.0)
    assert embedder.faces_embedded == 1 and sum(p is not None for p in first.values()) == 1
    second = resolver.update(frame, tracker.update(detector.detect(frame)), now=0.05)
    assert embedder.faces_embedded == 2 and None not in second.values()
    assert len(set(second.values())) == 1  # the same person twice
    blank = np.full_like(frame, 90)
    resolver.update(blank, tracker.update(detector.detect(blank)), tracker.ended, now=0.1)
    assert [resolver.person_of(face_id) for face_id in second] == [None, None]
