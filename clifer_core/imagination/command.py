"""``clifer train-imagination``: command-line front end of :mod:`clifer_core.imagination.training`."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from clifer_core.imagination.data import HELD_OUT_EVERY, HELD_OUT_START
from clifer_core.imagination.networks import ARCHITECTURES, EDIT_ARCHITECTURES, ImaginationConfig
from clifer_core.imagination.training import (DEFAULT_DATASETS, EDIT_DATASETS, PREVIEW_PEOPLE, Trainer,
                                              default_loss_weights)

WARP = "landmark_warp"
WARP_DATASETS = ("taiwanese", "ckplus", "yale")
"""The warp learns each person's change between their own expressions, so only datasets that name people."""
POSED_REPEAT = 4
"""How often the posed datasets (named people, same-person partners) are repeated beside FER2013 in an epoch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--architecture", choices=ARCHITECTURES + (WARP,), default="caae",
                        help="caae: G draws the face (the paper's model); mask / residual: the imagined face is an "
                             "edit of the input, through an edit mask or by adding G's expression change; "
                             f"{WARP}: no network, the training people's mean landmark and grey change, applied by "
                             "warping the face (fitted in seconds; docs/imagination.md)")
    parser.add_argument("--data", nargs="+", default=None,
                        help="dataset names under the data folder (fer2013, taiwanese, ckplus, yale) or folders "
                             "(those layouts, or <subject>/<expression>/*.png); default: "
                             f"{' '.join(DEFAULT_DATASETS)} (caae), {' '.join(EDIT_DATASETS)} (mask, residual)")
    parser.add_argument("--posed-repeat", type=int, default=POSED_REPEAT,
                        help="with fer2013 in --data: repeat the other datasets this often per epoch")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="batches per epoch from an endless shuffled stream (default: one pass)")
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
    parser.add_argument("--translation-weight", type=float, default=None,
                        help="weight of the same-person translation loss (0 turns it off; default 1)")
    parser.add_argument("--perceptual-weight", type=float, default=None,
                        help="weight of the FER2013 perceptual loss (0 turns it off; default 0.2 caae, 0 mask/residual)")
    parser.add_argument("--cycle-weight", type=float, default=None, help="mask/residual: weight of the cycle back (default 1)")
    parser.add_argument("--expression-weight", type=float, default=None,
                        help="mask/residual: weight of D_cls reading the target expression in the edited face "
                             "(default 0.5)")
    parser.add_argument("--mask-weight", type=float, default=None,
                        help="mask: weight of the mask's sparsity and smoothness terms (default 0.02 each)")
    parser.add_argument("--deterministic", action="store_true",
                        help="bit-reproducible training with --seed: deterministic kernels, one thread per op (slower)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder has a checkpoint")
    parser.add_argument("--no-hold-out", action="store_true", help="train on every subject (no evaluation people)")
    parser.add_argument("--hold-out-fold", type=int, default=HELD_OUT_START, choices=range(HELD_OUT_EVERY),
                        help="which sixth of each dataset's people (sorted by id) is held out; the default is the "
                             "fixed split of every report, the others give leave-fold-out models for evaluating "
                             "every person (cheap for the landmark warp)")


def run(args: argparse.Namespace) -> int:
    if args.deterministic:
        from clifer_core.tensorflow_startup import deterministic_tensorflow

        deterministic_tensorflow()
    import keras

    from clifer_core.imagination.data import FER2013_NAME, FaceSet, cache_dir, load_training_set, split_by_subject

    def log(message: str) -> None:
        print(message, flush=True)

    if args.architecture == WARP:
        args.data = args.data or list(WARP_DATASETS)
    else:
        args.data = args.data or list(EDIT_DATASETS if args.architecture in EDIT_ARCHITECTURES else DEFAULT_DATASETS)
    parts = []
    for dataset in args.data:
        part = load_training_set(dataset, args.image_size)
        log(f"{dataset}: {len(part)} face crops of {len(set(part.subjects))} people")
        parts.append(part)
    everything = FaceSet.concatenate(parts)
    train_set, held_out = (everything, everything.subset(np.zeros(len(everything), bool))) if args.no_hold_out \
        else split_by_subject(everything, args.hold_out_fold)
    if args.architecture == WARP:
        return fit_warp(args, train_set, held_out, log)
    config = ImaginationConfig(args.image_size, args.width, args.latent_dim, args.architecture)
    keras.utils.set_random_seed(args.seed)
    distinct_images = len(train_set)
    named_people = {s for s in train_set.subjects.tolist() if not s.startswith(f"{FER2013_NAME}:")}
    if FER2013_NAME in args.data and args.posed_repeat > 1:
        posed = train_set.subset(~np.char.startswith(train_set.subjects.astype(str), f"{FER2013_NAME}:"))
        train_set = FaceSet.concatenate([train_set] + [posed] * (args.posed_repeat - 1))
    log(f"training on {len(train_set)} crops ({len(set(train_set.subjects))} subject ids); "
        f"held out {len(set(held_out.subjects))} people: {', '.join(sorted(set(held_out.subjects)))}")
    preview_source = held_out if len(held_out) else train_set
    people = sorted(set(preview_source.subjects))
    chosen = [people[i] for i in np.unique(np.linspace(0, len(people) - 1, PREVIEW_PEOPLE).round().astype(int))]
    preview_faces = np.stack([preview_source.faces[np.flatnonzero(preview_source.subjects == s)[0]] for s in chosen])
    out_dir = args.out or cache_dir() / "run"
    weights = default_loss_weights(config.architecture)
    chosen_weights = {"translation": args.translation_weight, "perceptual": args.perceptual_weight,
                      "cycle": args.cycle_weight, "image_classification": args.expression_weight,
                      "mask_sparsity": args.mask_weight, "mask_smoothness": args.mask_weight}
    weights = replace(weights, **{k: v for k, v in chosen_weights.items() if v is not None})
    trainer = Trainer(config, weights, learning_rate=args.learning_rate)
    checkpoint = out_dir / "checkpoint.npz"
    if checkpoint.is_file() and not args.no_resume:
        trainer.load_checkpoint(checkpoint)
        log(f"resumed from {checkpoint} at epoch {trainer.epoch}")
    trainer.fit(train_set, args.epochs, args.batch_size, out_dir, preview_faces, args.seed, log, args.steps_per_epoch)
    metadata = {"arguments": {k: str(v) for k, v in vars(args).items() if not k.startswith("_")},
                "loss_weights": asdict(weights), "held_out_subjects": sorted(set(held_out.subjects.tolist())),
                "train_images": distinct_images, "train_people": len(named_people)}
    imaginer = trainer.imaginer(metadata)
    final = imaginer.save(out_dir / "imagination.npz")
    log(f"saved {final}")
    if args.export:
        log(f"exported {imaginer.save(args.export, precision='float16')}")
    return 0


def fit_warp(args: argparse.Namespace, train_set, held_out, log) -> int:
    """Fit the landmark warp with the mean grey change (its chosen strengths) on ``train_set`` and save it."""
    import time

    from clifer_core.imagination.data import cache_dir
    from clifer_core.imagination.landmark_warp import WARP_AND_CHANGE_STRENGTHS, LandmarkWarpImaginer

    warp, texture = WARP_AND_CHANGE_STRENGTHS
    log(f"fitting the landmark warp on {len(train_set)} crops of {len(set(train_set.subjects))} people; "
        f"held out {len(set(held_out.subjects))} people: {', '.join(sorted(set(held_out.subjects)))}")
    started = time.perf_counter()
    imaginer = LandmarkWarpImaginer(args.image_size, warp, texture_strength=texture).fit([train_set])
    imaginer.metadata.update(held_out_subjects=sorted(set(held_out.subjects.tolist())), train_images=len(train_set),
                             train_people=len(set(train_set.subjects.tolist())), datasets=list(args.data),
                             fit_seconds=round(time.perf_counter() - started, 1))
    out_dir = args.out or cache_dir() / "warp"
    log(f"fitted in {imaginer.metadata['fit_seconds']} s; saved {imaginer.save(out_dir / 'imagination.npz')}")
    if args.export:
        log(f"exported {imaginer.save(args.export)}")
    return 0
