"""Reward-model ensembles for preference strength: lean in-memory training of members, and a cheap
ensemble of M heads on one shared backbone.

`fit_reward_model` is `align rm`'s training step without the run directory (no checkpoints,
metrics or saved model): an ensemble trains many short-lived RMs and only needs their scores.
It uses the same per-pair loss (`align.rm.batch_loss`), so a denoising plan applied to the data
(flip, soft labels, margins, discards) trains exactly as in `align rm`.

The cheap ensemble (`fit_bootstrap_heads`) is our own design: M linear heads on one backbone,
trained in one run; head m sees pair i with a fixed Poisson(1) weight w_mi, the online-bootstrap
approximation of resampling the data with replacement (Oza & Russell 2001; Osband et al. 2016,
"Deep Exploration via Bootstrapped DQN", which shares one torso between bootstrap heads). It costs
about one training instead of M. Its members share every backbone feature, so they disagree less
than independently trained members: its std of the preference difference underestimates the
full ensemble's (measured in `align strength` reports and `bench/denoise.py`).
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from align import losses
from align.rm import Step, batch_loss, optimize, pair_sums
from align.rm_data import RMData
from align.training import BatchPlan, Trainer, TrainState


def subset(data: RMData, indices: list[int]) -> RMData:
    """The pairs at `indices` as their own RMData (tokenization reused, denoising targets reset)."""
    return RMData([data.pairs[i] for i in indices], [data.encoded[i] for i in indices], data.head_names,
                  data.pad_token_id)


@dataclass
class Fitted:
    model: torch.nn.Module
    """The trained RM (unwrapped, eval mode)."""
    seconds: float
    """Training time (checkpoint writing excluded)."""
    trainer: Trainer
    """Its trainer: score with `score_pairs(..., trainer)` to share the work between processes."""


def fit_reward_model(config, data: RMData, seed: int, output_dir: str | Path, num_heads: int | None = None,
                     head_names=None, desc: str = "member", loss_type: str = "bt", loss_fn=None,
                     model_factory=None) -> Fitted:
    """Train a fresh RM on `data` with `config`'s optimisation keys (an `align.rm.Config`) and `seed`
    (initialisation and data order), on the shared training core: checkpoints every `save_steps` and
    `resume=true` in `output_dir`, where its metrics.jsonl goes too; no model, summary or report is written.

    `loss_type` is `align rm`'s `loss.type` for the denoising targets set on `data` (`bt` by default);
    `loss_fn(model, batch, step) -> (loss, sums)` replaces the pairwise loss (the bootstrap heads use it);
    `model_factory(head_names) -> RewardModel` replaces `load_reward_model(config.model)` (a benchmark
    uses it to train only the top layers on cached hidden states).
    """
    from align.models import load_reward_model

    member = dataclasses.replace(config, seed=seed, output_dir=str(output_dir))
    trainer = Trainer(member)
    head_names = list(head_names or data.head_names)
    if model_factory is not None:
        model = model_factory(head_names)
    else:
        model = load_reward_model(config.model, num_heads=num_heads or len(head_names), head_names=head_names,
                                  dropout=config.model_dropout)
    batches = BatchPlan(data.lengths(), config.batch_size, seed, trainer.rank, trainer.world_size)
    total_steps = trainer.total_steps(len(batches), config.grad_accum)
    prepared = trainer.prepare("model", model, total_steps)
    state = trainer.resume(TrainState())
    loss_fn = loss_fn or (lambda model, batch, step: batch_loss(model, batch, step, loss_type))
    optimize(trainer, prepared, data, batches, state, total_steps, loss_fn, desc=desc)
    model = trainer.unwrap("model")
    model.eval()
    return Fitted(model, state.train_seconds, trainer)


def remove_checkpoints(fitted: Fitted) -> None:
    """A member's checkpoints are only needed until it is scored."""
    if fitted.trainer.is_main:
        shutil.rmtree(fitted.trainer.run.checkpoint_root, ignore_errors=True)
    fitted.trainer.wait()


def bootstrap_weights(num_pairs: int, num_heads: int, seed: int) -> torch.Tensor:
    """[N, M] Poisson(1) weights: how often pair i would appear in head m's bootstrap resample."""
    generator = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.ones(num_pairs, num_heads), generator=generator)


def bootstrap_heads_loss(weights: torch.Tensor):
    """Loss for `fit_bootstrap_heads`: per head, the bootstrap-weighted mean Bradley-Terry loss over the step.

        L = (1/M) Σ_m  Σ_i w_mi · (−log σ(r_m(x_i, y_c) − r_m(x_i, y_r))) / Σ_i w_mi

    (i over the step's pairs; this micro-batch contributes its pairs' terms)."""
    def loss_fn(model, batch, step: Step):
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards
        half = rewards.shape[0] // 2
        per_pair = losses.bradley_terry_loss(rewards[:half], rewards[half:])  # [B, M]
        indices = batch["index"].cpu()
        w = weights[indices].to(per_pair.device) * batch["weight"].unsqueeze(1)
        step_weight = weights[torch.tensor(step.indices)].sum(0).clamp(min=1.0).to(per_pair.device)
        loss = ((per_pair * w).sum(0) / step_weight).mean()
        delta = (rewards[:half] - rewards[half:]).detach().float().mean(1)
        return loss, pair_sums(per_pair.detach().mean(1) @ batch["weight"], delta, batch["weight"])
    return loss_fn


def fit_bootstrap_heads(config, data: RMData, members: int, seed: int, output_dir: str | Path,
                        model_factory=None) -> Fitted:
    """The cheap ensemble: one backbone with `members` heads, trained once on bootstrap-weighted data."""
    weights = bootstrap_weights(len(data), members, seed)
    names = [f"member_{m}" for m in range(members)]
    return fit_reward_model(config, data, seed, output_dir, num_heads=members, head_names=names,
                            desc="bootstrap heads", loss_fn=bootstrap_heads_loss(weights), model_factory=model_factory)
