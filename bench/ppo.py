"""PPO speed against TRL's PPOTrainer, and a learning check with a known optimum.

Speed: our `align ppo` trainer (`advantage=gae`, its default: a critic and GAE, as TRL's PPO) and TRL's
PPOTrainer (`trl.experimental.ppo`, TRL 1.12.0: the last release that ships it; TRL 1.13+ removed PPO) run one
after the other in the same process on the same policy (SmolLM2-135M-Instruct by default), the same reward
model (a sequence-classification head on the policy's backbone, fixed seed; each critic starts from it), the
same prompts, rollout batch, minibatch size, PPO epochs, response length, temperature and learning rate, and the
same precision switch (`--precision`: fp32, or bf16 on both sides: ours `precision=bf16`, TRL `bf16=True`). Each
side's result records the dtype its linear layers computed in, counted call by call: on a CPU, TRL's PPOTrainer
with `bf16=True` computes every one in fp32 (its forwards bypass accelerate's autocast wrapper). Wrapping its whole
`train()` in `torch.autocast` is no fix: autocast caches the bf16 copy of each fp32 weight until the outermost
context exits, so every forward after the first optimizer step would read the stale copy.

Timing boundaries, both sides: from the end of PPO step 1 to the end of the last step (step 1 warms up), read
at each trainer's own step-end point (ours: `Trainer.end_step`; TRL: `on_step_end`). Inside: rollout,
scoring, advantages, updates and each side's per-step metrics (ours appends a line to metrics.jsonl, TRL calls
its `log` with no reporter). Neither side prints (our progress bar off; TRL's printer and progress callbacks
removed) and neither collects garbage explicitly (TRL calls `gc.collect()` twice per step; that call is made a
no-op while it trains, which can only make TRL faster). Reported: PPO steps/s and generated tokens/s during
rollouts, their ratios (ours / TRL), and each side's mean response length (sampling differs, so the work per
step does too: both ratios are given).

Learning check (ours only): reward = how many times the letter `e` appears in the completion (its
optimum is a completion of e's), tiny-llama, fixed steps, 3 seeds: mean reward of the first and
the last 4 steps, and the largest KL to the reference.

    make bench-ppo       # or: PYTHONPATH=.bench-site-ppo .venv/bin/python bench/ppo.py [--policy tiny-llama]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import Run, headline

TOPICS = ["tea", "rain", "a bicycle", "the sea", "a library", "winter", "a garden", "music", "bread", "a river",
          "the moon", "a cat", "coffee", "a train", "mountains", "a city"]


def prompts():
    from align.types import Prompt

    return [Prompt(prompt=f"Write one short sentence about {topic}.", id=str(i)) for i, topic in enumerate(TOPICS * 4)]


def make_reward_model(policy: str, directory: Path) -> str:
    """A reward model on the policy's backbone (random head, fixed seed): the same for both trainers."""
    import torch

    from align.models import load_reward_model

    torch.manual_seed(0)
    load_reward_model(policy).save_pretrained(directory)
    return str(directory)


@contextlib.contextmanager
def linear_dtypes(counts: dict):
    """Count the dtype every `nn.Linear` computes in (its output's), to show what a side's precision setting did."""
    import torch

    original = torch.nn.Linear.forward

    def counted(self, x):
        out = original(self, x)
        dtype = str(out.dtype).removeprefix("torch.")
        counts[dtype] = counts.get(dtype, 0) + 1
        return out

    torch.nn.Linear.forward = counted
    try:
        yield counts
    finally:
        torch.nn.Linear.forward = original


def step_figures(step_ends: list[float], generated: list[int], generation_seconds: list[float]) -> dict:
    """Steps 2..N: seconds per step, generated tokens/s during rollouts, mean generated tokens per sequence."""
    timed = len(step_ends) - 1
    return {"steps": len(step_ends), "timed_steps": timed,
            "seconds_per_step": (step_ends[-1] - step_ends[0]) / timed,
            "generated_tokens_per_second": sum(generated[1:timed + 1]) / sum(generation_seconds[1:timed + 1]),
            "generated_tokens_per_step": sum(generated[1:timed + 1]) / timed}


def run_ours(args, reward_model: str, output_dir: Path) -> dict:
    from dataclasses import fields

    from align.ppo import Config, train_ppo
    from align.training import trainer as core

    extra = {"advantage": "gae"} if "advantage" in {f.name for f in fields(Config)} else {}
    config = Config(model=args.policy, reward_model=reward_model, critic_model="reward_model",
                    rollout_batch_size=args.batch, generation_batch_size=args.batch, batch_size=args.minibatch,
                    ppo_epochs=args.ppo_epochs, max_new_tokens=args.response_length, temperature=1.0,
                    learning_rate=args.learning_rate, critic_learning_rate=args.learning_rate, kl_coef=0.05,
                    max_steps=args.steps, save_steps=0, log_steps=1, report=False, progress=False,
                    precision=args.precision,
                    output_dir=str(output_dir), seed=args.seed, **extra)
    step_ends: list[float] = []
    original = core.Trainer.end_step

    def end_step(self, state, started):
        now = original(self, state, started)
        step_ends.append(time.perf_counter())
        return now

    core.Trainer.end_step = end_step
    dtypes: dict = {}
    try:
        with linear_dtypes(dtypes):
            train_ppo(config, prompts=prompts())
    finally:
        core.Trainer.end_step = original
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {"advantage": getattr(config, "advantage", "gae"), "linear_layer_dtypes": dtypes,
            **step_figures(step_ends, [r["response_length"] * args.batch for r in rows],
                           [r["generation_seconds"] for r in rows])}


def run_trl(args, reward_model: str, output_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        PrinterCallback,
        ProgressCallback,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    from align.generation import encode_prompt, format_prompt
    from align.models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(args.policy, padding_side="left")
    path = resolve_model_path(args.policy)
    dataset = Dataset.from_dict({"input_ids": [encode_prompt(tokenizer, format_prompt(tokenizer, p.prompt))
                                               for p in prompts()]})
    step_ends: list[float] = []
    generation: dict[str, list[float]] = {"seconds": [], "tokens": []}
    original = trl_ppo.batch_generation

    def timed_generation(model, queries, local_rollout_forward_batch_size, pad_token_id, generation_config):
        started = time.perf_counter()
        query_responses, logits = original(model, queries, local_rollout_forward_batch_size, pad_token_id,
                                           generation_config)
        generation["seconds"].append(time.perf_counter() - started)
        generation["tokens"].append(int((query_responses[:, queries.shape[1]:] != pad_token_id).sum()))
        return query_responses, logits

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    torch.manual_seed(args.seed)
    # TRL's rollout batch is per_device_train_batch_size * gradient_accumulation_steps, split into
    # num_mini_batches minibatches (one optimizer step each here, as in ours)
    config = PPOConfig(output_dir=str(output_dir), per_device_train_batch_size=args.batch,
                       gradient_accumulation_steps=1, num_mini_batches=args.batch // args.minibatch,
                       local_rollout_forward_batch_size=args.batch, num_ppo_epochs=args.ppo_epochs,
                       response_length=args.response_length, temperature=1.0, learning_rate=args.learning_rate,
                       kl_coef=0.05, total_episodes=args.steps * args.batch, num_sample_generations=0,
                       stop_token="eos", report_to=[], save_strategy="no", logging_steps=1, seed=args.seed,
                       bf16=args.precision == "bf16", fp16=False, use_cpu=True, dataloader_num_workers=0,
                       lr_scheduler_type="constant",
                       disable_tqdm=True)
    trainer = PPOTrainer(args=config, processing_class=tokenizer,
                         model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                         ref_model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                         reward_model=AutoModelForSequenceClassification.from_pretrained(reward_model),
                         value_model=AutoModelForSequenceClassification.from_pretrained(reward_model),
                         train_dataset=dataset, callbacks=[StepTimer()])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trl_ppo.batch_generation = timed_generation
    collector = trl_ppo.gc
    trl_ppo.gc = types.SimpleNamespace(collect=lambda *_, **__: 0)  # ours never collects explicitly either
    dtypes: dict = {}
    try:
        with linear_dtypes(dtypes):
            trainer.train()
    finally:
        trl_ppo.batch_generation, trl_ppo.gc = original, collector
    return {"linear_layer_dtypes": dtypes, **step_figures(step_ends, generation["tokens"], generation["seconds"])}


def learning_check(args, output_root: Path) -> dict:
    from align.ppo import Config, train_ppo
    from align.types import RewardOutput

    def count_e(prompts, completions, **meta):
        return [RewardOutput(reward=float(c.count("e"))) for c in completions]

    runs = []
    for seed in args.seeds:
        config = Config(model="tiny-llama", domain_reward=True, rollout_batch_size=16, batch_size=8,
                        max_new_tokens=8, learning_rate=3e-3, critic_learning_rate=1e-3, kl_coef=0.1,
                        max_steps=args.learning_steps, save_steps=0, report=False, progress=False, seed=seed,
                        output_dir=str(output_root / f"learn-{seed}"))
        train_ppo(config, prompts=prompts(), reward_fn=count_e)
        rows = [json.loads(line) for line in (output_root / f"learn-{seed}" / "metrics.jsonl").read_text().splitlines()]
        rewards, kls = [r["reward"] for r in rows], [r["kl"] for r in rows]
        runs.append({"seed": seed, "reward_first4": sum(rewards[:4]) / 4, "reward_last4": sum(rewards[-4:]) / 4,
                     "max_kl": max(kls), "kl_last8_range": [min(kls[-8:]), max(kls[-8:])], "final_kl": kls[-1],
                     "rewards": rewards, "kls": kls})
    return {"task": "reward = count of the letter e in the completion (tiny-llama, 8 new tokens, kl_coef 0.1)",
            "steps": args.learning_steps, "runs": runs,
            "reward_rose_in_every_seed": all(r["reward_last4"] > r["reward_first4"] for r in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--minibatch", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--learning-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="both sides")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ppo.json"))
    args = parser.parse_args()
    run = Run(__file__)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"policy": args.policy, "precision": args.precision, "batch": args.batch, "minibatch": args.minibatch,
                    "ppo_epochs": args.ppo_epochs, "response_length": args.response_length, "steps": args.steps,
                    "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reward_model = make_reward_model(args.policy, tmp / "rm")
        result["ours"] = run_ours(args, reward_model, tmp / "ours")
        if args.skip_trl:
            result["trl"] = None
        else:
            try:
                import trl

                result["trl_version"] = trl.__version__
                result["trl"] = run_trl(args, reward_model, tmp / "trl")
            except ImportError as error:
                result["trl"] = None
                result["trl_error"] = f"TRL's PPOTrainer is not importable ({error}); run `make bench-ppo`"
        if result.get("trl"):
            result["steps_per_second_ratio"] = result["trl"]["seconds_per_step"] / result["ours"]["seconds_per_step"]
            result["generated_tokens_per_second_ratio"] = (result["ours"]["generated_tokens_per_second"]
                                                           / result["trl"]["generated_tokens_per_second"])
        result["learning"] = learning_check(args, tmp) if args.learning_steps > 0 else None
    ours, trl_side = result["ours"], result.get("trl") or {}
    peer = f"TRL {result.get('trl_version', '?')} PPOTrainer"
    headlines = [
        headline(f"PPO steps/s, {args.policy}, batch {args.batch}, {args.response_length} new tokens, {args.precision}",
                 1 / ours["seconds_per_step"], peer, 1 / trl_side["seconds_per_step"] if trl_side else None, "steps/s",
                 goal=1.5, note=f"generated tokens per step: ours {ours['generated_tokens_per_step']:.0f}, TRL "
                                f"{trl_side.get('generated_tokens_per_step', float('nan')):.0f}; linear layers "
                                f"computed in: ours {ours['linear_layer_dtypes']}, TRL "
                                f"{trl_side.get('linear_layer_dtypes')}"),
        headline("PPO rollout generated tokens/s", ours["generated_tokens_per_second"], peer,
                 trl_side.get("generated_tokens_per_second"), "tokens/s")]
    run.write(args.out, result, headlines)
    learn = result["learning"]["runs"] if result["learning"] else []
    speed = (f"steps/s ours/TRL {result['steps_per_second_ratio']:.2f}x, gen tok/s {result['generated_tokens_per_second_ratio']:.2f}x"
             if result.get("trl") else f"TRL not run ({result.get('trl_error', 'skipped')})")
    print(f"bench ppo [{args.policy}, batch {args.batch}, {args.response_length} tokens]: {speed}; learning "
          + ", ".join(f"seed {r['seed']}: reward {r['reward_first4']:.2f}->{r['reward_last4']:.2f} max KL {r['max_kl']:.2f}"
                      for r in learn) + f"  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
