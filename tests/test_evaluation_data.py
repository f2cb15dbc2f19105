"""Dataset loaders (paper layouts on synthetic trees), frame sampling, crop/feature caching and `clifer evaluate`."""

from __future__ import annotations

import numpy as np
import pytest

from clifer_core.data import datasets, frames
from clifer_core.data.cache import ArrayCache
from clifer_core.evaluation.crops import dataset_crops, whole_image_crop


def _write_png(path, value=0, size=32):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def _write_video(path, count, size=32):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size, size))
    for i in range(count):
        writer.write(np.full((size, size, 3), i % 256, np.uint8))
    writer.release()
    return path


def test_ravdess_sampling_drops_first_and_last_chunk_and_keeps_two_per_chunk():
    kept = frames.sample_ravdess(list(range(75)))  # 5 chunks of 15
    assert kept == [28, 29, 43, 44, 58, 59]
    assert frames.sample_ravdess(list(range(44))) == []  # 2 chunks: both dropped


def test_mmi_sampling_keeps_ten_central_frames_and_pads_from_the_middle():
    kept = frames.sample_mmi(list(range(30)), pad_to=0)
    assert kept == list(range(2, 12)) + list(range(17, 27))
    short = frames.sample_mmi(list(range(4)), pad_to=6)
    assert short == [0, 1, 2, 3, 2, 2]  # appends kept[len // 2]: kept[2] of 4, then kept[2] of 5
    assert len(frames.sample_mmi(list(range(30)))) == 64


def test_baum_sampling_keeps_last_two_per_chunk_and_pads_with_the_last():
    assert frames.sample_baum(list(range(14))) == []
    kept = frames.sample_baum(list(range(31)), pad_to=6)
    assert kept == [13, 14, 28, 29, 29, 29]


def test_natural_key_orders_numbers_numerically():
    assert sorted(["f10.png", "f2.png", "f1.png"], key=frames.natural_key) == ["f1.png", "f2.png", "f10.png"]


def test_ravdess_loader_reads_the_file_name_convention_from_videos_and_frame_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIFER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "RAVDESS"
    _write_video(root / "Actor_01" / "01-01-03-01-01-01-01.avi", 75)   # happy, audio-visual
    _write_video(root / "Actor_01" / "02-01-05-02-01-01-01.avi", 75)   # angry, video-only
    _write_video(root / "Actor_01" / "01-01-02-01-01-01-01.avi", 75)   # calm: skipped
    (root / "Actor_01" / "03-01-03-01-01-01-01.wav").write_bytes(b"")  # audio-only: skipped
    for i in range(75):                                                  # the code's frame-folder layout
        _write_png(root / "Actor_02" / "01-01-04-01-01-01-02.mp4" / f"frame{i}.png", i)
    samples = datasets.load_dataset(str(root))
    assert {(s.subject, s.expression) for s in samples} == {("ravdess01", "happy"), ("ravdess01", "angry"),
                                                           ("ravdess02", "sad")}
    assert len(samples) == 3 * 6 and all(s.dataset == "ravdess" for s in samples)
    sad = [s for s in samples if s.expression == "sad"]
    assert [s.path.name for s in sad] == ["frame28.png", "frame29.png", "frame43.png", "frame44.png", "frame58.png",
                                          "frame59.png"]
    happy = [s for s in samples if s.expression == "happy"]
    assert all(s.path.is_file() and str(tmp_path / "cache") in str(s.path) for s in happy)
    assert {s.group for s in happy} == {"01-01-03-01-01-01-01.avi"}
    again = datasets.load_ravdess(root)
    assert [s.path for s in again] == [s.path for s in samples]  # frames decoded once, reused


def test_compat_sampling_chunks_across_videos_and_per_video_does_not(tmp_path):
    root = tmp_path / "MMI"
    for video in ("v1", "v2"):
        for i in range(20):
            _write_png(root / "S01" / "Happy" / video / f"{i}.png", i)
    _write_png(root / "S01" / "Contempt" / "v1" / "0.png")  # not one of the 7 expressions: skipped
    compat = datasets.load_mmi(root)
    per_video = datasets.load_mmi(root, sampling="per_video")
    assert {s.expression for s in compat} == {"happy"} and len(compat) == 64 and len(per_video) == 128
    assert {s.group for s in compat} == {"v1", "v2"}  # the second chunk straddles both videos
    with pytest.raises(ValueError, match="sampling"):
        datasets.load_mmi(root, sampling="random")


def test_baum_loader_keeps_only_subjects_with_all_six_paper_classes(tmp_path):
    root = tmp_path / "BAUM"
    for subject, classes in (("S1", ("Anger", "Fear", "Happiness", "Sadness", "Surprise", "Neutral")), ("S2", ("Anger",))):
        for name in classes:
            for i in range(15):
                _write_png(root / subject / name / "clip" / f"{i:03d}.png", i)
    samples = datasets.load_baum(root)
    assert {s.subject for s in samples} == {"S1"}
    assert len(samples) == 6 * 64
    assert sorted({s.expression for s in samples}) == sorted(datasets.BAUM_REQUIRED)


def test_crops_are_cached_and_pre_cropped_faces_fall_back_to_the_whole_image(tmp_path):
    paths = [_write_png(tmp_path / "img" / f"{i}.png", 40 * i, 48) for i in range(3)]
    samples = [datasets.FaceSample(p, "s", "happy", "g", "x") for p in paths]
    cache = ArrayCache(tmp_path / "cache")
    crops, detected = dataset_crops(samples, cache, size=32, show_progress=False)
    assert crops.shape == (3, 32, 32, 3) and not detected.any() and crops[2].mean() == pytest.approx(80)
    again, _ = dataset_crops(samples, cache, size=32, show_progress=False)
    assert np.array_equal(crops, again) and cache.hits == 3
    assert whole_image_crop(np.zeros((40, 60, 3), np.uint8), 20).shape == (20, 20, 3)


def test_clifer_evaluate_runs_end_to_end_on_a_generic_folder(tmp_path, monkeypatch):
    """Real FER2013 features on synthetic faces: the command writes a CSV, the tables and the plots."""
    from clifer_core.cli import main

    monkeypatch.setenv("CLIFER_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for subject in ("p1", "p2"):
        for expression in ("happy", "sad", "surprised"):
            for clip in ("c1", "c2"):
                for i in range(2):
                    image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
                    path = tmp_path / "data" / subject / expression / clip / f"{i}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    from PIL import Image

                    Image.fromarray(image).save(path)
    out = tmp_path / "out"
    code = main(["evaluate", "--dataset", str(tmp_path / "data"), "--protocol", "fixed", "faithful",
                 "--conditions", "mlp", "gdm", "--out", str(out), "--quiet"])
    assert code == 0
    text = (out / "results.md").read_text()
    assert "| generic | fixed | GDM |" in text and "| generic | faithful | Population (FER2013) |" in text
    assert (out / "generic_fixed_macro_f1.png").stat().st_size > 10_000
    from clifer_core.evaluation.report import read_csv

    rows = read_csv(out / "results.csv")
    assert {r["subject"] for r in rows} == {"p1", "p2"} and {r["order"] for r in rows} >= {0, 1, 2}
    assert "fixed: 2 subjects, classes happy, sad, surprised, 3 orders, 12 taught / 12 tested images" in text
    assert "faithful: 2 subjects, classes happy, sad, surprised, 3 orders, 24 taught / 24 tested images" in text
    steps = {r["step"] for r in rows if r["condition"] == "gdm" and r["test_set"] == "overall"}
    assert steps == {1, 2, 3}


def test_representations_are_cached_by_crop_content(tmp_path):
    from clifer_core.evaluation.representations import compute_representations

    rng = np.random.default_rng(3)
    crops = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    cache = ArrayCache(tmp_path)
    first = compute_representations(crops, cache, imagination=False, show_progress=False)
    assert first.features.shape == (3, 128) and first.imagined is None
    assert np.allclose(first.prior.sum(axis=1), 1.0, atol=1e-4)
    misses = cache.misses
    again = compute_representations(crops, cache, imagination=False, show_progress=False)
    assert cache.misses == misses and np.array_equal(first.features, again.features)
    crops[1] = 255 - crops[1]
    changed = compute_representations(crops, cache, imagination=False, show_progress=False)
    assert cache.misses == misses + 2  # features and probabilities of the one changed crop
    assert np.array_equal(changed.features[0], first.features[0]) and not np.allclose(changed.features[1], first.features[1])


def test_a_landmark_warp_imagines_for_the_protocols_from_each_faces_own_expression(tmp_path):
    from clifer_core.evaluation.imagination import public_domain_face
    from clifer_core.evaluation.representations import compute_representations
    from clifer_core.imagination.landmark_warp import LandmarkWarpImaginer
    from clifer_core.labels import EXPRESSIONS

    count = len(EXPRESSIONS)
    warp = LandmarkWarpImaginer(48, strength=1.0)
    warp.changes_ = np.zeros((count, count, 468, 2), np.float32)
    warp.changes_[EXPRESSIONS.index("happy"), EXPRESSIONS.index("surprised"), :, 1] = 0.05
    warp.pair_counts_ = np.ones((count, count), np.int64)
    path = warp.save(tmp_path / "warp.npz")
    crops = np.repeat(public_domain_face(96)[None], 2, axis=0)
    cache = ArrayCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="own_expressions"):
        compute_representations(crops, cache, imaginer_file=path, show_progress=False)
    own = np.array([EXPRESSIONS.index("happy"), EXPRESSIONS.index("sad")])
    result = compute_representations(crops, cache, imaginer_file=path, show_progress=False, own_expressions=own)
    assert result.imagined.shape == (2, count, 128)
    surprised = EXPRESSIONS.index("surprised")
    moved = np.linalg.norm(result.imagined[:, surprised] - result.imagined[:, EXPRESSIONS.index("neutral")], axis=1)
    assert moved[0] > 1e-3 and moved[1] == 0.0, "only the happy face has a change towards surprised"


def test_representations_refuse_bad_input_and_a_missing_imagination_model(tmp_path):
    from clifer_core.evaluation.representations import compute_representations

    with pytest.raises(ValueError, match="RGB uint8"):
        compute_representations(np.zeros((2, 8, 8), np.uint8), ArrayCache(None))
    with pytest.raises(FileNotFoundError, match="no imagination model"):
        compute_representations(np.zeros((1, 8, 8, 3), np.uint8), ArrayCache(None), imaginer_file=tmp_path / "none.npz")
    with pytest.raises(ValueError, match="features"):
        compute_representations(np.zeros((1, 8, 8, 3), np.uint8), ArrayCache(None), features="pixels")


def test_evaluate_refuses_bad_requests_before_any_work(tmp_path):
    from clifer_core.evaluation.protocols import RunConfig
    from clifer_core.evaluation.runner import evaluate

    for i, expression in enumerate(("happy", "sad")):
        _write_png(tmp_path / "p1" / expression / f"{i}.png", 10 * i)
    cache = ArrayCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="order index 9 out of range 0..1"):
        evaluate(str(tmp_path), "faithful", ("gdm",), orders=[9], cache=cache, show_progress=False)
    with pytest.raises(ValueError, match="latent-space imagination needs CAAE"):
        evaluate(str(tmp_path), "faithful", ("imagination",), config=RunConfig(imagination_mode="latent"), cache=cache,
                 show_progress=False)
    with pytest.raises(ValueError, match="unknown conditions"):
        evaluate(str(tmp_path), "faithful", ("telepathy",), cache=cache, show_progress=False)
    with pytest.raises(ValueError, match="no leak-free per-subject split"):
        evaluate(str(tmp_path), "fixed", ("gdm",), cache=cache, show_progress=False)
    assert not (tmp_path / "cache").exists()  # nothing was cropped or computed


def test_the_data_folder_is_the_configured_one_and_none_hides_the_sibling(tmp_path, monkeypatch):
    sibling = tmp_path / "shared" / "data"
    sibling.mkdir(parents=True)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.delenv("CLIFER_DATA_DIR", raising=False)
    assert datasets.default_data_dir() is not None, "../shared/data beside the working folder is found"
    for hidden in ("none", "None", ""):
        monkeypatch.setenv("CLIFER_DATA_DIR", hidden)
        assert datasets.default_data_dir() is None, hidden
    with pytest.raises(FileNotFoundError, match="CLIFER_DATA_DIR=''"):
        datasets.load_dataset("taiwanese")
    monkeypatch.setenv("CLIFER_DATA_DIR", str(tmp_path / "missing"))
    assert datasets.default_data_dir() is None, "an explicit folder is never replaced by the sibling"
    monkeypatch.setenv("CLIFER_DATA_DIR", str(tmp_path / "shared"))
    assert datasets.default_data_dir() == tmp_path / "shared"
