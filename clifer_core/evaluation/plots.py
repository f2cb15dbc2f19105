"""PNG plots of protocol results: score per step per condition, with 95% t-interval bands (docs/design.md §5.5)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clifer_core.evaluation import metrics
from clifer_core.evaluation.report import CONDITION_NAMES, CONDITION_ORDER, memory_of

PANELS = (("all_seen", "episodic"), ("overall", "episodic"), ("all_seen", "semantic"), ("overall", "semantic"))


def step_curves(rows: Sequence[dict], condition: str, test_set: str, memory: str, metric: str):
    """Steps, mean and 95% t half-width over runs of ``metric`` at each step."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if (row["condition"] == condition and row["test_set"] == test_set and row["memory"] == memory
                and row["metric"] == metric):
            by_step[row["step"]].append(row["value"])
    steps = sorted(by_step)
    stats = [metrics.mean_sd_ci(by_step[s]) for s in steps]
    return np.array(steps), np.array([s[0] for s in stats]), np.nan_to_num(np.array([s[2] for s in stats]))


def plot_protocol(rows: Sequence[dict], dataset: str, protocol: str, metric: str, path: str | os.PathLike) -> Path:
    """One figure: G-EM and G-SM on *all seen* and *overall*, a line and band per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["dataset"] == dataset and r["protocol"] == protocol]
    conditions = [c for c in CONDITION_ORDER if any(r["condition"] == c for r in rows)]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, sharey=True)
    colours = dict(zip(CONDITION_ORDER, ("black", "tab:gray", "tab:blue", "tab:orange", "tab:green")))
    for axis, (test_set, memory) in zip(axes.flat, PANELS):
        for condition in conditions:
            if condition == "population":
                value = np.nanmean([r["value"] for r in rows if r["condition"] == "population"
                                    and r["test_set"] == test_set and r["metric"] == metric])
                axis.axhline(value, color=colours[condition], linestyle="--", linewidth=1,
                             label=CONDITION_NAMES[condition])
                continue
            steps, mean, half_width = step_curves(rows, condition, test_set, memory_of(condition, memory), metric)
            if not len(steps):
                continue
            axis.plot(steps, mean, marker="o", color=colours[condition], label=CONDITION_NAMES[condition])
            axis.fill_between(steps, mean - half_width, mean + half_width, color=colours[condition], alpha=0.2)
        axis.set_title(f"{memory} memory, {test_set.replace('_', ' ')}")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("step (classes taught)")
    for axis in axes[:, 0]:
        axis.set_ylabel(metric.replace("_", "-"))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    figure.suptitle(f"{dataset}, {protocol} protocol: {metric.replace('_', '-')} per step (mean, 95% t-interval)")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
