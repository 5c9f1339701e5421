"""The contrastive term added to the RM loss (SimCSE or SwAV), and the model wrapper that trains it.

A plain RM tends to give a chosen and a rejected response nearly the same features, so it cannot
say what makes one better. Adding an unsupervised contrastive term spreads them apart
(Wang et al. 2024, "Secrets of RLHF Part II: Reward Modeling", §4):

    L = mean over two dropout views of L_rm  +  β · L_contrastive(view a, view b)

The features are the pooled hidden state that feeds the reward head (`RewardModel.features`).
What is contrasted: `pair` = the responses {f(x,y_c), f(x,y_r)}, or `difference` = the preference
direction {f_c − f_r, f_r − f_c}. The losses themselves are pure functions in `align.losses`; with several
processes the items are gathered from all of them (`ContrastiveTerm.forward`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from align import losses
from align.config import ConfigError, doc
from align.models.reward import RewardModel

# Defaults per (method, target) where the reference gives them (SwAV: Secrets of RLHF Part II §4);
# SimCSE's β = 0.1 is our choice (the reference does not state one), τ = 0.05 is SimCSE's own.
DEFAULT_BETA = {("swav", "pair"): 0.1, ("swav", "difference"): 0.5,
                ("simcse", "pair"): 0.1, ("simcse", "difference"): 0.1}
DEFAULT_PROTOTYPES = {"pair": 50, "difference": 20}
DEFAULT_TEMPERATURE = {"simcse": 0.05, "swav": 0.1}


@dataclass
class ContrastiveConfig:
    """The contrastive term added to the RM loss (`contrastive.*` keys of `align rm`)."""

    method: Literal["none", "simcse", "swav"] = doc("Contrastive term: `none`, `simcse` (instance-level InfoNCE) or "
                                                    "`swav` (cluster-level swapped prediction).", "none")
    target: Literal["pair", "difference"] = doc("What is contrasted: the chosen and rejected features (`pair`) or "
                                                "their differences f_c − f_r and f_r − f_c (`difference`).", "pair")
    beta: float | None = doc("Weight β of the contrastive term; empty: 0.1, or 0.5 for swav+difference.", None)
    temperature: float | None = doc("Softmax temperature τ; empty: 0.05 for simcse, 0.1 for swav.", None)
    dropout: float = doc("Dropout rate inside the model that makes the two views differ.", 0.05)
    num_prototypes: int | None = doc("SwAV prototypes K; empty: 50 for pair, 20 for difference.", None)
    sinkhorn_epsilon: float = doc("SwAV: entropy ε of the Sinkhorn-Knopp codes (smaller = harder codes).", 0.05)
    sinkhorn_iterations: int = doc("SwAV: Sinkhorn-Knopp iterations.", 3)

    def validate(self) -> None:
        for key in ("beta", "temperature", "num_prototypes"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"contrastive.{key}: expected a positive number, got {value!r}")
        if not 0.0 < self.dropout < 1.0:
            raise ConfigError(f"contrastive.dropout: expected a number in (0, 1) (the views need dropout), "
                              f"got {self.dropout!r}")
        if not self.sinkhorn_epsilon > 0:
            raise ConfigError(f"contrastive.sinkhorn_epsilon: expected a positive number, got {self.sinkhorn_epsilon!r}")
        if self.sinkhorn_iterations < 1:
            raise ConfigError(f"contrastive.sinkhorn_iterations: expected at least 1, got {self.sinkhorn_iterations!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def resolved(self) -> ContrastiveConfig:
        """A copy with every empty setting replaced by its default for this method and target."""
        if not self.enabled:
            return self
        return replace(
            self,
            beta=self.beta if self.beta is not None else DEFAULT_BETA[(self.method, self.target)],
            temperature=self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE[self.method],
            num_prototypes=(self.num_prototypes if self.num_prototypes is not None
                            else DEFAULT_PROTOTYPES[self.target]) if self.method == "swav" else None)


# --------------------------------------------------------------------------- the term


class ContrastiveTerm(nn.Module):
    """L_contrastive on the features of two views of a batch; owns SwAV's learnable prototypes."""

    def __init__(self, config: ContrastiveConfig, feature_size: int):
        super().__init__()
        self.config = config.resolved()
        self.beta = self.config.beta
        if self.config.method == "swav":
            self.prototypes = nn.Parameter(torch.randn(self.config.num_prototypes, feature_size) / feature_size ** 0.5)
        else:
            self.register_parameter("prototypes", None)

    def items(self, features: torch.Tensor) -> torch.Tensor:
        """[2B, D] features (chosen rows, then rejected rows) -> the [2B, D] items to contrast."""
        chosen, rejected = features.chunk(2, dim=0)
        if self.config.target == "pair":
            return losses.pair_features(chosen, rejected)
        return losses.difference_features(chosen, rejected)

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor, across=None) -> torch.Tensor:
        """L_contrastive over the items of every process: with `across` (a `Trainer`), each process's items
        are gathered so the negatives (SimCSE) and the Sinkhorn codes (SwAV) span the global batch, as in
        one process. Gradient flows into this process's items only, so summed over processes it is the
        gradient of the one global loss; the prototypes, which every process uses whole, get 1/N of it here."""
        a, b = self.items(features_a), self.items(features_b)
        prototypes = self.prototypes
        if across is not None and across.world_size > 1:
            a, b = across.gather_with_grad(a), across.gather_with_grad(b)
            if prototypes is not None:
                prototypes = scale_gradient(prototypes, 1.0 / across.world_size)
        if self.config.method == "simcse":
            return losses.simcse_loss(a, b, self.config.temperature)
        return losses.swav_loss(a, b, prototypes, self.config.temperature, self.config.sinkhorn_epsilon,
                                self.config.sinkhorn_iterations)


def scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """`tensor` in the forward pass, `factor` × its gradient in the backward pass."""
    return tensor * factor + (tensor * (1.0 - factor)).detach()


TERM_CONFIG_FILE = "contrastive.json"
TERM_WEIGHTS_FILE = "contrastive.pt"


class ContrastiveRewardModel(nn.Module):
    """A reward model together with its contrastive term.

    Wrapping puts the prototypes where the optimizer (`model.parameters()`), `accelerator.prepare`
    and the checkpoints (`save_pretrained` / `from_pretrained`) see them, so a resumed run
    continues with the same prototypes and their optimizer state. The saved directory stays a
    plain RM checkpoint: the term is two extra files that RM loaders ignore.
    """

    def __init__(self, reward_model: nn.Module, term: ContrastiveTerm):
        super().__init__()
        self.reward_model = reward_model
        self.term = term

    def forward(self, *args, **kwargs):
        return self.reward_model(*args, **kwargs)

    @property
    def head_names(self) -> list[str]:
        return self.reward_model.head_names

    def merge_lora(self) -> None:
        self.reward_model.merge_lora()

    def save_pretrained(self, directory, state_dict: dict | None = None) -> None:
        directory = Path(directory)
        if state_dict is not None:
            state_dict = {k.removeprefix("reward_model."): v for k, v in state_dict.items()
                          if k.startswith("reward_model.")}
        self.reward_model.save_pretrained(directory, state_dict=state_dict)
        settings = {key: getattr(self.term.config, key) for key in self.term.config.__dataclass_fields__}
        (directory / TERM_CONFIG_FILE).write_text(json.dumps(
            {**settings, "feature_size": self.term.prototypes.shape[1] if self.term.prototypes is not None else None},
            indent=2))
        torch.save(self.term.state_dict(), directory / TERM_WEIGHTS_FILE)

    def load_weights(self, directory) -> None:
        self.reward_model.load_weights(directory)
        self.term.load_state_dict(torch.load(Path(directory) / TERM_WEIGHTS_FILE, weights_only=True))

    @classmethod
    def from_pretrained(cls, directory) -> ContrastiveRewardModel:
        directory = Path(directory)
        settings = json.loads((directory / TERM_CONFIG_FILE).read_text())
        feature_size = settings.pop("feature_size") or 1
        term = ContrastiveTerm(ContrastiveConfig(**settings), feature_size)
        term.load_state_dict(torch.load(directory / TERM_WEIGHTS_FILE, weights_only=True))
        return cls(RewardModel.from_pretrained(directory), term)
