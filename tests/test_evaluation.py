"""Protocols, the MLP baseline, reports and plots on synthetic data (no dataset, no TensorFlow)."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest

from clifer_core.evaluation import protocols, report
from clifer_core.data.cache import ArrayCache
from clifer_core.evaluation.mlp import IncrementalMLP
from clifer_core.evaluation.plots import plot_protocol
from clifer_core.progress import Progress
from clifer_core.labels import GDM_EXPRESSIONS
from evaluation_helpers import clustered_task, value


def test_six_classes_get_the_original_codes_six_orders_and_other_sizes_rotate():
    # The six Latin-square-like orders of the original code's commented list (docs/design.md, evaluation protocol).
    original = ((0, 4, 3, 5, 1, 2), (1, 3, 0, 5, 2, 4), (2, 3, 4, 0, 5, 1),
                (3, 1, 2, 4, 5, 0), (4, 2, 0, 3, 5, 1), (5, 1, 4, 0, 2, 3))
    orders = protocols.class_orders(6)
    assert orders == original
    assert all(order in set(permutations(range(6))) for order in orders)
    assert [order[0] for order in orders] == list(range(6)), "every class comes first once"
    assert protocols.class_orders(3) == ((0, 1, 2), (1, 2, 0), (2, 0, 1))


def test_dataset_classes_follow_the_documented_choices():
    assert protocols.dataset_classes("taiwanese", []) == GDM_EXPRESSIONS
    assert "neutral" not in protocols.dataset_classes("ckplus", []) and len(protocols.dataset_classes("ckplus", [])) == 6
    seven = ["angry", "disgusted", "scared", "happy", "sad", "surprised", "neutral"]
    assert protocols.dataset_classes("generic", seven) == GDM_EXPRESSIONS
    assert protocols.dataset_classes("generic", ["sad", "happy"]) == ("happy", "sad")


def test_fixed_split_never_tests_a_group_it_teaches():
    subjects = ["a"] * 7 + ["b"] * 3
    labels = [0, 0, 0, 0, 1, 1, 2, 0, 0, 1]
    groups = ["t1", "t1", "t2", "t3", "n0", "n1", "only", "x", "y", "z"]
    train, test = protocols.split_masks(subjects, labels, groups, "fixed")
    assert not np.any(train & test) and np.all(train | test)
    for i in np.flatnonzero(test):
        taught_same_cell = [groups[j] for j in np.flatnonzero(train) if (subjects[j], labels[j]) == (subjects[i], labels[i])]
        assert groups[i] not in taught_same_cell
    # the last group of each multi-group cell is held out; single-group cells are taught only
    assert test.tolist() == [False, False, False, True, False, True, False, False, True, False]
    other_train, other_test = protocols.split_masks(subjects, labels, groups, "fixed", fold=1)
    assert other_test[2] and not other_test[3]
    all_train, all_test = protocols.split_masks(subjects, labels, groups, "faithful")
    assert all_train.all() and all_test.all()
    with pytest.raises(ValueError, match="protocol"):
        protocols.split_masks(subjects, labels, groups, "leaky")


def test_imagination_recognises_untaught_classes_and_plain_gdm_cannot():
    rows = protocols.run_task(clustered_task())
    chance = 1 / 6
    gdm_step1 = value(rows, condition="gdm", step=1, test_set="overall", memory="episodic", metric="accuracy")
    imagined_step1 = value(rows, condition="imagination", step=1, test_set="overall", memory="episodic", metric="accuracy")
    assert gdm_step1 == pytest.approx(chance)  # it can only ever answer the one class it was taught
    assert imagined_step1 > 0.6
    forward = value(rows, condition="imagination", test_set="cl", memory="episodic", metric="forward_transfer")
    assert forward > 0.5
    assert value(rows, condition="gdm", test_set="cl", memory="episodic", metric="forward_transfer") == 0.0
    for condition in ("gdm", "imagination"):
        assert value(rows, condition=condition, step=6, test_set="all_seen", memory="episodic", metric="macro_f1") > 0.95


def test_rows_are_tidy_and_cover_every_step_set_and_memory():
    rows = protocols.run_task(clustered_task(conditions=("gdm",), protocol="faithful"))
    assert all(set(r) == set(report.COLUMNS) for r in rows)
    steps = {r["step"] for r in rows if r["test_set"] == "overall"}
    assert steps == set(range(1, 7))
    assert {r["test_set"] for r in rows} == {"novel", "all_seen", "overall", "cl", "-"}
    recalls = [r for r in rows if r["metric"].startswith("recall:") and r["step"] == 6 and r["memory"] == "episodic"]
    assert sorted(r["metric"][7:] for r in recalls) == sorted(GDM_EXPRESSIONS)


def test_a_class_missing_from_training_is_dropped_from_the_order():
    task = clustered_task(conditions=("gdm",))
    task.train[task.labels == 2] = False
    rows = protocols.run_task(task)
    assert max(r["step"] for r in rows) == 5
    assert not any(r["metric"] == "recall:happy" and r["value"] > 0 for r in rows if r["memory"] == "episodic")


def test_unknown_condition_is_refused():
    with pytest.raises(ValueError, match="condition"):
        protocols.run_condition(clustered_task(), "magic")


def test_continual_learning_summaries_match_hand_computation():
    matrix = np.array([[1.0, 0.0, 0.2], [0.5, 1.0, 0.1], [0.25, 0.5, 1.0]])
    result = protocols.continual_learning_summaries(matrix)
    assert result["average_accuracy"] == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert result["average_incremental_accuracy"] == pytest.approx((1.0 + 0.75 + 1.75 / 3) / 3)
    assert result["backward_transfer"] == pytest.approx(((0.25 - 1.0) + (0.5 - 1.0)) / 2)
    assert result["forgetting"] == pytest.approx(((1.0 - 0.25) + (1.0 - 0.5)) / 2)
    assert result["forward_transfer"] == pytest.approx((0.0 + 0.1) / 2)


def test_incremental_mlp_learns_then_forgets_under_class_increments():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 3, (3, 8))
    X = np.concatenate([c + rng.normal(0, 0.3, (40, 8)) for c in centres])
    y = np.repeat(np.arange(3), 40)
    joint = IncrementalMLP(8, 3, seed=0, epochs=60).partial_fit(X, y)
    assert np.mean(joint.predict(X) == y) > 0.95
    overlapping = np.random.default_rng(1)
    centres = overlapping.normal(0, 1, (3, 8))
    near = np.concatenate([c + overlapping.normal(0, 0.5, (40, 8)) for c in centres])
    incremental = IncrementalMLP(8, 3, seed=0)
    incremental.partial_fit(near[y == 0], y[y == 0])
    assert np.mean(incremental.predict(near[y == 0]) == 0) == 1.0
    for k in (1, 2):
        incremental.partial_fit(near[y == k], y[y == k])
    assert np.mean(incremental.predict(near[y == 0]) == 0) < 0.2  # catastrophic forgetting of the first class
    assert np.allclose(incremental.predict_proba(X).sum(axis=1), 1.0)


def test_scale_features_normalises_then_scales():
    raw = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert protocols.scale_features(raw, 2.0) == pytest.approx(np.array([[1.2, 1.6], [0.0, 0.0]]))
    assert protocols.scale_features(raw, None).tolist() == raw.tolist()


def test_population_rows_restrict_the_prior_to_the_dataset_classes():
    classes = ("happy", "sad")
    prior = np.zeros((3, 7))
    prior[:, 0] = 0.9  # "angry" dominates but is not a class here
    prior[0, 3], prior[0, 4] = 0.06, 0.04  # happy > sad
    prior[1, 4], prior[2, 4] = 0.05, 0.05  # sad
    rows = protocols.population_rows("d", "fixed", np.array(["s"] * 3), np.array([0, 1, 0]), np.ones(3, bool), prior, classes)
    assert value(rows, test_set="overall", metric="accuracy") == pytest.approx(2 / 3)


def test_report_tables_csv_roundtrip_and_plots(tmp_path):
    rows = protocols.run_task(clustered_task(conditions=("mlp", "gdm", "imagination")))
    rows += protocols.run_task(clustered_task(conditions=("mlp", "gdm", "imagination"), seed=1))
    path = report.write_csv(rows, tmp_path / "r.csv")
    back = report.read_csv(path)
    assert len(back) == len(rows) and back[5]["value"] == pytest.approx(rows[5]["value"], rel=1e-5)
    text = report.markdown_tables(back)
    assert "| synthetic | fixed | GDM+Imagination |" in text and "forgetting" in text and "MLP" in text
    final = report.per_run(back, "overall", "episodic", "accuracy", "final")
    assert all(v > 0.95 for k, v in final.items() if k[2] == "gdm")
    averaged = report.per_run(back, "overall", "episodic", "accuracy", "mean")
    assert all(averaged[k] < final[k] for k in final if k[2] == "gdm")
    stats = report.summary({("d", "p", "c", 0, "a"): 0.5, ("d", "p", "c", 1, "a"): 1.0})
    assert stats["mean"] == 0.75 and stats["runs"] == 2 and stats["order_sd"] == pytest.approx(math.sqrt(0.125))
    png = plot_protocol(back, "synthetic", "fixed", "macro_f1", tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_array_cache_roundtrip_and_disabled(tmp_path):
    cache = ArrayCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", np.arange(5, dtype=np.uint8))
    assert cache.get("k").tolist() == [0, 1, 2, 3, 4] and cache.hits == 1 and cache.misses == 1
    assert not list(tmp_path.rglob("*.tmp"))
    off = ArrayCache(None)
    off.put("k", np.ones(2))
    assert off.get("k") is None


def test_progress_into_a_log_draws_a_few_times_not_once_per_item():
    import io

    stream = io.StringIO()
    progress = Progress("work", 138, stream=stream, interval=0.0)
    for _ in range(138):
        progress.update()
    progress.close()
    text = stream.getvalue()
    assert "work: 100%" in text and "138/138" in text and text.endswith("\n")
    assert text.count("\r") <= 3, "a stream that is not a terminal gets an update at most every LOG_INTERVAL_S"
