"""The PPO critic: a transformer backbone with a scalar value head on every token.

PPO-max initialises the critic from the reward model (same backbone and head, so its first
value estimates are already on the reward's scale), which works when the RM reads the policy's
tokens. Otherwise the critic starts from the policy's own backbone with a zero-initialised head.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel

HEAD_FILE = "value_head.pt"


class ValueModel(nn.Module):
    """values[b, t] = head(hidden_state[b, t]): the expected return from the state that has read
    tokens 0..t (and is about to emit token t+1)."""

    def __init__(self, backbone: PreTrainedModel, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        if head is None:
            head = nn.Linear(hidden, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.head = head

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"position_ids": position_ids} if position_ids is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_causal_lm(cls, causal_lm: PreTrainedModel) -> ValueModel:
        """The policy's transformer (without its LM head) + a zero value head."""
        return cls(causal_lm.base_model)

    @classmethod
    def from_sequence_classifier(cls, classifier: PreTrainedModel, head_index: int = 0) -> ValueModel:
        """The RM's transformer + its reward head `head_index` as the value head."""
        from align.models.reward import final_linear_head

        score = final_linear_head(classifier)
        head = nn.Linear(score.in_features, 1, bias=True)
        with torch.no_grad():
            head.weight.copy_(score.weight[head_index:head_index + 1].float())
            head.bias.copy_(score.bias[head_index:head_index + 1].float() if score.bias is not None
                            else torch.zeros(1))
        return cls(classifier.base_model, head)

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> None:
        """backbone/ (Hugging Face / peft format), the head and its size; `state_dict` (keys as in this module)
        replaces the live weights, for models gathered from shards."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone_state = None
        head_state = self.head.state_dict()
        if state_dict is not None:
            backbone_state = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
            head_state = {k.removeprefix("head."): v for k, v in state_dict.items() if k.startswith("head.")}
        self.backbone.save_pretrained(directory / "backbone",
                                      **({"state_dict": backbone_state} if backbone_state is not None else {}))
        torch.save(head_state, directory / HEAD_FILE)
        (directory / "value_model.json").write_text(json.dumps({"hidden_size": self.head.in_features}))

    def load_weights(self, directory: str | Path) -> None:
        """Load what `save_pretrained` wrote (full backbone or its adapters, and the head) into this live model."""
        from align.training.lora import load_trained_weights

        directory = Path(directory)
        load_trained_weights(self.backbone, directory / "backbone")
        self.head.load_state_dict(torch.load(directory / HEAD_FILE, weights_only=True))

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | None = None) -> ValueModel:
        directory = Path(directory)
        backbone = AutoModel.from_pretrained(directory / "backbone", dtype=dtype)
        head = nn.Linear(backbone.config.hidden_size, 1)
        head.load_state_dict(torch.load(directory / HEAD_FILE, weights_only=True))
        return cls(backbone, head)
