"""The PPO stage of `make demo`: SmolLM2-135M learns from compiler feedback on the code domain.

PPO-max (configs/code/ppo_cpu.yaml) on the generated easy tasks with the StepCoder execution
reward; greedy pass@1 is measured on held-out easy tasks and on HumanEval CCCS subtasks (the
answer opens with most of the canonical solution and the policy writes the end) before and after
training, on the same tasks. Each pass@1 comes with its task count and a 95% Wilson interval; the
change is tested with an exact McNemar test on the paired outcomes, and when it is not significant
the output says it is noise at this budget instead of claiming an improvement.
"""
from __future__ import annotations

import json
from pathlib import Path

from align.config import load_config
from align.eval.stats import mcnemar_exact, wilson_interval
from align.ppo.config import Config
from align.ppo.train import train_ppo
from align.registry import get_domain

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "code" / "ppo_cpu.yaml"


def compare_pass_at_1(before: list[bool], after: list[bool], name: str) -> dict:
    """pass@1 before/after on the same tasks with intervals, the paired test and a plain verdict."""
    n = len(before)
    k_before, k_after = sum(before), sum(after)
    gained = sum(1 for b, a in zip(before, after) if a and not b)
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    p_value = mcnemar_exact(gained, lost)
    if n == 0:
        verdict = "no tasks"
    elif p_value < 0.05:
        verdict = "improved" if k_after > k_before else "worse"
    else:
        verdict = "no significant change (noise at this budget)"
    lo_b, hi_b = wilson_interval(k_before, n)
    lo_a, hi_a = wilson_interval(k_after, n)
    return {f"{name}_tasks": n, f"{name}_pass@1_before": k_before / n if n else None,
            f"{name}_pass@1_before_ci95_low": round(lo_b, 4), f"{name}_pass@1_before_ci95_high": round(hi_b, 4),
            f"{name}_pass@1_after": k_after / n if n else None,
            f"{name}_pass@1_after_ci95_low": round(lo_a, 4), f"{name}_pass@1_after_ci95_high": round(hi_a, 4),
            f"{name}_tasks_gained": gained, f"{name}_tasks_lost": lost, f"{name}_mcnemar_p": p_value,
            f"{name}_verdict": verdict}


def _passed(path: Path) -> dict[str, bool]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: (r.get("parts") or {}).get("status") == "passed" for r in records}


def demo_stage(output_dir: str | Path, *, steps: int | None = None, easy_tasks: int = 40, humaneval_tasks: int = 20,
               cccs_fraction: float = 0.75, model: str | None = None, progress: bool = True) -> dict:
    """Run the PPO demo into `output_dir`; returns flat figures (also in ppo_demo.json) and prints a verdict."""
    overrides = [f"output_dir={output_dir}", f"progress={str(progress).lower()}"]
    if steps is not None:
        overrides.append(f"max_steps={steps}")
    if model is not None:
        overrides.append(f"model={model}")
    config: Config = load_config(Config, str(CONFIG), overrides)
    easy = list(get_domain("code", **config.domain_options).prompts("test"))[:easy_tasks]
    humaneval = list(get_domain("code", tasks="humaneval", prompt_style="chat", cccs=True,
                                cccs_fractions=[cccs_fraction]).prompts("train"))[:humaneval_tasks]
    held_out = easy + humaneval
    config.eval_prompts = len(held_out)
    summary = train_ppo(config, held_out=held_out)
    run_dir = Path(config.output_dir)
    result = {"ppo_steps": summary["steps"], "ppo_first_reward": summary["first_reward"],
              "ppo_final_reward": summary["final_reward"], "ppo_final_kl": summary["final_kl"],
              "ppo_train_seconds": summary["train_seconds"], "ppo_stopped_early": summary["stopped_early"],
              "ppo_report": summary.get("report"), "cccs_fraction": cccs_fraction}
    if summary["stopped_early"]:
        result["ppo_stop_reason"] = summary["stop_reason"]
    else:
        before, after = _passed(run_dir / "eval_before.jsonl"), _passed(run_dir / "eval_after.jsonl")
        for name, prompts in (("code_easy", easy), ("code_humaneval_cccs", humaneval)):
            ids = [p.id for p in prompts]
            result.update(compare_pass_at_1([before[i] for i in ids], [after[i] for i in ids], name))
    if "code_easy_tasks" in result:
        result["verdict"] = (f"PPO, {summary['steps']} steps: greedy pass@1 on {result['code_easy_tasks']} held-out easy "
                             f"tasks {result['code_easy_pass@1_before']:.3f} -> {result['code_easy_pass@1_after']:.3f} "
                             f"(+{result['code_easy_tasks_gained']} -{result['code_easy_tasks_lost']}, exact McNemar "
                             f"p={result['code_easy_mcnemar_p']:.2f}): {result['code_easy_verdict']}")
    else:
        result["verdict"] = f"PPO stopped early: {result.get('ppo_stop_reason')}"
    result["plot"] = str(run_dir / "reward.png")
    (run_dir / "ppo_demo.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in ("code_easy", "code_humaneval_cccs"):
        if f"{name}_tasks" in result:
            lo, hi = result[f"{name}_pass@1_after_ci95_low"], result[f"{name}_pass@1_after_ci95_high"]
            print(f"ppo demo, {name}: pass@1 {result[f'{name}_pass@1_before']:.3f} -> "
                  f"{result[f'{name}_pass@1_after']:.3f} on {result[f'{name}_tasks']} held-out tasks "
                  f"(after: 95% CI {lo:.2f}-{hi:.2f}; McNemar p={result[f'{name}_mcnemar_p']:.2f}): "
                  f"{result[f'{name}_verdict']}")
    return result
