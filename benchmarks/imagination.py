"""Speed of the imagination model, through the calls the learner makes, and of training.

Measured for the default configuration (64×64, width 32) and, as the
baseline in the same process, for the original 96×96 width-64 model. Random
inputs (speed does not depend on content); runs on the GPU when TensorFlow
sees one; each figure is the median over ``--repeats`` timed calls after one
untimed call. Ends with one JSON line; its keys (default model unless named):

* ``imagined_faces_per_s``: image-space imagination as the learner does it,
  ``Imaginer.imagine(crops)`` on 64 face crops of the node's crop size
  (96×96 uint8): 7 × 64 imagined faces (decode, then re-encode) per second.
* ``reencoded_latents_per_s``: latent-space imagination as the learner does
  it, one ``Imaginer.reencode`` call on 64 memory prototypes each repeated
  for the 7 expressions (E(G(z, c)) in one graph): 7 × 64 latents per second.
* ``train_images_per_s``: training images per second of one
  ``Trainer.train_step`` on a batch of ``train_batch`` faces.
* ``speedup_vs_spec_imagine`` / ``speedup_vs_spec_reencode`` /
  ``speedup_vs_spec_train``: each figure above divided by the original (spec) model's
  (``ImaginationConfig(image_size=96, width=64)``, docs/design.md §2.1).
* ``device``, ``batch`` (64), ``train_batch``: the conditions.

Run: ``nice -n 10 .venv/bin/python benchmarks/imagination.py`` (about 2 min on 2 busy cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from clifer_core.imagination.data import FaceSet, make_pipeline
from clifer_core.imagination.imaginer import Imaginer
from clifer_core.imagination.networks import ImaginationConfig, Networks
from clifer_core.imagination.training import Trainer
from clifer_core.labels import EXPRESSIONS
from clifer_core.pipeline import PipelineConfig

BATCH = 64
CROP_SIZE = PipelineConfig().crop_size


def median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(config: ImaginationConfig, repeats: int, train_batch: int) -> dict:
    rng = np.random.default_rng(0)
    imaginer = Imaginer(Networks.build(config))
    crops = rng.integers(0, 256, (BATCH, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    prototypes = rng.uniform(-1, 1, (BATCH, config.latent_dim)).astype(np.float32)
    expressions = range(len(EXPRESSIONS))
    repeated, targets = np.repeat(prototypes, len(EXPRESSIONS), axis=0), np.tile(list(expressions), BATCH)
    imagine_s = median_seconds(lambda: imaginer.imagine(crops), repeats)
    reencode_s = median_seconds(lambda: imaginer.reencode(repeated, targets), repeats)
    trainer = Trainer(config)
    faces = rng.integers(0, 256, (train_batch, config.image_size, config.image_size, 3), dtype=np.uint8)
    subjects = np.array([f"p{i % 4}" for i in range(train_batch)])
    batch = next(iter(make_pipeline(FaceSet(faces, np.arange(train_batch, dtype=np.int32) % 7, subjects), train_batch)))
    train_s = median_seconds(lambda: trainer.train_step(batch), repeats)
    imagined = len(EXPRESSIONS) * BATCH
    return {"imagined_faces_per_s": imagined / imagine_s, "reencoded_latents_per_s": imagined / reencode_s,
            "train_images_per_s": train_batch / train_s}


def main() -> None:
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=32)
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')}" if gpus else "CPU"
    default = measure(ImaginationConfig(), args.repeats, args.train_batch)
    spec = measure(ImaginationConfig(image_size=96, width=64), args.repeats, args.train_batch)
    for name, numbers in (("default 64px width 32", default), ("spec 96px width 64 (baseline)", spec)):
        print(f"{name:32s} " + "  ".join(f"{k}={v:.1f}" for k, v in numbers.items()))
    summary = {**{k: round(v, 1) for k, v in default.items()},
               "speedup_vs_spec_imagine": round(default["imagined_faces_per_s"] / spec["imagined_faces_per_s"], 2),
               "speedup_vs_spec_reencode": round(default["reencoded_latents_per_s"] / spec["reencoded_latents_per_s"], 2),
               "speedup_vs_spec_train": round(default["train_images_per_s"] / spec["train_images_per_s"], 2),
               "device": device, "batch": BATCH, "train_batch": args.train_batch}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
