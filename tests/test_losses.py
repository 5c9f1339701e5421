import math

import pytest
import torch

from align import losses


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_bradley_terry_matches_hand_computation():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    expected = [-log_sigmoid(1.0), math.log(2.0), -log_sigmoid(-2.0)]
    assert losses.bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(expected, rel=1e-6)


def test_margin_loss_shifts_the_gap():
    chosen, rejected, margin = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5])
    assert losses.margin_loss(chosen, rejected, margin).item() == pytest.approx(-log_sigmoid(0.5), rel=1e-6)


def test_soft_label_loss_mixes_both_directions():
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    alpha = 0.2
    expected = -(0.8 * log_sigmoid(1.0) + 0.2 * log_sigmoid(-1.0))
    assert losses.soft_label_loss(chosen, rejected, alpha).item() == pytest.approx(expected, rel=1e-6)
    # alpha = 0 is Bradley-Terry, alpha = 1 is the flipped pair
    assert losses.soft_label_loss(chosen, rejected, 0.0).item() == pytest.approx(
        losses.bradley_terry_loss(chosen, rejected).item())
    assert losses.soft_label_loss(chosen, rejected, 1.0).item() == pytest.approx(
        losses.bradley_terry_loss(rejected, chosen).item())
    with_margin = losses.soft_label_loss(chosen, rejected, 0.0, margin=0.5).item()
    assert with_margin == pytest.approx(losses.margin_loss(chosen, rejected, torch.tensor([0.5])).item())


def test_flip_pairs_swaps_only_flagged():
    chosen, rejected = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, -2.0, -3.0])
    new_chosen, new_rejected = losses.flip_pairs(chosen, rejected, torch.tensor([False, True, False]))
    assert new_chosen.tolist() == [1.0, -2.0, 3.0]
    assert new_rejected.tolist() == [-1.0, 2.0, -3.0]


def test_adaptive_margin_scales_clips_and_zeroes_unknown():
    strength = torch.tensor([1.0, 10.0, -10.0, float("nan")])
    assert losses.adaptive_margin(strength, 0.5, clip=2.0).tolist() == [0.5, 2.0, -2.0, 0.0]


def test_losses_are_differentiable():
    chosen = torch.tensor([0.3], requires_grad=True)
    loss = losses.bradley_terry_loss(chosen, torch.tensor([0.0])).sum()
    loss.backward()
    # d/dc -log σ(c) = σ(c) − 1
    assert chosen.grad.item() == pytest.approx(1 / (1 + math.exp(-0.3)) - 1, rel=1e-6)
