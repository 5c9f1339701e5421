"""`align iterate`'s outputs, rewritten after every round: summary.json (flat `round<r>_<figure>` keys) and
report.md (one row per round, the judges' win / tie / lose with 95% intervals and the sign test)."""
from __future__ import annotations

import math
from typing import Any

from align.report import write_report
from align.training.rundir import RunDir

COLUMNS = [("reward", "PPO reward (last rollout, round RM)"), ("kl", "KL to the round's start policy"),
           ("eval_reward", "greedy held-out reward (round RM)"), ("eval_reward_rm0", "same, round-0 RM"),
           ("rm_eval_accuracy", "RM held-out pair accuracy"), ("samples_difference_before", "J on samples, RM before"),
           ("samples_difference", "J on samples, RM after"), ("samples_score_spread_before", "spread before"),
           ("samples_score_spread", "spread after")]


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def round_table(reports: list[dict]) -> str:
    lines = ["| round | " + " | ".join(key for key, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for report in reports:
        lines.append(f"| {report['round']} | " + " | ".join(_shown(report.get(key)) for key, _ in COLUMNS) + " |")
    legend = "; ".join(f"`{key}`: {text}" for key, text in COLUMNS)
    return "\n".join(lines) + "\n\n" + legend


def judge_table(reports: list[dict]) -> str:
    prefixes = sorted({key.rsplit("_wins", 1)[0] for report in reports for key in report
                       if key.startswith("judge_") and key.endswith("_wins")})
    if not prefixes:
        return "No judge ran."
    lines = ["| round | judge, A = this round vs B | win / tie / lose | win rate (95% CI) | sign test p |",
             "|---|---|---|---|---|"]
    for report in reports:
        for prefix in prefixes:
            if f"{prefix}_wins" in report:
                lines.append(f"| {report['round']} | {judge_row(report, prefix)} |")
    return "\n".join(lines)


def judge_row(report: dict, prefix: str) -> str:
    figures = {key.removeprefix(prefix + "_"): value for key, value in report.items() if key.startswith(prefix + "_")}
    excluded = f", excluded {figures['excluded']}" if figures.get("excluded") else ""
    return (f"{prefix.removeprefix('judge_').replace('_vs_', ' vs ')} | {figures['wins']} / {figures['ties']} / "
            f"{figures['losses']} (n={figures['n']}{excluded}) | {_shown(figures['win_rate'])} "
            f"({_shown(figures['win_rate_ci95_low'])}–{_shown(figures['win_rate_ci95_high'])}) | "
            f"{_shown(figures['sign_test_p'])}")


def write_outputs(run: RunDir, config, reports: list[dict], seconds: dict[str, float],
                  final: dict | None = None) -> dict:
    """summary.json and report.md from the rounds finished so far; returns the summary."""
    summary: dict[str, Any] = {"rounds": config.rounds, "rounds_finished": max((r["round"] for r in reports),
                                                                                default=-1),
                               "rm_update": config.rm_update, "samples_per_prompt": config.samples_per_prompt}
    for report in reports:
        summary.update({f"round{report['round']}_{key}": value for key, value in report.items() if key != "round"})
    summary["seconds"] = round(sum(seconds.values()), 3)
    summary.update(final or {})
    timing = "\n".join(f"- `{stage}`: {value:.1f} s" for stage, value in seconds.items())
    summary["report"] = str(write_report(run, f"Iterative RLHF ({config.rm_update} RM updates)", [
        ("Rounds", round_table(reports), None), ("Judges", judge_table(reports), None),
        ("Time per stage", timing, None)]))
    run.write_summary(summary)
    return summary
