"""Speed of the imagination model: imagined faces per second and training images per second.

Measured for the default configuration (64×64, width 32) and, as the
baseline in the same process, for the spec's 96×96 width-64 model: imagining
7 expressions for a batch of 64 faces (decode + re-encode), latent-space
imagination of 64 memory prototypes (the learner's path, E(G(z, c))), and one
training step. Random inputs (speed does not depend on content). Runs on
the GPU when TensorFlow sees one. Medians throughout; ends with one JSON line.

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

BATCH = 64


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
    faces = rng.integers(0, 256, (BATCH, config.image_size, config.image_size, 3), dtype=np.uint8)
    prototypes = rng.uniform(-1, 1, (BATCH, config.latent_dim)).astype(np.float32)
    imagine_s = median_seconds(lambda: imaginer.imagine(faces), repeats)
    latent_s = median_seconds(lambda: imaginer.imagine(prototypes), repeats)
    reencode_s = median_seconds(lambda: [imaginer.reencode(prototypes, k) for k in range(7)], repeats)
    trainer = Trainer(config)
    subjects = np.array([f"p{i % 4}" for i in range(train_batch)])
    batch = next(iter(make_pipeline(FaceSet(faces[:train_batch], np.arange(train_batch, dtype=np.int32) % 7, subjects),
                                    train_batch)))
    train_s = median_seconds(lambda: trainer.train_step(batch), repeats)
    return {"imagined_faces_per_s": 7 * BATCH / imagine_s, "latent_imaginations_per_s": 7 * BATCH / latent_s,
            "reencode_only_per_s": 7 * BATCH / reencode_s, "train_images_per_s": train_batch / train_s}


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
               "speedup_vs_spec_train": round(default["train_images_per_s"] / spec["train_images_per_s"], 2),
               "device": device, "batch": BATCH, "train_batch": args.train_batch}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
