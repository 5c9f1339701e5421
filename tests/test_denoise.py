import math

import pytest
import torch

from align.rm.denoise import LossConfig, flag_low_strength, plan_denoising

NAN = float("nan")


def test_flag_by_threshold_and_quantile_ignores_unknown():
    strength = torch.tensor([-1.0, 0.5, -0.2, NAN, 2.0])
    assert flag_low_strength(strength, 0.0, None).tolist() == [True, False, True, False, False]
    assert flag_low_strength(strength, 0.0, 0.25).tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("kind, flipped, discarded, smoothed", [
    ("bt", 0, 0, 0), ("flip", 2, 0, 0), ("discard", 0, 2, 0), ("soft_label", 0, 0, 2),
    ("flip+margin", 2, 0, 0), ("soft_label+margin", 0, 0, 2), ("margin", 0, 0, 0),
])
def test_plan_counts_per_method(kind, flipped, discarded, smoothed):
    strength = torch.tensor([-1.0, 0.5, -0.2, 2.0])
    plan = plan_denoising(LossConfig(type=kind), strength, torch.full((4,), NAN))
    counts = plan.counts()
    assert (counts["flipped_pairs"], counts["discarded_pairs"], counts["smoothed_pairs"]) == (
        flipped, discarded, smoothed)


def test_flipped_pairs_get_positive_margin_and_margins_are_clipped():
    config = LossConfig(type="flip+margin", margin_scale=1.0, margin_clip=1.5)
    plan = plan_denoising(config, torch.tensor([-1.0, 0.5, 3.0]), torch.full((3,), NAN))
    assert plan.flip.tolist() == [True, False, False]
    assert plan.margin.tolist() == [1.0, 0.5, 1.5]


def test_margin_from_given_margin_field():
    config = LossConfig(type="margin", margin_source="margin", margin_scale=0.5)
    plan = plan_denoising(config, torch.full((2,), NAN), torch.tensor([4.0, NAN]))
    assert plan.margin.tolist() == [2.0, 0.0]
    assert not config.needs_strength


def test_soft_label_can_smooth_the_strongest_pairs_too():
    config = LossConfig(type="soft_label", smoothing_alpha=0.2, smooth_strongest_quantile=0.25)
    plan = plan_denoising(config, torch.tensor([-1.0, 0.1, 0.2, 5.0]), torch.full((4,), NAN))
    assert plan.alpha.tolist() == pytest.approx([0.2, 0.0, 0.0, 0.2])
    assert all(not math.isnan(a) for a in plan.alpha.tolist())
