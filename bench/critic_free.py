"""Critic-free estimators against PPO-max's GAE on the code reward, at the same budget.

SmolLM2-135M-Instruct (`--model`) learns the code domain's easy tasks from compiler feedback (the StepCoder
reward, sandboxed execution). Every estimator gets the same budget: the same config (`--config`, GAE's starting
point), the same prompts in the same order (the seed fixes the stream), the same `samples_per_prompt`
completions of each prompt, the same minibatches and optimizer steps; only `advantage=` differs (GAE also
trains its critic, which costs it time but no extra samples). Greedy pass@1 on the held-out easy tasks is
measured once before training (the same base model for every run) and after each run, on the same tasks:
95% Wilson intervals, the exact McNemar test of each run against the base model, and per estimator the mean
change over seeds with a t interval and its paired difference to GAE seed by seed. The generation share of a
step's time is read from each run's metrics.

    nice -n 10 .venv/bin/python bench/critic_free.py            # 3 seeds x gae, grpo, rloo (see --help)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import Run, headline

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Two-sided 95% quantiles of Student's t by degrees of freedom (seeds - 1)."""


def mean_interval(values: list[float]) -> dict:
    """Mean and 95% t interval over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "ci95": None, "values": values}
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)], "values": values}


def greedy_pass(model, tokenizer, config, domain, prompts) -> dict[str, bool]:
    """Greedy completion of each prompt exactly as `align ppo` evaluates (its rollout at temperature 0), scored by
    the domain: task id -> passed every test."""
    import dataclasses

    from align.ppo.models import Models
    from align.ppo.step import rollout

    greedy = dataclasses.replace(config, temperature=0.0, samples_per_prompt=1)
    generations = rollout(Models(policy=model, reference=None, critic=None, tokenizer=tokenizer), greedy, prompts)
    outputs = domain.reward(prompts, [g.text for g in generations])
    return {p.id: o.parts.get("status") == "passed" for p, o in zip(prompts, outputs)}


def compare(before: dict[str, bool], after: dict[str, bool]) -> dict:
    from align.eval.stats import mcnemar_exact, wilson_interval

    ids = sorted(before)
    n, passed = len(ids), sum(after[i] for i in ids)
    gained = sum(1 for i in ids if after[i] and not before[i])
    lost = sum(1 for i in ids if before[i] and not after[i])
    low, high = wilson_interval(passed, n)
    return {"pass@1": passed / n, "pass@1_ci95": [round(low, 4), round(high, 4)], "gained": gained, "lost": lost,
            "mcnemar_p": round(mcnemar_exact(gained, lost), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "code" / "critic_free_bench.yaml"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--estimators", nargs="+", default=["gae", "grpo", "rloo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--held-out", type=int, default=41, help="held-out easy tasks scored (the test split has 41)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "critic_free.json"))
    parser.add_argument("overrides", nargs="*", help="key=value for every run (e.g. max_steps=4)")
    args = parser.parse_args()
    run = Run(__file__)

    import torch

    from align.config import load_config
    from align.eval.stats import wilson_interval
    from align.models import load_causal_lm, load_tokenizer
    from align.ppo import Config, train_ppo
    from align.registry import get_domain

    torch.set_num_threads(args.threads)
    base = load_config(Config, args.config, [f"model={args.model}", *args.overrides])
    domain = get_domain(base.domain, **base.domain_options)
    held_out = list(domain.prompts("test"))[:args.held_out]
    tokenizer = load_tokenizer(base.model, padding_side="left")
    started = time.perf_counter()
    before = greedy_pass(load_causal_lm(base.model), tokenizer, base, domain, held_out)
    eval_seconds = time.perf_counter() - started
    print(f"base model: greedy pass@1 {sum(before.values())}/{len(before)} held-out tasks ({eval_seconds:.0f}s)",
          flush=True)

    runs = []
    with tempfile.TemporaryDirectory(prefix="critic_free_") as scratch:
        for seed in args.seeds:
            for estimator in args.estimators:
                output_dir = Path(scratch) / f"{estimator}-{seed}"
                config = load_config(Config, args.config, [f"model={args.model}", *args.overrides, f"seed={seed}",
                                                           f"advantage={estimator}", f"output_dir={output_dir}",
                                                           "eval_prompts=0", "save_steps=0", "report=false",
                                                           "progress=false"])
                started = time.perf_counter()
                summary = train_ppo(config)
                seconds = time.perf_counter() - started
                after = greedy_pass(load_causal_lm(summary["model_dir"]), tokenizer, config, domain, held_out)
                metrics = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
                step_seconds = sum(m["step_seconds"] for m in metrics)
                result = {"estimator": estimator, "seed": seed, **compare(before, after),
                          "steps": summary["steps"], "samples": summary["samples"],
                          "run_seconds": round(seconds, 1), "train_seconds": summary["train_seconds"],
                          "generation_share": round(sum(m["generation_seconds"] for m in metrics) / step_seconds, 4),
                          "scoring_share": round(sum(m["scoring_seconds"] for m in metrics) / step_seconds, 4),
                          "first_reward": summary["first_reward"], "final_reward": summary["final_reward"],
                          "mean_train_reward": round(statistics.fmean(m["reward"] for m in metrics), 4),
                          "final_kl": summary["final_kl"], "stopped_early": summary["stopped_early"]}
                runs.append(result)
                print(f"{estimator} seed {seed}: pass@1 {result['pass@1']:.3f} (+{result['gained']} -{result['lost']}, "
                      f"p={result['mcnemar_p']:.3f}), {seconds:.0f}s, generation {result['generation_share']:.0%} of "
                      f"step time", flush=True)

    base_pass = sum(before.values()) / len(before)
    estimators = {}
    for estimator in args.estimators:
        mine = [r for r in runs if r["estimator"] == estimator]
        estimators[estimator] = {
            "pass@1_after": mean_interval([r["pass@1"] for r in mine]),
            "change": mean_interval([round(r["pass@1"] - base_pass, 4) for r in mine]),
            "train_seconds": mean_interval([r["train_seconds"] for r in mine]),
            "generation_share": mean_interval([r["generation_share"] for r in mine]),
            "mean_train_reward": mean_interval([r["mean_train_reward"] for r in mine])}
        if estimator != "gae" and "gae" in args.estimators:
            gae = {r["seed"]: r for r in runs if r["estimator"] == "gae"}
            estimators[estimator]["minus_gae"] = mean_interval([round(r["pass@1"] - gae[r["seed"]]["pass@1"], 4)
                                                                for r in mine])
            estimators[estimator]["speed_vs_gae"] = round(
                estimators["gae"]["train_seconds"]["mean"] / estimators[estimator]["train_seconds"]["mean"], 3)
    low, high = (round(x, 4) for x in wilson_interval(sum(before.values()), len(before)))
    figures = {"model": base.model, "config": str(Path(args.config).relative_to(ROOT)), "overrides": args.overrides,
               "budget": {"steps": base.max_steps, "prompts_per_step": base.rollout_batch_size,
                          "samples_per_prompt": base.samples_per_prompt, "ppo_epochs": base.ppo_epochs,
                          "batch_size": base.batch_size, "max_new_tokens": base.max_new_tokens,
                          "completions_per_run": base.max_steps * base.rollout_samples},
               "held_out_tasks": len(held_out), "base_pass@1": base_pass, "base_pass@1_ci95": [low, high],
               "base_eval_seconds": round(eval_seconds, 1), "estimators": estimators, "runs": runs}
    headlines = [headline(f"held-out pass@1 change, {e} (mean of {len(args.seeds)} seeds)",
                          estimators[e]["change"]["mean"], "gae", estimators["gae"]["change"]["mean"], "pass@1",
                          note="ratio not meaningful for a change; see minus_gae")
                 for e in args.estimators if e != "gae" and "gae" in estimators]
    run.write(args.out, figures, headlines)
    line = "; ".join(f"{e}: {estimators[e]['pass@1_after']['mean']:.3f} after ({estimators[e]['change']['mean']:+.3f})"
                     for e in args.estimators)
    print(f"critic_free: base pass@1 {base_pass:.3f} on {len(held_out)} held-out tasks; {line} -> {args.out}")


if __name__ == "__main__":
    main()
