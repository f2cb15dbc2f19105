"""The node over real DDS: throughput, stamp-to-publish latency and dropped frames.

Starts ``clifer_node`` (default parameters, memories in a fresh temporary
folder) in its own process, feeds 640x480 bgr8 frames with one face at 30 Hz
and then at 60 Hz from this process, and times each ExpressionEstimateArray
from its input image's stamp (the publish time here) to its arrival back
here. The baseline, measured in this same command after the node has
stopped, is the node's own work without ROS: ``FramePipeline.process`` on the
same frames, built by :func:`clifer_core.build.build_pipeline` with the
node's defaults (identity in a worker thread, and a fresh learner answering
each face, as in the node).

    .venv/bin/python benchmarks/node.py [--seconds 10] [--node-param population_model:=shape ...]
    .venv/bin/python benchmarks/node.py --ros4hri 3 [--seconds 10]

With ``--ros4hri N`` it measures the ROS4HRI input mode instead: the node
(``input: ros4hri``, otherwise default parameters) gets N faces' 128x128
aligned crops from the hri_face_detect stand-in at 15 Hz (N crops of the
astronaut: different frames of her drift, flipped every other face), and
the baseline is ``FramePipeline.process_crops`` on the same N crops in this
process, beside ``FramePipeline.process`` on a camera frame with her face.

Ends with one JSON line; its keys:

* ``fps_30hz`` / ``fps_60hz``: estimate arrays received per second of streaming at 30 / 60 Hz.
* ``p50_latency_ms`` / ``p95_latency_ms``: median / 95th percentile over the
  30 Hz run of arrival time minus the frame's stamp, in ms.
* ``dropped_30hz`` / ``dropped_60hz``: frames sent that never came back
  (the node drops frames it has no time for, by design).
* ``backlog_growth_60hz``: median latency of the last third of the 60 Hz
  run minus that of the first third, in ms (~0: no backlog builds up).
* ``pipeline_ms_median``: median ms of one ``process`` call of the baseline
  pipeline (first 5 calls excluded).
* ``latency_over_pipeline``: ``p50_latency_ms / pipeline_ms_median``: the
  factor transport, scheduling and the node's bookkeeping add to the same work.
* ``learn_person_s``: seconds from a ``~/teach`` of 20 faces of a person the
  node has never been taught (imagination and memory update in the
  background) to the first estimate answered by fusion with that person's
  memory (``memory == "fused"``) with the taught expression; ``fps_while_learning``: estimate arrays
  received per second meanwhile.

Keys of the ``--ros4hri N`` line: ``faces``; ``expressions_per_s`` (hri_msgs/Expression messages
received per second, all faces) and ``expressions_per_s_per_face``; ``crops_sent_per_s``;
``p50_latency_ms`` / ``p95_latency_ms`` (Expression arrival minus its crop's stamp);
``arrays_per_stamp`` (``~/expressions`` arrays per camera frame processed: 1 when a frame's
crops are estimated together); ``crops_ms_median`` (median ms of one in-process
``process_crops`` of the N crops); ``camera_ms_median`` (median ms of one ``process`` of a
640x480 frame with one face); ``crops_over_camera`` (their ratio);
``latency_over_pipeline`` (``p50_latency_ms / crops_ms_median``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402

from clifer.msg import ExpressionEstimateArray  # noqa: E402
from clifer.srv import Teach  # noqa: E402
from clifer_ros.demo import astronaut_frame  # noqa: E402
from clifer_ros.harness import NodeProcess, Probe, stamp_ns  # noqa: E402


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_stream(probe: Probe, outputs: list, rate_hz: float, seconds: float) -> dict:
    """Publish at ``rate_hz`` for ``seconds``; return latencies (in send order) and counts."""
    arrivals: dict[int, float] = {}
    first_new = len(outputs)
    frames = [astronaut_frame(t / rate_hz) for t in range(int(rate_hz * 2))]
    sent = []
    start = time.monotonic()
    index = 0
    while time.monotonic() - start < seconds:
        stamp = time.time_ns()
        probe.publish_frame("/bench/image", frames[index % len(frames)], stamp)
        sent.append(stamp)
        index += 1
        time.sleep(max(0.0, index / rate_hz - (time.monotonic() - start)))
    time.sleep(1.0)
    for msg, arrived in outputs[first_new:]:
        arrivals[stamp_ns(msg)] = arrived
    latencies = [(arrivals[s] - s) / 1e6 for s in sent if s in arrivals]
    faces = sum(1 for msg, _ in outputs[first_new:] if msg.estimates)
    return {"sent": len(sent), "processed": len(latencies), "latencies": latencies, "faces": faces,
            "elapsed": seconds}


TAUGHT = "surprised"
"""Taught to the smiling astronaut: her estimates switch to it once the new memory is swapped in."""


def learn_while_streaming(probe: Probe, outputs: list, rate_hz: float = 30.0, seconds: float = 8.0) -> dict:
    """Stream at ``rate_hz``; after 2 s teach the face 20 samples of TAUGHT; time until the estimates follow."""
    frames = [astronaut_frame(t / rate_hz) for t in range(int(rate_hz * 2))]
    client = probe.node.create_client(Teach, "/clifer/teach")
    assert client.wait_for_service(timeout_sec=10)
    first_new = len(outputs)
    start = time.monotonic()
    taught_ns = None
    future = None
    index = 0
    while time.monotonic() - start < seconds:
        probe.publish_frame("/bench/image", frames[index % len(frames)], time.time_ns())
        index += 1
        if taught_ns is None and time.monotonic() - start >= 2.0:
            faces = [m.estimates[0].face_id for m, _ in outputs[first_new:] if m.estimates]
            if faces:
                taught_ns = time.time_ns()
                future = client.call_async(Teach.Request(face_id=faces[-1], expression=TAUGHT))
        time.sleep(max(0.0, index / rate_hz - (time.monotonic() - start)))
    probe.node.destroy_client(client)
    if taught_ns is None:
        return {"learn_person_s": float("nan"), "fps_while_learning": float("nan"), "teach_reply": "no face to teach"}
    after = [(m, arrived) for m, arrived in outputs[first_new:] if arrived >= taught_ns]
    learned_ns = next((arrived for m, arrived in after
                       if m.estimates and m.estimates[0].memory == "fused" and m.estimates[0].expression == TAUGHT), None)
    end_ns = learned_ns or after[-1][1]
    processed = sum(1 for _, arrived in after if arrived <= end_ns)
    reply = future.result() if future is not None and future.done() else None
    return {"learn_person_s": (learned_ns - taught_ns) / 1e9 if learned_ns else float("nan"),
            "fps_while_learning": processed / max((end_ns - taught_ns) / 1e9, 1e-9),
            "teach_reply": reply.message if reply else "no reply"}


def pipeline_baseline(repeats: int = 60) -> float:
    """Median ms of ``process`` on the benchmark frames, by a pipeline built as the node builds its own."""
    from clifer_core.build import build_pipeline

    pipeline = build_pipeline()
    try:
        pipeline.warm_up()
        pipeline.learner.warm_up(pipeline.config.crop_size)
        timings = []
        for frame in [astronaut_frame(t / 30.0) for t in range(repeats)]:
            start = time.perf_counter()
            pipeline.process(frame)
            timings.append((time.perf_counter() - start) * 1e3)
    finally:
        pipeline.close()
    return statistics.median(timings[5:])


ROS4HRI_RATE_HZ = 15.0


def ros4hri_crops(faces: int) -> dict[str, np.ndarray]:
    """``faces`` aligned crops of the astronaut (frames of her drift; every other one flipped), by face id."""
    from clifer_core.faces import align_rep155, find_largest_face

    crops = {}
    for index in range(faces):
        frame = astronaut_frame(index * 0.7)
        crop = align_rep155(frame, find_largest_face(frame))
        crops[f"f{index:05d}"] = np.ascontiguousarray(crop[:, ::-1]) if index % 2 else crop
    return crops


def run_ros4hri(faces: int, seconds: float) -> dict:
    """The node in ros4hri mode fed ``faces`` crops per frame at ROS4HRI_RATE_HZ by the hri_face_detect stand-in."""
    from hri_msgs.msg import Expression
    from std_msgs.msg import Header

    from clifer_ros.ros4hri_standin import FaceDetectStandIn

    crops = ros4hri_crops(faces)
    probe = Probe("clifer_bench_probe")
    memory_dir = tempfile.mkdtemp(prefix="clifer-bench-")
    node = NodeProcess.start("-p", "input:=ros4hri", "-p", "processing_rate_hz:=120.0", "-p", f"memory_dir:={memory_dir}")
    arrivals: list[tuple[int, float]] = []
    arrays: list = []
    for face_id in crops:
        probe.node.create_subscription(Expression, f"/humans/faces/{face_id}/expression",
                                       lambda msg: arrivals.append((stamp_ns(msg), time.time_ns())), 100)
    probe.node.create_subscription(ExpressionEstimateArray, "/clifer/expressions", arrays.append, 100)
    standin = FaceDetectStandIn(probe.node)
    sent = 0
    try:
        assert probe.transition("/clifer", Transition.TRANSITION_CONFIGURE), node.output()
        assert probe.transition("/clifer", Transition.TRANSITION_ACTIVATE), node.output()
        warm_up_s = 3.0
        start = time.monotonic()
        measured_from = None
        index = 0
        while time.monotonic() - start < warm_up_s + seconds:
            stamp = time.time_ns()
            if measured_from is None and time.monotonic() - start >= warm_up_s:
                measured_from = stamp
            header = Header(frame_id="camera")
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            standin.publish_faces(crops, header)
            sent += faces if measured_from is not None else 0
            index += 1
            time.sleep(max(0.0, index / ROS4HRI_RATE_HZ - (time.monotonic() - start)))
        time.sleep(1.0)
    finally:
        exit_code = node.stop()
        probe.close()
    measured = [(stamp, arrived) for stamp, arrived in arrivals if stamp >= measured_from]
    latencies = [(arrived - stamp) / 1e6 for stamp, arrived in measured]
    array_stamps = [stamp_ns(m) for m in arrays if stamp_ns(m) >= measured_from]
    return {"exit_code": exit_code, "sent": sent, "received": len(measured), "latencies": latencies,
            "arrays_per_stamp": len(array_stamps) / max(len(set(array_stamps)), 1), "crops": crops}


def crops_baseline(crops: dict, repeats: int = 60) -> tuple[float, float]:
    """Median ms of ``process_crops`` on ``crops`` and of ``process`` on a camera frame, one pipeline built as the
    node builds its own."""
    from clifer_core.build import build_pipeline

    pipeline = build_pipeline()
    try:
        pipeline.warm_up()
        pipeline.learner.warm_up(pipeline.config.crop_size)
        crop_ms, camera_ms = [], []
        for frame in [astronaut_frame(t / 30.0) for t in range(repeats)]:
            start = time.perf_counter()
            pipeline.process_crops(crops)
            crop_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            pipeline.process(frame)
            camera_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        pipeline.close()
    return statistics.median(crop_ms[5:]), statistics.median(camera_ms[5:])


def main_ros4hri(faces: int, seconds: float) -> int:
    run = run_ros4hri(faces, seconds)
    crops_ms, camera_ms = crops_baseline(run["crops"])
    p50 = percentile(run["latencies"], 50)
    rate = run["received"] / seconds
    print(f"ros4hri, {faces} faces at {ROS4HRI_RATE_HZ:g} Hz: sent {run['sent']} crops, received {run['received']} "
          f"expressions ({rate:.1f}/s), latency median {p50:.1f} ms, p95 {percentile(run['latencies'], 95):.1f} ms; "
          f"in-process process_crops {crops_ms:.1f} ms, process (camera frame, 1 face) {camera_ms:.1f} ms; "
          f"node exit code {run['exit_code']}")
    print(json.dumps({
        "faces": faces,
        "expressions_per_s": round(rate, 2),
        "expressions_per_s_per_face": round(rate / faces, 2),
        "crops_sent_per_s": round(run["sent"] / seconds, 2),
        "p50_latency_ms": round(p50, 2),
        "p95_latency_ms": round(percentile(run["latencies"], 95), 2),
        "arrays_per_stamp": round(run["arrays_per_stamp"], 3),
        "crops_ms_median": round(crops_ms, 2),
        "camera_ms_median": round(camera_ms, 2),
        "crops_over_camera": round(crops_ms / camera_ms, 3),
        "latency_over_pipeline": round(p50 / crops_ms, 2),
    }))
    return 0 if run["exit_code"] == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each stream")
    parser.add_argument("--ros4hri", type=int, default=0, metavar="N",
                        help="measure the ROS4HRI input mode with N faces instead (hri_face_detect stand-in)")
    parser.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter other than its default (repeatable; the baseline keeps the defaults)")
    args = parser.parse_args()
    if any(":=" not in param for param in args.node_param):
        parser.error("--node-param takes NAME:=VALUE")
    if args.ros4hri:
        return main_ros4hri(args.ros4hri, args.seconds)

    probe = Probe("clifer_bench_probe")
    memory_dir = tempfile.mkdtemp(prefix="clifer-bench-")
    node = NodeProcess.start("-r", "image:=/bench/image", "-p", "processing_rate_hz:=120.0",
                             "-p", "teach_samples:=20", "-p", f"memory_dir:={memory_dir}",
                             *(arg for param in args.node_param for arg in ("-p", param)))
    outputs: list = []
    probe.node.create_subscription(ExpressionEstimateArray, "/clifer/expressions",
                                   lambda msg: outputs.append((msg, time.time_ns())), 100)
    try:
        assert probe.transition("/clifer", Transition.TRANSITION_CONFIGURE), node.output()
        assert probe.transition("/clifer", Transition.TRANSITION_ACTIVATE), node.output()
        run_stream(probe, outputs, 30.0, 2.0)
        at30 = run_stream(probe, outputs, 30.0, args.seconds)
        at60 = run_stream(probe, outputs, 60.0, args.seconds)
        learning = learn_while_streaming(probe, outputs)
    finally:
        exit_code = node.stop()
        probe.close()
    baseline_ms = pipeline_baseline()

    third = max(1, len(at60["latencies"]) // 3)
    growth = statistics.median(at60["latencies"][-third:]) - statistics.median(at60["latencies"][:third])
    p50 = percentile(at30["latencies"], 50)
    for name, run in (("30 Hz", at30), ("60 Hz", at60)):
        print(f"{name}: sent {run['sent']}, processed {run['processed']} ({run['processed'] / run['elapsed']:.1f}/s), "
              f"with a face {run['faces']}, latency median {percentile(run['latencies'], 50):.1f} ms, "
              f"p95 {percentile(run['latencies'], 95):.1f} ms")
    print(f"in-process FramePipeline.process with a learner: median {baseline_ms:.1f} ms per frame; "
          f"node exit code {exit_code}")
    print(f"teaching 20 faces ({learning['teach_reply']}): estimates follow after {learning['learn_person_s']:.2f} s, "
          f"{learning['fps_while_learning']:.1f} frames/s processed meanwhile")
    print(json.dumps({
        "fps_30hz": round(at30["processed"] / at30["elapsed"], 2),
        "p50_latency_ms": round(p50, 2),
        "p95_latency_ms": round(percentile(at30["latencies"], 95), 2),
        "dropped_30hz": at30["sent"] - at30["processed"],
        "fps_60hz": round(at60["processed"] / at60["elapsed"], 2),
        "dropped_60hz": at60["sent"] - at60["processed"],
        "backlog_growth_60hz": round(growth, 2),
        "pipeline_ms_median": round(baseline_ms, 2),
        "latency_over_pipeline": round(p50 / baseline_ms, 2),
        "learn_person_s": round(learning["learn_person_s"], 2),
        "fps_while_learning": round(learning["fps_while_learning"], 2),
    }))
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
