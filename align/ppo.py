"""`align ppo`: PPO-max (Zheng et al. 2023) on a reward model and/or a programmatic domain reward.

One PPO step, as `ppo_step` reads top to bottom:
  1. rollout     sample completions for a batch of prompts (policy in eval mode, KV cache);
  2. score       reward model and/or domain reward -> one score per sample (None drops a sample);
  3. evaluate    old log-probs (+ entropy), reference log-probs and old values, without gradients;
  4. advantages  normalise+clip scores, subtract the token-level KL penalty, GAE;
  5. update      `ppo_epochs` passes over minibatches: clipped value loss -> critic step, clipped
                 policy loss on whitened advantages (+ PPO-ptx) -> policy step, global grad clipping.
The pure pieces live in `align.ppo_losses`; tensors and rewards in `align.ppo_rollout`; models and
checkpoints in `align.ppo_models`; every knob in `align.ppo_config`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch
from tqdm.auto import tqdm

from align import ppo_losses as L
from align.generation import generate
from align.ppo_config import Config
from align.ppo_data import domain_from, load_prompt_sets, prompt_batch, prompt_text, ptx_texts_from
from align.ppo_models import (
    Models,
    PPOState,
    load_models,
    load_ppo_checkpoint,
    reference_mode,
    save_ppo_checkpoint,
)
from align.ppo_rollout import (
    Batch,
    RewardFunction,
    RewardSources,
    collate,
    mean_parts,
    policy_mask,
    response_logprobs,
    response_values,
)
from align.runlog import RunDir
from align.training import make_accelerator, make_optimizer_and_scheduler, set_seed
from align.types import Prompt

__all__ = ["Config", "ppo_step", "run", "train_ppo"]


class PPOStopped(RuntimeError):
    """Training diverged (non-finite KL or loss, or KL over the ceiling)."""


# --------------------------------------------------------------------------- one PPO step


def rollout(models: Models, config: Config, prompts: list[Prompt]):
    """Step 1: sample one completion per prompt (stop strings: `config.stop` plus each prompt's `meta['stop']`)."""
    texts = [prompt_text(models.tokenizer, p, config.prompt_format) for p in prompts]
    return generate(models.policy, models.tokenizer, texts, max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature, top_p=config.top_p, stop=config.stop,
                    batch_size=config.generation_batch_size, max_prompt_length=config.max_prompt_length,
                    prompt_stops=[list(p.meta.get("stop") or []) for p in prompts])


@torch.no_grad()
def evaluate_experience(models: Models, policy, critic, batch: Batch, accelerator):
    """Step 3: old log-probs and entropy (policy), reference log-probs, old values."""
    with accelerator.autocast():
        old_logprobs, entropy = response_logprobs(policy, batch, with_entropy=True)
        with reference_mode(models) as reference:
            ref_logprobs = response_logprobs(reference, batch)
        old_values = response_values(critic, batch)
    return old_logprobs, entropy, ref_logprobs, old_values


def ppo_step(models: Models, policy, critic, optimizers: dict, schedulers: dict, accelerator, config: Config,
             state: PPOState, rewards: RewardSources, moments: L.RunningMoments, kl_control: L.AdaptiveKLController,
             prompts: list[Prompt], ptx_texts: list[str]) -> dict[str, float]:
    device = accelerator.device
    # 1. rollout
    started = time.perf_counter()
    generations = rollout(models, config, prompts)
    generation_seconds = time.perf_counter() - started
    generated_tokens = sum(len(g.completion_ids) for g in generations)
    state.generation_seconds += generation_seconds
    state.generated_tokens += generated_tokens

    # 2. score; samples without a reward leave the batch (counted, never treated as a penalty)
    scores = rewards(prompts, generations, models.tokenizer)
    keep = [i for i in range(len(generations)) if math.isfinite(scores.total[i].item())]
    for reason, count in scores.dropped.items():
        state.dropped[reason] = state.dropped.get(reason, 0) + count
    stats = {"reward": float(scores.total[keep].mean()) if keep else float("nan"),
             **mean_parts(scores.parts, keep), "dropped": len(generations) - len(keep),
             "response_length": generated_tokens / len(generations), "generation_seconds": generation_seconds}
    if not keep:
        return stats
    kept = [generations[i] for i in keep]
    batch = collate([g.prompt_ids for g in kept], [g.completion_ids for g in kept],
                    models.tokenizer.pad_token_id).to(device)
    loss_mask = policy_mask(batch, [scores.token_masks[i] for i in keep]).to(device)
    mask = batch.response_mask
    state.samples += len(keep)

    # 3. evaluate the experience
    old_logprobs, entropy, ref_logprobs, old_values = evaluate_experience(models, policy, critic, batch, accelerator)

    # 4. rewards and advantages
    score = scores.total[keep].to(device=device, dtype=torch.float32)
    all_scores = accelerator.gather(score)
    if config.reward_norm:
        moments.update(all_scores)  # running statistics over every process
        score = L.normalize_rewards(score, moments.mean, moments.std, config.reward_clip)
    kl = L.kl_estimate(old_logprobs, ref_logprobs, config.kl_estimator) * mask
    token_rewards = L.token_rewards(score, kl, kl_control.value, mask)
    advantages, returns = L.gae(token_rewards, old_values, mask, config.gamma, config.lam)
    sequence_kl = kl.sum(dim=1)
    mean_kl = accelerator.gather(sequence_kl).mean().item()
    stats.update(kl=mean_kl, kl_per_token=L.masked_mean(kl, mask).item(), kl_coef=kl_control.value,
                 entropy=L.masked_mean(entropy, mask).item(), reward_normalized=score.mean().item(),
                 values=L.masked_mean(old_values, mask).item(), returns=L.masked_mean(returns, mask).item(),
                 explained_variance=L.explained_variance(old_values, returns, mask),
                 fgo_token_share=(loss_mask.sum() / mask.sum().clamp(min=1)).item())
    if not math.isfinite(mean_kl) or (config.kl_ceiling and mean_kl > config.kl_ceiling):
        raise PPOStopped(f"KL to the reference is {mean_kl:.3g} nats per sequence (ceiling kl_ceiling="
                         f"{config.kl_ceiling}); lower learning_rate or raise kl_coef")

    # 5. update
    update_policy = state.step >= config.critic_warmup_steps
    stats.update(update(policy, critic, optimizers, schedulers, accelerator, config, batch, loss_mask,
                        old_logprobs, old_values, advantages, returns, update_policy, ptx_texts, state, models))
    kl_control.update(mean_kl, len(all_scores))
    return stats


def update(policy, critic, optimizers, schedulers, accelerator, config: Config, batch: Batch, loss_mask,
           old_logprobs, old_values, advantages, returns, update_policy: bool, ptx_texts, state, models) -> dict:
    """Step 5: `ppo_epochs` passes over shuffled minibatches; each minibatch is one critic step and (after
    the critic warm-up) one policy step, accumulated over `grad_accum` micro-batches of `batch_size`."""
    rows = batch.input_ids.shape[0]
    minibatch = min(rows, config.batch_size * config.grad_accum)
    logs: dict[str, list[float]] = {}
    for _ in range(config.ppo_epochs):
        order = torch.randperm(rows).to(batch.input_ids.device)
        for start in range(0, rows - minibatch + 1, minibatch):
            index = order[start:start + minibatch]
            micro_batches = [index[i:i + config.batch_size] for i in range(0, len(index), config.batch_size)]
            # critic: clipped value loss
            for micro in micro_batches:
                with accelerator.autocast():
                    values = response_values(critic, batch.select(micro))
                value_loss, value_stats = L.value_loss(values, old_values[micro], returns[micro],
                                                       batch.response_mask[micro], config.value_clip_range or None)
                _check_finite(value_loss, "value loss")
                accelerator.backward(value_loss * len(micro) / len(index))
                _append(logs, value_loss=value_loss.item(), **value_stats)
            _append(logs, critic_grad_norm=_step(critic, optimizers["critic"], schedulers["critic"], accelerator,
                                                 config))
            if not update_policy:
                continue
            # policy: clipped surrogate on advantages whitened over the whole minibatch
            whitened = advantages.clone()
            if config.whiten_advantages:
                whitened[index] = L.masked_whiten(advantages[index], loss_mask[index])
            for micro in micro_batches:
                with accelerator.autocast():
                    logprobs = response_logprobs(policy, batch.select(micro))
                policy_loss, policy_stats = L.policy_loss(logprobs, old_logprobs[micro], whitened[micro],
                                                          loss_mask[micro], config.clip_range)
                _check_finite(policy_loss, "policy loss")
                accelerator.backward(policy_loss * len(micro) / len(index))
                _append(logs, policy_loss=policy_loss.item(), **policy_stats)
            if config.ptx_coef > 0:
                ptx_loss = pretraining_loss(policy, models.tokenizer, ptx_texts, state, config, accelerator)
                _check_finite(ptx_loss, "pretraining loss")
                accelerator.backward(config.ptx_coef * ptx_loss)
                _append(logs, ptx_loss=ptx_loss.item())
            _append(logs, policy_grad_norm=_step(policy, optimizers["policy"], schedulers["policy"], accelerator,
                                                 config))
    stats = {key: sum(v) / len(v) for key, v in logs.items()}
    stats["learning_rate"] = schedulers["policy"].get_last_lr()[0]
    return stats


def pretraining_loss(policy, tokenizer, texts: list[str], state: PPOState, config: Config, accelerator):
    """PPO-ptx (Ouyang et al. 2022): next-token loss on a batch of pretraining text."""
    chunk = [texts[(state.ptx_position + i) % len(texts)] for i in range(config.ptx_batch_size)]
    state.ptx_position += config.ptx_batch_size
    encoded = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=config.max_length).to(accelerator.device)
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    position_ids = (encoded["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)  # the tokenizer pads on the left
    with accelerator.autocast():
        return policy(**encoded, position_ids=position_ids, labels=labels, use_cache=False).loss


def _step(model, optimizer, scheduler, accelerator, config: Config) -> float:
    grad = float("nan")
    if config.max_grad_norm > 0:
        grad = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad


def _check_finite(loss: torch.Tensor, name: str) -> None:
    if not torch.isfinite(loss):
        raise PPOStopped(f"the {name} is {loss.item()}; lower learning_rate or check the reward")


def _append(logs: dict[str, list[float]], **values: float) -> None:
    for key, value in values.items():
        logs.setdefault(key, []).append(value)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_eval(models: Models, config: Config, rewards: RewardSources, prompts: list[Prompt],
                path=None) -> dict[str, float]:
    """Mean reward (and its parts) of greedy completions of held-out prompts; with `path`, one JSON line
    per prompt (id, completion, reward, parts) is written there, for paired before/after comparisons."""
    if not prompts:
        return {}
    greedy = dataclasses.replace(config, temperature=0.0)
    generations = rollout(models, greedy, prompts)
    scores = rewards(prompts, generations, models.tokenizer)
    keep = [i for i in range(len(prompts)) if math.isfinite(scores.total[i].item())]
    if path is not None:
        with open(path, "w") as handle:
            for i, (prompt, generation) in enumerate(zip(prompts, generations)):
                record = {"id": prompt.id, "completion": generation.text, "reward": scores.total[i].item(),
                          "parts": scores.details[i] if scores.details else {},
                          **{key: values[i] for key, values in scores.parts.items()}}
                record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
                handle.write(json.dumps(record, default=str) + "\n")
    return {"reward": float(scores.total[keep].mean()) if keep else float("nan"), "prompts": len(prompts),
            "scored": len(keep), **mean_parts(scores.parts, keep)}


# --------------------------------------------------------------------------- the run


def train_ppo(config: Config, prompts: list[Prompt] | None = None, reward_fn: RewardFunction | None = None,
              held_out: list[Prompt] | None = None) -> dict:
    """Run PPO as `config` says; returns the summary (also written to summary.json).

    `prompts`, `held_out` and `reward_fn` (called like `Domain.reward`) replace the configured data
    and domain reward when given, so any prompt list and reward callable can be trained on."""
    run = RunDir(config.output_dir)
    set_seed(config.seed)
    accelerator = make_accelerator(config)
    data_counts: dict[str, int] = {}
    # one domain instance gives both prompts and rewards (a curriculum inside it must see both)
    domain = domain_from(config) if (config.domain_reward and reward_fn is None) else None
    if prompts is None:
        prompts, configured_held_out, data_counts = load_prompt_sets(config, domain)
        held_out = configured_held_out if held_out is None else held_out
    held_out = list(held_out or [])[:config.eval_prompts] if config.eval_prompts else []
    models = load_models(config, accelerator.device)
    domain_reward = reward_fn or (domain.reward if domain is not None else None)
    rewards = RewardSources(models.reward_model, config.reward_model_weight, _rm_head(config, models),
                            config.reward_batch_size, config.reward_max_length, domain_reward,
                            config.domain_reward_weight)
    ptx_texts = ptx_texts_from(config)

    total_steps = config.max_steps if config.max_steps > 0 else max(
        1, math.ceil(config.epochs * len(prompts) / (config.rollout_batch_size * accelerator.num_processes)))
    minibatches = max(1, config.rollout_batch_size // (config.batch_size * config.grad_accum))
    total_updates = total_steps * config.ppo_epochs * minibatches
    policy_opt, policy_sched = make_optimizer_and_scheduler(models.policy, config, total_updates)
    critic_config = dataclasses.replace(config, learning_rate=config.critic_learning_rate)
    critic_opt, critic_sched = make_optimizer_and_scheduler(models.critic, critic_config, total_updates)
    policy, critic, policy_opt, critic_opt, policy_sched, critic_sched = accelerator.prepare(
        models.policy, models.critic, policy_opt, critic_opt, policy_sched, critic_sched)
    optimizers, schedulers = {"policy": policy_opt, "critic": critic_opt}, {"policy": policy_sched,
                                                                            "critic": critic_sched}
    moments, kl_control = L.RunningMoments(), L.AdaptiveKLController(config.kl_coef, config.kl_target,
                                                                     config.kl_horizon)
    state = PPOState(kl_coef=config.kl_coef)
    checkpoint = run.latest_checkpoint() if config.resume else None
    if checkpoint is not None:
        state = load_ppo_checkpoint(checkpoint, accelerator, models, optimizers, schedulers)
        moments.load_state_dict(state.reward_moments)
        kl_control.load_state_dict({"value": state.kl_coef})
        run.truncate_metrics_after(state.step)
        print(f"align ppo: resumed from {checkpoint} (step {state.step})")
    else:
        run.reset_metrics()
    run.save_config(config)

    summary: dict = {"critic_init": models.critic_source, "train_prompts": len(prompts), **data_counts}
    if held_out and checkpoint is None:
        before = greedy_eval(models, config, rewards, held_out, run.path / "eval_before.jsonl")
        summary.update({f"eval_before_{k}": v for k, v in before.items()})
        (run.path / "eval_before.json").write_text(json.dumps(summary))
    elif held_out and (run.path / "eval_before.json").exists():
        previous = json.loads((run.path / "eval_before.json").read_text())
        summary.update({k: v for k, v in previous.items() if k.startswith("eval_before_")})

    progress = tqdm(total=total_steps, initial=state.step, desc="align ppo", disable=not config.progress,
                    dynamic_ncols=True)
    stop_reason = None
    while state.step < total_steps:
        started = time.perf_counter()
        batch_prompts = prompt_batch(prompts, state, config.rollout_batch_size, config.seed,
                                     accelerator.process_index, accelerator.num_processes)
        try:
            stats = ppo_step(models, policy, critic, optimizers, schedulers, accelerator, config, state, rewards,
                             moments, kl_control, batch_prompts, ptx_texts)
        except PPOStopped as error:
            stop_reason = str(error)
            print(f"\nalign ppo: stopped at step {state.step + 1}: {stop_reason}", file=sys.stderr)
            break
        state.step += 1
        state.train_seconds += time.perf_counter() - started
        state.reward_moments, state.kl_coef = moments.state_dict(), kl_control.value
        progress.update(1)
        progress.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats.get('kl', float('nan')):.3f}")
        if accelerator.is_main_process and (state.step % config.log_steps == 0 or state.step == total_steps):
            run.log(state.step, epoch=state.epoch, step_seconds=time.perf_counter() - started, **stats)
        if config.save_steps and state.step % config.save_steps == 0 and state.step != total_steps:
            save_ppo_checkpoint(run, state, accelerator, models, optimizers, schedulers)
    progress.close()

    if held_out and stop_reason is None:
        after = greedy_eval(models, config, rewards, held_out, run.path / "eval_after.jsonl")
        summary.update({f"eval_after_{k}": v for k, v in after.items()})
    metrics = [r for r in run.read_metrics() if r.get("reward") is not None]
    summary.update({
        "steps": state.step, "samples": state.samples, **{f"dropped_{k}": v for k, v in state.dropped.items()},
        "final_reward": metrics[-1]["reward"] if metrics else None,
        "final_kl": metrics[-1].get("kl") if metrics else None,
        "first_reward": metrics[0]["reward"] if metrics else None,
        "train_seconds": round(state.train_seconds, 3),
        "steps_per_second": state.step / max(state.train_seconds, 1e-9),
        "generated_tokens": state.generated_tokens,
        "generated_tokens_per_second": state.generated_tokens / max(state.generation_seconds, 1e-9),
        "stopped_early": stop_reason is not None, "stop_reason": stop_reason,
        "model_dir": str(run.path / "model"),
    })
    if accelerator.is_main_process:
        if stop_reason is None:
            save_ppo_checkpoint(run, state, accelerator, models, optimizers, schedulers)
            accelerator.unwrap_model(policy).save_pretrained(run.path / "model")
            models.tokenizer.save_pretrained(run.path / "model")
        else:
            summary["model_dir"] = None
        if config.report:
            from align.ppo_report import write_ppo_report

            summary["report"] = str(write_ppo_report(run, summary))
        run.write_summary(summary)
    accelerator.wait_for_everyone()
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
