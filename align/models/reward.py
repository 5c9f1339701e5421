"""The reward model: a transformers backbone with one linear head per preference aspect.

A `RewardModel` wraps an `AutoModelForSequenceClassification` with `num_labels = num_heads`, so a
saved reward model is an ordinary sequence-classification checkpoint: TRL, OpenRLHF, verl or plain
`AutoModelForSequenceClassification.from_pretrained(dir)` load it and get the same scores (one logit
per head). Pooling is the backbone's own: decoders score the last non-pad token, encoders the first
token through their pooler. `forward` also returns the head's input features (for contrastive
losses), captured with a forward pre-hook on the final linear layer.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification

from align.models.embedded import resolve_model_path
from align.models.loading import from_pretrained, is_decoder, load_tokenizer, quiet_transformers

METADATA_FILE = "align_reward_model.json"
# Config fields that hold dropout probabilities (kept in step with the modules by `set_dropout`,
# so a saved model reloads with the dropout it was trained with).
_DROPOUT_CONFIG_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout",
                          "classifier_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


@dataclass
class RewardModelOutput:
    rewards: torch.Tensor
    """[batch, num_heads] float32: one scalar reward per head."""
    features: torch.Tensor
    """[batch, hidden] float32: the pooled input of the final linear head (after the head's dropout)."""


def final_linear_head(model: nn.Module) -> nn.Linear:
    """The last linear layer of a sequence-classification model (`score` for LLaMA-like decoders,
    `classifier` for BERT, `classifier.out_proj` for RoBERTa; under LoRA, the trained copy peft keeps)."""
    head = getattr(model, "score", None)
    if head is None:
        head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else []
    if not linears:
        raise ValueError(f"{type(model).__name__} has no `score` or `classifier` linear head to use as reward head")
    return linears[-1]


def last_non_pad_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """Position of the rightmost non-pad token of each row, the rule transformers'
    *ForSequenceClassification decoders use (works with left and right padding)."""
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)
    non_pad = (input_ids != pad_token_id).to(torch.int32)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32)
    return (positions * non_pad).argmax(-1).long()


class RewardModel(nn.Module):
    """Backbone + linear reward head(s); see the module docstring."""

    def __init__(self, model, tokenizer, head_names: list[str], backbone: str = ""):
        super().__init__()
        if len(head_names) != model.config.num_labels:
            raise ValueError(f"{len(head_names)} head names {head_names} for a model with "
                             f"{model.config.num_labels} outputs")
        self.model = model
        self.tokenizer = tokenizer
        self.head_names = list(head_names)
        self.backbone = backbone
        self.decoder = is_decoder(model.config)
        if self.decoder and model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # needed to find the last real token
        if not self.decoder:
            tokenizer.padding_side = "right"  # encoders pool the first token: it must be real
        model.config.id2label = dict(enumerate(self.head_names))
        model.config.label2id = {name: i for i, name in enumerate(self.head_names)}
        model.config.problem_type = "regression"
        self._captured: torch.Tensor | None = None
        self._hook = final_linear_head(model).register_forward_pre_hook(self._capture_features)

    def _capture_features(self, module, args):
        self._captured = args[0]

    @property
    def num_heads(self) -> int:
        return len(self.head_names)

    def head_index(self, head: str | int) -> int:
        """The column of `head` (a head name, or an index as a number or a string of digits) in the rewards."""
        if isinstance(head, str) and not head.lstrip("-").isdigit():
            if head not in self.head_names:
                raise ValueError(f"head: {head!r} is not a head of this reward model ({', '.join(self.head_names)})")
            return self.head_names.index(head)
        if not 0 <= int(head) < self.num_heads:
            raise ValueError(f"head: index {head} out of range for heads {self.head_names}")
        return int(head)

    @property
    def hidden_size(self) -> int:
        return final_linear_head(self.model).in_features

    @property
    def pooling(self) -> str:
        return "last_non_pad_token" if self.decoder else "first_token"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> RewardModelOutput:
        if not self.decoder and not bool(attention_mask[:, 0].all()):
            # encoders pool position 0 and have absolute positions: left padding would score padding
            raise ValueError("encoder reward models need right padding (the first token of every row must be real)")
        kwargs = {"use_cache": False} if self.decoder else {}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        features, self._captured = self._captured, None
        if features.dim() == 3:  # decoders apply the head to every position, then pick the last real token
            rows = torch.arange(features.shape[0], device=features.device)
            features = features[rows, last_non_pad_index(input_ids, self.model.config.pad_token_id)]
        return RewardModelOutput(rewards=logits.float(), features=features.float())

    def set_dropout(self, p: float) -> None:
        """Set every dropout probability in the model to `p` (nn.Dropout modules, attention dropout
        attributes such as LLaMA's, and the matching config fields)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        for module in self.model.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            if isinstance(getattr(module, "attention_dropout", None), float):
                module.attention_dropout = p
        for field in _DROPOUT_CONFIG_FIELDS:
            if isinstance(getattr(self.model.config, field, None), float):
                setattr(self.model.config, field, p)

    def add_lora(self, options) -> None:
        """Train low-rank adapters on the backbone instead of its weights; the reward head trains in full
        (peft's sequence-classification task saves it with the adapters)."""
        from align.training.lora import add_lora

        self._hook.remove()
        self.model = add_lora(self.model, options, task_type="SEQ_CLS")
        self._hook = final_linear_head(self.model).register_forward_pre_hook(self._capture_features)

    def load_lora(self, directory) -> None:
        """Wrap the backbone with the trained adapters and head that `save_pretrained` wrote under LoRA (`align rm`'s
        adapter/), e.g. to merge them."""
        from peft import PeftModel

        self._hook.remove()
        self.model = PeftModel.from_pretrained(self.model, str(directory))
        self._hook = final_linear_head(self.model).register_forward_pre_hook(self._capture_features)

    def merge_lora(self) -> None:
        """Fold trained adapters into the weights: the model saves as a plain sequence-classification
        checkpoint again."""
        from align.training.lora import is_lora

        if is_lora(self.model):
            self._hook.remove()
            self.model = self.model.merge_and_unload()
            self._hook = final_linear_head(self.model).register_forward_pre_hook(self._capture_features)

    def save_pretrained(self, directory, state_dict: dict | None = None) -> None:
        """HF model files (adapters alone under LoRA) + tokenizer + `align_reward_model.json` into `directory`.
        `state_dict` (keys as in this module) replaces the live weights, for models gathered from shards."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if state_dict is not None:
            state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
        self.model.save_pretrained(directory, safe_serialization=True,
                                   **({"state_dict": state_dict} if state_dict is not None else {}))
        self.tokenizer.save_pretrained(directory)
        metadata = {"head_names": self.head_names, "pooling": self.pooling, "backbone": self.backbone,
                    "num_heads": self.num_heads, "hidden_size": self.hidden_size}
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")

    def load_weights(self, directory) -> None:
        """Load what `save_pretrained` wrote (full weights or adapters) into this live model."""
        from align.training.lora import load_trained_weights

        load_trained_weights(self.model, Path(directory))

    @classmethod
    def from_pretrained(cls, directory, dtype: torch.dtype = torch.float32) -> RewardModel:
        """Load a saved reward model (or any sequence-classification checkpoint: its labels become heads)."""
        path = resolve_model_path(str(directory))
        metadata_file = Path(path) / METADATA_FILE
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        model = from_pretrained(AutoModelForSequenceClassification, str(directory), path, dtype=dtype)
        head_names = metadata.get("head_names") or [model.config.id2label[i] for i in range(model.config.num_labels)]
        return cls(model, load_tokenizer(path), head_names, metadata.get("backbone", str(directory)))


def _default_head_names(num_heads: int) -> list[str]:
    return ["overall"] if num_heads == 1 else [f"head_{i}" for i in range(num_heads)]


def load_reward_model(name_or_path: str, num_heads: int = 1, head_names: list[str] | None = None,
                      dropout: float | None = None, dtype: torch.dtype = torch.float32) -> RewardModel:
    """A reward model on the backbone `name_or_path` with `num_heads` fresh linear heads (normal init,
    std 1/sqrt(hidden+1) as in Stiennon et al. 2020, zero bias, so initial rewards are small). A saved
    reward model directory loads with its trained heads instead. `dropout`, if given, replaces every
    dropout probability of the backbone."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be at least 1, got {num_heads}")
    if head_names is not None and len(head_names) != num_heads:
        raise ValueError(f"head_names {head_names} has {len(head_names)} names for num_heads={num_heads}")
    path = resolve_model_path(name_or_path)
    if (Path(path) / METADATA_FILE).is_file():
        reward_model = RewardModel.from_pretrained(path, dtype=dtype)
        if reward_model.num_heads != num_heads or (head_names is not None and head_names != reward_model.head_names):
            raise ValueError(f"{name_or_path} is a reward model with heads {reward_model.head_names}, "
                             f"not {head_names or num_heads} heads")
    else:
        reward_model = _fresh_reward_model(name_or_path, path, num_heads, head_names or _default_head_names(num_heads),
                                           dtype)
    if dropout is not None:
        reward_model.set_dropout(dropout)
    return reward_model


def _fresh_reward_model(name_or_path: str, path: str, num_heads: int, head_names: list[str], dtype) -> RewardModel:
    tokenizer = load_tokenizer(path)
    config = from_pretrained(AutoConfig, name_or_path, path)
    reuse_head = any(a.endswith("ForSequenceClassification") for a in config.architectures or []) \
        and config.num_labels == num_heads
    config.num_labels = num_heads
    if is_decoder(config) and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    with quiet_transformers():  # the head is new by design; other missing weights are reported below
        model, info = from_pretrained(AutoModelForSequenceClassification, name_or_path, path, config=config,
                                      dtype=dtype, ignore_mismatched_sizes=True, output_loading_info=True)
    head = final_linear_head(model)
    head_keys = {n for n, p in model.named_parameters() if any(p is q for q in head.parameters())}
    missing = set(info["missing_keys"]) | {key for key, *_ in info["mismatched_keys"]}
    if not reuse_head or missing & head_keys:
        with torch.no_grad():
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(head.in_features + 1))
            if head.bias is not None:
                head.bias.zero_()
    # Other classifier layers (e.g. RoBERTa's dense) and a missing pooler are new too: say so once.
    others = sorted(k for k in missing - head_keys)
    if others:
        warnings.warn(f"{name_or_path}: {len(others)} weights were not in the checkpoint and start random "
                      f"(expected for a pooler or classifier layer): {', '.join(others[:6])}"
                      f"{' ...' if len(others) > 6 else ''}", stacklevel=3)
    return RewardModel(model, tokenizer, head_names, backbone=name_or_path)


@torch.no_grad()
def score_texts(model: RewardModel, texts: list[str], batch_size: int = 16, max_length: int = 512) -> torch.Tensor:
    """Rewards [len(texts), num_heads] of whole texts, in eval mode without gradients. Texts longer
    than `max_length` tokens lose their BEGINNING (the end, where responses are, is kept); special
    tokens such as CLS/SEP stay."""
    from align.data import encode_left_truncated

    tokenizer = model.tokenizer
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_left_truncated(tokenizer, "", text, max_length)[0] for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths batch together
    scores = torch.empty(len(texts), model.num_heads)
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="scoring", disable=len(starts) < 10, leave=False):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            scores[rows] = out.rewards.cpu()
    finally:
        model.train(was_training)
    return scores
