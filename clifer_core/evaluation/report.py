"""Turn tidy protocol rows into a CSV, Markdown tables and PNG plots.

Rows are dicts with ``dataset, protocol, condition, order, subject, step,
test_set, memory, metric, value`` (see :mod:`clifer_core.evaluation.protocols`).
A *run* is one (dataset, protocol, condition, order, subject); scores are
summarised per run first (its last step, or its mean over steps), then as
mean ± sd over runs (subjects x orders), with the sd of the per-order means
beside it. The paper's table form (docs/design.md §5.5) reads "episodic F1" as G-EM's
micro-F1 on *all seen* and "semantic F1" as G-SM's micro-F1 on *overall*,
both averaged over steps.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from clifer_core.evaluation import metrics

COLUMNS = ("dataset", "protocol", "condition", "order", "subject", "step", "test_set", "memory", "metric", "value")
CONDITION_NAMES = {"mlp": "MLP", "gdm": "GDM", "replay": "GDM+Replay", "imagination": "GDM+Imagination",
                   "population": "Population (FER2013)"}
CONDITION_ORDER = ("population", "mlp", "gdm", "replay", "imagination")


def write_csv(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "value": f"{row['value']:.6g}"})
    return path


def read_csv(path: str | os.PathLike) -> list[dict]:
    with Path(path).open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        row["order"], row["step"], row["value"] = int(row["order"]), int(row["step"]), float(row["value"])
    return rows


def _run_key(row: dict) -> tuple:
    return row["dataset"], row["protocol"], row["condition"], row["order"], row["subject"]


def per_run(rows: Sequence[dict], test_set: str, memory: str, metric: str, reduce: str = "final") -> dict[tuple, float]:
    """``{run: value}`` at the run's last step (``final``) or averaged over its steps (``mean``)."""
    series: dict[tuple, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row["test_set"] == test_set and row["memory"] == memory and row["metric"] == metric:
            series[_run_key(row)][row["step"]] = row["value"]
    if reduce == "final":
        return {run: steps[max(steps)] for run, steps in series.items()}
    return {run: float(np.mean(list(steps.values()))) for run, steps in series.items()}


def memory_of(condition: str, memory: str) -> str:
    """The memory column a condition reports under (the MLP and the population model have one)."""
    return {"mlp": "mlp", "population": "fer2013"}.get(condition, memory)


def summary(values_by_run: dict[tuple, float]) -> dict:
    """Mean, sd and 95% t half-width over runs, and the sd of the per-order means."""
    values = list(values_by_run.values())
    mean, sd, half_width = metrics.mean_sd_ci(values)
    by_order: dict[int, list[float]] = defaultdict(list)
    for run, value in values_by_run.items():
        by_order[run[3]].append(value)
    order_means = [np.nanmean(v) for v in by_order.values()]
    order_sd = float(np.std(order_means, ddof=1)) if len(order_means) > 1 else math.nan
    return {"mean": mean, "sd": sd, "ci": half_width, "order_sd": order_sd, "runs": len(values)}


def _select(rows, dataset, protocol, condition):
    return [r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol and r["condition"] == condition]


def _groups(rows) -> list[tuple[str, str, list[str]]]:
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        found[(row["dataset"], row["protocol"])].add(row["condition"])
    return [(d, p, [c for c in CONDITION_ORDER if c in conditions]) for (d, p), conditions in sorted(found.items())]


def _cell(stats: dict) -> str:
    if not stats["runs"] or not np.isfinite(stats["mean"]):
        return "–"
    return f"{stats['mean']:.2f} ± {stats['sd']:.2f}" if np.isfinite(stats["sd"]) else f"{stats['mean']:.2f}"


CL_METRICS = ("average_accuracy", "average_incremental_accuracy", "backward_transfer", "forgetting", "forward_transfer")


def markdown_tables(rows: Sequence[dict]) -> str:
    """The paper-form table, the macro-F1 table and the continual-learning summaries, as Markdown."""
    lines = ["| dataset | protocol | condition | episodic F1 (all seen) | semantic F1 (overall) |",
             "|---|---|---|---|---|"]
    groups = _groups(rows)
    for dataset, protocol, conditions in groups:
        for condition in conditions:
            selected = _select(rows, dataset, protocol, condition)
            reduce = "final" if condition == "population" else "mean"
            episodic = summary(per_run(selected, "all_seen", memory_of(condition, "episodic"), "accuracy", reduce))
            semantic = summary(per_run(selected, "overall", memory_of(condition, "semantic"), "accuracy", reduce))
            lines.append(f"| {dataset} | {protocol} | {CONDITION_NAMES[condition]} | {_cell(episodic)} | {_cell(semantic)} |")
    lines += ["", "| dataset | protocol | condition | memory | macro-F1 all seen, final | macro-F1 overall, final "
              "| macro-F1 overall, mean over steps | accuracy overall, mean over steps | sd over orders (overall macro, mean) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for dataset, protocol, conditions in groups:
        for condition in conditions:
            selected = _select(rows, dataset, protocol, condition)
            for memory in dict.fromkeys(memory_of(condition, m) for m in ("episodic", "semantic")):
                cells = [summary(per_run(selected, "all_seen", memory, "macro_f1", "final")),
                         summary(per_run(selected, "overall", memory, "macro_f1", "final")),
                         summary(per_run(selected, "overall", memory, "macro_f1", "mean")),
                         summary(per_run(selected, "overall", memory, "accuracy", "mean"))]
                order_sd = cells[2]["order_sd"]
                lines.append(f"| {dataset} | {protocol} | {CONDITION_NAMES[condition]} | {memory} | "
                             + " | ".join(_cell(c) for c in cells) + f" | {order_sd:.3f} |")
    cl_rows = [r for r in rows if r["test_set"] == "cl"]
    if cl_rows:
        lines += ["", "| dataset | protocol | condition | memory | average accuracy | average incremental accuracy "
                  "| backward transfer | forgetting | forward transfer |", "|---|---|---|---|---|---|---|---|---|"]
        for dataset, protocol, conditions in groups:
            for condition in conditions:
                selected = _select(cl_rows, dataset, protocol, condition)
                for memory in sorted({r["memory"] for r in selected}):
                    own = [r for r in selected if r["memory"] == memory]
                    cells = [summary({_run_key(r): r["value"] for r in own if r["metric"] == name})
                             for name in CL_METRICS]
                    lines.append(f"| {dataset} | {protocol} | {CONDITION_NAMES[condition]} | {memory} | "
                                 + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "| dataset | protocol | condition | training seconds per run | episodic nodes, final "
              "| semantic nodes, final |", "|---|---|---|---|---|---|"]
    for dataset, protocol, conditions in groups:
        for condition in conditions:
            if condition == "population":
                continue
            selected = _select(rows, dataset, protocol, condition)
            seconds: dict[tuple, float] = defaultdict(float)
            for row in selected:
                if row["metric"] == "train_seconds":
                    seconds[_run_key(row)] += row["value"]
            nodes = [summary(per_run(selected, "-", memory, "nodes", "final")) for memory in ("episodic", "semantic")]
            lines.append(f"| {dataset} | {protocol} | {CONDITION_NAMES[condition]} | {_cell(summary(seconds))} | "
                         + " | ".join(_cell(c) for c in nodes) + " |")
    return "\n".join(lines) + "\n"
