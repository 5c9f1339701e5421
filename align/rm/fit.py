"""The model and the optimizer loop of every reward model (`align rm`, the members of an `align strength`
ensemble, MetaRM).

Per step: `grad_accum` global batches, each process its share -> `loss_fn(model, batch, step)` (this
micro-batch's share of the step's loss) -> backward -> one AdamW step; metrics every `log_steps`,
held-out evaluation every `eval_steps`, checkpoints every `save_steps`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from align.models import load_reward_model
from align.models.loading import enable_gradient_checkpointing, freeze_bottom_layers, freeze_word_embeddings
from align.rm.contrastive.term import ContrastiveRewardModel, ContrastiveTerm
from align.rm.data import RMData
from align.rm.evaluate import evaluate
from align.training import BatchPlan, Trainer, TrainState


def build_reward_model(config, trainer: Trainer, head_names: list[str] | None = None):
    """The RM to train for `config` (an `align.rm.train.Config`): fresh heads (`head_names`, default
    `config.heads`) on `config.model` (a LoRA base in bf16 when the run computes in bf16), with LoRA adapters,
    frozen word embeddings or bottom layers, the contrastive term and gradient checkpointing as configured."""
    head_names = list(head_names or config.heads)
    model = load_reward_model(config.model, num_heads=len(head_names), head_names=head_names,
                              dropout=config.model_dropout,
                              dtype=trainer.weights_dtype(trainable=not config.lora.enabled))
    if config.lora.enabled:
        model.add_lora(config.lora)
    if config.freeze_word_embeddings:
        freeze_word_embeddings(model.model)
    if config.freeze_layers:
        freeze_bottom_layers(model.model, config.freeze_layers)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.contrastive.enabled:  # the term's prototypes train and checkpoint with the model
        model = ContrastiveRewardModel(model, ContrastiveTerm(config.contrastive, model.hidden_size))
    return model



@dataclass
class Step:
    """What a loss needs to know of the optimizer step a micro-batch belongs to."""

    pairs: int
    """Pairs in the whole step: every process, every micro-batch."""
    indices: list[int]
    """Their indices in the training data."""
    share: float
    """This global micro-batch's part of the step's pairs."""


def pair_sums(loss_sum: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor) -> dict[str, float]:
    """Per-micro-batch sums behind the logged loss, accuracy and reward gap."""
    return {"rm_loss": float(loss_sum.detach()), "accuracy": ((delta > 0).float() * weight).sum().item(),
            "reward_gap": (delta * weight).sum().item()}


def optimize(trainer: Trainer, model, train: RMData, batches: BatchPlan, state: TrainState, total_steps: int,
             loss_fn, held_out: RMData | None = None, desc: str = "align rm") -> None:
    """The optimizer steps of an RM (`align rm`, and each ensemble member of `align strength`): per step,
    `grad_accum` global batches, each process its share -> `loss_fn(model, batch, step)` -> backward ->
    one AdamW step; metrics every `log_steps`, held-out evaluation every `eval_steps`, checkpoints every
    `save_steps` (time spent writing them is not training time)."""
    config = trainer.config
    model.train()
    stream = batches.stream(state.epoch, state.batch_in_epoch)
    progress = tqdm(total=total_steps, initial=state.step, desc=desc, dynamic_ncols=True, leave=desc == "align rm",
                    disable=not config.progress or not trainer.is_main)
    window: list[dict[str, float]] = []
    step_start = time.perf_counter()
    while state.step < total_steps:
        step_batches = [next(stream) for _ in range(config.grad_accum)]
        step_indices = [i for _, _, global_batch in step_batches for i in global_batch]
        sums: dict[str, float] = {"tokens": 0.0}
        for epoch, position, global_batch in trainer.accumulate(model, step_batches):
            local = batches.local(global_batch)
            batch = train.collate(local or global_batch[:1], device=trainer.device, weight=1.0 if local else 0.0)
            step = Step(len(step_indices), step_indices, len(global_batch) / len(step_indices))
            with trainer.autocast():
                loss, micro_sums = loss_fn(model, batch, step)
            trainer.backward(loss)
            for key, value in micro_sums.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["tokens"] += int(batch["attention_mask"].sum()) if local else 0
            state.examples_seen += len(global_batch)
            state.epoch, state.batch_in_epoch = epoch, position + 1
        grad_norm = trainer.optimizer_step("model")
        step_start = trainer.end_step(state, step_start)
        progress.update(1)
        stats, tokens = step_stats(trainer, sums, len(step_indices))
        state.tokens_seen += int(tokens)
        window.append(stats)

        if state.step % config.log_steps == 0 or state.step == total_steps:
            averaged = {key: sum(s[key] for s in window) / len(window) for key in window[0]}
            progress.set_postfix(loss=f"{averaged['loss']:.3f}", acc=f"{averaged['accuracy']:.2f}")
            trainer.log(state.step, epoch=state.epoch, learning_rate=trainer.learning_rate("model"),
                        grad_norm=grad_norm, **averaged)
            window = []
        last = state.step == total_steps
        if config.eval_steps and state.step % config.eval_steps == 0 and not last and held_out is not None \
                and len(held_out):
            trainer.log(state.step, **evaluate(model, held_out, config.eval_batch_size, trainer))
        if config.save_steps and state.step % config.save_steps == 0 and not last:
            trainer.save_checkpoint(state)
            step_start = time.perf_counter()
    progress.close()


def step_stats(trainer: Trainer, sums: dict[str, float], step_pairs: int) -> tuple[dict[str, float], float]:
    """The step's loss, accuracy and reward gap over every process's pairs, and its tokens."""
    rm_loss, correct, gap, tokens = trainer.sum_over_processes(sums["rm_loss"], sums["accuracy"],
                                                               sums["reward_gap"], sums["tokens"])
    stats = {"loss": rm_loss / step_pairs, "accuracy": correct / step_pairs, "reward_gap": gap / step_pairs}
    if "contrastive_loss" in sums:
        stats.update(rm_loss=stats["loss"], contrastive_loss=sums["contrastive_loss"])
        beta = trainer.unwrap("model").term.beta
        stats["loss"] = stats["rm_loss"] + beta * sums["contrastive_loss"]
    return stats, tokens
