"""MetaRM: a reward model that keeps telling a shifted policy's responses apart while staying right on the
original preference pairs (Dou et al. 2024, "MetaRM: Shifted Distributions Alignment via Meta-Learning",
arXiv 2405.00438; Secrets of RLHF Part II).

One optimizer step, `meta_gradient` then the trainer's step:
  1. J(θ; X_s): the difference loss (`align.losses.metarm_difference_loss`) on a batch of groups of k
     responses the current policy sampled per prompt (`align.rm.shifted`), gradient over every process;
  2. θ' = θ + η ∇_θ J           one plain gradient-ascent step (η = `meta_learning_rate`), in place;
  3. g = ∇_θ' L_BT(θ'; X_t)     the pairwise loss of `align rm` on a batch of the original pairs;
  4. θ ← θ − α·AdamW(g)         the saved θ is put back and the trainer's optimizer applies g to it
                                (first order: no gradient flows through step 2; α = `learning_rate`).

Several processes: both backward passes run through `Trainer.accumulate` (gradients synchronised on the last
micro-batch only), so the ascent of step 2 uses the all-reduced ∇J, identical on every process: the
parameters stay equal without any further communication. Losses are shares of the step's global sums, so N
processes with batch B/N take the steps of one process with batch B. The ascent edits the parameters in
place, which DDP allows; DeepSpeed and FSDP keep sharded copies the edit would miss, so they are refused.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from align import losses
from align.config import ConfigError, check_path, doc
from align.rm.data import RMData
from align.rm.denoise import plan_denoising
from align.rm.evaluate import evaluate
from align.rm.fit import Step, step_stats
from align.rm.shifted import (
    EncodedGroups,
    ShiftedGroup,
    discrimination,
    encode_groups,
    group_rewards,
    load_shifted_groups,
    overall_head,
    sample_shifted_groups,
    score_groups,
    write_shifted_groups,
)
from align.rm.train import Config as RMConfig
from align.rm.train import batch_loss, build_reward_model, finish, initial_heads
from align.training import BatchPlan, Trainer, TrainState

SHIFTED_FILE = "shifted_samples.jsonl"


@dataclass
class Config(RMConfig):
    """MetaRM: reward-model training with a meta step on samples of the current (shifted) policy."""

    output_dir: str = doc("Directory for config.yaml, metrics.jsonl, summary.json, checkpoints, model/ and "
                          "report.md.", "runs/metarm")
    learning_rate: float = doc("α: learning rate of the outer AdamW step on the meta-gradient (paper: 5e-6).", 5e-6)
    batch_size: int = doc("Original preference pairs per micro-batch (per device; paper: 16).", 16)
    shifted_data: str | None = doc("Shifted samples: JSONL of completions grouped by prompt (`{prompt, "
                                   "completions: [...]}` or one `{prompt, completion}` row each). Empty: sample "
                                   "them from `policy`.", None)
    policy: str | None = doc("The current policy to sample the shifted groups from when `shifted_data` is empty "
                             "(written to shifted_samples.jsonl in output_dir).", None)
    shifted_prompts: str | None = doc("Prompts to sample from (a prompt file); empty: the domain's training "
                                      "prompts.", None)
    max_shifted_prompts: int = doc("Sample from at most this many prompts (-1: all).", -1)
    samples_per_prompt: int = doc("k: responses sampled per prompt (paper: 5).", 5)
    meta_learning_rate: float = doc("η: step size of the inner gradient ascent on J (paper: 5e-6); 0 makes the step "
                                    "plain Bradley-Terry training.", 5e-6)
    shifted_batch_size: int = doc("Groups of k responses per micro-batch of the inner step (per device).", 4)
    prompt_format: Literal["chat", "plain"] = doc("How prompts are given to `policy` (see `align ppo`).", "chat")
    max_new_tokens: int = doc("Longest sampled response in tokens.", 64)
    max_prompt_length: int = doc("Prompt token limit for sampling (the start of a longer prompt is cut).", 256)
    temperature: float = doc("Sampling temperature of the shifted samples.", 1.0)
    top_p: float = doc("Nucleus sampling threshold of the shifted samples (1: off).", 1.0)

    def validate(self) -> None:
        super().validate()
        if bool(self.shifted_data) == bool(self.policy):
            raise ConfigError("shifted_data: give exactly one of shifted_data=<file of grouped completions> and "
                              "policy=<model to sample them from>")
        if self.samples_per_prompt < 2:
            raise ConfigError(f"samples_per_prompt: J compares responses of one prompt, so at least 2 are needed, "
                              f"got {self.samples_per_prompt!r}")
        if self.meta_learning_rate < 0:
            raise ConfigError(f"meta_learning_rate: expected a non-negative number, got {self.meta_learning_rate!r}")
        for key in ("shifted_batch_size", "max_new_tokens", "max_prompt_length"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}: expected a positive number, got {getattr(self, key)!r}")
        if self.contrastive.enabled:
            raise ConfigError("contrastive.enabled: MetaRM trains with the pairwise loss alone (no contrastive term)")
        check_path("shifted_data", self.shifted_data)
        check_path("shifted_prompts", self.shifted_prompts)


@dataclass
class MetaRMState(TrainState):
    """`epoch` / `batch_in_epoch` place the pair stream; these the stream of shifted groups."""

    shifted_epoch: int = 0
    shifted_batch_in_epoch: int = 0


# --------------------------------------------------------------------------- the meta step

Share = Callable[[torch.nn.Module], tuple[torch.Tensor, dict[str, float]]]
"""A micro-batch's forward pass: the model -> (its share of the step's loss, sums for the step's stats)."""


def meta_gradient(trainer: Trainer, model: torch.nn.Module, difference_shares: list[Share],
                  pair_shares: list[Share], meta_learning_rate: float) -> dict[str, float]:
    """Steps 1-3 of the module docstring: leaves g = ∇L_BT(θ') in the gradients of the parameters, which hold θ
    again, ready for `trainer.optimizer_step`. Returns the summed stats of every micro-batch."""
    trained = [p for p in model.parameters() if p.requires_grad]
    sums: Counter = Counter()
    for share in trainer.accumulate(model, difference_shares):
        with trainer.autocast():
            j_share, micro = share(model)
        trainer.backward(j_share)
        sums.update(micro)
    with torch.no_grad():
        saved = [p.detach().clone() for p in trained]
        for parameter in trained:
            if parameter.grad is not None:
                parameter.add_(parameter.grad.to(parameter.dtype), alpha=meta_learning_rate)  # θ' = θ + η∇J
            parameter.grad = None
    for share in trainer.accumulate(model, pair_shares):
        with trainer.autocast():
            loss, micro = share(model)
        trainer.backward(loss)
        sums.update(micro)
    with torch.no_grad():
        for parameter, theta in zip(trained, saved):
            parameter.copy_(theta)
    return dict(sums)


def difference_share(model, batch: dict[str, torch.Tensor], step_groups: int, head: int):
    """This micro-batch's share of the step's mean J: Σ_groups w·J / (groups in the step, every process)."""
    rewards, mask = group_rewards(model, batch, head)
    total = (losses.metarm_difference_loss(rewards, mask) * batch["weight"]).sum()
    return total / step_groups, {"difference": float(total.detach())}


def pair_share(trainer: Trainer, train: RMData, plan: BatchPlan, global_batch: list[int], step_indices: list[int],
               loss_type: str, tokens: Counter) -> Share:
    """The forward pass of this process's pairs of one global batch (`align rm`'s pairwise loss share)."""
    def share(model):
        local = plan.local(global_batch)
        batch = train.collate(local or global_batch[:1], device=trainer.device, weight=1.0 if local else 0.0)
        tokens["tokens"] += int(batch["attention_mask"].sum()) if local else 0
        step = Step(len(step_indices), step_indices, len(global_batch) / len(step_indices))
        return batch_loss(model, batch, step, loss_type)
    return share


def group_share(trainer: Trainer, shifted: EncodedGroups, plan: BatchPlan, global_batch: list[int], step_groups: int,
                head: int) -> Share:
    """The forward pass of this process's shifted groups of one global batch (its share of the step's J)."""
    def share(model):
        local = plan.local(global_batch)
        batch = shifted.collate(local or global_batch[:1], device=trainer.device, weight=1.0 if local else 0.0)
        return difference_share(model, batch, step_groups, head)
    return share


def meta_optimize(trainer: Trainer, model, train: RMData, shifted: EncodedGroups, pair_plan: BatchPlan,
                  group_plan: BatchPlan, state: MetaRMState, total_steps: int, held_out: RMData) -> None:
    """The optimizer steps: per step `grad_accum` global batches of groups and of pairs, each process its share
    -> `meta_gradient` -> AdamW step; metrics, evaluation and checkpoints as `align rm` (`align.rm.fit`)."""
    config = trainer.config
    head = overall_head(list(config.heads))
    model.train()
    pair_stream = pair_plan.stream(state.epoch, state.batch_in_epoch)
    group_stream = group_plan.stream(state.shifted_epoch, state.shifted_batch_in_epoch)
    progress = tqdm(total=total_steps, initial=state.step, desc="metarm", dynamic_ncols=True,
                    disable=not config.progress or not trainer.is_main)
    window: list[dict[str, float]] = []
    started = time.perf_counter()
    while state.step < total_steps:
        pair_batches = [next(pair_stream) for _ in range(config.grad_accum)]
        group_batches = [next(group_stream) for _ in range(config.grad_accum)]
        step_indices = [i for _, _, batch in pair_batches for i in batch]
        step_groups = sum(len(batch) for _, _, batch in group_batches)
        tokens = Counter()
        sums = meta_gradient(trainer, model,
                             [group_share(trainer, shifted, group_plan, b, step_groups, head) for _, _, b in group_batches],
                             [pair_share(trainer, train, pair_plan, b, step_indices, config.loss.type, tokens)
                              for _, _, b in pair_batches], config.meta_learning_rate)
        grad_norm = trainer.optimizer_step("model")
        state.examples_seen += len(step_indices)
        state.epoch, state.batch_in_epoch = pair_batches[-1][0], pair_batches[-1][1] + 1
        state.shifted_epoch, state.shifted_batch_in_epoch = group_batches[-1][0], group_batches[-1][1] + 1
        started = trainer.end_step(state, started)
        progress.update(1)
        stats, step_tokens = step_stats(trainer, {**sums, "tokens": float(tokens["tokens"])}, len(step_indices))
        stats["difference"] = trainer.sum_over_processes(sums.get("difference", 0.0))[0] / step_groups
        state.tokens_seen += int(step_tokens)
        window.append(stats)
        if state.step % config.log_steps == 0 or state.step == total_steps:
            averaged = {key: sum(s[key] for s in window) / len(window) for key in window[0]}
            progress.set_postfix(loss=f"{averaged['loss']:.3f}", J=f"{averaged['difference']:.3f}")
            trainer.log(state.step, epoch=state.epoch, learning_rate=trainer.learning_rate("model"),
                        grad_norm=grad_norm, **averaged)
            window = []
        last = state.step == total_steps
        if config.eval_steps and state.step % config.eval_steps == 0 and not last and len(held_out):
            trainer.log(state.step, **evaluate(model, held_out, config.eval_batch_size, trainer))
        if config.save_steps and state.step % config.save_steps == 0 and not last:
            trainer.save_checkpoint(state)
            started = time.perf_counter()
    progress.close()


# --------------------------------------------------------------------------- the run


def shifted_groups(config: Config, trainer: Trainer) -> tuple[list[ShiftedGroup], Counter]:
    """The groups from `shifted_data`, or sampled from `policy` (once: a resumed run reads them back)."""
    if config.shifted_data:
        return load_shifted_groups(config.shifted_data, strict=config.strict)
    path = trainer.run.path / SHIFTED_FILE
    if config.resume and path.exists():
        return load_shifted_groups(str(path))
    from align.models import load_causal_lm, load_tokenizer

    if config.shifted_prompts:
        from align.data import load_prompts

        prompts, _ = load_prompts(config.shifted_prompts, strict=config.strict)
    else:
        from align.registry import get_domain

        prompts = list(get_domain(config.domain, **config.domain_options).prompts("train"))
    prompts = prompts[:config.max_shifted_prompts] if config.max_shifted_prompts > 0 else prompts
    tokenizer = load_tokenizer(config.policy, padding_side="left")
    policy = load_causal_lm(config.policy, dtype=trainer.weights_dtype(trainable=False)).to(trainer.device)
    groups = sample_shifted_groups(policy, tokenizer, prompts, config.samples_per_prompt, seed=config.seed,
                                   prompt_format=config.prompt_format, max_new_tokens=config.max_new_tokens,
                                   temperature=config.temperature, top_p=config.top_p,
                                   max_prompt_length=config.max_prompt_length, map_shards=trainer.map_shards)
    if trainer.is_main:
        write_shifted_groups(groups, path)
    trainer.wait()
    return load_shifted_groups(str(path))  # the same filtering as a given file (too few non-empty completions)


def train_metarm(config: Config) -> dict:
    """Train a reward model with MetaRM as `config` says; returns the summary (also written to summary.json)."""
    from align.models.loading import load_tokenizer
    from align.rm.data import load_rm_data

    data = load_rm_data(config)
    trainer = Trainer(config)
    if trainer.accelerator.distributed_type.name in ("DEEPSPEED", "FSDP"):
        raise ConfigError("MetaRM's inner step edits the parameters in place, which DeepSpeed and FSDP shards would "
                          "not see: launch with DDP (configs/accelerate/ddp_8gpu.yaml), with lora.enabled for a "
                          "large model")
    plan = plan_denoising(config.loss, data.train.strength, data.train.given_margin)
    data.train.apply_plan(plan)
    groups, skipped = shifted_groups(config, trainer)
    if not groups:
        raise ValueError(f"MetaRM: no shifted group with two or more completions (skipped: {dict(skipped) or 'none'})")
    shifted = encode_groups(load_tokenizer(config.model), groups, config.max_length)

    pair_plan = BatchPlan(data.train.lengths(), config.batch_size, config.seed, trainer.rank, trainer.world_size)
    group_plan = BatchPlan(shifted.lengths(), config.shifted_batch_size, config.seed + 1, trainer.rank,
                           trainer.world_size)
    total_steps = trainer.total_steps(len(pair_plan), config.grad_accum)
    model = trainer.prepare("model", build_reward_model(config, trainer), total_steps)
    head = overall_head(list(config.heads))
    probe = initial_heads(config, trainer, data.train)  # also when resuming: `before` is the same start's
    before = discrimination(score_groups(model, shifted, config.eval_batch_size, head, trainer))
    state = trainer.resume(MetaRMState())
    meta_optimize(trainer, model, data.train, shifted, pair_plan, group_plan, state, total_steps, data.eval)
    summary = finish(config, trainer, model, data, plan, state, probe)
    after = discrimination(score_groups(model, shifted, config.eval_batch_size, head, trainer))
    summary.update({"shifted_groups": len(groups), "shifted_responses": sum(len(g.completions) for g in groups),
                    "shifted_skipped_groups": sum(skipped.values()),
                    **{f"shifted_skipped_{k}": v for k, v in sorted(skipped.items())},
                    **{f"shifted_{k}_before": v for k, v in before.items()},
                    **{f"shifted_{k}_after": v for k, v in after.items()},
                    "meta_learning_rate": config.meta_learning_rate})
    if trainer.is_main:
        trainer.run.write_summary(summary)
    trainer.wait()
    return summary


def run(config: Config) -> dict:
    summary = train_metarm(config)
    accuracy = summary.get("eval_accuracy")
    print(f"align metarm: {summary['train_pairs']} pairs, {summary['shifted_groups']} shifted groups, "
          f"{summary['steps']} steps" + (f", eval accuracy {accuracy:.3f}" if accuracy is not None else "")
          + f"; J on the shifted samples {summary.get('shifted_difference_before', float('nan')):.4f} -> "
          f"{summary.get('shifted_difference_after', float('nan')):.4f}")
    print(f"align metarm: model in {summary['model_dir']}; summary in {config.output_dir}/summary.json")
    return summary
