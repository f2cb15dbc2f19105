"""Bags meeting live ROS topics over real DDS: timed replay, recording, and scoring a running node."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bags_helpers import PEOPLE, fresh_pipeline, shared_models, stamp_of, write_synthetic_bag
from clifer_ros.bags.evaluate import evaluate_in_process, evaluate_live
from clifer_ros.bags.io import BagError, BagReader
from clifer_ros.bags.make import IMAGE_TOPIC, LABELS_TOPIC
from clifer_ros.bags.replay import play, record
from clifer_core.evaluation.bag_report import score
from clifer_ros.harness import Probe


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return write_synthetic_bag(tmp_path_factory.mktemp("bags"))


@pytest.fixture(scope="module")
def models():
    return shared_models()


def test_play_keeps_the_recorded_spacing_and_record_captures_it(bag, tmp_path):
    """`clifer bag play` in its own process (as a user runs it) into `record` here, over DDS."""
    with BagReader(bag) as reader:
        originals = list(reader.messages([IMAGE_TOPIC]))
    recorded_offsets = np.array([m.timestamp_ns - originals[0].timestamp_ns for m in originals]) / 1e9

    for rate in (1.0, 2.0):
        out = tmp_path / f"replayed_{rate}.mcap"
        player = subprocess.Popen(
            [sys.executable, "-m", "clifer_core.cli", "bag", "play", "--bag", str(bag), "--rate", str(rate),
             "--topics", IMAGE_TOPIC, "--wait", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        stop = threading.Event()
        recorder = threading.Thread(target=lambda: record(out, [IMAGE_TOPIC], stop=stop, discovery_timeout=20), daemon=True)
        recorder.start()
        stdout, stderr = player.communicate(timeout=60)
        time.sleep(0.3)
        stop.set()
        recorder.join(timeout=30)
        assert player.returncode == 0, stderr
        assert json.loads(stdout.splitlines()[-1]) == {"published": len(originals)}

        with BagReader(out.with_suffix("")) as reader:
            replayed = list(reader.messages([IMAGE_TOPIC]))
            assert reader.offered_qos(IMAGE_TOPIC)[0].reliability.name == "BEST_EFFORT", "recorded as the player offered it"
        assert [m.raw for m in replayed] == [m.raw for m in originals], "every frame arrives, byte for byte"
        arrival_offsets = np.array([m.timestamp_ns - replayed[0].timestamp_ns for m in replayed]) / 1e9
        expected_offsets = recorded_offsets / rate
        assert np.median(np.diff(arrival_offsets)) == pytest.approx(np.median(np.diff(expected_offsets)), rel=0.10)
        assert arrival_offsets[-1] == pytest.approx(expected_offsets[-1], rel=0.10)
        drift = np.abs(arrival_offsets - expected_offsets)
        assert drift.max() <= 0.10 * expected_offsets[-1], "late messages never push the schedule back"


def test_play_refuses_unknown_topics_and_bad_rates(bag):

    with pytest.raises(BagError, match="no topic /nope"):
        play(bag, topics=["/nope"], wait_s=0)
    with pytest.raises(ValueError, match="rate must be positive"):
        play(bag, rate=0.0, topics=[LABELS_TOPIC], wait_s=0)


def test_live_eval_scores_what_a_running_node_publishes(bag, models):

    # At a fifth of the recorded rate a loaded machine still answers every frame; at full rate the node
    # rightly drops the frames it cannot keep up with, and there would be little left to compare.
    live = evaluate_live(bag, rate=0.2, settle_s=3.0, node_ros_args=("-p", "imagination:=none"))
    in_process = {r.stamp_ns: r for r in evaluate_in_process(bag, pipeline=fresh_pipeline(models))}

    assert sorted(r.stamp_ns for r in live) == sorted(in_process), "every labelled frame is scored"
    reported = [r for r in live if r.predicted is not None]
    both = [(r, in_process[r.stamp_ns]) for r in reported if in_process[r.stamp_ns].predicted is not None]
    assert len(both) >= len(live) // 2, f"the node and the pipeline both answered only {len(both)} of {len(live)} frames"
    assert [r.predicted for r, _ in both] == [offline.predicted for _, offline in both], "same frame, same answer"
    assert [r.confidence for r, _ in both] == pytest.approx([offline.confidence for _, offline in both], abs=1e-4)
    assert score(live).coverage == pytest.approx(len(reported) / len(live))


def test_play_loops_until_stopped_and_publishes_the_bag_clock(bag):
    from rosgraph_msgs.msg import Clock

    from clifer.msg import ExpressionLabel

    with BagReader(bag) as reader:
        label_times = [m.timestamp_ns for m in reader.messages([LABELS_TOPIC])]
    probe = Probe("clock_listener")
    try:
        clocks = probe.collect(Clock, "/clock")
        labels = probe.collect(ExpressionLabel, LABELS_TOPIC)
        stop = threading.Event()
        threading.Timer(2.5, stop.set).start()
        published = play(bag, rate=4.0, loop=True, topics=[LABELS_TOPIC], publish_clock=True, wait_s=10.0, stop=stop)
        probe.wait_for(lambda: len(labels) >= published, 5.0, "every published label")
    finally:
        probe.close()
    assert published > 2 * len(label_times), "it starts again at the end"
    assert [stamp_of(m) for m in labels[: len(label_times)]] == label_times
    clock_ns = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for m in clocks]
    assert clock_ns[: len(label_times)] == label_times, "/clock follows the bag's log time"


def test_record_stores_expression_estimates_that_decode_back(tmp_path):
    from clifer.msg import ExpressionEstimate, ExpressionEstimateArray

    topic = "/clifer/expressions"
    probe = Probe("estimates_publisher")
    publisher = probe.node.create_publisher(ExpressionEstimateArray, topic, 10)
    stop, outcome = threading.Event(), {}
    recorder = threading.Thread(
        target=lambda: outcome.setdefault("summary", record(tmp_path / "estimates.mcap", [topic], stop=stop)), daemon=True
    )
    try:
        recorder.start()
        probe.wait_for(lambda: publisher.get_subscription_count() > 0, 20.0, "the recorder to subscribe")
        for index in range(5):
            estimate = ExpressionEstimate(face_id=f"f{index:05d}", expression="happy", labels=["happy", "sad"],
                                          probabilities=[0.75, 0.25], confidence=0.75, memory="prior")
            message = ExpressionEstimateArray(estimates=[estimate])
            message.header.stamp.sec = 100 + index
            publisher.publish(message)
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        recorder.join(timeout=20)
        probe.close()
    assert outcome["summary"].counts == {topic: 5}
    with BagReader(tmp_path / "estimates.mcap") as reader:
        assert reader.topics == {topic: "clifer/msg/ExpressionEstimateArray"}
        assert reader.offered_qos(topic)[0].reliability.name == "RELIABLE"
        decoded = [reader.decode(m) for m in reader.messages()]
    assert [m.header.stamp.sec for m in decoded] == [100, 101, 102, 103, 104]
    assert [m.estimates[0].face_id for m in decoded] == [f"f{i:05d}" for i in range(5)]
    assert list(decoded[0].estimates[0].probabilities) == [0.75, 0.25] and decoded[0].estimates[0].labels == ["happy", "sad"]


def test_live_eval_teaches_the_node_through_its_labels_topic(bag):

    live = evaluate_live(bag, rate=0.5, teach_first=3, settle_s=3.0, node_ros_args=("-p", "imagination:=none"))

    for person in PEOPLE:
        assert [r.taught for r in live if r.person_id == person] == [True] * 3 + [False] * 3
    scored = [r for r in live if not r.taught and r.predicted is not None]
    assert any(r.memory == "fused" for r in scored), "the node answered from memories it learnt from the labels"
    assert score(live).frames == len(live) - 3 * len(PEOPLE)
