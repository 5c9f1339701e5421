"""The pieces of PPO-max as small pure functions (and two tiny stateful helpers).

Shapes: token tensors are [B, T] over the *response* tokens of each sequence, right-padded,
with `mask` 1 on real tokens. Papers:
- PPO: Schulman et al. 2017, "Proximal Policy Optimization Algorithms".
- GAE: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation".
- KL-penalised reward and the adaptive KL controller: Ziegler et al. 2019, "Fine-Tuning Language
  Models from Human Preferences".
- k1/k3 KL estimators: Schulman 2020, "Approximating KL Divergence" (blog note).
- PPO-max (reward normalisation and clipping, advantage whitening, clipped value loss, token-level
  KL penalty, critic initialised from the RM, global gradient clipping): Zheng et al. 2023,
  "Secrets of RLHF in Large Language Models Part I: PPO".
- Critic-free estimators over groups of completions of one prompt: GRPO (Shao et al. 2024, "DeepSeekMath"),
  RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
  Human Feedback in LLMs"), REINFORCE++ (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for
  Aligning Large Language Models").
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

# --------------------------------------------------------------------------- masked statistics


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(values * mask) / sum(mask) (over `dim`, or everything); 0 where the mask is empty."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected by default)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  moments: tuple[float, float] | None = None) -> torch.Tensor:
    """(x - mean) / std over the masked entries; with shift_mean=False only rescales, keeping the mean.
    `moments` (mean, variance) computed elsewhere (over every process's entries) replace the local ones.
    Padded entries come back as 0."""
    mean, var = moments if moments is not None else (masked_mean(values, mask), masked_var(values, mask))
    whitened = (values - mean) * torch.rsqrt(torch.as_tensor(var, dtype=values.dtype) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


# --------------------------------------------------------------------------- log-probabilities


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position: logits [B, T, V], tokens [B, T] -> [B, T]."""
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) * z per position: [B, T, V] -> [B, T]."""
    logits = logits.float()
    probs = logits.softmax(dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


# --------------------------------------------------------------------------- KL penalty


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (Schulman 2020):
    k1 = log pi(y) - log pi_ref(y)          unbiased, can be negative per token;
    k3 = (r - 1) - log r, r = pi_ref(y) / pi(y)   unbiased and always >= 0, lower variance."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl_estimator: expected 'k1' or 'k3', got {estimator!r}")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """Token-level reward of RLHF (Ziegler et al. 2019): r_t = -beta * KL_t on every response token,
    plus the sequence score on the last response token. scores [B], kl/mask [B, T] -> [B, T]."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


class AdaptiveKLController:
    """beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)  (Ziegler et al. 2019).

    With `target` None the coefficient stays fixed."""

    def __init__(self, init_coef: float, target: float | None = None, horizon: int = 10000):
        self.value = init_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        if self.target is not None and math.isfinite(current_kl):
            error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


# --------------------------------------------------------------------------- reward normalisation


class RunningMoments:
    """Running mean and standard deviation over every value seen (Chan et al. parallel update)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    @torch.no_grad()
    def update(self, values: torch.Tensor) -> tuple[float, float]:
        """Fold in a batch; returns the batch's own (mean, std)."""
        values = values.double().flatten()
        n = values.numel()
        if n == 0:
            return 0.0, 0.0
        batch_mean = values.mean().item()
        batch_var = values.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total
        return batch_mean, math.sqrt(batch_var * n / max(n - 1, 1))

    @property
    def std(self) -> float:
        # unbiased, like torch.std over everything seen
        return math.sqrt(self.var * self.count / max(self.count - 1, 1))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def normalize_rewards(scores: torch.Tensor, mean: float, std: float, clip: float | None,
                      eps: float = 1e-8) -> torch.Tensor:
    """PPO-max reward normalisation and clipping (Zheng et al. 2023, sec. 5.3):
    r~ = clip((r - mean) / std, -clip, clip), with the running mean/std of every reward seen so far
    (`RunningMoments`, updated with this batch first). `clip` None or 0: no clipping."""
    normalized = (scores - mean) / (std + eps)
    if clip:
        normalized = normalized.clamp(-clip, clip)
    return normalized


# --------------------------------------------------------------------------- advantages


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over each response:
    delta_t = r_t + gamma * V_{t+1} - V_t  (V after the last token is 0),
    A_t = delta_t + gamma * lam * A_{t+1};  returns R_t = A_t + V_t.
    Returns (advantages, returns), both [B, T], zero on padding."""
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        # right padding: a padded position resets the recursion so the last real token sees V=0 after it
        running = running * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    returns = advantages + values
    return advantages * mask, returns * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s over each response (REINFORCE's return, no critic): GAE with V = 0
    and lambda = 1, whose advantage is exactly this return. [B, T] -> [B, T], zero on padding."""
    return gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)[0]


def _groups(scores: torch.Tensor, kept: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if group_size < 1 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} samples do not make groups of {group_size}")
    weight = kept.to(torch.float64).view(-1, group_size)
    return torch.where(weight > 0, scores.to(torch.float64).view(-1, group_size), 0.0), weight


def grpo_advantages(scores: torch.Tensor, kept: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, DeepSeekMath, sec. 4.1.2), one per completion:
    A_i = (r_i - mean_g) / (std_g + eps) over the group g of completions of i's prompt, std with Bessel's
    correction (as TRL's GRPOTrainer and verl compute it); the trainer broadcasts A_i to every response token.
    `scores` [B] hold consecutive groups of `group_size`; `kept` [B] is False for a dropped completion (no
    reward), which is left out of its group's mean and std and gets 0. A group with fewer than two kept
    members has no spread to compare against: all its advantages are 0 (so are those of a group whose
    rewards are all equal)."""
    values, weight = _groups(scores, kept, group_size)
    count = weight.sum(dim=1, keepdim=True)
    mean = values.sum(dim=1, keepdim=True) / count.clamp(min=1.0)
    variance = (((values - mean) * weight) ** 2).sum(dim=1, keepdim=True) / (count - 1.0).clamp(min=1.0)
    advantages = (values - mean) / (variance.sqrt() + eps) * weight * (count >= 2)
    return advantages.view(-1).to(scores.dtype)


def rloo_advantages(scores: torch.Tensor, kept: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's leave-one-out advantage (Ahmadian et al. 2024; the baseline of Kool et al. 2019), one per
    completion: A_i = r_i - 1/(n-1) * sum_{j != i} r_j over the n kept completions of i's prompt, which equals
    n/(n-1) * (r_i - mean). No normalisation: the scale of the reward is the scale of the step. A dropped
    completion is no one's baseline and gets 0; a group with fewer than two kept members gets 0."""
    values, weight = _groups(scores, kept, group_size)
    count = weight.sum(dim=1, keepdim=True)
    others = (values.sum(dim=1, keepdim=True) - values) / (count - 1.0).clamp(min=1.0)
    advantages = (values - others) * weight * (count >= 2)
    return advantages.view(-1).to(scores.dtype)


def reinforce_pp_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float,
                            sum_over_processes: Callable[..., list[float]] | None = None) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): the return G_t (`discounted_returns`) of token rewards that carry the
    token-level KL penalty (`token_rewards`), with no critic, normalised over the global batch:
    A_t = (G_t - mean) / std over every response token of every process, the std with Bessel's correction.
    `sum_over_processes(n, sum, sum of squares)` adds the three over processes (`Trainer.sum_over_processes`;
    without it, this process's tokens are the batch). [B, T] -> [B, T], zero on padding."""
    returns = discounted_returns(token_rewards, mask, gamma)
    weight = mask.to(returns.dtype)
    local = [weight.sum().item(), (returns * weight).sum().item(), (returns ** 2 * weight).sum().item()]
    count, total, squares = sum_over_processes(*local) if sum_over_processes is not None else local
    mean = total / max(count, 1.0)
    variance = max(squares - count * mean ** 2, 0.0) / max(count - 1.0, 1.0)
    return masked_whiten(returns, mask, moments=(mean, variance))


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return (1.0 - masked_var(returns - values, mask) / var_returns).item()


# --------------------------------------------------------------------------- losses


def token_mean(values: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None) -> torch.Tensor:
    """sum(values * mask) / num_tokens: the mean over the masked tokens, or with `num_tokens` (the tokens of
    a whole minibatch over every process) this batch's share of that mean."""
    if num_tokens is None:
        return masked_mean(values, mask)
    return (values * mask.to(values.dtype)).sum() / max(num_tokens, 1.0)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float, num_tokens: float | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate objective (Schulman et al. 2017), as a loss to minimise:
    L = mean_t max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps)),  rho_t = exp(logp_t - logp_old_t),
    the mean over the minibatch's tokens (`token_mean`). Returns the loss and stats: clip fraction and
    approximate KL(old || new) = mean((rho - 1) - log rho) over this batch's tokens."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = token_mean(torch.maximum(unclipped, clipped), mask, num_tokens)
    with torch.no_grad():
        stats = {"policy_clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
                 "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float | None, num_tokens: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss (PPO-max, following OpenAI baselines):
    L = 0.5 * mean_t max((V_t - R_t)^2, (clip(V_t, V_old - eps, V_old + eps) - R_t)^2), the mean over the
    minibatch's tokens (`token_mean`). `clip_range` None or 0 gives the plain squared error."""
    unclipped = (values - returns) ** 2
    if clip_range:
        clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
        clipped = (clipped_values - returns) ** 2
        loss = 0.5 * token_mean(torch.maximum(unclipped, clipped), mask, num_tokens)
        clipfrac = masked_mean((clipped > unclipped).float(), mask).item()
    else:
        loss = 0.5 * token_mean(unclipped, mask, num_tokens)
        clipfrac = 0.0
    return loss, {"value_clipfrac": clipfrac}
