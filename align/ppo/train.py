"""`align ppo`: PPO-max (Zheng et al. 2023) on a reward model and/or a programmatic domain reward.

The run, top to bottom in `train_ppo`: prompts and rewards (files or the domain) -> the four models
(`align.ppo.models`) -> greedy evaluation of held-out prompts -> PPO steps (`align.ppo.step.ppo_step`),
logged, checkpointed every `save_steps` -> greedy evaluation again -> policy, summary, report.
Every knob is documented in `align.ppo.config`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch
from tqdm.auto import tqdm

from align.config import ConfigError
from align.ppo import losses as L
from align.ppo.config import Config
from align.ppo.data import domain_from, load_prompt_sets, prompt_batch, ptx_texts_from
from align.ppo.models import Models, load_models
from align.ppo.rollout import RewardFunction, RewardSources, mean_parts
from align.ppo.step import PPOState, PPOStopped, ppo_step, rollout
from align.training import Trainer
from align.types import Curriculum, Placeable, Prompt


@torch.no_grad()
def held_out_eval(models: Models, config: Config, rewards: RewardSources, prompts: list[Prompt], trainer: Trainer,
                  path=None) -> dict[str, float]:
    """Mean reward (and its parts) of `eval_samples` completions per held-out prompt at `eval_temperature`
    (greedy by default), each process taking its share; with `path`, one JSON line per completion (id, sample,
    completion, reward, parts) is written there, for paired before/after comparisons. Sampled completions come
    from fixed per-completion random streams (`config.seed`), the same before and after training: common random
    numbers, so an unchanged policy writes the same completions and the pairs differ only where the policy did."""
    if not prompts:
        return {}
    evaluation = dataclasses.replace(config, temperature=config.eval_temperature, samples_per_prompt=config.eval_samples)

    def evaluate_share(share: list[Prompt]) -> list[dict]:
        # one seed per process (its share is the same before and after, so the pairing holds on every process)
        generations = rollout(models, evaluation, share, trainer, seed=config.seed + trainer.rank)
        scored = [share[g.prompt_index] for g in generations]
        scores = rewards(scored, generations, models.tokenizer)
        return [{"id": prompt.id, "sample": i % config.eval_samples, "completion": generation.text,
                 "reward": scores.total[i].item(), "parts": scores.details[i] if scores.details else {},
                 **{key: values[i] for key, values in scores.parts.items()}}
                for i, (prompt, generation) in enumerate(zip(scored, generations))]

    records = trainer.map_shards(prompts, evaluate_share)
    if path is not None and trainer.is_main:
        with open(path, "w") as handle:
            for record in records:
                record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
                handle.write(json.dumps(record, default=str) + "\n")
    keep = [i for i, r in enumerate(records) if math.isfinite(r["reward"])]
    parts = {key: [r[key] for r in records] for key in records[0]
             if key not in ("id", "sample", "completion", "reward", "parts")}
    return {"reward": sum(records[i]["reward"] for i in keep) / len(keep) if keep else float("nan"),
            "prompts": len(prompts), "scored": len(keep), **mean_parts(parts, keep)}


def train_ppo(config: Config, prompts: list[Prompt] | None = None, reward_fn: RewardFunction | None = None,
              held_out: list[Prompt] | None = None) -> dict:
    """Run PPO as `config` says; returns the summary (also written to summary.json).

    `prompts`, `held_out` and `reward_fn` (called like `Domain.reward`) replace the configured data
    and domain reward when given, so any prompt list and reward callable can be trained on."""
    trainer = Trainer(config)
    if trainer.accelerator.distributed_type.name == "DEEPSPEED":
        raise ConfigError("align ppo trains two models (policy and critic), which accelerate's DeepSpeed integration "
                          "does not prepare together: launch with configs/accelerate/ddp_8gpu.yaml and lora.enabled")
    data_counts: dict = {}
    # one domain instance gives both prompts and rewards (a curriculum inside it must see both)
    domain = domain_from(config) if (config.domain_reward and reward_fn is None) else None
    if prompts is None:
        prompts, configured_held_out, data_counts = load_prompt_sets(config, domain)
        held_out = configured_held_out if held_out is None else held_out
    held_out = list(held_out or [])[:config.eval_prompts] if config.eval_prompts else []
    models = load_models(config, trainer)
    if isinstance(domain, Placeable):  # a domain that scores with a model scores on the policy's device
        domain.place(trainer.device, trainer.weights_dtype(trainable=False))
    domain_reward = reward_fn or (domain.reward if domain is not None else None)
    rewards = RewardSources(models.reward_model, config.reward_model_weight, _rm_head(config, models),
                            config.reward_batch_size, config.reward_max_length, domain_reward,
                            config.domain_reward_weight)
    ptx_texts = ptx_texts_from(config)

    total_steps = trainer.total_steps(len(prompts), config.rollout_batch_size * trainer.world_size)
    minibatches = math.ceil(config.rollout_samples / (config.batch_size * config.grad_accum))
    total_updates = total_steps * config.ppo_epochs * minibatches
    policy = trainer.prepare("policy", models.policy, total_updates, tokenizer=models.tokenizer)
    critic = None  # critic-free estimators: nothing to prepare or checkpoint
    if models.critic is not None:
        critic = trainer.prepare("critic", models.critic, total_updates, learning_rate=config.critic_learning_rate)
    moments = L.RunningMoments()
    kl_control = L.AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
    curriculum = domain if isinstance(domain, Curriculum) else None
    trainer.stateful.update(reward_moments=moments, kl_controller=kl_control,
                            **({"curriculum": curriculum} if curriculum is not None else {}))
    state = trainer.resume(PPOState())
    run = trainer.run

    summary: dict = {"advantage": config.advantage, "samples_per_prompt": config.samples_per_prompt,
                     "kl_penalty": "loss" if config.kl_in_loss else "reward", "critic_init": models.critic_source,
                     "train_prompts": len(prompts), "eval_temperature": config.eval_temperature,
                     "eval_samples": config.eval_samples, **data_counts}
    if held_out and trainer.resumed_from is None:
        before = held_out_eval(models, config, rewards, held_out, trainer, run.path / "eval_before.jsonl")
        summary.update({f"eval_before_{k}": v for k, v in before.items()})
        if trainer.is_main:
            (run.path / "eval_before.json").write_text(json.dumps(summary))
    elif held_out and (run.path / "eval_before.json").exists():
        previous = json.loads((run.path / "eval_before.json").read_text())
        summary.update({k: v for k, v in previous.items() if k.startswith("eval_before_")})

    progress = tqdm(total=total_steps, initial=state.step, desc="align ppo", dynamic_ncols=True,
                    disable=not config.progress or not trainer.is_main)
    stop_reason = None
    while state.step < total_steps:
        started = time.perf_counter()
        batch_prompts = prompt_batch(prompts, state, config.rollout_batch_size, config.seed, trainer.rank,
                                     trainer.world_size)
        try:
            stats = ppo_step(models, policy, critic, trainer, config, state, rewards, moments, kl_control,
                             batch_prompts, ptx_texts, curriculum)
        except PPOStopped as error:
            stop_reason = str(error)
            print(f"\nalign ppo: stopped at step {state.step + 1}: {stop_reason}", file=sys.stderr)
            break
        trainer.end_step(state, started)
        progress.update(1)
        progress.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats.get('kl', float('nan')):.3f}")
        if state.step % config.log_steps == 0 or state.step == total_steps:
            trainer.log(state.step, epoch=state.epoch, step_seconds=time.perf_counter() - started, **stats)
        if config.save_steps and state.step % config.save_steps == 0 and state.step != total_steps:
            trainer.save_checkpoint(state)
    progress.close()

    if held_out and stop_reason is None:
        after = held_out_eval(models, config, rewards, held_out, trainer, run.path / "eval_after.jsonl")
        summary.update({f"eval_after_{k}": v for k, v in after.items()})
    metrics = [r for r in run.read_metrics() if r.get("reward") is not None]
    summary.update({
        "steps": state.step, "samples": state.samples,
        "precision": trainer.precision_name, "processes": trainer.world_size,
        **{f"dropped_{k}": v for k, v in sorted(state.dropped.items())},
        "final_reward": metrics[-1]["reward"] if metrics else None,
        "final_kl": metrics[-1].get("kl") if metrics else None,
        "first_reward": metrics[0]["reward"] if metrics else None,
        "train_seconds": round(state.train_seconds, 3),
        "steps_per_second": state.step / max(state.train_seconds, 1e-9),
        "generated_tokens": state.generated_tokens,
        "generated_tokens_per_second": state.generated_tokens / max(state.generation_seconds, 1e-9),
        "generation_share": state.generation_seconds / max(state.train_seconds, 1e-9),
        "scoring_share": state.scoring_seconds / max(state.train_seconds, 1e-9),
        "stopped_early": stop_reason is not None, "stop_reason": stop_reason,
        "model_dir": str(run.path / "model") if stop_reason is None else None,
    })
    if stop_reason is None:
        trainer.save_checkpoint(state)
        trainer.save_model("policy", run.path / "model")
        run.write_model_card(config, summary, "ppo")
    if trainer.is_main:
        if config.report:
            from align.ppo.report import write_ppo_report

            summary["report"] = str(write_ppo_report(run, summary))
        run.write_summary(summary)
    trainer.wait()
    return summary


def _rm_head(config: Config, models: Models) -> int:
    if models.reward_model is None or config.reward_model_head is None:
        return 0
    return list(models.reward_model.head_names).index(config.reward_model_head)


def run(config: Config) -> dict:
    summary = train_ppo(config)
    if summary["stopped_early"]:
        print(f"align ppo: STOPPED EARLY after {summary['steps']} steps: {summary['stop_reason']}", file=sys.stderr)
    else:
        print(f"align ppo: {summary['steps']} steps, reward {summary['first_reward']:.3f} -> "
              f"{summary['final_reward']:.3f}, KL {summary['final_kl']:.3f}; policy in {summary['model_dir']}")
    return summary
