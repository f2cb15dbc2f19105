"""Score per-frame expression predictions and write them as CSV, Markdown and a PNG.

Nothing here knows about ROS or bags: the input is one :class:`FrameResult`
per labelled frame. Frames where no face was reported count against
``coverage`` and are left out of the classification metrics (a separate
``accuracy_all`` counts them as wrong), so detector misses and expression
errors stay distinguishable.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clifer_core.evaluation import metrics
from clifer_core.labels import EXPRESSIONS


@dataclass(frozen=True)
class FrameResult:
    """The ground truth of one labelled frame and what the system said about it."""

    stamp_ns: int
    person_id: str
    expression: str
    predicted: str | None
    confidence: float | None = None
    face_id: str = ""
    taught: bool = False
    """Shown to the learner as a teaching example, so not scored."""
    memory: str = ""
    """Which model answered (``episodic``, ``semantic``, ``prior``); empty when no face was reported."""


@dataclass
class Scores:
    """Classification metrics over one set of frames (all, or one person's)."""

    frames: int
    predicted_frames: int
    coverage: float
    accuracy: float
    accuracy_all: float
    macro_f1: float
    recall: dict[str, float]
    confusion: np.ndarray = field(repr=False)
    """Rows: true expression; columns: predicted; both in :data:`EXPRESSIONS` order."""


def score(results: list[FrameResult]) -> Scores:
    """Accuracy, macro-F1 (over classes present in truth or prediction), per-class recall and confusion,
    computed by :mod:`clifer_core.evaluation.metrics` as ``clifer evaluate`` does."""
    scored = [r for r in results if not r.taught]
    predicted = [r for r in scored if r.predicted is not None]
    y_true = np.array([EXPRESSIONS.index(r.expression) for r in predicted], np.int64)
    y_pred = np.array([EXPRESSIONS.index(r.predicted) for r in predicted], np.int64)
    present = np.unique(y_true)
    recalls = metrics.per_class_recall(y_true, y_pred, present)
    confusion = metrics.confusion_matrix(y_true, y_pred, len(EXPRESSIONS))
    nan = float("nan")
    return Scores(
        frames=len(scored),
        predicted_frames=len(predicted),
        coverage=len(predicted) / len(scored) if scored else nan,
        accuracy=metrics.accuracy(y_true, y_pred),
        accuracy_all=int(np.trace(confusion)) / len(scored) if scored else nan,
        macro_f1=metrics.macro_f1(y_true, y_pred),
        recall={EXPRESSIONS[i]: float(r) for i, r in zip(present, recalls)},
        confusion=confusion,
    )


def score_by_person(results: list[FrameResult]) -> dict[str, Scores]:
    people = sorted({r.person_id for r in results})
    return {person: score([r for r in results if r.person_id == person]) for person in people}


def _summary_row(scope: str, scores: Scores) -> dict:
    row = {
        "scope": scope, "frames": scores.frames, "predicted_frames": scores.predicted_frames,
        "coverage": f"{scores.coverage:.4f}", "accuracy": f"{scores.accuracy:.4f}",
        "accuracy_all": f"{scores.accuracy_all:.4f}", "macro_f1": f"{scores.macro_f1:.4f}",
    }
    row.update({f"recall_{name}": f"{scores.recall[name]:.4f}" if name in scores.recall else "" for name in EXPRESSIONS})
    return row


def write_report(out_dir: str | Path, results: list[FrameResult], title: str) -> dict[str, Path]:
    """Write ``frames.csv``, ``summary.csv``, ``report.md`` and ``report.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overall, by_person = score(results), score_by_person(results)
    paths = {name: out_dir / name for name in ("frames.csv", "summary.csv", "report.md", "report.png")}
    with paths["frames.csv"].open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["stamp_ns", "person_id", "expression", "predicted", "confidence", "memory", "face_id", "taught"])
        for r in results:
            confidence = "" if r.confidence is None else f"{r.confidence:.4f}"
            writer.writerow([r.stamp_ns, r.person_id, r.expression, r.predicted or "", confidence, r.memory, r.face_id,
                             int(r.taught)])
    rows = [_summary_row("overall", overall)] + [_summary_row(p, s) for p, s in by_person.items()]
    with paths["summary.csv"].open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["report.md"].write_text(_markdown(title, overall, by_person))
    _plot(paths["report.png"], title, overall, by_person)
    return paths


def _markdown(title: str, overall: Scores, by_person: dict[str, Scores]) -> str:
    lines = [
        f"# {title}", "",
        f"Scored frames: {overall.frames}; with a face reported: {overall.predicted_frames} "
        f"(coverage {overall.coverage:.1%}).", "",
        "| scope | frames | coverage | accuracy | accuracy (misses wrong) | macro-F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for scope, scores in [("overall", overall), *by_person.items()]:
        lines.append(
            f"| {scope} | {scores.frames} | {scores.coverage:.3f} | {scores.accuracy:.3f} | "
            f"{scores.accuracy_all:.3f} | {scores.macro_f1:.3f} |"
        )
    lines += ["", "## Recall per expression (overall)", "", "| expression | recall |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in overall.recall.items()]
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    lines.append("| true \\ predicted | " + " | ".join(EXPRESSIONS) + " |")
    lines.append("|---|" + "---:|" * len(EXPRESSIONS))
    for name, row in zip(EXPRESSIONS, overall.confusion):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, title: str, overall: Scores, by_person: dict[str, Scores]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.2]})
    rows = overall.confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(overall.confusion, rows, out=np.zeros(overall.confusion.shape), where=rows > 0)
    left.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    left.set_xticks(range(len(EXPRESSIONS)), EXPRESSIONS, rotation=45, ha="right")
    left.set_yticks(range(len(EXPRESSIONS)), EXPRESSIONS)
    for (row, column), count in np.ndenumerate(overall.confusion):
        if count:
            left.text(column, row, str(count), ha="center", va="center", color="white" if normalised[row, column] > 0.5 else "black")
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    left.set_title(f"confusion (accuracy {overall.accuracy:.1%}, macro-F1 {overall.macro_f1:.3f})")
    people = list(by_person)
    right.bar(range(len(people)), [by_person[p].accuracy for p in people], color="tab:blue", label="accuracy")
    right.plot(range(len(people)), [by_person[p].coverage for p in people], "o", color="tab:orange", label="coverage")
    right.set_xticks(range(len(people)), people, rotation=90 if len(people) > 8 else 0)
    right.set_ylim(0, 1.05)
    right.set_title("per person")
    right.legend(loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
