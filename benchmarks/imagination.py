"""Speed of the imagination models, through the calls the learner makes, and of training; plus their measured quality.

Measured for the residual edit model (48×48, width 32, the candidate of
issue #15), the CAAE (64×64, width 32, the model shipped before it) and, as
the baseline in the same process, the original 96×96 width-64 CAAE. Random
inputs (speed does not depend on content); runs on the GPU when TensorFlow
sees one; each figure is the median over ``--repeats`` timed calls after one
untimed call. Ends with one JSON line; its keys:

* ``imagined_faces_per_s``: image-space imagination as the learner does it,
  ``Imaginer.imagine(crops)`` on 64 face crops of the node's crop size
  (96×96 uint8): 7 × 64 imagined faces per second (edit, then re-encode).
* ``reencoded_latents_per_s``: latent-space imagination, one
  ``Imaginer.reencode`` call on 64 memory prototypes × 7 expressions.
* ``train_images_per_s``: training images per second of one
  ``Trainer.train_step`` on a batch of ``train_batch`` (64) faces.
* the same three for the CAAE (``caae_*``) and ``speedup_vs_spec_*``: the
  residual model's figure over the spec CAAE's.
* ``identity_kept``, ``expression_hit_over_real`` (population judge),
  ``expression_hit_over_real_fer2013`` and the CAAE's, those of the
  imaginations without a network (``mean_change_*``, ``landmark_warp_*``,
  ``warp_and_change_*``: the training people's mean face or landmark change
  applied to the face) and the return-the-input edit's beside them: copied from a ``clifer evaluate-imagination`` report
  (``--report``, models named by ``--report-names``; held-out people of
  Taiwanese, CK+ and Yale, each dataset weighing the same); null without one.
* ``untaught_gain_vs_prior``: in the partial-teaching evaluation, on the
  people the imagination model never saw, recall on classes not yet taught
  with imagination (memory only) minus the prior's, mean over people and
  over 1, 3 and all taught faces per class, each dataset weighing the same;
  ``untaught_gain_vs_no_imagination`` against the same learner without
  imagination; ``adapted_*`` the same with person adaptation (the node's
  default); ``landmark_warp_*`` the four for the landmark warp. Copied from
  the rows of ``clifer evaluate --protocol partial`` (``--partial``,
  ``--warp-partial``, whose sub-folders are pooled); null without them.
* ``landmark_warp_imagined_faces_per_s``: the same figure for the landmark
  warp (no network: face mesh, then 6 piecewise-affine warps per face, each
  a vectorised triangle lookup and ``cv2.remap``), and
  its ratio to the residual model's.
* ``device``, ``batch`` (64), ``train_batch``: the conditions.

Run: ``nice -n 10 .venv/bin/python benchmarks/imagination.py --report imagination_report/report.json
--partial partial_shipped --warp-partial partial_warp``, the folders from ``clifer evaluate --dataset taiwanese
ckplus yale --protocol partial --out partial_shipped`` and the same with ``--imaginer WARP.npz`` (from
``clifer train-imagination --architecture landmark_warp``, which holds out the evaluated people; one run per
``--hold-out-fold`` 0-5 in sub-folders of ``partial_warp`` covers every person).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

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


def measure_warp(repeats: int) -> float:
    """Imagined faces per second of the landmark warp (``LandmarkWarpImaginer.imagine``, face mesh + 6 warps per face)
    on 64 crops of a public-domain face, with a small random landmark change (speed does not depend on it)."""
    from clifer_core.evaluation.imagination import public_domain_face
    from clifer_core.imagination.landmark_warp import LandmarkWarpImaginer

    imaginer = LandmarkWarpImaginer()
    count = len(EXPRESSIONS)
    imaginer.changes_ = np.random.default_rng(0).normal(0, 0.01, (count, count, 468, 2)).astype(np.float32)
    imaginer.pair_counts_ = np.ones((count, count), np.int64)
    crops = np.repeat(public_domain_face(CROP_SIZE)[None], BATCH, axis=0)
    return count * BATCH / median_seconds(lambda: imaginer.imagine(crops, own_expressions="neutral"), repeats)


def quality(report_path, model: str, baseline: str) -> dict:
    """Summary numbers of a ``clifer evaluate-imagination`` report (null when none is given): ``model`` unprefixed,
    ``baseline`` (the CAAE) as ``caae_*``, the imaginations without a network as ``mean_change_*``,
    ``landmark_warp_*`` and ``warp_and_change_*``, and the return-the-input edit as ``input_*``."""
    keys = ("identity_kept", "expression_hit_over_real_population", "expression_hit_over_real_fer2013")
    report = json.loads(Path(report_path).read_text()) if report_path else {}
    out = {}
    for prefix, model in {"": model, "caae_": baseline, "mean_change_": "mean_change", "landmark_warp_": "landmark_warp",
                          "warp_and_change_": "warp_and_change", "input_": "input"}.items():
        summary = report.get(model, {}).get("summary", {})
        for key in keys:
            name = prefix + key.replace("_population", "")
            out[name] = round(summary[key], 3) if key in summary else None
    return out


def untaught(folders: dict[str, Path | None]) -> dict:
    """``untaught_gain_vs_prior`` and its siblings (:func:`clifer_core.evaluation.partial.untaught_gains`) from the
    ``*_partial_rows.json`` that ``clifer evaluate --protocol partial`` wrote into each folder or its sub-folders
    (one per leave-fold-out imagination model: a dataset's rows are pooled over them), each dataset weighing the
    same; the key prefix names the imagination; null without a folder."""
    from clifer_core.evaluation.partial import untaught_gains

    out = {}
    for prefix, folder in folders.items():
        pooled: dict[str, list] = {}
        for path in sorted(Path(folder).rglob("*_partial_rows.json")) if folder else []:
            pooled.setdefault(path.name, []).extend(json.loads(path.read_text()))
        per_dataset = [gains for gains in map(untaught_gains, pooled.values()) if gains["people"]]
        for key in ("untaught_gain_vs_prior", "untaught_gain_vs_no_imagination", "adapted_untaught_gain_vs_prior",
                    "adapted_untaught_gain_vs_no_imagination"):
            out[prefix + key] = round(float(np.mean([g[key] for g in per_dataset])), 3) if per_dataset else None
    return out


def main() -> None:
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=BATCH)
    parser.add_argument("--report", type=Path, default=None, help="report.json of clifer evaluate-imagination")
    parser.add_argument("--report-names", nargs=2, default=("residual48", "shipped"), metavar=("MODEL", "CAAE"),
                        help="names of the edit model and of the CAAE in the report")
    parser.add_argument("--partial", type=Path, default=None,
                        help="folder of `clifer evaluate --protocol partial` run with the shipped imagination")
    parser.add_argument("--warp-partial", type=Path, default=None,
                        help="the same, run with --imaginer a landmark warp fitted without the evaluated people "
                             "(or a folder of such runs, one per --hold-out-fold, pooled)")
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')}" if gpus else "CPU"
    residual = measure(ImaginationConfig(48, 32, 50, "residual"), args.repeats, args.train_batch)
    caae = measure(ImaginationConfig(), args.repeats, args.train_batch)
    spec = measure(ImaginationConfig(image_size=96, width=64), args.repeats, args.train_batch)
    warp_per_s = measure_warp(args.repeats)
    print(f"{'landmark warp 48px (no network)':36s} imagined_faces_per_s={warp_per_s:.1f}")
    for name, numbers in (("residual 48px width 32", residual), ("caae 64px width 32 (shipped before)", caae),
                          ("spec caae 96px width 64 (baseline)", spec)):
        print(f"{name:36s} " + "  ".join(f"{k}={v:.1f}" for k, v in numbers.items()))
    summary = {**{k: round(v, 1) for k, v in residual.items()}, **{f"caae_{k}": round(v, 1) for k, v in caae.items()},
               "speedup_vs_spec_imagine": round(residual["imagined_faces_per_s"] / spec["imagined_faces_per_s"], 2),
               "speedup_vs_spec_reencode": round(residual["reencoded_latents_per_s"] / spec["reencoded_latents_per_s"], 2),
               "speedup_vs_spec_train": round(residual["train_images_per_s"] / spec["train_images_per_s"], 2),
               "landmark_warp_imagined_faces_per_s": round(warp_per_s, 1),
               "landmark_warp_vs_residual_imagine": round(warp_per_s / residual["imagined_faces_per_s"], 3),
               **quality(args.report, *args.report_names),
               **untaught({"": args.partial, "landmark_warp_": args.warp_partial}), "device": device, "batch": BATCH, "train_batch": args.train_batch}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
