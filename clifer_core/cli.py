"""The ``clifer`` command: one entry point, one sub-command per job.

Each sub-command lives in the module that owns the job; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. This file only lists them,
and imports a module only when its sub-command runs, so ``clifer --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "calibrate-identity": ("clifer_core.faces.calibrate", "choose the identity distance threshold on a labelled face folder"),
    "evaluate-faces": ("clifer_core.faces.evaluate", "measure face detection and identification on labelled folders"),
    "train-imagination": ("clifer_core.imagination.training", "train the imagination model (CAAE) on face folders"),
    "evaluate-imagination": ("clifer_core.imagination.evaluation", "measure an imagination model on held-out people"),
    "evaluate": ("clifer_core.evaluation.command", "run the CLIFER protocols (faithful, fixed) on datasets; CSV, tables, plots"),
    "bag": ("clifer_ros.bags", "rosbag2 workflows: make an evaluation bag, eval, play, record"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clifer", description="CLIFER: continual facial-expression learning")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    known = parser.parse_args(argv[:1])
    module = importlib.import_module(known._module)
    command_parser = argparse.ArgumentParser(prog=f"clifer {known.command}", description=SUBCOMMANDS[known.command][1])
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
