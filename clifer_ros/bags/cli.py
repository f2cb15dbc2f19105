"""``clifer bag make | eval | play | record``: rosbag2 workflows without a ROS install.

* ``make``: a dataset becomes a camera-stream bag with a labels topic
  (:mod:`clifer_ros.bags.make`).
* ``eval``: score the pipeline on a labelled bag, in-process or against a live
  node (:mod:`clifer_ros.bags.evaluate`), written as CSV, Markdown and PNG
  (:mod:`clifer_core.evaluation.bag_report`).
* ``play`` / ``record``: timed replay into live topics, and live topics into a
  bag (:mod:`clifer_ros.bags.replay`).

Bags are rosbag2 directories; ``run.mcap`` and ``run`` name the same bag.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "rosbag2 workflows: make an evaluation bag, eval, play, record"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clifer_core.build import DEFAULT_FEATURES, DEFAULT_IMAGINATION
    from clifer_core.learner import FEATURES, IMAGINATION

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    make = actions.add_parser("make", help="write an evaluation bag from a labelled face dataset")
    make.add_argument("--dataset", required=True, help="taiwanese, ckplus, yale, or a dataset folder")
    make.add_argument("--out", required=True, help="bag to write (run.mcap -> rosbag2 folder run/)")
    make.add_argument("--storage", choices=("mcap", "sqlite3"), help="storage plugin (default: from --out's suffix, else mcap)")
    make.add_argument("--fps", type=float, default=15.0, help="camera frame rate (default 15)")
    make.add_argument("--lead-expression", help="open each visit with this expression held for --lead-frames "
                      "frames (teach it with eval --teach-first N), then the person's other expressions")
    make.add_argument("--lead-frames", type=int, default=6)
    make.add_argument("--hold-frames", type=int, default=1, help="with --lead-expression, show each of the "
                      "person's other images for this many frames (video-like, for self-training)")
    make.add_argument("--seconds-per-person", type=float, help="spread each person's images over this long (default: one frame per image)")
    make.add_argument("--gap-seconds", type=float, default=1.0, help="empty-scene time between people (default 1)")
    make.add_argument("--people", type=int, help="only the first N people (sorted by subject)")
    make.add_argument("--force", action="store_true", help="replace an existing bag")

    evaluate = actions.add_parser("eval", help="score expression predictions on a labelled bag")
    evaluate.add_argument("--bag", required=True)
    evaluate.add_argument("--out", default="out/bag_eval", help="report folder (default out/bag_eval)")
    evaluate.add_argument("--teach-first", type=int, default=0, help="teach the first N labelled frames of each person, score the rest")
    evaluate.add_argument("--features", choices=FEATURES, default=DEFAULT_FEATURES,
                          help="features the learner's memories learn")
    evaluate.add_argument("--imagination", choices=IMAGINATION, default=DEFAULT_IMAGINATION,
                          help="how the learner imagines a person's unseen expressions")
    evaluate.add_argument("--self-training", action="store_true",
                          help="let the learner learn its own confident, stable estimates (the node's self_training)")
    evaluate.add_argument("--live", action="store_true", help="play into a live clifer_node over DDS at recorded timing")
    evaluate.add_argument("--rate", type=float, default=1.0, help="replay rate for --live")
    evaluate.add_argument("--image-topic", help="image topic (default: the bag's only sensor_msgs/Image topic)")
    evaluate.add_argument("--labels-topic", help="labels topic (default: the bag's only clifer/ExpressionLabel topic)")

    play = actions.add_parser("play", help="replay a bag into live topics at its recorded timing")
    play.add_argument("--bag", required=True)
    play.add_argument("--rate", type=float, default=1.0, help="time scale (2.0 = twice as fast)")
    play.add_argument("--loop", action="store_true", help="start again at the end, until Ctrl-C")
    play.add_argument("--topics", nargs="+", help="only these topics")
    play.add_argument("--clock", action="store_true", help="also publish /clock from the bag's log times (for use_sim_time)")
    play.add_argument("--wait", type=float, default=2.0, help="seconds to wait for subscribers before starting")

    record = actions.add_parser("record", help="record live topics into a bag")
    record.add_argument("--out", required=True)
    record.add_argument("--topics", nargs="+", required=True)
    record.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    record.add_argument("--storage", choices=("mcap", "sqlite3"))
    record.add_argument("--force", action="store_true", help="replace an existing bag")


def run(args: argparse.Namespace) -> int:
    from clifer_ros.bags.io import BagError

    try:
        return _ACTIONS[args.action](args)
    except (BagError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"clifer bag {args.action}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _make(args) -> int:
    from clifer_ros.bags.make import make_bag

    summary = make_bag(
        args.dataset, args.out, storage=args.storage, fps=args.fps, seconds_per_person=args.seconds_per_person,
        gap_seconds=args.gap_seconds, people=args.people, force=args.force, progress=True,
        lead_expression=args.lead_expression, lead_frames=args.lead_frames, hold_frames=args.hold_frames,
    )
    print(json.dumps({"bag": str(summary.path), "frames": summary.frames, "labels": summary.labels,
                      "people": summary.people, "duration_s": round(summary.duration_s, 3)}))
    return 0


def _eval(args) -> int:
    from clifer_ros.bags.evaluate import evaluate_in_process, evaluate_live
    from clifer_core.evaluation.bag_report import score, write_report

    if args.teach_first < 0:
        raise ValueError(f"--teach-first must be >= 0, got {args.teach_first}")
    if args.live:
        results = evaluate_live(args.bag, rate=args.rate, teach_first=args.teach_first, image_topic=args.image_topic,
                                labels_topic=args.labels_topic, progress=True,
                                node_ros_args=("-p", f"features:={args.features}", "-p", f"imagination:={args.imagination}",
                                               "-p", f"self_training:={str(args.self_training).lower()}"))
    else:
        results = evaluate_in_process(
            args.bag, teach_first=args.teach_first, image_topic=args.image_topic, labels_topic=args.labels_topic,
            progress=True, **_teaching(args),
        )
    mode = "live node" if args.live else "in-process"
    paths = write_report(args.out, results, f"clifer bag eval ({mode}): {Path(args.bag).name}")
    overall = score(results)
    print(json.dumps({
        "mode": mode, "frames": overall.frames, "coverage": round(overall.coverage, 4),
        "accuracy": round(overall.accuracy, 4), "macro_f1": round(overall.macro_f1, 4),
        "report": str(paths["report.md"]),
    }))
    return 0


def _teaching(args) -> dict:
    """A pipeline with identity on bag time and a fresh learner sharing its FER2013 model, when teaching or
    self-training."""
    if not args.teach_first and not args.self_training:
        return {}
    from clifer_core.session import SessionSettings
    from clifer_ros.bags.evaluate import BagClock, default_pipeline

    clock = BagClock()
    pipeline = default_pipeline(identity=True, clock=clock, learner=True, features=args.features,
                                imagination=args.imagination,
                                warn=lambda message: print(f"clifer bag eval: {message}", file=sys.stderr))
    return {"pipeline": pipeline, "learner": pipeline.learner, "clock": clock,
            "settings": SessionSettings(self_training=args.self_training)}


def _play(args) -> int:
    from clifer_ros.bags.replay import play

    published = play(args.bag, rate=args.rate, loop=args.loop, topics=args.topics, publish_clock=args.clock,
                     wait_s=args.wait, progress=True)
    print(json.dumps({"published": published}))
    return 0


def _record(args) -> int:
    from clifer_ros.bags.replay import record

    summary = record(args.out, args.topics, seconds=args.seconds, storage=args.storage, force=args.force)
    print(json.dumps({"bag": str(summary.path), "messages": summary.counts}))
    return 0


_ACTIONS = {"make": _make, "eval": _eval, "play": _play, "record": _record}
