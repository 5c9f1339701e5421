"""Does MetaRM keep a reward model right on a shifted policy's responses? Measured where gold labels are free: code.

1. SFT samples: SmolLM2-135M-Instruct samples k completions per easy task (train and held-out tasks); the
   sandbox runs them and execution ranks them into preference pairs (`domains.code.pairs.rank_pairs`).
2. RM0: MiniLM trained on the train-task pairs.
3. The shift: a PPO round of the policy against RM0 alone (no execution reward: the policy moves wherever RM0
   rewards it), then the shifted policy samples k completions per task, labelled by execution the same way.
4. From RM0, per seed: `vanilla` (one more epoch of Bradley-Terry on the original pairs) and `metarm` (one
   epoch of MetaRM steps: the same pairs, plus the shifted policy's unlabelled train-task samples as X_s);
   same learning rate, batch and data order. η is tuned on training data only (accuracy on the shifted policy's
   TRAIN-task pairs, seed 0); the paper's η = 5e-6 is reported too.
5. Pairwise accuracy on the held-out tasks' pairs: shifted (from the shifted policy) and original (from SFT).

Every stage is cached in --work (a killed or repeated invocation continues); partial results are written to
bench/results/metarm_shift.json after each stage. The three seeds share the shift (one PPO run): they measure
the RM update's own variation, not the PPO run's.

    nice -n 10 python bench/metarm_shift.py [--train-tasks 48] [--samples 4] [--ppo-steps 6] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# bench/sandbox.py would shadow the `sandbox` package: drop this script's folder from the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.config import load_config
from align.data import load_preferences
from align.eval.stats import wilson_interval
from bench.provenance import Run, headline

RESULTS = Path(__file__).resolve().parent / "results" / "metarm_shift.json"
PAPER_ETA = 5e-6


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/metarm_shift", help="cache of every stage")
    parser.add_argument("--policy", default="smollm2-135m")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--train-tasks", type=int, default=48)
    parser.add_argument("--test-tasks", type=int, default=-1, help="held-out tasks (-1: all)")
    parser.add_argument("--samples", type=int, default=4, help="k completions per task")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--ppo-steps", type=int, default=6)
    parser.add_argument("--ppo-lr", type=float, default=2e-5)
    parser.add_argument("--rm-lr", type=float, default=3e-5)
    parser.add_argument("--rm0-epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eta-grid", type=float, nargs="+", default=[1e-2, 1e-1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument("--stop-after", choices=["data", "shift", "tune"], default=None,
                        help="end after this stage (the rest runs in a later invocation)")
    return parser.parse_args()


# --------------------------------------------------------------------------- samples and pairs


def sampled(work: Path, name: str, model_path: str, prompts, args) -> list[list[str]]:
    """k completions per prompt (temperature 0.8, top-p 0.95 as `domains.code.pairs`), cached as JSON."""
    path = work / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    from align.models import load_causal_lm, load_tokenizer
    from domains.code.evaluate import sample

    tokenizer = load_tokenizer(model_path, padding_side="left")
    model = load_causal_lm(model_path)
    groups = sample(model, tokenizer, prompts, num_samples=args.samples, temperature=0.8, top_p=0.95,
                    max_new_tokens=args.max_new_tokens, batch_size=8, seed=0, progress=False)
    texts = [[g.text for g in group] for group in groups]
    path.write_text(json.dumps(texts))
    return texts


def labelled_pairs(work: Path, name: str, domain, prompts, texts: list[list[str]]) -> tuple[str, dict]:
    """Execution-ranked pairs of the completions (JSONL for `align rm`) and the execution statuses."""
    from domains.code.pairs import rank_pairs, write_pairs
    from domains.code.rewards import status_counts

    path, stats_path = work / f"pairs_{name}.jsonl", work / f"pairs_{name}.stats.json"
    if path.exists() and stats_path.exists():
        return str(path), json.loads(stats_path.read_text())
    flat_prompts = [p for p, group in zip(prompts, texts) for _ in group]
    outputs = domain.reward(flat_prompts, [t for group in texts for t in group])
    pairs, start = [], 0
    for prompt, group in zip(prompts, texts):
        pairs += rank_pairs(prompt, group, outputs[start:start + len(group)])
        start += len(group)
    statuses = status_counts(outputs)
    if not pairs:
        raise SystemExit(f"metarm_shift: {name}: no execution-ranked pair in {len(outputs)} completions "
                         f"(statuses {dict(statuses)}); sample more tasks, more completions or longer ones")
    write_pairs(pairs, path)
    stats = {"tasks": len(prompts), "completions": len(outputs), "pairs": len(pairs),
             "pass_rate": statuses.get("passed", 0) / max(len(outputs), 1), "statuses": statuses}
    stats_path.write_text(json.dumps(stats))
    return str(path), stats


# --------------------------------------------------------------------------- training runs (cached)


def rm_keys(args, output_dir: Path, data: str, eval_data: str, model: str, seed: int, epochs: float) -> list[str]:
    return [f"model={model}", f"data={data}", f"eval_data={eval_data}", f"output_dir={output_dir}", f"seed={seed}",
            f"epochs={epochs}", f"learning_rate={args.rm_lr}", f"batch_size={args.batch_size}", "max_length=384",
            "save_steps=10", "log_steps=5", "report=false", "progress=false", "resume=true", "warmup_ratio=0.0",
            "lr_schedule=constant"]


def trained(output_dir: Path, train) -> dict:
    if (output_dir / "summary.json").exists():
        return json.loads((output_dir / "summary.json").read_text())
    return train()


def train_vanilla(args, output_dir: Path, data: str, eval_data: str, model: str, seed: int, epochs: float) -> dict:
    from align.rm import train as rm

    config = load_config(rm.Config, None, rm_keys(args, output_dir, data, eval_data, model, seed, epochs))
    return trained(output_dir, lambda: rm.train_reward_model(config))


def train_metarm(args, output_dir: Path, data: str, eval_data: str, model: str, seed: int, groups: str,
                 eta: float) -> dict:
    from align.rm import metarm

    keys = rm_keys(args, output_dir, data, eval_data, model, seed, 1.0) + [
        f"shifted_data={groups}", f"meta_learning_rate={eta}", "shifted_batch_size=4",
        f"samples_per_prompt={args.samples}"]
    config = load_config(metarm.Config, None, keys)
    return trained(output_dir, lambda: metarm.train_metarm(config))


def shift_policy(args, work: Path, rm0: str, prompts) -> str:
    from align.ppo import Config as PPOConfig
    from align.ppo import train_ppo

    output_dir = work / "ppo"
    if not (output_dir / "summary.json").exists():
        keys = [f"model={args.policy}", f"reward_model={rm0}", "domain=code", "domain_options.tasks=easy",
                "prompt_format=chat", f"max_new_tokens={args.max_new_tokens}", "temperature=1.0",
                "rollout_batch_size=8", "generation_batch_size=8", "batch_size=4", "ppo_epochs=1",
                f"max_steps={args.ppo_steps}", f"learning_rate={args.ppo_lr}", "critic_learning_rate=1e-5",
                "kl_coef=0.02", "save_steps=2", "log_steps=1", "report=false", "progress=false", "resume=true",
                f"output_dir={output_dir}"]
        train_ppo(load_config(PPOConfig, None, keys), prompts=prompts, held_out=[])
    summary = json.loads((output_dir / "summary.json").read_text())
    if summary.get("stopped_early"):
        raise SystemExit(f"the shift's PPO run stopped early: {summary.get('stop_reason')}")
    return summary["model_dir"]


# --------------------------------------------------------------------------- accuracy and intervals


def correctness(model_dir: str, pairs_file: str) -> list[float]:
    """Per pair: 1 when r(chosen) > r(rejected), 0.5 on a tie, 0 otherwise."""
    from align.eval.evaluate import evaluate_reward_model
    from align.models import RewardModel

    pairs = load_preferences(pairs_file).pairs
    differences = evaluate_reward_model(RewardModel.from_pretrained(model_dir), pairs, 16, 384)["differences"]
    return [1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in differences]


def accuracy_figure(values: list[float]) -> dict:
    correct = sum(values)
    low, high = wilson_interval(round(correct), len(values))
    return {"accuracy": correct / len(values), "pairs": len(values), "ci95": [low, high]}


def paired_difference(a: list[list[float]], b: list[list[float]], resamples: int = 4000) -> dict:
    """Mean over seeds of accuracy(a) − accuracy(b), with a percentile bootstrap over pairs (the same pairs for
    both methods and every seed, resampled together) and a t interval over the seeds."""
    n, seeds = len(a[0]), len(a)
    per_pair = [sum(a[s][i] - b[s][i] for s in range(seeds)) / seeds for i in range(n)]
    rng = random.Random(0)
    means = sorted(sum(per_pair[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    per_seed = [sum(a[s]) / n - sum(b[s]) / n for s in range(seeds)]
    mean = sum(per_seed) / seeds
    result = {"mean": mean, "per_seed": per_seed,
              "bootstrap_ci95": [means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]]}
    if seeds > 1:
        sd = math.sqrt(sum((d - mean) ** 2 for d in per_seed) / (seeds - 1))
        t = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}.get(seeds, 2.0)
        result["seed_t_ci95"] = [mean - t * sd / math.sqrt(seeds), mean + t * sd / math.sqrt(seeds)]
    return result


# --------------------------------------------------------------------------- the run


def main() -> int:
    args = parse_args()
    run = Run(__file__)
    from domains.code.domain import CodeDomain

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    domain = CodeDomain(tasks="easy", reward="stepcoder", prompt_style="chat")
    train_prompts = list(domain.prompts("train"))[:args.train_tasks]
    test_prompts = list(domain.prompts("test"))
    test_prompts = test_prompts[:args.test_tasks] if args.test_tasks > 0 else test_prompts
    figures: dict = {"settings": vars(args), "stages": {}}

    def save(status: str) -> None:
        figures["status"] = status
        run.write(args.results, figures, headlines(figures))

    # 1. SFT samples, execution-labelled
    sft_train = sampled(work, "sft_train", args.policy, train_prompts, args)
    sft_test = sampled(work, "sft_test", args.policy, test_prompts, args)
    pairs_train, stats = labelled_pairs(work, "sft_train", domain, train_prompts, sft_train)
    figures["stages"]["sft_train"] = stats
    pairs_test, figures["stages"]["sft_test"] = labelled_pairs(work, "sft_test", domain, test_prompts, sft_test)
    save("data")
    if args.stop_after == "data":
        return 0

    # 2-3. RM0, the PPO shift, the shifted policy's samples
    rm0 = train_vanilla(args, work / "rm0", pairs_train, pairs_test, args.backbone, 0, args.rm0_epochs)
    figures["stages"]["rm0"] = {k: rm0.get(k) for k in ("eval_accuracy", "train_pairs", "steps", "train_seconds")}
    rm0_dir = rm0["model_dir"]
    shifted = shift_policy(args, work, rm0_dir, train_prompts)
    ppo = json.loads((work / "ppo" / "summary.json").read_text())
    figures["stages"]["ppo"] = {k: ppo.get(k) for k in ("steps", "first_reward", "final_reward", "final_kl",
                                                        "train_seconds")}
    shift_train = sampled(work, "shift_train", shifted, train_prompts, args)
    shift_test = sampled(work, "shift_test", shifted, test_prompts, args)
    shift_train_pairs, figures["stages"]["shift_train"] = labelled_pairs(work, "shift_train", domain, train_prompts,
                                                                         shift_train)
    shift_test_pairs, figures["stages"]["shift_test"] = labelled_pairs(work, "shift_test", domain, test_prompts,
                                                                       shift_test)
    groups = work / "groups_shift_train.jsonl"  # X_s: the shifted policy's train-task samples, no labels
    groups.write_text("".join(json.dumps({"id": p.id, "prompt": p.prompt, "completions": t}) + "\n"
                              for p, t in zip(train_prompts, shift_train)))
    figures["rm0"] = {"original": accuracy_figure(correctness(rm0_dir, pairs_test)),
                      "shifted": accuracy_figure(correctness(rm0_dir, shift_test_pairs))}
    save("shift")
    if args.stop_after == "shift":
        return 0

    # 4a. η on training data: accuracy on the shifted policy's train-task pairs, seed 0
    tuning = {}
    for eta in args.eta_grid:
        result = train_metarm(args, work / "tune" / f"eta-{eta:g}", pairs_train, pairs_test, rm0_dir, 0, str(groups),
                              eta)
        tuning[f"{eta:g}"] = accuracy_figure(correctness(result["model_dir"], shift_train_pairs))["accuracy"]
        figures["tuning_shifted_train_accuracy"] = tuning
        save("tune")
    best_eta = float(max(tuning, key=lambda k: tuning[k]))
    figures["eta"] = best_eta
    if args.stop_after == "tune":
        return 0

    # 4b-5. vanilla vs MetaRM (tuned η, and the paper's), per seed
    methods = {"vanilla": None, "metarm": best_eta, "metarm_paper_eta": PAPER_ETA}
    scores: dict[str, dict[str, list[list[float]]]] = {m: {"shifted": [], "original": []} for m in methods}
    per_seed = figures.setdefault("per_seed", {})
    for seed in args.seeds:
        for method, eta in methods.items():
            folder = work / f"seed-{seed}" / method
            if eta is None:
                result = train_vanilla(args, folder, pairs_train, pairs_test, rm0_dir, seed, 1.0)
            else:
                result = train_metarm(args, folder, pairs_train, pairs_test, rm0_dir, seed, str(groups), eta)
            shifted_scores = correctness(result["model_dir"], shift_test_pairs)
            original_scores = correctness(result["model_dir"], pairs_test)
            scores[method]["shifted"].append(shifted_scores)
            scores[method]["original"].append(original_scores)
            per_seed.setdefault(str(seed), {})[method] = {"shifted": accuracy_figure(shifted_scores),
                                                          "original": accuracy_figure(original_scores)}
            save(f"seed {seed} {method}")
    figures["mean_accuracy"] = {m: {split: sum(sum(s) / len(s) for s in runs) / len(runs)
                                    for split, runs in by_split.items()} for m, by_split in scores.items()}
    figures["metarm_minus_vanilla"] = {
        split: paired_difference(scores["metarm"][split], scores["vanilla"][split]) for split in ("shifted", "original")}
    figures["paper_eta_minus_vanilla"] = {
        split: paired_difference(scores["metarm_paper_eta"][split], scores["vanilla"][split])
        for split in ("shifted", "original")}
    shifted_gain = figures["metarm_minus_vanilla"]["shifted"]["mean"]
    original_change = figures["metarm_minus_vanilla"]["original"]["mean"]
    figures["goal"] = "MetaRM >= vanilla + 0.03 on shifted pairs, no loss on the original pairs"
    figures["goal_met"] = shifted_gain >= 0.03 and original_change >= 0.0
    save("done")
    print(f"metarm_shift: shifted accuracy MetaRM {figures['mean_accuracy']['metarm']['shifted']:.3f} vs vanilla "
          f"{figures['mean_accuracy']['vanilla']['shifted']:.3f} ({shifted_gain:+.3f}, {len(args.seeds)} seeds); "
          f"original {original_change:+.3f}; goal met: {figures['goal_met']}")
    return 0


def headlines(figures: dict) -> list[dict]:
    means = figures.get("mean_accuracy")
    if not means:
        return []
    return [headline("RM pairwise accuracy on the shifted policy's held-out pairs", means["metarm"]["shifted"],
                     "vanilla RM update", means["vanilla"]["shifted"], "accuracy",
                     note=f"goal: +0.03 absolute; η={figures.get('eta')}"),
            headline("RM pairwise accuracy on the original (SFT) held-out pairs", means["metarm"]["original"],
                     "vanilla RM update", means["vanilla"]["original"], "accuracy")]


if __name__ == "__main__":
    raise SystemExit(main())
