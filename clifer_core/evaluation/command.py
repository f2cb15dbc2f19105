"""``clifer evaluate``: run the protocols on datasets and write CSV, Markdown and PNG results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clifer_core.evaluation.protocols import CONDITIONS, PROTOCOLS


def _memory_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", nargs="+", required=True,
                        help="dataset names (taiwanese, ckplus, yale) under $CLIFER_DATA_DIR, or folders")
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS + ("partial",), default=["fixed"],
                        help="faithful / fixed: the paper's class-incremental protocols; partial: partial teaching "
                             "(every fold, 1/3/all shots, CLIFER's fused estimate beside the prior, 1-NN, "
                             "1-NN + prior and a population classifier + the person)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--orders", nargs="+", type=int, default=None, help="class-order indices (default: all six)")
    parser.add_argument("--subjects", nargs="+", default=None, help="only these subjects (e.g. tw01 tw02)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for subjects x orders")
    parser.add_argument("--features", choices=("fer", "caae", "fer+shape"), default="fer",
                        help="what the memories learn; fer+shape (the learner's default) only with --protocol partial")
    parser.add_argument("--imagination", choices=("image", "latent"), default="image",
                        help="image: imagine faces from the taught crops; latent: re-encode G-EM prototypes (caae)")
    parser.add_argument("--no-imagination-offset", action="store_true",
                        help="use imagined faces' features as they are, not as offsets from the real face")
    parser.add_argument("--imaginer", default=None, help="imagination model (default: the packaged one)")
    parser.add_argument("--feature-scale", type=float, default=None,
                        help="FER features: L2 norm x this (default: the learner's)")
    parser.add_argument("--memory-param", action="append", type=_memory_param, default=[], metavar="NAME=VALUE",
                        help="GrowingDualMemory hyperparameter (default: the learner's memory_params)")
    parser.add_argument("--fold", type=int, default=0, help="fixed protocol: which group of each cell is held out")
    parser.add_argument("--out", type=Path, default=Path("out/evaluation"), help="folder for CSV, Markdown and PNGs")
    parser.add_argument("--cache", type=Path, default=None, help="crop/feature cache (default ~/.cache/clifer/evaluation)")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from clifer_core.data.cache import ArrayCache, default_cache_dir
    from clifer_core.evaluation.plots import plot_protocol
    from clifer_core.evaluation.protocols import RunConfig
    from clifer_core.evaluation.report import markdown_tables, write_csv
    from clifer_core.evaluation.runner import evaluate

    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    cache = ArrayCache(None if args.no_cache else (args.cache or default_cache_dir()))
    defaults = RunConfig()
    config = RunConfig(memory_params={**defaults.memory_params, **dict(args.memory_param)},
                       feature_scale=defaults.feature_scale if args.feature_scale is None else args.feature_scale,
                       imagination_mode=args.imagination, imagination_offset=not args.no_imagination_offset,
                       imaginer_file=args.imaginer)
    rows, notes = [], []
    if "partial" in args.protocol:
        status = run_partial(args, config, cache)
        if args.protocol == ["partial"]:
            return status
    for dataset in args.dataset:
        for protocol in [p for p in args.protocol if p != "partial"]:
            try:
                result = evaluate(dataset, protocol, args.conditions, args.orders, args.subjects, args.jobs,
                                  args.features, config, args.fold, cache, show_progress=not args.quiet)
            except (ValueError, FileNotFoundError) as error:
                print(f"clifer evaluate: {dataset}/{protocol}: {error}", file=sys.stderr)
                notes.append(f"{dataset} / {protocol}: not run ({error})")
                continue
            rows += result.rows
            notes.append(f"{dataset} / {protocol}: {result.subjects} subjects, classes {', '.join(result.classes)}, "
                         f"{len(result.orders)} orders, {result.train_images} taught / {result.test_images} tested "
                         f"images; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    if not rows:
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "results.csv")
    for dataset, protocol in sorted({(r["dataset"], r["protocol"]) for r in rows}):
        for metric in ("accuracy", "macro_f1"):
            plot_protocol(rows, dataset, protocol, metric, args.out / f"{dataset}_{protocol}_{metric}.png")
    document = markdown_tables(rows) + "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    (args.out / "results.md").write_text(document)
    print(document)
    print(f"wrote {args.out}/results.csv, results.md and plots", file=sys.stderr)
    return 0


def run_partial(args: argparse.Namespace, config, cache) -> int:
    """The partial-teaching protocol on each dataset, every fold: Markdown, PNG and tidy JSON rows."""
    from clifer_core.evaluation import partial
    from clifer_core.evaluation.runner import evaluate_partial, imagination_held_out

    args.out.mkdir(parents=True, exist_ok=True)
    status = 1
    for dataset in args.dataset:
        try:
            held_out = imagination_held_out(dataset, args.imaginer)
            result = evaluate_partial(dataset, orders=args.orders, subjects=args.subjects, imagination_subjects=held_out,
                                      config=config, cache=cache, show_progress=not args.quiet, features=args.features)
        except (ValueError, FileNotFoundError) as error:
            print(f"clifer evaluate: {dataset}/partial: {error}", file=sys.stderr)
            continue
        name = dataset if "/" not in dataset else Path(dataset).name
        document = partial.markdown(result.rows, result.fitted, title=f"## {name}, partial teaching") + (
            f"\n- {len(result.subjects)} people, {result.folds} folds, classes {', '.join(result.classes)}; fusion weights "
            f"cross-fitted over people; imagination only on {', '.join(result.imagination_subjects) or 'nobody'} "
            f"(people the imagination model never saw); seconds: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()) + "\n")
        (args.out / f"{name}_partial.md").write_text(document)
        (args.out / f"{name}_partial_rows.json").write_text(json.dumps(result.rows))
        partial.plot(result.rows, args.out / f"{name}_partial_macro_f1.png", title=f"{name},")
        print(document)
        print(json.dumps(partial.headline(result.rows, result.fitted)))
        status = 0
    return status
