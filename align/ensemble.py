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

import math
import time

import torch
from tqdm.auto import tqdm

from align import losses
from align.rm import batch_loss
from align.rm_data import RMData
from align.training import make_accelerator, make_optimizer_and_scheduler, set_seed


def subset(data: RMData, indices: list[int]) -> RMData:
    """The pairs at `indices` as their own RMData (tokenization reused, denoising targets reset)."""
    return RMData([data.pairs[i] for i in indices], [data.encoded[i] for i in indices], data.head_names,
                  data.pad_token_id)


def total_steps_for(config, num_pairs: int) -> int:
    steps_per_epoch = max(1, math.ceil(math.ceil(num_pairs / config.batch_size) / config.grad_accum))
    return config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.epochs * steps_per_epoch))


def fit_reward_model(config, data: RMData, seed: int, num_heads: int | None = None, head_names=None,
                     desc: str = "member", loss_fn=None, model_factory=None):
    """Train a fresh RM on `data` with `config`'s optimisation keys (an `align.rm.Config`) and `seed`
    (initialisation and data order). Returns (model in eval mode, training seconds).

    `loss_fn(model, batch, indices) -> loss` replaces the pairwise loss (the bootstrap heads use it);
    `model_factory(head_names) -> RewardModel` replaces `load_reward_model(config.model)` (a benchmark
    uses it to train only the top layers on cached hidden states).
    """
    from align.models import load_reward_model

    set_seed(seed)
    accelerator = make_accelerator(config)
    head_names = list(head_names or data.head_names)
    if model_factory is not None:
        model = model_factory(head_names)
    else:
        model = load_reward_model(config.model, num_heads=num_heads or len(head_names), head_names=head_names,
                                  dropout=config.model_dropout)
    total_steps = total_steps_for(config, len(data))
    optimizer, scheduler = make_optimizer_and_scheduler(model, config, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    stream = data.micro_batch_stream(config.batch_size, seed)
    start = time.perf_counter()
    for _ in tqdm(range(total_steps), desc=desc, disable=not config.progress, leave=False, dynamic_ncols=True):
        for _ in range(config.grad_accum):
            _, _, indices = next(stream)
            batch = data.collate(indices, device=accelerator.device)
            with accelerator.autocast():
                loss = loss_fn(model, batch, indices) if loss_fn else batch_loss(model, batch)[0]
            accelerator.backward(loss / config.grad_accum)
        if config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model = accelerator.unwrap_model(model)
    model.eval()
    return model, seconds


def bootstrap_weights(num_pairs: int, num_heads: int, seed: int) -> torch.Tensor:
    """[N, M] Poisson(1) weights: how often pair i would appear in head m's bootstrap resample."""
    generator = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.ones(num_pairs, num_heads), generator=generator)


def bootstrap_heads_loss(weights: torch.Tensor):
    """Loss for `fit_bootstrap_heads`: per head, the bootstrap-weighted mean Bradley-Terry loss.

        L = (1/M) Σ_m  Σ_i w_mi · (−log σ(r_m(x_i, y_c) − r_m(x_i, y_r))) / Σ_i w_mi
    """
    def loss_fn(model, batch, indices):
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards
        half = rewards.shape[0] // 2
        per_pair = losses.bradley_terry_loss(rewards[:half], rewards[half:])  # [B, M]
        w = weights[torch.tensor(indices)].to(per_pair.device)
        return ((per_pair * w).sum(0) / w.sum(0).clamp(min=1.0)).mean()
    return loss_fn


def fit_bootstrap_heads(config, data: RMData, members: int, seed: int, model_factory=None):
    """The cheap ensemble: one backbone with `members` heads, trained once on bootstrap-weighted data.
    Returns (model with one head per member, training seconds)."""
    weights = bootstrap_weights(len(data), members, seed)
    names = [f"member_{m}" for m in range(members)]
    return fit_reward_model(config, data, seed, num_heads=members, head_names=names, desc="bootstrap heads",
                            loss_fn=bootstrap_heads_loss(weights), model_factory=model_factory)


@torch.no_grad()
def score_all_heads(model, data: RMData, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards of every head for every pair: two [N, heads] tensors, in data order."""
    device = next(model.parameters()).device
    chosen, rejected = torch.zeros(len(data), model.num_heads), torch.zeros(len(data), model.num_heads)
    order = sorted(range(len(data)), key=data.length)  # group by length: less padding
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = data.collate(indices, device=device)
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards.float().cpu()
        chosen[indices], rejected[indices] = rewards[:len(indices)], rewards[len(indices):]
    return chosen, rejected
