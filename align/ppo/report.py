"""The report of an `align ppo` run: training curves and the summary."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from align.report import plot_curves, summary_table, write_report
from align.training.rundir import RunDir

CURVES = {
    "reward.png": ("reward and KL", ["reward", "reward_normalized", "kl", "kl_coef"]),
    "policy.png": ("policy", ["policy_loss", "kl_loss", "advantage_abs", "policy_clipfrac", "approx_kl", "entropy",
                              "response_length"]),
    "critic.png": ("critic", ["value_loss", "value_clipfrac", "explained_variance", "values"]),
    "time.png": ("seconds per step", ["step_seconds", "generation_seconds", "scoring_seconds"]),
}
"""A figure whose keys were never logged (the critic's, in a critic-free run) is left out."""


def write_ppo_report(run: RunDir, summary: dict[str, Any]) -> Path:
    metrics = run.read_metrics()
    sections: list[tuple[str, str, Path | None]] = []
    if summary.get("stopped_early"):
        sections.append(("Stopped early", f"**{summary.get('stop_reason')}**", None))
    part_keys = sorted({k for r in metrics for k in r if k.startswith("reward_") and k != "reward_normalized"})
    for file_name, (title, keys) in CURVES.items():
        figure = plot_curves(metrics, keys, run.path / file_name, title)
        if figure is not None:
            sections.append((title.capitalize(), "", figure))
    if part_keys:
        sections.append(("Reward parts", "", plot_curves(metrics, part_keys[:6], run.path / "reward_parts.png",
                                                         "reward parts")))
    before = {k[len("eval_before_"):]: v for k, v in summary.items() if k.startswith("eval_before_")}
    after = {k[len("eval_after_"):]: v for k, v in summary.items() if k.startswith("eval_after_")}
    if before:
        temperature, samples = summary.get("eval_temperature", 0.0), summary.get("eval_samples", 1)
        how = "greedy" if not temperature else f"{samples} sampled per prompt at T={temperature:g}"
        rows = [f"| held-out ({how}) | before | after |", "|---|---|---|"]
        for key, value in before.items():
            rows.append(f"| `{key}` | {_fmt(value)} | {_fmt(after.get(key))} |")
        sections.append((f"Held-out prompts, {how}", "\n".join(rows), None))
    sections.append(("Summary", summary_table(summary), None))
    advantage = summary.get("advantage", "gae")
    title = "PPO-max run" if advantage == "gae" else f"Critic-free PPO run ({advantage} advantages)"
    return write_report(run, title, sections)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
