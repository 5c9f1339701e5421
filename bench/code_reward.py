"""Code reward benchmark.

1. Reward throughput: 512 completions with mixed outcomes (passing, wrong answer, runtime error,
   syntax error, load error, timeout; chat and completion styles) on easy and HumanEval tasks,
   scored by the code domain's reward, completions/s; as a ratio against the bare sandbox running
   the same programs in the same run (what extraction, scoring and request building cost).
2. pass@1 (greedy) and pass@5 (n=5, temperature 0.8) of smollm2-135m on HumanEval in chat style
   (`--style completion` for the raw prompt), with generation and execution wall times. The full 164 tasks take too long on a 2-core
   CPU (about 15 tokens/s), so a documented subset runs: the first `--greedy-tasks` tasks greedily
   and the first `--sampled-tasks` tasks sampled.

    python bench/code_reward.py [--greedy-tasks 16] [--sampled-tasks 6] [--skip-model]

Prints one line of figures and writes bench/results/code_reward.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# bench/sandbox.py would shadow the `sandbox` package: drop this script's folder from the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from domains.code.easy import easy_tasks
from domains.code.prompts import task_prompt
from domains.code.rewards import RewardSettings, code_rewards, status_counts
from domains.code.tasks import load_humaneval

RESULTS = Path(__file__).resolve().parent / "results" / "code_reward.json"


def mixed_completions(count: int, seed: int = 0):
    """(prompt, completion) pairs: canonical answers and hand-made failures of each kind."""
    rng = random.Random(seed)
    tasks = easy_tasks()[:120] + load_humaneval()[:40]
    kinds = ["pass_chat", "pass_completion", "wrong", "runtime", "syntax", "load", "wrong_name"]
    rows = []
    for index in range(count):
        task = rng.choice(tasks)
        kind = "timeout" if index % 64 == 0 else rng.choice(kinds)
        body = task.canonical_solution
        if kind == "pass_chat":
            prompt = task_prompt(task, "chat")
            completion = f"Here you go:\n```python\n{task.prompt}{body}```\nDone."
        elif kind == "wrong_name":
            prompt = task_prompt(task, "chat")
            code = (task.prompt + body).replace(f"def {task.entry_point}(", "def solution(")
            completion = f"```python\n{code}```"
        else:
            prompt = task_prompt(task, "completion")
            completion = {"pass_completion": body, "wrong": "    return None\n",
                          "runtime": "    return 1 // 0\n", "syntax": "    return (\n",
                          "load": body,
                          "timeout": "    while True:\n        pass\n"}[kind]
            if kind == "load":  # the module fails while loading: an import that does not exist
                prompt.meta = dict(prompt.meta, code_prompt="import not_a_module_xyz\n" + task.prompt)
        rows.append((prompt, completion))
    return rows


def bench_throughput(count: int, workers: int) -> dict:
    from domains.code.rewards import extract_for, test_case
    from sandbox import ExecRequest, Limits, run_many

    rows = mixed_completions(count)
    prompts, completions = [r[0] for r in rows], [r[1] for r in rows]
    settings = RewardSettings(scheme="stepcoder", workers=workers, wall_s=5.0, per_test_wall_s=1.0, progress=True)
    start = time.perf_counter()
    outputs = code_rewards(prompts, completions, settings)
    reward_s = time.perf_counter() - start
    # the peer: the bare sandbox on the same programs (no dedup, no extraction, no scoring)
    requests = []
    for prompt, completion in rows:
        program = extract_for(prompt, completion).program
        if program is not None:
            requests.append(ExecRequest(program=program, tests=[test_case(t, 1.0) for t in prompt.meta["tests"]],
                                        limits=Limits(wall_s=5.0)))
    start = time.perf_counter()
    run_many(requests, workers=workers, progress=True)
    sandbox_s = time.perf_counter() - start
    return {"completions": count, "reward_completions_per_s": round(count / reward_s, 2),
            "sandbox_programs_per_s": round(len(requests) / sandbox_s, 2),
            "reward_vs_bare_sandbox_speed_ratio": round((count / reward_s) / (len(requests) / sandbox_s), 3),
            "distinct_programs": len({p.meta['task_id'] + c for p, c in rows}),
            **{f"status_{k}": v for k, v in status_counts(outputs).items()}}


def bench_model(greedy_tasks: int, sampled_tasks: int, workers: int, style: str, max_new_tokens: int) -> dict:
    from align.models import load_causal_lm, load_tokenizer
    from domains.code.evaluate import sample
    from domains.code.passk import mean_pass_at_k

    tasks = load_humaneval()
    tokenizer = load_tokenizer("smollm2-135m", padding_side="left")
    model = load_causal_lm("smollm2-135m")
    figures = {}
    for name, count, n, temperature in (("greedy", greedy_tasks, 1, 0.0), ("sampled", sampled_tasks, 5, 0.8)):
        prompts = [task_prompt(t, style) for t in tasks[:count]]
        start = time.perf_counter()
        groups = sample(model, tokenizer, prompts, num_samples=n, temperature=temperature,
                        top_p=0.95 if temperature else 1.0, max_new_tokens=max_new_tokens, batch_size=10, seed=0)
        generation_s = time.perf_counter() - start
        flat = [p for p, g in zip(prompts, groups) for _ in g]
        texts = [x.text for g in groups for x in g]
        start = time.perf_counter()
        outputs = code_rewards(flat, texts, RewardSettings(workers=workers))
        execution_s = time.perf_counter() - start
        counts = [(n, sum(o.parts["status"] == "passed" for o in outputs[i * n:(i + 1) * n]))
                  for i in range(len(prompts))]
        ks = [1] if n == 1 else [1, 5]
        scores = mean_pass_at_k(counts, ks)
        figures.update({"humaneval_prompt_style": style, "humaneval_max_new_tokens": max_new_tokens,
                        f"humaneval_{name}_tasks": count, f"humaneval_{name}_samples_per_task": n,
                        f"humaneval_{name}_generation_s": round(generation_s, 1),
                        f"humaneval_{name}_execution_s": round(execution_s, 1),
                        f"humaneval_{name}_execution_vs_generation_time_ratio": round(execution_s / generation_s, 4),
                        **{f"humaneval_{name}_pass@{k}": round(v, 4) for k, v in scores.items()},
                        **{f"humaneval_{name}_status_{k}": v for k, v in status_counts(outputs).items() if v}})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="code reward benchmark")
    parser.add_argument("--completions", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--greedy-tasks", type=int, default=16)
    parser.add_argument("--sampled-tasks", type=int, default=6)
    parser.add_argument("--style", default="chat", choices=["chat", "completion"])
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true", help="keep the throughput figures already in the JSON")
    args = parser.parse_args()
    figures = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if args.skip_throughput and RESULTS.exists():
        figures.update({k: v for k, v in json.loads(RESULTS.read_text()).items() if not k.startswith("humaneval_")})
    else:
        figures.update(bench_throughput(args.completions, args.workers))
    if not args.skip_model:
        figures.update(bench_model(args.greedy_tasks, args.sampled_tasks, args.workers, args.style,
                                   args.max_new_tokens))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(" ".join(f"{k}={v}" for k, v in figures.items() if k.startswith(("reward_", "sandbox_", "humaneval_g",
                                                                            "humaneval_s")) and "status" not in k))


if __name__ == "__main__":
    main()
