"""The code stage of `make demo`: SmolLM2-135M on a few easy tasks and a few HumanEval tasks.

HumanEval is beyond the 135M policy, so its tasks run as CCCS subtasks: the assistant's answer
opens with most of the canonical solution and the model writes the rest (the curriculum's first
stage). Easy tasks run with full generation in chat style. Each completion is run in the sandbox and scored (StepCoder reward).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from domains.code.easy import easy_tasks, split_easy
from domains.code.evaluate import plot_status, sample
from domains.code.prompts import task_prompt
from domains.code.rewards import RewardSettings, code_rewards, status_counts
from domains.code.tasks import load_humaneval

EASY_PROMPT_STYLE = "chat"


def demo_stage(output_dir: str | Path, num_tasks: int = 4, num_easy: int = 8, model_name: str = "smollm2-135m",
               cccs_fraction: float = 0.75, progress: bool = True) -> dict:
    """Greedy completions for `num_easy` held-out easy tasks and `num_tasks` HumanEval CCCS subtasks;
    returns flat figures (pass@1, mean reward, status counts) and writes code_demo.json."""
    from align.models import load_causal_lm, load_tokenizer

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _, held_out = split_easy(easy_tasks())
    easy = [task_prompt(t, EASY_PROMPT_STYLE) for t in held_out[:num_easy]]
    humaneval = [task_prompt(t, "chat", cccs_fraction) for t in load_humaneval()[:num_tasks]]
    tokenizer = load_tokenizer(model_name, padding_side="left")
    model = load_causal_lm(model_name)
    prompts = easy + humaneval
    generations = sample(model, tokenizer, prompts, num_samples=1, max_new_tokens=64, batch_size=8,
                         progress=progress)
    texts = [group[0].text for group in generations]
    outputs = code_rewards(prompts, texts, RewardSettings(scheme="stepcoder"))
    summary: dict = {}
    for name, chunk in (("easy", slice(0, len(easy))), ("humaneval_cccs", slice(len(easy), len(prompts)))):
        part = outputs[chunk]
        scored = [o for o in part if o.reward is not None]
        summary[f"code_{name}_tasks"] = len(part)
        summary[f"code_{name}_pass@1"] = (sum(o.parts["status"] == "passed" for o in scored) / len(scored)
                                          if scored else None)
        summary[f"code_{name}_reward_mean"] = (sum(o.reward for o in scored) / len(scored)) if scored else None
    summary.update({f"code_status_{k}": v for k, v in status_counts(outputs).items()})
    summary["code_cccs_fraction"] = cccs_fraction
    summary["code_wall_s"] = round(time.perf_counter() - start, 1)
    plot_status(status_counts(outputs), output_dir / "status_counts.png")
    summary["plot"] = str(output_dir / "status_counts.png")
    summary["verdict"] = (f"{model_name} greedy, sandboxed: {status_counts(outputs[:len(easy)])['passed']}/{len(easy)} held-out "
                          f"easy tasks and {status_counts(outputs[len(easy):])['passed']}/{len(humaneval)} HumanEval CCCS subtasks "
                          f"pass their tests (the reward the ppo stage trains on)")
    samples = [{"task_id": p.id, "prompt": p.prompt, "completion": t, "reward": o.reward, "status": o.parts["status"]}
               for p, t, o in zip(prompts, texts, outputs)]
    (output_dir / "code_demo.json").write_text(json.dumps({"summary": summary, "samples": samples}, indent=1,
                                                          default=str) + "\n")
    return summary
