"""Reward-model losses: pure tensor functions.

Every pairwise loss takes per-pair rewards and returns a per-pair loss vector (no reduction),
so a trainer can weight, mask (discarded pairs, other heads) and average as it needs.
Notation: Δ = r(x, y_chosen) − r(x, y_rejected), σ the logistic function.
"""
from __future__ import annotations

import math

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


# =========================================================================== contrastive terms
# Unsupervised losses added to the RM loss so chosen and rejected responses get distinct features
# (Wang et al. 2024, "Secrets of RLHF Part II: Reward Modeling", §4). Each takes two "views" of
# the same N items (two forward passes under dropout) as [N, D] features and returns a scalar.


def pair_features(chosen_features: torch.Tensor, rejected_features: torch.Tensor) -> torch.Tensor:
    """Items for contrasting the responses themselves: [f(x, y_c); f(x, y_r)], shape [2B, D]."""
    return torch.cat([chosen_features, rejected_features], dim=0)


def difference_features(chosen_features: torch.Tensor, rejected_features: torch.Tensor) -> torch.Tensor:
    """Items for contrasting the preference direction: [f_c − f_r; f_r − f_c], shape [2B, D]."""
    difference = chosen_features - rejected_features
    return torch.cat([difference, -difference], dim=0)


def simcse_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over cosine similarities: the other view of the same item is the positive, the
    other view of every other item in the batch a negative.

        s_ij = cos(a_i, b_j) / τ,    L = −(1/N) Σ_i log( exp(s_ii) / Σ_j exp(s_ij) )

    Gao, Yao & Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", eq. 4
    (unsupervised SimCSE: the two views differ only by dropout).
    """
    a = F.normalize(view_a.float(), dim=-1)
    b = F.normalize(view_b.float(), dim=-1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=logits.device))


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Soft cluster assignments ("codes") under an equal-partition constraint.

    Starting from Q = exp(scores / ε) ([N items, K prototypes]), alternately rescale so that every
    prototype (column) holds mass 1/K and every item (row) mass 1/N; return N·Q, so each row is a
    distribution over prototypes (sums to 1) and each column sums to N/K (exactly after the last
    row step, approximately the column constraint, tighter with more iterations). Computed in log
    space, so any ε and score scale stay finite.

    Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments"
    (SwAV), §3.1 and Algorithm 1; Cuturi 2013 for the entropic Sinkhorn-Knopp iteration.
    """
    num_items, num_prototypes = scores.shape
    # the same rescaling in log space: exp(s/ε) under- or overflows float32 for small ε
    log_q = scores.float() / epsilon
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(num_prototypes)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(num_items)
    return torch.exp(log_q) * num_items


def swav_loss(view_a: torch.Tensor, view_b: torch.Tensor, prototypes: torch.Tensor, temperature: float,
              epsilon: float, iterations: int) -> torch.Tensor:
    """Swapped prediction: each view predicts the cluster code of the other view.

        z = x / ‖x‖,  c_k = p_k / ‖p_k‖,  s = z·cᵀ ([N, K]),  q = SinkhornKnopp(s) (no gradient),
        P = softmax(s / τ),   L = −(1/2N) Σ_i Σ_k [ q^b_ik log P^a_ik + q^a_ik log P^b_ik ]

    Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments" (SwAV), eq. 1–3. `prototypes` [K, D] are learnable; they are normalised here, so
    the loss sees unit prototypes whatever their stored scale.
    """
    centroids = F.normalize(prototypes.float(), dim=-1)
    scores_a = F.normalize(view_a.float(), dim=-1) @ centroids.T
    scores_b = F.normalize(view_b.float(), dim=-1) @ centroids.T
    codes_a = sinkhorn_knopp(scores_a.detach(), epsilon, iterations)
    codes_b = sinkhorn_knopp(scores_b.detach(), epsilon, iterations)
    log_p_a = F.log_softmax(scores_a / temperature, dim=-1)
    log_p_b = F.log_softmax(scores_b / temperature, dim=-1)
    return -0.5 * ((codes_b * log_p_a).sum(dim=-1) + (codes_a * log_p_b).sum(dim=-1)).mean()


# =========================================================================== MetaRM


def metarm_difference_loss(group_rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MetaRM's difference loss: how far apart the RM puts the k responses a (shifted) policy sampled for
    one prompt. It is MAXIMISED (the inner gradient-ascent step of MetaRM).

        J(θ; x, s_1..s_k) = (2 / k²) Σ_{i<j} σ(|r_θ(x, s_i) − r_θ(x, s_j)|)

    `group_rewards` [G, K]: rewards of G groups of up to K responses each; `mask` [G, K] (True = a real
    response) lets a group hold fewer, k being then that group's own count. Returns J per group, shape [G],
    no reduction (a group with fewer than two responses has no pair: J = 0). σ(|Δ|) ≥ 1/2, so k equal
    rewards give J = (k − 1) / (2k), the minimum, where the gradient of |Δ| (and of J) is zero.

    Dou et al. 2024, "MetaRM: Shifted Distributions Alignment via Meta-Learning" (arXiv 2405.00438), the
    difference loss J_θ; part of Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II: Reward
    Modeling".
    """
    rewards = group_rewards.float()
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    mask = mask.bool()
    gaps = (rewards.unsqueeze(2) - rewards.unsqueeze(1)).abs()  # [G, K, K]: |r_i − r_j|
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    upper = torch.ones(rewards.shape[1], rewards.shape[1], dtype=torch.bool, device=rewards.device).triu(1)
    pair_terms = torch.where(both & upper, torch.sigmoid(gaps), torch.zeros_like(gaps))
    k = mask.sum(dim=1).float()
    return 2.0 * pair_terms.sum(dim=(1, 2)) / k.clamp(min=1.0).pow(2)
