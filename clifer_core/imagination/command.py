"""``clifer train-imagination``: command-line front end of :mod:`clifer_core.imagination.training`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np

from clifer_core.imagination.networks import ImaginationConfig
from clifer_core.imagination.training import DEFAULT_DATASETS, PREVIEW_PEOPLE, LossWeights, Trainer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", default=list(DEFAULT_DATASETS),
                        help="dataset names under the data folder (taiwanese, ckplus, yale) or folders "
                             "(those layouts, or <subject>/<expression>/*.png)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder: checkpoint, TensorBoard logs, per-epoch grids (default ~/.cache/clifer/imagination/run)")
    parser.add_argument("--export", type=Path, default=None, help="also write the trained runtime model here (float16)")
    parser.add_argument("--epochs", type=int, default=22)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32, help="first encoder conv width (the original model: 64)")
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=2048)
    parser.add_argument("--translation-weight", type=float, default=LossWeights.translation,
                        help="weight of the same-person translation loss (0 turns it off)")
    parser.add_argument("--perceptual-weight", type=float, default=LossWeights.perceptual,
                        help="weight of the FER2013 perceptual loss (0 turns it off)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder has a checkpoint")
    parser.add_argument("--no-hold-out", action="store_true", help="train on every subject (no evaluation people)")


def run(args: argparse.Namespace) -> int:
    import keras

    from clifer_core.imagination.data import FaceSet, cache_dir, load_face_set, split_by_subject

    def log(message: str) -> None:
        print(message, flush=True)

    config = ImaginationConfig(args.image_size, args.width, args.latent_dim)
    keras.utils.set_random_seed(args.seed)
    parts = []
    for dataset in args.data:
        part = load_face_set(dataset, config.image_size)
        log(f"{dataset}: {len(part)} face crops of {len(set(part.subjects))} people")
        parts.append(part)
    everything = FaceSet.concatenate(parts)
    train_set, held_out = (everything, everything.subset(np.zeros(len(everything), bool))) if args.no_hold_out \
        else split_by_subject(everything)
    log(f"training on {len(train_set)} crops of {len(set(train_set.subjects))} people; "
        f"held out {len(set(held_out.subjects))} people: {', '.join(sorted(set(held_out.subjects)))}")
    preview_source = held_out if len(held_out) else train_set
    people = sorted(set(preview_source.subjects))
    chosen = [people[i] for i in np.unique(np.linspace(0, len(people) - 1, PREVIEW_PEOPLE).round().astype(int))]
    preview_faces = np.stack([preview_source.faces[np.flatnonzero(preview_source.subjects == s)[0]] for s in chosen])
    out_dir = args.out or cache_dir() / "run"
    weights = LossWeights(translation=args.translation_weight, perceptual=args.perceptual_weight)
    trainer = Trainer(config, weights, learning_rate=args.learning_rate)
    checkpoint = out_dir / "checkpoint.npz"
    if checkpoint.is_file() and not args.no_resume:
        trainer.load_checkpoint(checkpoint)
        log(f"resumed from {checkpoint} at epoch {trainer.epoch}")
    trainer.fit(train_set, args.epochs, args.batch_size, out_dir, preview_faces, args.seed, log)
    metadata = {"arguments": {k: str(v) for k, v in vars(args).items() if not k.startswith("_")},
                "loss_weights": asdict(weights), "held_out_subjects": sorted(set(held_out.subjects.tolist())),
                "train_images": len(train_set), "train_people": len(set(train_set.subjects))}
    imaginer = trainer.imaginer(metadata)
    final = imaginer.save(out_dir / "imagination.npz")
    log(f"saved {final}")
    if args.export:
        log(f"exported {imaginer.save(args.export, precision='float16')}")
    return 0
