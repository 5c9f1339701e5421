"""align.ppo.losses against values computed by hand (the arithmetic is in the comments)."""
from __future__ import annotations

import math

import pytest
import torch

from align.ppo.losses import (
    AdaptiveKLController,
    RunningMoments,
    discounted_returns,
    entropy_from_logits,
    explained_variance,
    gae,
    grpo_advantages,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    normalize_rewards,
    policy_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    token_rewards,
    value_loss,
)


def test_gae_hand_computed():
    # gamma 0.9, lambda 0.8 (gamma*lambda = 0.72), rewards 0,0,1, values .5,.6,.7, V after the end = 0:
    # t2: delta = 1 - .7 = .3                       A2 = .3
    # t1: delta = .9*.7 - .6 = .03                 A1 = .03 + .72*.3 = .246
    # t0: delta = .9*.6 - .5 = .04                 A0 = .04 + .72*.246 = .21712
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert torch.allclose(advantages, torch.tensor([[0.21712, 0.246, 0.3]]), atol=1e-6)
    assert torch.allclose(returns, torch.tensor([[0.71712, 0.846, 1.0]]), atol=1e-6)


def test_gae_ignores_right_padding():
    # gamma = lambda = 1, the padded third token (reward 9, value 5) must not leak into the sequence:
    # t1: delta = 2 - 1 = 1, A1 = 1;  t0: delta = 0 + 1 - 1 = 0, A0 = 0 + 1 = 1;  returns 2, 2
    rewards = torch.tensor([[0.0, 2.0, 9.0]])
    values = torch.tensor([[1.0, 1.0, 5.0]])
    advantages, returns = gae(rewards, values, torch.tensor([[1, 1, 0]]), gamma=1.0, lam=1.0)
    assert advantages.tolist() == [[1.0, 1.0, 0.0]]
    assert returns.tolist() == [[2.0, 2.0, 0.0]]


def test_gae_lambda_one_is_discounted_return_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(2, 5), torch.randn(2, 5)
    advantages, returns = gae(rewards, values, torch.ones(2, 5), gamma=0.95, lam=1.0)
    discounted = torch.zeros(2)
    expected = torch.zeros(2, 5)
    for t in reversed(range(5)):
        discounted = rewards[:, t] + 0.95 * discounted
        expected[:, t] = discounted
    assert torch.allclose(returns, expected, atol=1e-5)
    assert torch.allclose(advantages, expected - values, atol=1e-5)


def test_kl_estimators():
    # pi(y) = .5, pi_ref(y) = .25: k1 = log 2 = .693147; r = pi_ref/pi = .5, k3 = (.5 - 1) - log .5 = .193147
    logp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2), abs=1e-6)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(-0.5 + math.log(2), abs=1e-6)
    # k3 is never negative; k1 is, when the policy gives the token less probability than the reference
    assert kl_estimate(ref, logp, "k1").item() < 0 < kl_estimate(ref, logp, "k3").item()
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_estimate(logp, ref, "k2")


def test_kl_estimators_are_unbiased_on_samples():
    # exact KL of two categoricals vs the mean of k1 and k3 over samples drawn from pi
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    exact = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    for estimator in ("k1", "k3"):
        estimate = kl_estimate(p.log()[samples], q.log()[samples], estimator).mean().item()
        assert estimate == pytest.approx(exact, abs=0.01)


def test_token_rewards_put_the_score_on_the_last_real_token():
    # beta .5: row 0 -> -.05, -.1, -.15 + 1;  row 1 (2 real tokens) -> -.25, -.25 + 2, 0
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 9.0]])
    rewards = token_rewards(torch.tensor([1.0, 2.0]), kl, 0.5, torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, -0.1, 0.85], [-0.25, 1.75, 0.0]]))


def test_policy_loss_clips_in_the_right_direction():
    # clip .2; (ratio, A): (1.5, +1) -> max(-1.5, -1.2) = -1.2 clipped; (.5, +1) -> max(-.5, -.8) = -.5;
    # (.5, -1) -> max(.5, .8) = .8 clipped; (1.5, -1) -> max(1.5, 1.2) = 1.5.  mean = .6 / 4 = .15
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5]])
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, stats = policy_loss(ratio.log(), torch.zeros(1, 4), advantages, torch.ones(1, 4), clip_range=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert stats["policy_clipfrac"] == pytest.approx(0.5)
    # approx KL(old||new) = mean((rho - 1) - log rho) over the four tokens
    expected_kl = ((ratio - 1) - ratio.log()).mean().item()
    assert stats["approx_kl"] == pytest.approx(expected_kl, abs=1e-6)


def test_policy_loss_gradient_is_zero_where_clipped():
    log_ratio = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = policy_loss(log_ratio, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), clip_range=0.2)
    loss.backward()
    # d/dlogp of -A*rho/2 is -rho/2 for the unclipped token and 0 for the clipped one
    assert log_ratio.grad.tolist()[0] == pytest.approx([0.0, -0.55])


def test_value_loss_clipped():
    # clip .5: V=2, V_old=1, R=3 -> unclipped 1, clipped value 1.5 -> 2.25, max 2.25
    #          V=0, V_old=1, R=0 -> unclipped 0, clipped value .5 -> .25, max .25;   loss = .5 * 1.25 = .625
    values, old, returns = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 0.0]])
    loss, stats = value_loss(values, old, returns, torch.ones(1, 2), clip_range=0.5)
    assert loss.item() == pytest.approx(0.625)
    assert stats["value_clipfrac"] == 1.0
    plain, _ = value_loss(values, old, returns, torch.ones(1, 2), clip_range=None)
    assert plain.item() == pytest.approx(0.5 * (1.0 + 0.0) / 2)


def test_running_moments_match_the_statistics_of_everything_seen():
    moments = RunningMoments()
    batch_mean, batch_std = moments.update(torch.tensor([1.0, 2.0, 3.0]))
    assert (batch_mean, batch_std) == pytest.approx((2.0, 1.0))
    moments.update(torch.tensor([4.0, 5.0]))
    # 1..5: mean 3, unbiased std sqrt(2.5)
    assert moments.mean == pytest.approx(3.0) and moments.std == pytest.approx(math.sqrt(2.5))
    assert moments.count == 5
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert restored.std == moments.std


def test_normalize_rewards_standardises_and_clips():
    # first batch 1,2,3: running mean 2, std 1 -> -1, 0, 1; clip .5 -> -.5, 0, .5
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 2.0, 3.0]))
    out = normalize_rewards(torch.tensor([1.0, 2.0, 3.0]), moments.mean, moments.std, clip=0.5)
    assert torch.allclose(out, torch.tensor([-0.5, 0.0, 0.5]))
    # the second batch is scaled by the statistics of all five values: (5 - 3) / sqrt(2.5)
    moments.update(torch.tensor([4.0, 5.0]))
    out = normalize_rewards(torch.tensor([4.0, 5.0]), moments.mean, moments.std, clip=None)
    assert out.tolist() == pytest.approx([1 / math.sqrt(2.5), 2 / math.sqrt(2.5)], abs=1e-6)


def test_adaptive_kl_controller():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 12 is 100% over target, clipped to +20%: 0.1 * (1 + 0.2 * 100 / 10000) = 0.1002
    assert controller.update(12.0, n_steps=100) == pytest.approx(0.1002)
    # KL 3 is 50% under target, clipped to -20%
    assert controller.update(3.0, n_steps=100) == pytest.approx(0.1002 * (1 - 0.002))
    fixed = AdaptiveKLController(0.1, target=None)
    assert fixed.update(100.0, 100) == 0.1


def test_masked_statistics_and_whitening():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert masked_mean(values, mask).item() == 2.0
    assert torch.allclose(masked_whiten(values, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(masked_whiten(values, mask, shift_mean=False), torch.tensor([[1.0, 2.0, 3.0, 0.0]]),
                          atol=1e-6)


def test_logprobs_entropy_and_explained_variance():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # probabilities .25, .75
    assert logprobs_from_logits(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_from_logits(logits).item() == pytest.approx(expected, abs=1e-6)
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 4), 2.5), returns, mask) == pytest.approx(0.0)


# --------------------------------------------------------------------------- critic-free estimators
NAN = float("nan")


def test_grpo_advantages_hand_computed_with_dropped_members():
    # groups of 3 (consecutive rows), NaN = dropped (kept False):
    # [1, 2, 4]: mean 7/3, deviations -4/3, -1/3, 5/3, unbiased var (16+1+25)/9/2 = 7/3, std 1.527525
    #            -> -0.872872, -0.218218, 1.091089
    # [0, x, 5]: the dropped member is left out: mean 2.5, var (6.25+6.25)/1 = 12.5, std 3.535534 -> -0.707107, 0, 0.707107
    # [3, 3, 3]: no spread -> 0;   [7, x, x]: one kept member, nothing to compare with -> 0
    scores = torch.tensor([1.0, 2, 4, 0, NAN, 5, 3, 3, 3, 7, NAN, NAN])
    kept = torch.isfinite(scores)
    advantages = grpo_advantages(scores, kept, group_size=3)
    expected = [-0.872872, -0.218218, 1.091089, -0.707107, 0.0, 0.707107, 0, 0, 0, 0, 0, 0]
    assert advantages.tolist() == pytest.approx(expected, abs=1e-5)
    # a dropped member's value, whatever it is, changes nothing
    replaced = scores.clone()
    replaced[~kept] = 100.0
    assert torch.equal(grpo_advantages(replaced, kept, 3), advantages)


def test_rloo_advantages_hand_computed_with_dropped_members():
    # [1, 2, 4]: 1 - (2+4)/2 = -2;  2 - (1+4)/2 = -0.5;  4 - (1+2)/2 = 2.5
    # [0, x, 5]: 0 - 5 = -5, the dropped one 0, 5 - 0 = 5;   [7, x, x]: no other member -> 0
    scores = torch.tensor([1.0, 2, 4, 0, NAN, 5, 7, NAN, NAN])
    advantages = rloo_advantages(scores, torch.isfinite(scores), group_size=3)
    assert advantages.tolist() == pytest.approx([-2, -0.5, 2.5, -5, 0, 5, 0, 0, 0], abs=1e-6)
    # with every member kept it is n/(n-1) * (r - mean)
    scores = torch.tensor([1.0, 2, 4])
    assert rloo_advantages(scores, torch.ones(3, dtype=torch.bool), 3).tolist() == pytest.approx(
        (1.5 * (scores - scores.mean())).tolist(), abs=1e-6)


def test_group_estimators_refuse_a_batch_that_is_not_whole_groups():
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(torch.zeros(4), torch.ones(4, dtype=torch.bool), 3)


def test_discounted_returns_hand_computed():
    # gamma 0.5: row 0 rewards 0, 1 -> G1 = 1, G0 = 0 + 0.5 * 1 = 0.5; row 1: 2 then padding -> 2, 0
    rewards = torch.tensor([[0.0, 1.0], [2.0, 9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert discounted_returns(rewards, mask, 0.5).tolist() == [[0.5, 1.0], [2.0, 0.0]]


def test_reinforce_pp_normalises_returns_over_the_global_batch():
    # returns (gamma 0.5) 0.5, 1, 2 on the real tokens: mean 7/6, unbiased var 0.583333, std 0.763763
    rewards = torch.tensor([[0.0, 1.0], [2.0, 9.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    advantages = reinforce_pp_advantages(rewards, mask, 0.5)
    assert advantages.flatten().tolist() == pytest.approx([-0.872872, -0.218218, 1.091089, 0.0], abs=1e-5)

    # another process holds one token with return 3: count 4, sum 6.5, squares 14.25 over both;
    # mean 1.625, var (14.25 - 4 * 1.625^2) / 3 = 1.229167, std 1.108678
    def with_other_process(count, total, squares):
        return [count + 1, total + 3.0, squares + 9.0]

    advantages = reinforce_pp_advantages(rewards, mask, 0.5, with_other_process)
    assert advantages.flatten().tolist() == pytest.approx([-1.014723, -0.563735, 0.338241, 0.0], abs=1e-5)
    # the same as one process holding both batches
    union = reinforce_pp_advantages(torch.tensor([[0.0, 1.0], [2.0, 9.0], [3.0, 0.0]]),
                                    torch.tensor([[1, 1], [1, 0], [1, 0]]), 0.5)
    assert union[:2].flatten().tolist() == pytest.approx(advantages.flatten().tolist(), abs=1e-6)
