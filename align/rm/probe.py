"""Linear-probe head initialisation: LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features
and Underperform Out-of-Distribution").

A fresh reward head is random: its first gradients push the backbone's features toward whatever the random
head happens to read. LP-FT first fits the head alone on the frozen features (a linear probe), then
fine-tunes everything from there. For a reward model the probe is a Bradley-Terry logistic regression on the
difference of each pair's features, per head on that head's pairs:

    min_w  mean_i -log σ(w · (z_chosen,i - z_rejected,i)) + l2 · ||w||²,    z = features / std(features)

(standardised so that `l2` means the same for every backbone; pairs marked `flip` by denoising enter
flipped). The head's weight becomes w / std, its bias centres the training rewards on 0. The fit is
deterministic, so every process computes the same head from the same gathered features.
"""
from __future__ import annotations

import time

import torch

from align.models.reward import final_linear_head
from align.rm.contrastive.separability import eval_features, fit_logistic_regression
from align.rm.data import RMData


def fit_bradley_terry_probe(difference: torch.Tensor, l2: float, steps: int = 200) -> torch.Tensor:
    """w [D] minimising mean -log σ(difference @ w) + l2·||w||² over the rows of `difference` [N, D]: the
    logistic regression of each difference (label 1) and its negation (label 0), whose bias is 0 by symmetry."""
    x = torch.cat([difference, -difference])
    y = torch.cat([torch.ones(len(difference)), torch.zeros(len(difference))])
    weight, _ = fit_logistic_regression(x, y, l2, steps)
    return weight


@torch.no_grad()
def probe_heads(reward_model, data: RMData, batch_size: int, trainer, l2: float) -> dict[str, float]:
    """Set each head of `reward_model` (an `align.models.RewardModel`) to the probe of its pairs in `data`;
    returns the probe's training accuracy per head and the seconds spent."""
    started = time.perf_counter()
    with trainer.autocast():
        chosen, rejected = eval_features(reward_model, data, batch_size, trainer)
    both = torch.cat([chosen, rejected])
    scale, centre = both.std(dim=0).clamp(min=1e-6), both.mean(dim=0)
    sign = 1.0 - 2.0 * data.flip.float().unsqueeze(1)  # a flipped pair counts the other way round
    difference = (chosen - rejected) / scale * sign
    head = final_linear_head(reward_model.model)
    stats: dict[str, float] = {}
    for index, name in enumerate(data.head_names):
        rows = data.head_index == index
        if not rows.any():
            continue  # a head without pairs keeps its random initialisation
        standardised = fit_bradley_terry_probe(difference[rows], l2)
        stats[f"head_probe_{name}_train_accuracy"] = (difference[rows] @ standardised > 0).float().mean().item()
        weight = standardised / scale
        head.weight[index] = weight.to(head.weight.dtype)
        if head.bias is not None:  # decoders' `score` heads have none
            head.bias[index] = -(weight @ centre).to(head.bias.dtype)
    stats["head_probe_seconds"] = round(time.perf_counter() - started, 3)
    return stats
