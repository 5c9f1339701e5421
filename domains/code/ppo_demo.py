"""The policy stage of `make demo`: SmolLM2-135M learns from compiler feedback on the code domain.

RLOO (configs/code/rloo_cpu.yaml) on the generated easy tasks with the StepCoder execution reward. The held-out
easy tasks are scored before and after training with the same settings (by default 4 completions per task sampled
at T = 1: the policy as it is used in RL), completion j drawing the same random numbers before and after (common
random numbers, `align.generation.generate`): a completion changes only where the policy did, so the pairing removes
most of the sampling noise. Per task, the pass rate before and after is paired. The change is
tested with an exact sign test over the tasks whose pass rate moved (with one greedy completion per task this is
the exact McNemar test) and comes with a 95% bootstrap interval over tasks; when it is not significant the verdict
says it is noise at this budget instead of claiming an improvement.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from align.config import load_config
from align.eval.stats import bootstrap_mean_interval, sign_test
from align.ppo.config import Config
from align.ppo.train import train_ppo
from align.registry import get_domain

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "code" / "rloo_cpu.yaml"


def compare_pass_rates(before: dict[str, list[bool]], after: dict[str, list[bool]], name: str) -> dict:
    """Per-task pass rates before/after on the same tasks: means, the 95% bootstrap interval of the mean change,
    tasks up / down, the exact sign test over them, and a plain verdict."""
    ids = [i for i in before if i in after]
    rate = {i: (sum(before[i]) / len(before[i]), sum(after[i]) / len(after[i])) for i in ids}
    changes = [a - b for b, a in rate.values()]
    up, down = sum(c > 0 for c in changes), sum(c < 0 for c in changes)
    p_value = sign_test(up, down)
    low, high = bootstrap_mean_interval(changes)
    mean_before = sum(b for b, _ in rate.values()) / len(ids) if ids else None
    mean_after = sum(a for _, a in rate.values()) / len(ids) if ids else None
    if not ids:
        verdict = "no tasks"
    elif p_value < 0.05:
        verdict = "improved" if up > down else "worse"
    else:
        verdict = "no significant change (noise at this budget)"
    return {f"{name}_tasks": len(ids), f"{name}_samples_per_task": len(next(iter(before.values()), [])),
            f"{name}_pass_rate_before": mean_before, f"{name}_pass_rate_after": mean_after,
            f"{name}_change_ci95_low": round(low, 4) if ids else None,
            f"{name}_change_ci95_high": round(high, 4) if ids else None,
            f"{name}_tasks_up": up, f"{name}_tasks_down": down, f"{name}_sign_test_p": p_value,
            f"{name}_verdict": verdict}


def passes_by_task(path: Path) -> dict[str, list[bool]]:
    """eval_before/after.jsonl -> task id -> whether each of its completions passed."""
    passed: dict[str, list[bool]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            passed[record["id"]].append((record.get("parts") or {}).get("status") == "passed")
    return dict(passed)


def demo_stage(output_dir: str | Path, *, steps: int | None = None, model: str | None = None,
               overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Run the policy stage into `output_dir`; returns flat figures (also in ppo_demo.json) and the verdict."""
    extra = [f"output_dir={output_dir}", f"progress={str(progress).lower()}", *(overrides or [])]
    extra += [f"max_steps={steps}"] if steps is not None else []
    extra += [f"model={model}"] if model is not None else []
    config: Config = load_config(Config, str(CONFIG), extra)
    # held out: every tier (training may keep one, `domain_options.tiers`), as when the budget was chosen
    held_out = list(get_domain("code", **{**config.domain_options, "tiers": None}).prompts("test"))
    held_out = held_out[:config.eval_prompts]
    summary = train_ppo(config, held_out=held_out)
    run_dir = Path(config.output_dir)
    result = {"ppo_advantage": config.advantage, "ppo_steps": summary["steps"],
              "ppo_rollouts": summary["steps"] * config.rollout_samples, "ppo_first_reward": summary["first_reward"],
              "ppo_final_reward": summary["final_reward"], "ppo_final_kl": summary["final_kl"],
              "ppo_train_seconds": summary["train_seconds"], "ppo_stopped_early": summary["stopped_early"],
              "ppo_report": summary.get("report"), "plot": str(run_dir / "reward.png")}
    how = ("greedy" if config.eval_temperature == 0 else
           f"{config.eval_samples} samples per task at T={config.eval_temperature:g}")
    if summary["stopped_early"]:
        result["verdict"] = f"{config.advantage} stopped early: {summary['stop_reason']}"
    else:
        result.update(compare_pass_rates(passes_by_task(run_dir / "eval_before.jsonl"),
                                         passes_by_task(run_dir / "eval_after.jsonl"), "code_easy"))
        r = {k.removeprefix("code_easy_"): v for k, v in result.items() if k.startswith("code_easy_")}
        result["verdict"] = (
            f"{config.advantage.upper()}, {summary['steps']} steps ({result['ppo_rollouts']} rollouts): pass rate on "
            f"{r['tasks']} held-out easy tasks ({how}) {r['pass_rate_before']:.3f} -> {r['pass_rate_after']:.3f} "
            f"(change 95% CI {r['change_ci95_low']:+.3f}..{r['change_ci95_high']:+.3f}; tasks up {r['tasks_up']}, "
            f"down {r['tasks_down']}, sign test p={r['sign_test_p']:.2g}): {r['verdict']}")
        if config.eval_temperature > 0:
            result["verdict"] += ("; this scores the policy as it is sampled, so sharpening towards answers it already "
                                  "preferred counts as improvement")
    (run_dir / "ppo_demo.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"ppo demo: {result['verdict']}")
    return result
