"""The ``clifer`` command: one entry point, one sub-command per job.

Each sub-command lives in the module that owns the job; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. The core's own commands are
listed here; packages that build on the core (the ROS shell's ``clifer bag``)
add theirs through the ``clifer.commands`` entry-point group, so the core never
names them. A module is imported only when its sub-command runs, so
``clifer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

COMMAND_GROUP = "clifer.commands"
CORE_COMMANDS: dict[str, tuple[str, str]] = {
    "calibrate-identity": ("clifer_core.evaluation.calibrate_identity", "choose the identity distance threshold on a labelled face folder"),
    "evaluate-faces": ("clifer_core.evaluation.faces", "measure face detection and identification on labelled folders"),
    "train-imagination": ("clifer_core.imagination.command", "train the imagination model (CAAE or edit) on face folders"),
    "evaluate-imagination": ("clifer_core.evaluation.imagination", "measure imagination models on held-out people"),
    "imagine": ("clifer_core.imagination.grid", "imagine the seven expressions of the face in a photo (grid PNG)"),
    "train-population": ("clifer_core.population_training", "train the population model for strangers (fine-tuned FER2013 network x face shape)"),
    "train-adaptation": ("clifer_core.adaptation_training", "train the population classifier the learner fine-tunes on each taught person"),
    "evaluate": ("clifer_core.evaluation.command", "run the CLIFER protocols (faithful, fixed) on datasets; CSV, tables, plots"),
}


def subcommands() -> dict[str, tuple[str, str]]:
    """Core commands plus those registered under ``clifer.commands`` (value: the module; help: its ``HELP``)."""
    commands = dict(CORE_COMMANDS)
    for entry in entry_points(group=COMMAND_GROUP):
        if entry.name not in commands:
            commands[entry.name] = (entry.value, f"(from {entry.dist.name if entry.dist else 'a plug-in'})")
    return commands


def build_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clifer", description="CLIFER: continual facial-expression learning")
    sub_parsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in commands.items():
        sub = sub_parsers.add_parser(name, help=_help_of(module_name, help_text), description=help_text)
        sub.set_defaults(_module=module_name)
    return parser


def _help_of(module_name: str, fallback: str) -> str:
    """A plug-in's ``HELP`` string (its module is small by contract); core commands keep theirs."""
    if module_name in {module for module, _ in CORE_COMMANDS.values()}:
        return fallback
    try:
        return getattr(importlib.import_module(module_name), "HELP", fallback)
    except ImportError as error:
        return f"unavailable: {error}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = subcommands()
    parser = build_parser(commands)
    known = parser.parse_args(argv[:1])
    module = importlib.import_module(known._module)
    help_text = getattr(module, "HELP", commands[known.command][1])
    command_parser = argparse.ArgumentParser(prog=f"clifer {known.command}", description=help_text)
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
