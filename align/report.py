"""Reports: `report.md` with PNG plots next to it in the run directory.

Plot helpers take plain lists and a path so every command (rm, strength, ppo, eval) shares them.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.training.rundir import RunDir


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported on first plot: importing a domain (which
    imports its demo and so this module) must not need matplotlib, e.g. in the COMET environment."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close a figure."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
    return path


def plot_curves(metrics: list[dict[str, Any]], keys: Sequence[str], path: Path, title: str) -> Path | None:
    """One panel per metric key against `step`; keys never logged are left out. None if nothing to plot."""
    present = [k for k in keys if any(r.get(k) is not None for r in metrics)]
    if not present:
        return None
    figure, axes = pyplot().subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for axis, key in zip(axes[0], present):
        points = [(r["step"], r[key]) for r in metrics if r.get(key) is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    return save_figure(figure, path)


def plot_histogram(values: Sequence[float], path: Path, title: str, xlabel: str, bins: int = 40,
                   vline: float | None = 0.0) -> Path:
    figure, axis = pyplot().subplots(figsize=(5.5, 3.4))
    axis.hist(list(values), bins=bins, color="#4C72B0", alpha=0.85)
    if vline is not None:
        axis.axvline(vline, color="black", linestyle="--", linewidth=1)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("pairs")
    return save_figure(figure, path)


def summary_table(summary: dict[str, Any]) -> str:
    rows = ["| key | value |", "|---|---|"]
    for key, value in summary.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        rows.append(f"| `{key}` | {shown} |")
    return "\n".join(rows)


def write_report(run: RunDir, title: str, sections: list[tuple[str, str, Path | None]]) -> Path:
    """Write `report.md`: a title and (heading, markdown text, optional image) sections."""
    lines = [f"# {title}", ""]
    for heading, text, image in sections:
        lines += [f"## {heading}", ""]
        if text:
            lines += [text, ""]
        if image is not None:
            lines += [f"![{heading}]({Path(image).name})", ""]
    path = run.path / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_rm_report(run: RunDir, summary: dict[str, Any], eval_reward_gaps) -> Path:
    """Training curves, the held-out reward-gap histogram and the summary of an `align rm` run."""
    metrics = run.read_metrics()
    curves = plot_curves(metrics, ["loss", "accuracy", "reward_gap", "eval_accuracy"], run.path / "training.png",
                         "reward-model training")
    sections: list[tuple[str, str, Path | None]] = [("Training curves", "", curves)]
    if len(eval_reward_gaps):
        gaps = [float(g) for g in eval_reward_gaps]
        histogram = plot_histogram(gaps, run.path / "eval_reward_gaps.png",
                                   "held-out r(chosen) − r(rejected)", "reward gap")
        correct = sum(g > 0 for g in gaps)
        sections.append(("Held-out reward gaps", f"{correct} of {len(gaps)} pairs ranked correctly.", histogram))
    sections.append(("Summary", summary_table(summary), None))
    return write_report(run, "Reward model", sections)
