"""Bag workflows: what writing, reading and replaying a bag costs on top of the work itself.

Each figure is a ratio against a baseline measured in this same process:

* make: ``make_bag`` per frame vs. rendering the same frames in memory
  (the cost of encoding, serialising, compressing and writing);
* eval: ``evaluate_in_process`` per frame vs. ``FramePipeline.process`` on the
  same frames already in memory (the cost of reading and decoding the bag);
* replay: ``clifer bag play``'s inter-arrival times at a subscriber here vs.
  the bag's recorded spacing (timing error, in % of the frame period).

    .venv/bin/python benchmarks/bags.py [--dataset taiwanese] [--people 2] [--repeats 3]

Without ``--dataset`` a two-person dataset is built from the public-domain
astronaut photograph. Ends with one JSON line of medians over ``--repeats``;
its keys:

* ``frames``: frames in the bag;
* ``render_ms_per_frame`` / ``make_ms_per_frame``: ms per frame to render the
  frames in memory / to write the bag with ``make_bag``; ``make_over_render``: their ratio;
* ``pipeline_in_memory_ms_per_frame`` / ``bag_eval_ms_per_frame``: ms per frame
  of ``FramePipeline.process`` on the rendered frames / of ``evaluate_in_process``
  on the bag, each with a fresh pipeline built by ``clifer_core.build.build_pipeline``
  (no learner) on the same loaded models; ``bag_eval_over_in_memory``: their ratio;
* ``replay_spacing_error_pct_1x`` / ``_2x``: median absolute error of the
  inter-arrival times at a subscriber, in % of the recorded frame period, at 1× / 2× rate.
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

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from clifer_core.data.datasets import load_dataset  # noqa: E402
from clifer_core.build import build_pipeline  # noqa: E402
from clifer_core.pipeline import PipelineConfig  # noqa: E402
from clifer_ros.bags.evaluate import evaluate_in_process  # noqa: E402
from clifer_ros.bags.make import IMAGE_TOPIC, make_bag, plan_frames, render_frames, select_people  # noqa: E402


def synthetic_dataset(root: Path) -> str:
    """Two people x two expressions x four images of the astronaut's head (generic folder layout)."""
    from skimage.data import astronaut

    portrait = astronaut()[0:300, 60:360]
    for person_index, person in enumerate(("alice", "bob")):
        face = portrait[:, ::-1] if person_index else portrait
        for expression_index, expression in enumerate(("happy", "sad")):
            folder = root / person / expression
            folder.mkdir(parents=True)
            for n in range(4):
                shift = 5 * n + 10 * expression_index
                crop = face[shift:shift + 260, shift // 2:shift // 2 + 260]
                cv2.imwrite(str(folder / f"{n}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return str(root)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def replay_timing_error(bag: Path, rate: float) -> float:
    """Median |inter-arrival - recorded spacing / rate| at a subscriber, in % of the scaled spacing."""
    import subprocess

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from clifer_ros.bags.io import BagReader
    from clifer_ros.harness import Probe

    with BagReader(bag) as reader:
        recorded = np.diff([m.timestamp_ns for m in reader.messages([IMAGE_TOPIC])]) / 1e9 / rate
    probe = Probe("bag_benchmark_subscriber")
    arrivals: list[int] = []
    probe.node.create_subscription(
        Image, IMAGE_TOPIC, lambda raw, info: arrivals.append(info["received_timestamp"]),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT), raw=True,
    )
    try:
        subprocess.run(
            [sys.executable, "-m", "clifer_core.cli", "bag", "play", "--bag", str(bag), "--rate", str(rate),
             "--topics", IMAGE_TOPIC, "--wait", "20"],
            check=True, capture_output=True, timeout=600,
        )
        time.sleep(0.3)
    finally:
        probe.close()
    if len(arrivals) != len(recorded) + 1:
        raise RuntimeError(f"replay lost frames: {len(arrivals)} of {len(recorded) + 1} arrived")
    measured = np.diff(arrivals) / 1e9
    return float(np.median(np.abs(measured - recorded) / recorded) * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="dataset name or folder (default: synthetic astronaut faces)")
    parser.add_argument("--people", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="clifer-bag-bench-") as scratch:
        scratch = Path(scratch)
        dataset = args.dataset or synthetic_dataset(scratch / "dataset")
        plan = plan_frames(select_people(load_dataset(dataset), args.people))
        frames = len(plan)

        render_s, make_s = [], []
        for _ in range(args.repeats):
            render_s.append(timed(lambda: [frame for _, frame in render_frames(plan)]))
            make_s.append(timed(lambda: make_bag(dataset, scratch / "bench.mcap", people=args.people, force=True)))
        bag = scratch / "bench"

        config = PipelineConfig(deterministic_ids=True)
        shared = build_pipeline(config, learner=False)
        shared.warm_up()
        in_memory = [frame for _, frame in render_frames(plan)]
        direct_s, bag_eval_s = [], []
        for _ in range(args.repeats):
            pipeline = build_pipeline(config, learner=False, detector=shared.detector,
                                      expression_model=shared.expression_model)
            direct_s.append(timed(lambda: [pipeline.process(frame) for frame in in_memory]))
            pipeline.close()
            pipeline = build_pipeline(config, learner=False, detector=shared.detector,
                                      expression_model=shared.expression_model)
            bag_eval_s.append(timed(lambda: evaluate_in_process(bag, pipeline=pipeline)))
            pipeline.close()
        shared.close()

        replay_error_1x = replay_timing_error(bag, 1.0)
        replay_error_2x = replay_timing_error(bag, 2.0)

    per_frame_ms = lambda values: statistics.median(values) / frames * 1e3  # noqa: E731
    result = {
        "frames": frames,
        "render_ms_per_frame": round(per_frame_ms(render_s), 3),
        "make_ms_per_frame": round(per_frame_ms(make_s), 3),
        "make_over_render": round(statistics.median(make_s) / statistics.median(render_s), 2),
        "pipeline_in_memory_ms_per_frame": round(per_frame_ms(direct_s), 2),
        "bag_eval_ms_per_frame": round(per_frame_ms(bag_eval_s), 2),
        "bag_eval_over_in_memory": round(statistics.median(bag_eval_s) / statistics.median(direct_s), 3),
        "replay_spacing_error_pct_1x": round(replay_error_1x, 2),
        "replay_spacing_error_pct_2x": round(replay_error_2x, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
