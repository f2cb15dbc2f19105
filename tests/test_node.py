"""The CLIFER node in its own process, over real DDS: lifecycle, frames in, stamped estimates out."""

from __future__ import annotations

import math
import time
from array import array

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from sensor_msgs.msg import Image

from clifer.msg import ExpressionEstimateArray
from frames import blank_frame, face_frame
from clifer_ros.harness import PARAMETER_RESEND_S, NodeProcess, Probe, stamp_ns

NODE = "/clifer"
IMAGE_TOPIC = "/camera/image_raw"
OUTPUT_TOPIC = f"{NODE}/expressions"


def face_frames(data_dir, count: int, same_image: bool = False) -> list[np.ndarray]:
    """``count`` 640x480 frames with one face drifting slowly: one person's real Taiwanese faces
    (one photograph throughout with ``same_image``) when the data is present, the public-domain
    astronaut otherwise."""
    if data_dir is None:
        return [face_frame(offset=(3 * i, 2 * i)) for i in range(count)]
    from clifer_core.data.datasets import load_dataset, load_rgb

    subject = [s for s in load_dataset("taiwanese") if s.subject == "tw01"][:count]
    frames = []
    for index in range(count):
        frame = np.full((480, 640, 3), 100, np.uint8)
        x, y = 150 + 3 * index, 100 + 2 * index
        frame[y:y + 256, x:x + 256] = load_rgb(subject[0 if same_image else index % len(subject)].path)
        frames.append(frame)
    return frames


@pytest.fixture
def optional_data_dir():
    from clifer_core.data.datasets import default_data_dir

    return default_data_dir()


@pytest.fixture
def probe():
    probe = Probe()
    yield probe
    probe.close()


def start_active_node(probe: Probe, *ros_args: str) -> NodeProcess:
    node = NodeProcess.start("-r", f"image:={IMAGE_TOPIC}", "-p", "deterministic_ids:=true", *ros_args)
    node.bring_up(probe, NODE, Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE)
    assert probe.state(NODE) == "active"
    return node


def feed(probe: Probe, frames, first_stamp_ns: int, period_s: float = 0.1) -> list[int]:
    """Publish frames at 1/period_s Hz with distinct stamps; return the stamps in order."""
    stamps = []
    for index, frame in enumerate(frames):
        stamp = first_stamp_ns + index * int(period_s * 1e9)
        probe.publish_frame(IMAGE_TOPIC, frame, stamp)
        stamps.append(stamp)
        time.sleep(period_s)
    return stamps


def frame_counters(diagnostics: list[DiagnosticArray], since: int = 0) -> dict[str, int] | None:
    """The node's latest frame counters from /diagnostics (messages from index ``since`` on); None before any."""
    for array_msg in reversed(diagnostics[since:]):
        for status in array_msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames processed" in values and status.name.startswith(NODE):
                return {key: int(value) for key, value in values.items() if key.startswith("frames ")}
    return None


def wait_for_counters(probe: Probe, diagnostics: list, predicate, message: str, since: int = 0,
                      timeout: float = 20.0) -> dict[str, int]:
    """The first frame counters on /diagnostics (from index ``since``) that satisfy ``predicate``."""
    found = {}

    def satisfied() -> bool:
        counters = frame_counters(diagnostics, since)
        found["counters"] = counters
        return counters is not None and predicate(counters)

    probe.wait_for(satisfied, timeout, message)
    return found["counters"]


def test_node_publishes_one_stamped_estimate_array_per_processed_frame(probe, optional_data_dir):
    from hri_msgs.msg import Expression

    outputs = probe.collect(ExpressionEstimateArray, OUTPUT_TOPIC)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    rep155 = probe.collect(Expression, "/humans/faces/f00000/expression")
    node = start_active_node(probe)
    try:
        face_stamps = feed(probe, face_frames(optional_data_dir, 12), first_stamp_ns=1_000_000_000_000)
        face_publishers = probe.node.count_publishers("/humans/faces/f00000/expression")
        blank_stamps: list[int] = []

        def face_topic_gone() -> bool:
            """Blank frames until the track ends: a loaded node drops some, and only processed frames miss it."""
            blank_stamps.extend(feed(probe, [blank_frame()] * 4,
                                     first_stamp_ns=2_000_000_000_000 + len(blank_stamps) * 100_000_000))
            return probe.node.count_publishers("/humans/faces/f00000/expression") == 0

        probe.wait_for(face_topic_gone, 40, "the REP-155 topic to go with the face")
        probe.wait_for(lambda: any(stamp_ns(m) == blank_stamps[-1] for m in outputs), 20, "the last frame's estimates")
        counters = wait_for_counters(probe, diagnostics, lambda c: c["frames processed"] == len(outputs),
                                     "diagnostics counting every array received", since=len(diagnostics))
    finally:
        assert node.stop() == 0, node.output()

    received = [stamp_ns(m) for m in outputs]
    assert len(received) == len(set(received)), "one array per frame, never two"
    assert set(received) <= set(face_stamps + blank_stamps), "every array carries an input image's stamp"
    assert len(received) == counters["frames processed"], f"{len(received)} arrays for {counters}"
    assert counters["frames processed"] + counters["frames dropped"] == counters["frames received"], (
        "every received frame is either processed or counted as dropped")
    assert counters["frames failed"] == 0 and counters["frames rejected"] == 0
    assert all(m.header.frame_id == "camera" for m in outputs)

    with_face = [m for m in outputs if stamp_ns(m) in face_stamps]
    found = [m for m in with_face if len(m.estimates) == 1]
    assert len(found) >= 3 and len(found) >= len(with_face) - 3, "the face is reported once its track is confirmed"
    for array_msg in found:
        estimate = array_msg.estimates[0]
        assert estimate.header.stamp == array_msg.header.stamp
        assert estimate.face_id == "f00000", "one face keeps one track id"
        roi = estimate.roi
        assert roi.width > 40 and roi.height > 40
        assert roi.x_offset + roi.width <= 640 and roi.y_offset + roi.height <= 480
        assert math.isclose(sum(estimate.probabilities), 1.0, abs_tol=1e-4)
        assert list(estimate.labels) == ["angry", "disgusted", "scared", "happy", "sad", "surprised", "neutral"]
        assert estimate.expression == estimate.labels[int(np.argmax(estimate.probabilities))]
        assert estimate.confidence == pytest.approx(max(estimate.probabilities))
        assert estimate.memory == "prior" and math.isnan(estimate.novelty)
        assert -1.0 <= estimate.valence <= 1.0 and -1.0 <= estimate.arousal <= 1.0
    blank = [m for m in outputs if stamp_ns(m) in blank_stamps]
    assert blank and all(len(m.estimates) == 0 for m in blank), "no face on a blank frame"

    assert face_publishers == 1, "REP-155 topic lives as long as the face"
    by_stamp = {stamp_ns(m): m.estimates[0] for m in found}
    assert rep155 and all(stamp_ns(e) in by_stamp for e in rep155), "hri_msgs/Expression stamped like the image"
    for expression in rep155:
        estimate = by_stamp[stamp_ns(expression)]
        assert expression.expression == estimate.expression
        assert expression.confidence == pytest.approx(estimate.confidence)
        assert expression.valence == pytest.approx(estimate.valence)


def test_unsupported_encoding_warns_and_the_node_keeps_working(probe):
    outputs = probe.collect(ExpressionEstimateArray, OUTPUT_TOPIC)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    node = start_active_node(probe)
    try:
        bad = Image(height=4, width=4, encoding="32FC1", step=16, data=array("B", bytes(64)))
        bad.header.stamp.sec = 5
        probe.wait_for(lambda: probe.publish_message(IMAGE_TOPIC, bad) or (frame_counters(diagnostics) or {}).get(
            "frames rejected", 0) > 0, 20, "the node to count the 32FC1 frame as rejected")
        stamps = feed(probe, [blank_frame()] * 3, first_stamp_ns=7_000_000_000)
        probe.wait_for(lambda: any(stamp_ns(m) in stamps for m in outputs), 20, "estimates after a bad frame")
    finally:
        assert node.stop() == 0
    assert "unsupported image encoding '32FC1'" in node.output()
    assert all(stamp_ns(m) != 5_000_000_000 for m in outputs), "nothing is published for a rejected frame"


def test_lifecycle_gates_processing(probe):
    outputs = probe.collect(ExpressionEstimateArray, OUTPUT_TOPIC)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    node = start_active_node(probe)
    try:
        feed(probe, [blank_frame()] * 2, first_stamp_ns=10_000_000_000)
        probe.wait_for(lambda: len(outputs) > 0, 20, "estimates while active")
        assert probe.transition(NODE, Transition.TRANSITION_DEACTIVATE)
        assert probe.state(NODE) == "inactive"
        received = wait_for_counters(probe, diagnostics, lambda c: True, "diagnostics while inactive",
                                     since=len(diagnostics))["frames received"]
        before, published_at = len(outputs), len(diagnostics)
        for index in range(3):
            probe.publish_message(IMAGE_TOPIC, _blank_msg(index), wait_for_subscriber=False)
        # Two diagnostics periods after the frames went out: long enough for an active node to have answered.
        probe.wait_for(lambda: len(diagnostics) >= published_at + 2, 20, "two diagnostics periods")
        assert frame_counters(diagnostics)["frames received"] == received, "an inactive node takes no frames"
        assert len(outputs) == before, "an inactive node publishes nothing"
        assert probe.transition(NODE, Transition.TRANSITION_ACTIVATE)
        feed(probe, [blank_frame()] * 2, first_stamp_ns=20_000_000_000)
        probe.wait_for(lambda: len(outputs) > before, 20, "estimates after re-activation")
        assert probe.transition(NODE, Transition.TRANSITION_DEACTIVATE)
        assert probe.transition(NODE, Transition.TRANSITION_CLEANUP)
        assert probe.state(NODE) == "unconfigured"
    finally:
        assert node.stop() == 0, node.output()


def _blank_msg(index: int) -> Image:
    from clifer_ros.conversions import rgb_to_image

    msg = rgb_to_image(blank_frame(), "bgr8")
    msg.header.stamp.sec = 30 + index
    return msg


def _set(probe: Probe, name: str, value: ParameterValue):
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    return probe.call(SetParameters, f"{NODE}/set_parameters", request, resend_after=PARAMETER_RESEND_S).results[0]


def test_params_file_is_loaded_and_settings_are_validated(probe, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    min_face_score: 0.75\n    processing_rate_hz: 12.0\n")
    node = NodeProcess.start("--params-file", str(params))
    try:
        reply = probe.call(GetParameters, f"{NODE}/get_parameters",
                           GetParameters.Request(names=["min_face_score", "processing_rate_hz", "detector"]),
                           resend_after=PARAMETER_RESEND_S)
        values = [reply.values[0].double_value, reply.values[1].double_value, reply.values[2].string_value]
        assert values == [0.75, 12.0, "blazeface"]
        assert _set(probe, "min_face_score", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.5)).successful
        assert not _set(probe, "min_face_score", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1.5)).successful
        assert not _set(probe, "detector", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="yolo")).successful
        assert not _set(probe, "processing_rate_hz", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0)).successful
        assert probe.state(NODE) == "unconfigured", "without autostart the node waits for its lifecycle manager"
    finally:
        assert node.stop() == 0, node.output()
