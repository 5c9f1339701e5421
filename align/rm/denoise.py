"""Strength-aware denoising: which pairs to flip, smooth, discard, and what margin each gets.

Preference strength μ_i is the mean reward difference an RM ensemble gives a pair (see
`align strength`). Pairs with low strength are likely mislabelled or ambiguous. This module
turns strengths into per-pair targets for the losses in `align.losses`; the rules follow
Wang et al. 2024, "Secrets of RLHF Part II: Reward Modeling", §3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import ConfigError, doc
from align.losses import adaptive_margin

LossType = Literal["bt", "flip", "soft_label", "margin", "flip+margin", "soft_label+margin", "discard"]


@dataclass
class LossConfig:
    """How the pairwise RM loss treats each pair."""

    type: LossType = doc("Pairwise loss: `bt` (plain Bradley-Terry), `flip`, `soft_label`, `margin`, "
                         "`flip+margin`, `soft_label+margin`, or `discard` (drop flagged pairs).", "bt")
    strengths: str | None = doc("Annotated dataset (from `align strength`) to read each pair's strength from, "
                                "matched by pair id; empty: use the `strength` field of the training data.", None)
    flag_threshold: float = doc("A pair is flagged as mislabelled when its mean strength is below this value.", 0.0)
    flag_quantile: float | None = doc("Instead of the threshold, flag the lowest q-quantile of strengths "
                                      "(e.g. 0.1).", None)
    smoothing_alpha: float = doc("Label-smoothing weight α given to the opposite preference for smoothed pairs.",
                                 0.3)
    smooth_strongest_quantile: float = doc("With soft_label, also smooth this top share of pairs by strength "
                                           "(over-confident labels), 0 to disable.", 0.0)
    margin_source: Literal["strength", "margin"] = doc("Margin from the pair's preference strength (adaptive "
                                                       "margin) or from its given `margin` field.", "strength")
    margin_scale: float = doc("λ in the margin λ·μ_i.", 0.5)
    margin_clip: float = doc("Margins are clipped to [−clip, clip]; large margins destabilise training.", 2.0)

    def validate(self) -> None:
        if self.flag_quantile is not None and not 0.0 < self.flag_quantile < 1.0:
            raise ConfigError(f"loss.flag_quantile: expected a number in (0, 1), got {self.flag_quantile!r}")
        if not 0.0 <= self.smoothing_alpha <= 1.0:
            raise ConfigError(f"loss.smoothing_alpha: expected a number in [0, 1], got {self.smoothing_alpha!r}")
        if not 0.0 <= self.smooth_strongest_quantile < 1.0:
            raise ConfigError("loss.smooth_strongest_quantile: expected a number in [0, 1), "
                              f"got {self.smooth_strongest_quantile!r}")
        if self.margin_clip <= 0:
            raise ConfigError(f"loss.margin_clip: expected a positive number, got {self.margin_clip!r}")

    @property
    def needs_strength(self) -> bool:
        return self.type != "bt" and not (self.type == "margin" and self.margin_source == "margin")


@dataclass
class DenoisePlan:
    """Per-pair targets, aligned with the training pairs."""

    flip: torch.Tensor     # bool [N]: swap chosen and rejected
    keep: torch.Tensor     # bool [N]: False for discarded pairs
    alpha: torch.Tensor    # float [N]: label-smoothing weight (0 = none)
    margin: torch.Tensor   # float [N]: margin subtracted from Δ (0 = none)

    def counts(self) -> dict[str, int]:
        return {"flipped_pairs": int(self.flip.sum()), "discarded_pairs": int((~self.keep).sum()),
                "smoothed_pairs": int((self.alpha > 0).sum()), "margin_pairs": int((self.margin != 0).sum())}


def flag_low_strength(strength: torch.Tensor, threshold: float, quantile: float | None) -> torch.Tensor:
    """Pairs judged mislabelled: strength below `threshold`, or in the lowest `quantile` share.

    Pairs without a strength (NaN) are never flagged.
    """
    known = ~torch.isnan(strength)
    if quantile is not None:
        if not known.any():
            return torch.zeros_like(known)
        cutoff = torch.quantile(strength[known], quantile)
        return known & (strength <= cutoff)
    return known & (strength < threshold)


def plan_denoising(config: LossConfig, strength: torch.Tensor, given_margin: torch.Tensor) -> DenoisePlan:
    """Turn per-pair strengths (NaN where unknown) into flip/keep/alpha/margin targets for `config.type`."""
    n = strength.shape[0]
    flagged = flag_low_strength(strength, config.flag_threshold, config.flag_quantile)
    flip = torch.zeros(n, dtype=torch.bool)
    keep = torch.ones(n, dtype=torch.bool)
    alpha = torch.zeros(n)
    margin = torch.zeros(n)
    kind = config.type
    if kind.startswith("flip"):
        flip = flagged
    if kind == "discard":
        keep = ~flagged
    if kind.startswith("soft_label"):
        alpha = torch.where(flagged, torch.tensor(config.smoothing_alpha), alpha)
        if config.smooth_strongest_quantile > 0:
            known = ~torch.isnan(strength)
            if known.any():
                top = torch.quantile(strength[known], 1.0 - config.smooth_strongest_quantile)
                alpha = torch.where(known & (strength >= top), torch.tensor(config.smoothing_alpha), alpha)
    if kind.endswith("margin"):
        source = strength if config.margin_source == "strength" else given_margin
        # A flipped pair's strength is negative: after the swap its margin is |μ|.
        signed = torch.where(flip, -source, source)
        margin = adaptive_margin(signed, config.margin_scale, config.margin_clip)
        if kind == "soft_label+margin":
            margin = margin.clamp(min=0.0)  # a smoothed pair should not be pushed the other way by its margin
    return DenoisePlan(flip=flip, keep=keep, alpha=alpha, margin=margin)
