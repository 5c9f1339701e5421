"""One PPO-max step (Zheng et al. 2023), as `ppo_step` reads top to bottom:
  1. rollout     sample `samples_per_prompt` completions per prompt for this process's prompts, in one batched
                 call (KV cache, no gradients); a prompt's completions are consecutive rows (its group), and a
                 process samples every completion of its own prompts, so no group spans processes;
  2. score       reward model and/or domain reward -> one score per sample; a sample without a reward
                 stays in the batch with weight 0 (counted, never a penalty), so every process keeps the
                 same rows and takes the same optimizer steps;
  3. evaluate    old log-probs (+ entropy), reference log-probs and old values (with a critic), without
                 gradients, except when the update is one pass over exactly these rows (one epoch, one
                 minibatch of one micro-batch): then the policy's forward keeps its graph and the update
                 reuses it instead of repeating it (the old log-probs are its detached copy);
  4. advantages  normalise+clip scores (running moments over every process), the KL penalty in the reward
                 (`kl_penalty`), then the estimator (`advantage=`): GAE on the critic's values, or critic-free
                 GRPO / RLOO over each prompt's group (a dropped member is left out of its group's statistics),
                 or REINFORCE++ normalised over every process's tokens;
  5. update      `ppo_epochs` passes over minibatches (the last one may be smaller; no row is dropped):
                 clipped value loss -> critic step (with a critic), clipped policy loss (GAE: on advantages
                 whitened over the minibatch's tokens on every process; + the KL loss, + PPO-ptx) -> policy
                 step. Losses are means over the minibatch's tokens on every process, so N processes with
                 batch B/N take the steps of one process with batch B.
The pure pieces live in `align.ppo.losses`, tensors and rewards in `align.ppo.rollout`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import torch

from align.generation import generate
from align.ppo import losses as L
from align.ppo.config import Config
from align.ppo.data import prompt_text
from align.ppo.models import Models, reference_mode
from align.ppo.rollout import (
    Batch,
    RewardSources,
    collate,
    mean_parts,
    policy_mask,
    response_logprobs,
    response_values,
)
from align.training import Trainer, TrainState
from align.types import Prompt


@dataclasses.dataclass
class PPOState(TrainState):
    """Where a PPO run is (`epoch` / `batch_in_epoch`: the prompt stream's position)."""

    ptx_position: int = 0
    samples: int = 0
    dropped: dict = dataclasses.field(default_factory=dict)
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    scoring_seconds: float = 0.0


@dataclasses.dataclass
class Experience:
    """A step's rollout as tensors for the update ([B, T] over response tokens unless said)."""

    batch: Batch
    mask: torch.Tensor
    """Response tokens of scored samples (dropped samples: all 0)."""
    loss_mask: torch.Tensor
    """`mask` restricted by FGO token masks: the tokens the policy loss sees."""
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor | None
    """The critic's targets (None without a critic)."""
    logprobs_with_graph: torch.Tensor | None = None
    """Step 3's policy log-probs with their graph, when the update's one forward would repeat it."""


class PPOStopped(RuntimeError):
    """Training diverged (non-finite KL or loss, or KL over the ceiling)."""


def rollout(models: Models, config: Config, prompts: list[Prompt], trainer: Trainer | None = None,
            seed: int | None = None):
    """Step 1: `samples_per_prompt` completions per prompt, a prompt's consecutive (stop strings: `config.stop`
    plus each prompt's `meta['stop']`); `seed`: each completion's own random stream (see `generate`).
    With the run's `trainer`, one autocast context spans the whole sampling: the prepared policy's per-forward
    contexts nest inside it, so autocast keeps its bf16 copies of the fp32 weights from token to token instead of
    recasting them at each. Without one, the policy samples in its own dtype."""
    texts = [prompt_text(models.tokenizer, p, config.prompt_format) for p in prompts]
    with trainer.autocast() if trainer is not None else contextlib.nullcontext():
        return generate(models.policy, models.tokenizer, texts, max_new_tokens=config.max_new_tokens,
                        temperature=config.temperature, top_p=config.top_p, stop=config.stop,
                        batch_size=config.generation_batch_size, max_prompt_length=config.max_prompt_length,
                        num_return_sequences=config.samples_per_prompt, seed=seed,
                        prompt_stops=[list(p.meta.get("stop") or []) for p in prompts])


def single_update_pass(config: Config, rows: int, update_policy: bool) -> bool:
    """Whether the policy update is one forward and backward over exactly this step's rows (one epoch, one
    minibatch, one micro-batch), so step 3's forward of the policy is the update's (on-policy: ratio 1)."""
    return update_policy and config.ppo_epochs == 1 and rows <= config.batch_size


def evaluate_experience(models: Models, policy, critic, batch: Batch, trainer: Trainer, keep_graph: bool = False):
    """Step 3: old log-probs and entropy (policy), reference log-probs, old values (None without a critic),
    and with `keep_graph` the policy's log-probs with their graph (else None)."""
    with trainer.autocast():
        with torch.set_grad_enabled(keep_graph):
            logprobs, entropy = response_logprobs(policy, batch, with_entropy=True)
        with torch.no_grad():
            with reference_mode(models) as reference:
                ref_logprobs = response_logprobs(reference, batch)
            old_values = response_values(critic, batch) if critic is not None else None
    return logprobs.detach(), entropy, ref_logprobs, old_values, logprobs if keep_graph else None


def estimate_advantages(config: Config, trainer: Trainer, score: torch.Tensor, kept: torch.Tensor, kl: torch.Tensor,
                        kl_coef: float, old_values: torch.Tensor | None, mask: torch.Tensor):
    """Step 4's estimator (`advantage=`) on scores [B] (0 where dropped) and the per-token KL [B, T]: returns
    (advantages [B, T], the critic's returns [B, T] or None). With `kl_penalty` in the loss the reward carries
    no KL term."""
    beta = 0.0 if config.kl_in_loss else kl_coef
    if config.advantage == "gae":
        return L.gae(L.token_rewards(score, kl, beta, mask), old_values, mask, config.gamma, config.lam)
    if config.advantage == "reinforce++":
        return L.reinforce_pp_advantages(L.token_rewards(score, kl, beta, mask), mask, config.gamma,
                                         trainer.sum_over_processes), None
    estimator = L.grpo_advantages if config.advantage == "grpo" else L.rloo_advantages
    per_sample = estimator(score - beta * kl.sum(dim=1), kept, config.samples_per_prompt)  # sequence-level KL
    return per_sample.unsqueeze(1) * mask, None


def ppo_step(models: Models, policy, critic, trainer: Trainer, config: Config, state: PPOState,
             rewards: RewardSources, moments: L.RunningMoments, kl_control: L.AdaptiveKLController,
             prompts: list[Prompt], ptx_texts: list[str], curriculum=None) -> dict[str, float]:
    device = trainer.device
    # 1. rollout
    started = time.perf_counter()
    generations = rollout(models, config, prompts, trainer)
    generation_seconds = time.perf_counter() - started
    generated_tokens = sum(len(g.completion_ids) for g in generations)
    state.generation_seconds += generation_seconds
    state.generated_tokens += int(trainer.sum_over_processes(generated_tokens)[0])
    sample_prompts = [prompts[g.prompt_index] for g in generations]

    # 2. score
    started = time.perf_counter()
    scores = rewards(sample_prompts, generations, models.tokenizer)
    scoring_seconds = time.perf_counter() - started
    state.scoring_seconds += scoring_seconds
    kept = torch.isfinite(scores.total)
    for counts in trainer.gather_objects([dict(scores.dropped)]):
        for reason, count in counts.items():
            state.dropped[reason] = state.dropped.get(reason, 0) + count
    if curriculum is not None and scores.outputs:
        everything = trainer.gather_objects(list(zip(sample_prompts, scores.outputs)))
        curriculum.observe([p for p, _ in everything], [o for _, o in everything])
    all_scores = trainer.gather(scores.total.to(device=device, dtype=torch.float32))  # NaN where dropped
    all_kept = torch.isfinite(all_scores)
    keep = [i for i in range(len(generations)) if kept[i]]
    stats = {"reward": float(all_scores[all_kept].mean()) if all_kept.any() else float("nan"),
             **mean_parts(scores.parts, keep), "dropped": int((~all_kept).sum()),
             "response_length": generated_tokens / len(generations), "generation_seconds": generation_seconds,
             "scoring_seconds": scoring_seconds,
             **(curriculum.log() if curriculum is not None else {})}
    state.samples += int(all_kept.sum())
    if not all_kept.any():
        return stats
    batch = collate([g.prompt_ids for g in generations], [g.completion_ids for g in generations],
                    models.tokenizer.pad_token_id).to(device)
    weight = kept.to(device=device, dtype=batch.response_mask.dtype).unsqueeze(1)
    mask = batch.response_mask * weight
    loss_mask = policy_mask(batch, scores.token_masks).to(device) * weight

    # 3. evaluate the experience
    update_policy = state.step >= config.critic_warmup_steps
    old_logprobs, entropy, ref_logprobs, old_values, logprobs_with_graph = evaluate_experience(
        models, policy, critic, batch, trainer, single_update_pass(config, len(generations), update_policy))

    # 4. rewards and advantages
    score = torch.nan_to_num(scores.total.to(device=device, dtype=torch.float32), nan=0.0)
    if config.reward_norm:
        moments.update(all_scores[all_kept])  # running statistics over every process
        score = L.normalize_rewards(score, moments.mean, moments.std, config.reward_clip)
    score = score * weight.squeeze(1)
    kl = L.kl_estimate(old_logprobs, ref_logprobs, config.kl_estimator) * mask
    advantages, returns = estimate_advantages(config, trainer, score, kept.to(device), kl, kl_control.value,
                                              old_values, mask)
    sequence_kl = trainer.gather(kl.sum(dim=1))[all_kept]
    mean_kl = sequence_kl.mean().item()
    # means over every process's samples and tokens (one all-reduce), as one process would log them
    critic_sums = ((old_values * mask).sum().item(), (returns * mask).sum().item()) if returns is not None else (0, 0)
    score_sum, samples, tokens, kl_sum, entropy_sum, advantage_sum, trained_tokens, value_sum, return_sum = (
        trainer.sum_over_processes(score.sum().item(), kept.sum().item(), mask.sum().item(), kl.sum().item(),
                                   (entropy * mask).sum().item(), (advantages.abs() * mask).sum().item(),
                                   loss_mask.sum().item(), *critic_sums))
    stats.update(kl=mean_kl, kl_per_token=kl_sum / max(tokens, 1), kl_coef=kl_control.value,
                 entropy=entropy_sum / max(tokens, 1), reward_normalized=score_sum / max(samples, 1),
                 advantage_abs=advantage_sum / max(tokens, 1), fgo_token_share=trained_tokens / max(tokens, 1))
    if returns is not None:
        stats.update(values=value_sum / max(tokens, 1), returns=return_sum / max(tokens, 1),
                     explained_variance=L.explained_variance(old_values, returns, mask))
    if not math.isfinite(mean_kl) or (config.kl_ceiling and mean_kl > config.kl_ceiling):
        raise PPOStopped(f"KL to the reference is {mean_kl:.3g} nats per sequence (ceiling kl_ceiling="
                         f"{config.kl_ceiling}); lower learning_rate or raise kl_coef")

    # 5. update
    experience = Experience(batch, mask, loss_mask, old_logprobs, ref_logprobs, old_values, advantages, returns,
                            logprobs_with_graph)
    stats.update(update(policy, critic, trainer, config, experience, kl_control.value, update_policy, ptx_texts,
                        state, models))
    kl_control.update(mean_kl, len(sequence_kl))
    return stats


def update(policy, critic, trainer: Trainer, config: Config, experience: Experience, kl_coef: float,
           update_policy: bool, ptx_texts, state: PPOState, models) -> dict:
    """Step 5: `ppo_epochs` passes over shuffled minibatches of `batch_size × grad_accum` rows; each minibatch
    is one critic step (with a critic) and (after the critic warm-up) one policy step, accumulated over
    micro-batches of `batch_size` rows."""
    batch, mask, loss_mask, advantages = experience.batch, experience.mask, experience.loss_mask, experience.advantages
    rows = batch.input_ids.shape[0]
    minibatch = config.batch_size * config.grad_accum
    logs: dict[str, list[float]] = {}
    for _ in range(config.ppo_epochs):
        order = torch.randperm(rows).to(batch.input_ids.device)
        for start in range(0, rows, minibatch):
            index = order[start:start + minibatch]
            micro_batches = [index[i:i + config.batch_size] for i in range(0, len(index), config.batch_size)]
            if critic is not None:  # clipped value loss, a mean over the minibatch's tokens on every process
                value_tokens = trainer.sum_over_processes(mask[index].sum().item())[0]
                for micro in trainer.accumulate(critic, micro_batches):
                    with trainer.autocast():
                        values = response_values(critic, batch.select(micro))
                    value_loss, value_stats = L.value_loss(values, experience.old_values[micro],
                                                           experience.returns[micro], mask[micro],
                                                           config.value_clip_range or None, num_tokens=value_tokens)
                    _check_finite(value_loss, "value loss")
                    trainer.backward(value_loss)
                    _append(logs, value_loss=value_loss.item() * value_tokens / max(mask[micro].sum().item(), 1),
                            **value_stats)
                _append(logs, critic_grad_norm=trainer.optimizer_step("critic"))
            if not update_policy:
                continue
            # policy: clipped surrogate (GAE: on advantages whitened over the minibatch's tokens on every process)
            tokens, total, squares, kl_tokens = trainer.sum_over_processes(
                loss_mask[index].sum().item(), (advantages[index] * loss_mask[index]).sum().item(),
                (advantages[index] ** 2 * loss_mask[index]).sum().item(), mask[index].sum().item())
            whitened = advantages.clone()
            if config.whiten_advantages and not config.critic_free:
                mean = total / max(tokens, 1.0)
                variance = (squares - tokens * mean ** 2) / max(tokens - 1.0, 1.0)
                whitened[index] = L.masked_whiten(advantages[index], loss_mask[index], moments=(mean, variance))
            for position, micro in enumerate(trainer.accumulate(policy, micro_batches)):
                if experience.logprobs_with_graph is not None:  # step 3's forward over these very rows
                    logprobs = experience.logprobs_with_graph[micro]
                else:
                    with trainer.autocast():
                        logprobs = response_logprobs(policy, batch.select(micro))
                policy_loss, policy_stats = L.policy_loss(logprobs, experience.old_logprobs[micro], whitened[micro],
                                                          loss_mask[micro], config.clip_range, num_tokens=tokens)
                _check_finite(policy_loss, "policy loss")
                loss = policy_loss
                if config.kl_in_loss:  # k3 estimate of KL(pi || pi_ref) on every response token (GRPO)
                    kl_loss = L.token_mean(L.kl_estimate(logprobs, experience.ref_logprobs[micro], "k3"), mask[micro],
                                           kl_tokens)
                    loss = loss + kl_coef * kl_loss
                    _append(logs, kl_loss=kl_loss.item() * kl_tokens / max(mask[micro].sum().item(), 1))
                if config.ptx_coef > 0 and position == len(micro_batches) - 1:
                    ptx_loss = pretraining_loss(policy, models.tokenizer, ptx_texts, state, config, trainer)
                    _check_finite(ptx_loss, "pretraining loss")
                    loss = loss + config.ptx_coef * ptx_loss / trainer.world_size  # each process: its own texts
                    _append(logs, ptx_loss=ptx_loss.item())
                trainer.backward(loss)
                _append(logs, policy_loss=policy_loss.item() * tokens / max(loss_mask[micro].sum().item(), 1),
                        **policy_stats)
            _append(logs, policy_grad_norm=trainer.optimizer_step("policy"))
    stats = {key: sum(v) / len(v) for key, v in logs.items() if v and None not in v}
    stats["learning_rate"] = trainer.learning_rate("policy")
    return stats


def pretraining_loss(policy, tokenizer, texts: list[str], state: PPOState, config: Config, trainer: Trainer):
    """PPO-ptx (Ouyang et al. 2022): next-token loss on this process's batch of pretraining text."""
    first = state.ptx_position + trainer.rank * config.ptx_batch_size
    chunk = [texts[(first + i) % len(texts)] for i in range(config.ptx_batch_size)]
    state.ptx_position += config.ptx_batch_size * trainer.world_size
    encoded = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=config.max_length).to(trainer.device)
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    position_ids = (encoded["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)  # the tokenizer pads on the left
    with trainer.autocast():
        return policy(**encoded, position_ids=position_ids, labels=labels, use_cache=False).loss


def _check_finite(loss: torch.Tensor, name: str) -> None:
    if not torch.isfinite(loss):
        raise PPOStopped(f"the {name} is {loss.item()}; lower learning_rate or check the reward")


def _append(logs: dict[str, list[float]], **values: float) -> None:
    for key, value in values.items():
        logs.setdefault(key, []).append(value)
