"""Code reward benchmark.

1. Reward throughput (bench/results/code_reward.json): 512 completions with mixed outcomes (passing, wrong
   answer, runtime error, syntax error, load error, timeout; chat and completion styles) on easy and HumanEval
   tasks. Two comparisons, each against the bare sandbox in the same run, on the same sandbox backend started
   before any timed pass:
   - the reward's own cost: the code domain's reward on the DISTINCT (program, tests) pairs only, against the
     bare sandbox running exactly the requests the reward builds for them (same limits, tests and output
     excerpt): completions/s over programs/s, so no deduplication is in it;
   - deduplication's gain: the reward on all 512 completions (identical requests run once) against the bare
     sandbox running all 512 requests.
2. SmolLM2-135M-Instruct on code (bench/results/code_model.json, skipped with `--skip-model`): greedy pass@1 on
   the first `--easy-tasks` tasks of the easy set (`easy_tasks(seed=0)`), and on the first `--greedy-tasks`
   HumanEval tasks, plus pass@1/pass@5 (n=5, temperature 0.8) on the first `--sampled-tasks`; chat style
   (`--style completion` for the raw prompt), with generation and execution wall times.

    python bench/code_reward.py [--easy-tasks 64] [--greedy-tasks 10] [--sampled-tasks 2] [--skip-model]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# bench/sandbox.py would shadow the `sandbox` package: drop this script's folder from the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import Run, headline
from domains.code.easy import easy_tasks
from domains.code.prompts import task_prompt
from domains.code.rewards import RewardSettings, code_rewards, status_counts
from domains.code.tasks import load_humaneval

RESULTS = Path(__file__).resolve().parent / "results" / "code_reward.json"
MODEL_RESULTS = Path(__file__).resolve().parent / "results" / "code_model.json"


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
    settings = RewardSettings(scheme="stepcoder", workers=workers, wall_s=5.0, per_test_wall_s=1.0)

    def bare_request(prompt, program):  # exactly what the reward builds (domains/code/rewards.run_programs)
        return ExecRequest(program=program, tests=[test_case(t, settings.per_test_wall_s) for t in prompt.meta["tests"]],
                           limits=Limits(wall_s=settings.wall_s, excerpt_bytes=4 << 10))

    programs = [(prompt, completion, extract_for(prompt, completion).program) for prompt, completion in rows]
    with_code = [(p, c, program) for p, c, program in programs if program is not None]
    distinct, seen = [], set()
    for prompt, completion, program in with_code:
        key = (program, repr(prompt.meta["tests"]))
        if key not in seen:
            seen.add(key)
            distinct.append((prompt, completion, program))

    def timed(function, *args):
        started = time.perf_counter()
        out = function(*args)
        return time.perf_counter() - started, out

    run_many([bare_request(p, program) for p, _, program in distinct[:2 * workers]], workers=workers)  # start workers
    bare_distinct_s, _ = timed(run_many, [bare_request(p, program) for p, _, program in distinct], "auto", workers)
    reward_distinct_s, _ = timed(code_rewards, [p for p, _, _ in distinct], [c for _, c, _ in distinct], settings)
    bare_all_s, _ = timed(run_many, [bare_request(p, program) for p, _, program in with_code], "auto", workers)
    reward_all_s, outputs = timed(code_rewards, [r[0] for r in rows], [r[1] for r in rows], settings)
    return {"completions": count, "completions_with_code": len(with_code), "distinct_programs": len(distinct),
            "distinct": {"reward_seconds": round(reward_distinct_s, 3), "bare_sandbox_seconds": round(bare_distinct_s, 3),
                         "reward_completions_per_s": len(distinct) / reward_distinct_s,
                         "bare_sandbox_programs_per_s": len(distinct) / bare_distinct_s},
            "all": {"reward_seconds": round(reward_all_s, 3), "bare_sandbox_seconds": round(bare_all_s, 3),
                    "reward_completions_per_s": count / reward_all_s,
                    "bare_sandbox_programs_per_s": len(with_code) / bare_all_s},
            **{f"status_{k}": v for k, v in status_counts(outputs).items()}}


def bench_model(args) -> dict:
    """Greedy / sampled pass@k of SmolLM2-135M-Instruct on the easy set and HumanEval (first tasks of each)."""
    from align.models import load_causal_lm, load_tokenizer
    from domains.code.evaluate import sample
    from domains.code.passk import mean_pass_at_k

    tokenizer = load_tokenizer("smollm2-135m", padding_side="left")
    model = load_causal_lm("smollm2-135m")
    humaneval = load_humaneval()
    runs = (("easy_greedy", easy_tasks(seed=0)[:args.easy_tasks], 1, 0.0, args.easy_max_new_tokens),
            ("humaneval_greedy", humaneval[:args.greedy_tasks], 1, 0.0, args.max_new_tokens),
            ("humaneval_sampled", humaneval[:args.sampled_tasks], 5, 0.8, args.max_new_tokens))
    figures: dict = {"model": "smollm2-135m", "prompt_style": args.style}
    for name, tasks, n, temperature, max_new_tokens in runs:
        if not tasks:
            continue
        prompts = [task_prompt(t, args.style) for t in tasks]
        start = time.perf_counter()
        groups = sample(model, tokenizer, prompts, num_samples=n, temperature=temperature,
                        top_p=0.95 if temperature else 1.0, max_new_tokens=max_new_tokens, batch_size=10, seed=0,
                        progress=False)
        generation_s = time.perf_counter() - start
        flat = [p for p, g in zip(prompts, groups) for _ in g]
        texts = [x.text for g in groups for x in g]
        start = time.perf_counter()
        outputs = code_rewards(flat, texts, RewardSettings(workers=args.workers))
        execution_s = time.perf_counter() - start
        passed = [sum(o.parts["status"] == "passed" for o in outputs[i * n:(i + 1) * n]) for i in range(len(prompts))]
        scores = mean_pass_at_k([(n, c) for c in passed], [1] if n == 1 else [1, 5])
        figures[name] = {"tasks": len(tasks), "samples_per_task": n, "temperature": temperature,
                         "max_new_tokens": max_new_tokens, "tasks_with_a_pass": sum(c > 0 for c in passed),
                         **{f"pass@{k}": round(v, 4) for k, v in scores.items()},
                         "generation_s": round(generation_s, 1), "execution_s": round(execution_s, 1),
                         "statuses": {k: v for k, v in status_counts(outputs).items() if v},
                         "passed_task_ids": [t.task_id for t, c in zip(tasks, passed) if c]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="code reward benchmark")
    parser.add_argument("--completions", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--easy-tasks", type=int, default=64)
    parser.add_argument("--easy-max-new-tokens", type=int, default=128)
    parser.add_argument("--greedy-tasks", type=int, default=10)
    parser.add_argument("--sampled-tasks", type=int, default=2)
    parser.add_argument("--style", default="chat", choices=["chat", "completion"])
    parser.add_argument("--max-new-tokens", type=int, default=160, help="HumanEval")
    parser.add_argument("--skip-model", action="store_true", help="leave bench/results/code_model.json as it is")
    parser.add_argument("--skip-throughput", action="store_true", help="leave bench/results/code_reward.json as it is")
    args = parser.parse_args()
    if not args.skip_throughput:
        run = Run(__file__)
        figures = bench_throughput(args.completions, args.workers)
        distinct, every = figures["distinct"], figures["all"]
        run.write(RESULTS, figures, [
            headline(f"code reward completions/s on {figures['distinct_programs']} distinct programs (no dedup in it)",
                     distinct["reward_completions_per_s"], "bare sandbox, the reward's own requests",
                     distinct["bare_sandbox_programs_per_s"], "per s"),
            headline(f"code reward completions/s on {args.completions} completions ({figures['distinct_programs']} "
                     "distinct): deduplication's gain", every["reward_completions_per_s"],
                     "bare sandbox, every request", every["bare_sandbox_programs_per_s"], "per s")])
        print(f"code reward: distinct {figures['distinct_programs']} programs reward/bare "
              f"x{distinct['reward_completions_per_s'] / distinct['bare_sandbox_programs_per_s']:.2f}; all "
              f"{args.completions} (dedup) x{every['reward_completions_per_s'] / every['bare_sandbox_programs_per_s']:.2f}"
              f" -> {RESULTS}")
    if not args.skip_model:
        run = Run(__file__)
        figures = bench_model(args)
        run.write(MODEL_RESULTS, figures, [
            headline(f"SmolLM2-135M-Instruct {k.replace('_', ' ')} pass@1, first {v['tasks']} tasks, {args.style} style "
                     f"({v['tasks_with_a_pass']} tasks passed)", v["pass@1"], "none (a quality figure)", None, "pass@1")
            for k, v in figures.items() if isinstance(v, dict)])
        print("code model: " + "; ".join(f"{k} {v['tasks_with_a_pass']}/{v['tasks']} tasks, pass@1 {v['pass@1']}"
                                         for k, v in figures.items() if isinstance(v, dict)) + f" -> {MODEL_RESULTS}")


if __name__ == "__main__":
    main()
