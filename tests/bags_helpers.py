"""Data the bag tests build themselves: a tiny two-person dataset from the public-domain astronaut face."""

from __future__ import annotations

from pathlib import Path

import cv2

from frames import astronaut_rgb

PEOPLE = ("alice", "bob")
EXPRESSIONS_SHOWN = ("happy", "sad")
IMAGES_PER_EXPRESSION = 3


def write_synthetic_dataset(root: Path) -> Path:
    """``<person>/<expression>/<n>.png`` (the generic layout): the astronaut's head, varied per person
    (mirrored for bob) and per image (a slight crop shift), so frames differ but faces stay detectable."""
    portrait = astronaut_rgb()[0:300, 60:360]
    for person_index, person in enumerate(PEOPLE):
        face = portrait[:, ::-1] if person_index else portrait
        for expression_index, expression in enumerate(EXPRESSIONS_SHOWN):
            folder = root / person / expression
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(IMAGES_PER_EXPRESSION):
                shift = 6 * n + 10 * expression_index
                image = face[shift:shift + 260, shift // 2:shift // 2 + 260]
                cv2.imwrite(str(folder / f"{n}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


FPS = 15.0
GAP_SECONDS = 0.4


def write_synthetic_bag(root: Path) -> Path:
    """The two-person dataset as an MCAP bag at ``root/run`` (15 fps, 0.4 s between people)."""
    from clifer_ros.bags.make import make_bag

    dataset = write_synthetic_dataset(root / "dataset")
    return make_bag(str(dataset), root / "run.mcap", fps=FPS, gap_seconds=GAP_SECONDS).path


def shared_models():
    """One detector and one expression model, shared by every pipeline of a test module."""
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig

    pipeline = build_pipeline(PipelineConfig(deterministic_ids=True, identity=False), learner=False)
    return pipeline.detector, pipeline.expression_model


def fresh_pipeline(models):
    """A deterministic prior-only pipeline with its own tracker, on the shared models."""
    from clifer_core.build import build_pipeline
    from clifer_core.pipeline import PipelineConfig

    detector, expression_model = models
    return build_pipeline(PipelineConfig(deterministic_ids=True, identity=False), learner=False, detector=detector,
                          expression_model=expression_model)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
