"""Reward-model losses: pure tensor functions.

Every pairwise loss takes per-pair rewards and returns a per-pair loss vector (no reduction),
so a trainer can weight, mask (discarded pairs, other heads) and average as it needs.
Notation: Δ = r(x, y_chosen) − r(x, y_rejected), σ the logistic function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reward_difference(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Δ = r_chosen − r_rejected, computed in float32 whatever the autocast dtype."""
    return chosen_rewards.float() - rejected_rewards.float()


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Pairwise ranking loss of a Bradley-Terry preference model.

        L = −log σ(Δ)

    Bradley & Terry (1952); as an RM loss: Ouyang et al. 2022, "Training language models to
    follow instructions with human feedback", eq. 1.
    """
    return -F.logsigmoid(reward_difference(chosen_rewards, rejected_rewards))


def margin_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Ranking loss that asks the reward gap to exceed a per-pair margin m_i.

        L = −log σ(Δ − m_i)

    Touvron et al. 2023 (LLaMA 2, eq. 2) with a rating-based margin; Wang et al. 2024, "Secrets
    of RLHF Part II: Reward Modeling", §3.2 with an adaptive margin m_i = λ·μ_i from the pair's
    preference strength μ_i (see `adaptive_margin`).
    """
    return -F.logsigmoid(reward_difference(chosen_rewards, rejected_rewards) - margin.float())


def soft_label_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, alpha: torch.Tensor | float,
                    margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Label-smoothed ranking loss: a share α of the label mass goes to the opposite preference.

        L = −[(1 − α)·log σ(Δ − m) + α·log σ(−(Δ − m))]

    With α = 0 and m = 0 this is `bradley_terry_loss`; with α = 1 it is the flipped pair.
    Müller et al. 2019, "When does label smoothing help?"; applied to ambiguous preference pairs
    in Wang et al. 2024, "Secrets of RLHF Part II", §3.2. The margin m (default 0) lets the
    `soft_label+margin` combination share one formula.
    """
    shifted = reward_difference(chosen_rewards, rejected_rewards) - torch.as_tensor(margin, dtype=torch.float32)
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=shifted.device)
    return -((1.0 - alpha) * F.logsigmoid(shifted) + alpha * F.logsigmoid(-shifted))


def flip_pairs(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
               flip_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap chosen and rejected where `flip_mask` is True (pairs judged mislabelled).

    Used before any pairwise loss: `bradley_terry_loss(*flip_pairs(c, r, mask))`.
    Wang et al. 2024, "Secrets of RLHF Part II", §3.2 (flipping the labels of pairs whose
    preference strength is negative).
    """
    flip_mask = flip_mask.bool()
    return (torch.where(flip_mask, rejected_rewards, chosen_rewards),
            torch.where(flip_mask, chosen_rewards, rejected_rewards))


def adaptive_margin(strength: torch.Tensor, scale: float, clip: float | None = None) -> torch.Tensor:
    """Per-pair margin m_i = λ·μ_i from preference strength μ_i, clipped to [−clip, clip].

    Pairs without a strength (NaN) get margin 0. The clip exists because large margins
    destabilise training (Wang et al. 2024, "Secrets of RLHF Part II", §3.2).
    """
    margin = torch.nan_to_num(strength.float(), nan=0.0) * scale
    return margin.clamp(-clip, clip) if clip is not None else margin


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `values` over positions where `mask` is true; 0 (with a gradient path) if none are."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
