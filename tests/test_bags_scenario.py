"""The video scenario on real faces: each person first shows neutral (taught), then other expressions (not
taught). A stranger's first estimates from the live node with default parameters are the prior's, and the
live node and the in-process evaluation agree on what teaching does."""

from __future__ import annotations

import pytest

from clifer_core.evaluation.bag_report import score
from clifer_ros.bags.evaluate import evaluate_in_process, evaluate_live
from clifer_ros.bags.make import make_bag

LEAD_FRAMES = 6


@pytest.fixture(scope="module")
def lead_neutral_bag(tmp_path_factory, data_dir):
    bag = tmp_path_factory.mktemp("scenario") / "lead_neutral"
    summary = make_bag("taiwanese", bag, people=2, lead_expression="neutral", lead_frames=LEAD_FRAMES)
    assert summary.people == 2
    return summary.path


def test_the_bag_opens_each_visit_with_the_lead_expression_then_shows_the_others(lead_neutral_bag):
    results = evaluate_in_process(lead_neutral_bag)
    for person in {r.person_id for r in results}:
        mine = [r.expression for r in results if r.person_id == person]
        assert mine[:LEAD_FRAMES] == ["neutral"] * LEAD_FRAMES
        assert "neutral" not in mine[LEAD_FRAMES:] and len(set(mine[LEAD_FRAMES:])) >= 5


def test_a_strangers_first_estimates_from_the_live_node_are_the_priors(lead_neutral_bag):
    """With the FER2013 evidence, frame by frame. (The default shape population model reads each face against
    the person's running reference, so a frame the live node drops changes later estimates; tests/test_learner.py
    checks that a stranger gets exactly its estimate.)"""
    prior = {r.stamp_ns: r for r in evaluate_in_process(lead_neutral_bag)}
    live = evaluate_live(lead_neutral_bag, rate=0.5, node_ros_args=("-p", "population_model:=fer2013"))
    answered = [r for r in live if r.predicted is not None]
    assert len(answered) >= 0.5 * len(live), "the live node answered most frames"
    for person in {r.person_id for r in answered}:
        first = [r for r in answered if r.person_id == person][:8]
        assert all(r.memory == "prior" for r in first)
        assert [r.predicted for r in first] == [prior[r.stamp_ns].predicted for r in first]


def test_live_and_in_process_agree_after_teaching_the_lead_expression(lead_neutral_bag):
    from clifer_core.learner import CliferLearner

    in_process = {r.stamp_ns: r for r in evaluate_in_process(lead_neutral_bag, learner=CliferLearner(),
                                                            teach_first=LEAD_FRAMES)}
    live = evaluate_live(lead_neutral_bag, rate=0.5, teach_first=LEAD_FRAMES)
    scored = [r for r in live if not r.taught and r.predicted is not None]
    assert scored and all(r.memory == "fused" for r in scored[-5:]), "taught people are answered by fusion"
    same_frames = [in_process[r.stamp_ns] for r in scored]
    agreement = sum(a.predicted == b.predicted for a, b in zip(scored, same_frames)) / len(scored)
    assert agreement >= 0.9, f"live and in-process answers agree on {agreement:.0%} of frames"
    assert abs(score(scored).accuracy - score(same_frames).accuracy) <= 0.05
