"""rosbag2 bag files: make, read back with independent readers, damage, and score in-process."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from bags_helpers import (
    EXPRESSIONS_SHOWN, FPS, GAP_SECONDS, IMAGES_PER_EXPRESSION, PEOPLE, fresh_pipeline, shared_models, stamp_of,
    write_synthetic_dataset,
)
from clifer_core.data.datasets import load_dataset
from clifer_ros.bags.evaluate import LearnerUnavailableError, evaluate_in_process
from clifer_ros.bags.io import BagError, BagReader, bag_writer, typestore
from clifer_ros.bags.make import IMAGE_TOPIC, LABELS_TOPIC, label_message, make_bag, plan_frames, render_frames
from clifer_core.evaluation.bag_report import FrameResult, score, write_report


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="module")
def bag(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "run.mcap"
    summary = make_bag(str(dataset), out, fps=FPS, gap_seconds=GAP_SECONDS)
    assert summary.path == out.with_suffix("") and (summary.path / "run.mcap").is_file()
    return summary.path


@pytest.fixture(scope="module")
def plan(dataset):
    return plan_frames(load_dataset(str(dataset)), fps=FPS, gap_seconds=GAP_SECONDS)


@pytest.fixture(scope="module")
def models():
    return shared_models()


def damaged_copy(bag: Path, where: Path, content: bytes) -> Path:
    copy = where / bag.name
    copy.mkdir(parents=True)
    shutil.copy(bag / "metadata.yaml", copy / "metadata.yaml")
    (copy / "run.mcap").write_bytes(content)
    return copy


# Writing, and reading back with readers that share no code with ours


def test_made_bag_is_read_back_identically_by_mcap_ros2_and_rclpy(bag, plan):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from clifer.msg import ExpressionLabel

    expected_frames = list(render_frames(plan))
    images, labels = [], []
    with (bag / "run.mcap").open("rb") as stream:
        for schema, channel, message, decoded in make_reader(stream, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            assert message.log_time == stamp_of(decoded), "log time is the camera stamp"
            if channel.topic == IMAGE_TOPIC:
                assert schema.name == "sensor_msgs/msg/Image"
                images.append((decoded, message.data))
            else:
                assert (channel.topic, schema.name) == (LABELS_TOPIC, "clifer/msg/ExpressionLabel")
                labels.append((decoded, message.data))

    assert len(images) == len(plan)
    faces = [p for p in plan if p.sample is not None]
    assert len(labels) == len(faces) == len(PEOPLE) * len(EXPRESSIONS_SHOWN) * IMAGES_PER_EXPRESSION
    for (decoded, raw), (planned, frame_rgb) in zip(images, expected_frames):
        assert (decoded.width, decoded.height, decoded.encoding, decoded.step) == (640, 480, "bgr8", 1920)
        assert stamp_of(decoded) == planned.stamp_ns and decoded.header.frame_id == "camera"
        pixels = np.frombuffer(bytes(decoded.data), np.uint8).reshape(480, 640, 3)
        np.testing.assert_array_equal(pixels[..., ::-1], frame_rgb)
        rclpy_image = deserialize_message(bytes(raw), Image)
        assert bytes(rclpy_image.data) == bytes(decoded.data) and rclpy_image.header.stamp.nanosec == decoded.header.stamp.nanosec
    for (decoded, raw), planned in zip(labels, faces):
        assert stamp_of(decoded) == planned.stamp_ns, "a label carries its frame's stamp"
        assert (decoded.person_id, decoded.expression, decoded.face_id) == (planned.sample.subject, planned.sample.expression, "")
        rclpy_label = deserialize_message(bytes(raw), ExpressionLabel)
        assert (rclpy_label.person_id, rclpy_label.expression) == (decoded.person_id, decoded.expression)

    stamps = [p.stamp_ns for p in plan]
    assert np.allclose(np.diff(stamps), 1e9 / FPS, atol=1), "frames at the frame rate, gaps filled by empty frames"
    people_order = [p.sample.subject for p in faces]
    assert people_order == sorted(people_order), "person by person"


def test_metadata_declares_rosbag2_v9_with_qos_and_rclpy_type_hashes(bag):
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9 and metadata["storage_identifier"] == "mcap"
    assert metadata["relative_file_paths"] == ["run.mcap"]
    topics = {t["topic_metadata"]["name"]: t for t in metadata["topics_with_message_count"]}
    image_qos = topics[IMAGE_TOPIC]["topic_metadata"]["offered_qos_profiles"][0]
    label_qos = topics[LABELS_TOPIC]["topic_metadata"]["offered_qos_profiles"][0]
    assert (image_qos["reliability"], image_qos["durability"]) == ("best_effort", "volatile")
    assert (label_qos["reliability"], label_qos["durability"]) == ("reliable", "volatile")
    share = Path(__import__("sys").prefix) / "share"
    for topic, package, name in ((IMAGE_TOPIC, "sensor_msgs", "Image"), (LABELS_TOPIC, "clifer", "ExpressionLabel")):
        generated = json.loads((share / package / "msg" / f"{name}.json").read_text())["type_hashes"][0]["hash_string"]
        assert topics[topic]["topic_metadata"]["type_description_hash"] == generated
    assert metadata["message_count"] == sum(t["message_count"] for t in topics.values())


def test_sqlite3_bag_holds_the_same_messages(bag, dataset, tmp_path):
    sqlite_bag = make_bag(str(dataset), tmp_path / "run.db3", fps=FPS, gap_seconds=GAP_SECONDS).path
    metadata = yaml.safe_load((sqlite_bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "sqlite3" and metadata["relative_file_paths"] == ["run.db3"]
    with sqlite3.connect(sqlite_bag / "run.db3") as database:
        rows = database.execute(
            "SELECT topics.name, messages.timestamp, messages.data FROM messages JOIN topics ON topics.id = messages.topic_id "
            "ORDER BY messages.timestamp, messages.id"
        ).fetchall()
    with BagReader(bag) as reader:
        from_mcap = [(m.topic, m.timestamp_ns, m.raw) for m in reader.messages()]
    assert sorted(rows) == sorted(from_mcap)


def test_a_lead_expression_opens_each_visit_and_the_others_are_held(dataset):
    samples = load_dataset(str(dataset))
    lead = next(s.expression for s in samples if s.expression)
    plain = plan_frames(samples, fps=FPS, lead_expression=lead, lead_frames=3)
    held = plan_frames(samples, fps=FPS, lead_expression=lead, lead_frames=3, hold_frames=4)
    shown = [p.sample for p in plain if p.sample is not None]
    assert len([p for p in held if p.sample is not None]) == 3 * len({s.subject for s in shown}) + 4 * (
        len(shown) - 3 * len({s.subject for s in shown}))
    first_person = [p.sample for p in held if p.sample is not None and p.sample.subject == shown[0].subject]
    assert [s.expression for s in first_person[:3]] == [lead] * 3
    others = first_person[3:]
    assert all(others[i] is others[i - i % 4] for i in range(len(others))), "each later image is held for 4 frames"
    assert lead not in {s.expression for s in others}
    stamps = [p.stamp_ns for p in held]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    with pytest.raises(ValueError, match="hold_frames must be >= 1"):
        plan_frames(samples, fps=FPS, lead_expression=lead, hold_frames=0)
    with pytest.raises(ValueError, match="give lead_expression"):
        plan_frames(samples, fps=FPS, hold_frames=2)


def test_make_never_overwrites_without_force(bag, dataset, tmp_path):
    from clifer_core.cli import main

    target = tmp_path / "bag"
    shutil.copytree(bag, target)
    before = (target / "run.mcap").read_bytes()
    with pytest.raises(BagError, match="already exists; pass --force"):
        make_bag(str(dataset), tmp_path / "bag.mcap", people=1)
    assert main(["bag", "make", "--dataset", str(dataset), "--out", str(tmp_path / "bag.mcap"), "--people", "1"]) == 2
    assert (target / "run.mcap").read_bytes() == before, "the existing bag is untouched"

    make_bag(str(dataset), tmp_path / "bag.mcap", people=1, force=True)
    with BagReader(target) as reader:
        assert reader.counts[LABELS_TOPIC] == len(EXPRESSIONS_SHOWN) * IMAGES_PER_EXPRESSION, "replaced by the one-person bag"

    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(BagError, match="is not a bag"):
        make_bag(str(dataset), precious, force=True)
    assert (precious / "thesis.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*partial*")), "no staging folder is left behind"


# Damaged and foreign bags


def test_truncated_bag_error_names_the_file_and_offset(bag, tmp_path):
    content = (bag / "run.mcap").read_bytes()
    damaged = damaged_copy(bag, tmp_path, content[: len(content) // 2])
    with pytest.raises(BagError) as caught:
        BagReader(damaged)
    text = str(caught.value)
    assert str(damaged / "run.mcap") in text and f"({len(content) // 2} bytes)" in text
    assert "complete up to byte offset" in text and "truncated" in text


def test_corrupt_chunk_error_names_the_file_and_last_good_message(bag, tmp_path):
    from mcap.reader import make_reader

    content = bytearray((bag / "run.mcap").read_bytes())
    with (bag / "run.mcap").open("rb") as stream:
        chunks = make_reader(stream).get_summary().chunk_indexes
    third = chunks[2]
    data_start = third.chunk_start_offset + 9 + 40 + len(third.compression)
    content[data_start:data_start + 64] = b"\xde\xad\xbe\xef" * 16
    damaged = damaged_copy(bag, tmp_path, bytes(content))
    read = []
    with BagReader(damaged) as reader, pytest.raises(BagError) as caught:
        for message in reader.messages():
            read.append(message)
    text = str(caught.value)
    assert str(damaged / "run.mcap") in text and "damaged bag" in text
    assert read, "the messages before the damage were delivered"
    assert f"after message {read[-1].index} (log time {read[-1].timestamp_ns} ns)" in text


def test_unknown_message_types_are_skipped_with_a_warning(tmp_path):
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    foreign = get_typestore(Stores.ROS2_KILTED)
    foreign.register(get_types_from_msg("int32 teeth\nstring owner", "acme/msg/Widget"))
    widget = foreign.types["acme/msg/Widget"](teeth=12, owner="acme")
    with bag_writer(tmp_path / "mixed.mcap") as writer:
        widgets = writer.add_connection("/widgets", "acme/msg/Widget", typestore=foreign)
        labels = writer.add_connection(LABELS_TOPIC, "clifer/msg/ExpressionLabel", typestore=typestore())
        for index in range(3):
            writer.write(widgets, 10 + index, bytes(foreign.serialize_cdr(widget, "acme/msg/Widget")))
            message = label_message(10 + index, "p", "happy")
            writer.write(labels, 10 + index, bytes(typestore().serialize_cdr(message, "clifer/msg/ExpressionLabel")))
    with BagReader(tmp_path / "mixed.mcap") as reader:
        assert reader.topics == {"/widgets": "acme/msg/Widget", LABELS_TOPIC: "clifer/msg/ExpressionLabel"}
        with pytest.warns(UserWarning, match="skipping /widgets: unknown message type acme/msg/Widget"):
            read = list(reader.messages())
    assert [m.topic for m in read] == [LABELS_TOPIC] * 3
    assert [reader.decode(m).person_id for m in read] == ["p"] * 3


# Scoring


def test_scores_on_hand_made_results():
    def result(true, predicted, person="a", taught=False):
        return FrameResult(0, person, true, predicted, 0.9 if predicted else None, taught=taught)

    results = [
        result("happy", "happy"), result("happy", "happy"), result("happy", "sad"), result("sad", "sad"),
        result("sad", None), result("angry", "angry", taught=True),
    ]
    scores = score(results)
    assert (scores.frames, scores.predicted_frames) == (5, 4), "taught frames are not scored"
    assert scores.coverage == pytest.approx(0.8)
    assert scores.accuracy == pytest.approx(3 / 4) and scores.accuracy_all == pytest.approx(3 / 5)
    f1_happy = 2 * 1.0 * (2 / 3) / (1.0 + 2 / 3)
    f1_sad = 2 * 0.5 * 1.0 / 1.5
    assert scores.macro_f1 == pytest.approx((f1_happy + f1_sad) / 2)
    assert scores.recall == pytest.approx({"happy": 2 / 3, "sad": 1.0})
    assert scores.confusion.sum() == 4 and scores.confusion[3, 4] == 1


def test_bag_eval_equals_the_pipeline_on_the_same_frames_in_memory(bag, plan, models, tmp_path):
    from_bag = evaluate_in_process(bag, pipeline=fresh_pipeline(models))

    in_memory = fresh_pipeline(models)
    expected = []
    for planned, frame in render_frames(plan):
        estimates = in_memory.process(frame, stamp=planned.stamp_ns / 1e9)
        if planned.sample is None:
            continue
        # The labels name no face, so the label is about the largest face of the frame.
        chosen = max(estimates, key=lambda e: (e.roi[2] - e.roi[0]) * (e.roi[3] - e.roi[1]), default=None)
        expected.append((planned.stamp_ns, planned.sample.subject, planned.sample.expression,
                         chosen.label if chosen else None, chosen.confidence if chosen else None))

    assert [(r.stamp_ns, r.person_id, r.expression, r.predicted) for r in from_bag] == [e[:4] for e in expected]
    assert [r.confidence for r in from_bag] == [e[4] for e in expected], "bit-identical frames give identical outputs"
    assert sum(r.predicted is not None for r in from_bag) >= len(from_bag) - 2 * len(PEOPLE), "the face is found once tracked"

    paths = write_report(tmp_path / "report", from_bag, "synthetic")
    summary = (tmp_path / "report" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("scope,frames,predicted_frames,coverage,accuracy")
    assert [line.split(",")[0] for line in summary[1:]] == ["overall", *PEOPLE]
    assert f"{score(from_bag).accuracy:.4f}" in summary[1]
    assert paths["report.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Confusion matrix" in paths["report.md"].read_text()


def test_bag_eval_on_real_data_matches_in_memory(data_dir, models, tmp_path):
    samples = [s for s in load_dataset("taiwanese") if s.subject in ("tw01", "tw02")]
    plan = plan_frames(samples, fps=FPS)
    make_bag("taiwanese", tmp_path / "tw.mcap", fps=FPS, people=2)

    from_bag = evaluate_in_process(tmp_path / "tw", pipeline=fresh_pipeline(models))

    in_memory = fresh_pipeline(models)
    expected = {}
    for planned, frame in render_frames(plan):
        estimates = in_memory.process(frame, stamp=planned.stamp_ns / 1e9)
        if planned.sample is not None and estimates:
            largest = max(estimates, key=lambda e: (e.roi[2] - e.roi[0]) * (e.roi[3] - e.roi[1]))
            expected[planned.stamp_ns] = (largest.label, largest.confidence)
    assert len(from_bag) == len([p for p in plan if p.sample is not None])
    assert {r.stamp_ns: (r.predicted, r.confidence) for r in from_bag if r.predicted} == expected
    predicted = [r for r in from_bag if r.predicted]
    in_memory_accuracy = np.mean([expected[r.stamp_ns][0] == r.expression for r in predicted])
    assert score(from_bag).accuracy == pytest.approx(in_memory_accuracy)
    assert score(from_bag).coverage > 0.9


def test_teaching_needs_a_learner_and_takes_each_persons_first_frames(bag, models):
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig
    from clifer_ros.bags.evaluate import BagClock

    with pytest.raises(LearnerUnavailableError, match="needs a per-person learner"):
        evaluate_in_process(bag, pipeline=fresh_pipeline(models), teach_first=2)

    detector, expression_model = models
    clock = BagClock()
    pipeline = build_pipeline(PipelineConfig(deterministic_ids=True, identity_in_background=False), imagination="none",
                              identity_clock=clock, detector=detector, expression_model=expression_model)
    learner = pipeline.learner
    taught_when = {}
    learn = learner.learn

    def learn_noting_when(person, crops, labels):
        taught_when[person] = clock.now
        return learn(person, crops, labels)

    learner.learn = learn_noting_when

    results = evaluate_in_process(bag, pipeline=pipeline, learner=learner, teach_first=3, clock=clock)

    for person in PEOPLE:
        mine = [r for r in results if r.person_id == person]
        assert [r.taught for r in mine] == [True] * 3 + [False] * (len(mine) - 3)
        assert taught_when[person] == mine[2].stamp_ns / 1e9, "learnt right before the person's first scored frame"
    taught_faces = {p: sum(r.taught and r.predicted is not None for r in results if r.person_id == p) for p in PEOPLE}
    assert learner.people() == taught_faces, "each person learnt from their own taught faces"
    scored = [r for r in results if not r.taught and r.predicted is not None]
    assert scored and all(r.memory == "fused" for r in scored), "taught people are answered from their own memory"
    assert score(results).frames == len(results) - 3 * len(PEOPLE)


def test_in_process_self_training_learns_confident_stable_estimates(bag, models):
    """The session settings reach the bag evaluation's learning session, as the node's parameters reach the node's."""
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig
    from clifer_core.session import SessionSettings
    from clifer_ros.bags.evaluate import BagClock

    detector, expression_model = models
    clock = BagClock()
    pipeline = build_pipeline(PipelineConfig(deterministic_ids=True, identity_in_background=False), imagination="none",
                              identity_clock=clock, detector=detector, expression_model=expression_model)
    settings = SessionSettings(self_training=True, self_training_threshold=0.3, self_training_frames=2)
    results = evaluate_in_process(bag, pipeline=pipeline, learner=pipeline.learner, teach_first=3, clock=clock,
                                  settings=settings)
    taught_faces = {p: sum(r.taught and r.predicted is not None for r in results if r.person_id == p) for p in PEOPLE}
    learned = pipeline.learner.people()
    assert all(learned[p] >= taught_faces[p] for p in PEOPLE)
    assert sum(learned.values()) > sum(taught_faces.values()), "self-training learned some confident, stable estimates"


def test_cli_eval_rejects_bad_arguments_clearly(bag, capsys):
    from clifer_core.cli import main

    assert main(["bag", "eval", "--bag", str(bag), "--teach-first", "-1"]) == 2
    assert "--teach-first must be >= 0" in capsys.readouterr().err
    assert main(["bag", "eval", "--bag", str(bag.parent / "missing.mcap")]) == 2
    assert "no such bag" in capsys.readouterr().err
