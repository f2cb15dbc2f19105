"""Face pipeline on the real datasets in ../shared/data (skipped when absent).

Small fixed subsets keep this under a minute; the full measurements are in
``benchmarks/faces.py`` and ``clifer evaluate-faces``.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from clifer_core.data.datasets import default_data_dir, load_dataset, load_rgb
from clifer_core.faces import crop_largest_face, detect_largest, make_detector
from clifer_core.evaluation.faces import subsample
from clifer_core.faces.identity import FaceEmbedder, IdentityGallery

pytestmark = pytest.mark.skipif(default_data_dir() is None, reason="real data (../shared/data or $CLIFER_DATA_DIR) is not available")


@pytest.fixture(scope="module")
def detector():
    return make_detector("blazeface")


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder()


@pytest.mark.parametrize("dataset, per_subject", [("taiwanese", 1), ("yale", 2), ("ckplus", 1)])
def test_a_face_is_found_in_every_sampled_dataset_image(dataset, per_subject, detector):
    samples = subsample(load_dataset(dataset), per_subject, seed=1)[:40]
    missed = [s.path.name for s in samples if detect_largest(detector, load_rgb(s.path)) is None]
    assert missed == []
    crop = crop_largest_face(load_rgb(samples[0].path), size=96)
    assert crop.shape == (96, 96, 3) and crop.std() > 10


def _people(dataset: str, count: int, per_person: int) -> dict[str, list]:
    by_subject: dict[str, list] = {}
    for sample in subsample(load_dataset(dataset), per_person, seed=2):
        by_subject.setdefault(sample.subject, []).append(sample)
    return dict(list(sorted(by_subject.items()))[:count])


def _embed(sample, detector, embedder) -> np.ndarray:
    image = load_rgb(sample.path)
    return embedder.embed(image, [detect_largest(detector, image)])


@pytest.mark.parametrize("dataset", ["taiwanese", "yale"])
def test_same_person_same_id_different_people_different_ids_also_after_reload(dataset, detector, embedder, tmp_path):
    people = _people(dataset, count=6, per_person=4)
    gallery = IdentityGallery(threshold=0.44, margin=0.06)
    assigned = {subject: gallery.enrol(np.vstack([_embed(s, detector, embedder) for s in samples[:2]])) for subject, samples in people.items()}
    assert len(set(assigned.values())) == len(people)
    probes = [(subject, _embed(s, detector, embedder)) for subject, samples in people.items() for s in samples[2:]]
    answers = [gallery.identify(embedding) for _, embedding in probes]
    expected = [assigned[subject] for subject, _ in probes]
    # Open set at about 5 % false rejects: a probe may be left unknown, never given someone else's id.
    assert [a for a, e in zip(answers, expected) if a is not None and a != e] == []
    assert sum(a == e for a, e in zip(answers, expected)) >= len(probes) - 2
    reloaded = IdentityGallery.load(gallery.save(tmp_path / "gallery.npz"))
    assert [reloaded.identify(embedding) for _, embedding in probes] == answers


def test_newcomers_are_enrolled_once_each_and_then_recognised(detector, embedder):
    gallery = IdentityGallery(threshold=0.44, margin=0.06)
    assigned: dict[str, str] = {}
    answers = []
    for subject, samples in _people("yale", count=8, per_person=3).items():
        first = _embed(samples[0], detector, embedder)
        match = gallery.match(first)
        assert match.person_id is None and gallery.is_clearly_unknown(match), f"{subject} wrongly matched {match}"
        assigned[subject] = gallery.enrol(first)
        answers.extend((gallery.identify(_embed(s, detector, embedder)), assigned[subject]) for s in samples[1:])
    assert len(set(assigned.values())) == 8
    assert [a for a, e in answers if a is not None and a != e] == []
    assert sum(a == e for a, e in answers) >= len(answers) - 3


def test_calibration_finds_a_threshold_between_genuine_and_impostor_distances(detector, embedder):
    from clifer_core.evaluation.calibrate_identity import calibrate
    from clifer_core.evaluation.faces import embed_samples

    data = embed_samples(subsample(load_dataset("yale"), 3, seed=3), detector, embedder)
    by_eer, curves = calibrate([data], criterion="eer")
    assert 0.3 < by_eer["threshold"] == by_eer["eer_threshold"] < 0.7 and by_eer["eer"] < 0.1
    assert by_eer["detection_rate"] == 1.0 and by_eer["people"] == 15
    open_set, _ = calibrate([data], criterion="open_set", target_frr=0.05)
    assert open_set["open_set_false_reject"] <= 0.05 and open_set["open_set_false_accept"] < 0.05
    assert set(curves) >= {"pairs: false accept", "pairs: false reject"}


def test_calibrate_command_writes_a_threshold_the_gallery_reads(tmp_path):
    from clifer_core.cli import main

    output, plot = tmp_path / "identity.yaml", tmp_path / "roc.png"
    code = main(["calibrate-identity", "--data", "yale", "--per-subject", "2", "--output", str(output), "--plot", str(plot)])
    assert code == 0 and plot.stat().st_size > 1000
    written = yaml.safe_load(output.read_text())
    assert 0.3 < written["threshold"] < 0.7 and written["open_set_false_reject"] <= 0.05 and written["people"] == 15
    gallery = IdentityGallery.from_config(output)
    assert (gallery.threshold, gallery.margin) == (written["threshold"], written["margin"])


def test_evaluate_command_reports_detection_and_identification(tmp_path, capsys):
    import json

    from clifer_core.cli import main

    assert main(["evaluate-faces", "--data", "yale", "--per-subject", "2", "--plot-dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["yale"]
    assert report["images"] == 30 and report["detection_rate"] == 1.0 and report["rank1"] >= 0.9
    assert 0.0 <= report["false_accept_at_threshold"] <= 0.2 and (tmp_path / "identity_open_set.png").is_file()
