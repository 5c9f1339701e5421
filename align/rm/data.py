"""Preference pairs for RM training: loaded (from files or the domain), tokenized, with every skip counted,
and laid out as chosen rows then rejected rows with each pair's head and denoising targets."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from align.data import collate_pairs, encode_pair, load_preferences, split_train_eval
from align.models.loading import load_tokenizer
from align.registry import get_domain
from align.rm.denoise import DenoisePlan
from align.types import CountsSkips, PreferencePair, ReportsDataUsed


def head_index_for(pair: PreferencePair, head_names: list[str]) -> int:
    """Pairs whose aspect names a head train that head; the rest train `overall` (or the first head)."""
    if pair.aspect in head_names:
        return head_names.index(pair.aspect)
    return head_names.index("overall") if "overall" in head_names else 0


def _float_or_nan(value) -> float:
    return float(value) if value is not None else math.nan


def rewards_for_heads(rewards: torch.Tensor, head_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split [2B, heads] rewards into the chosen and rejected reward of each pair's own head."""
    half = rewards.shape[0] // 2
    picked = rewards.gather(1, head_index.repeat(2).unsqueeze(1)).squeeze(1)
    return picked[:half], picked[half:]


@dataclass
class RMData:
    """Tokenized pairs with their per-pair training targets, aligned by index."""

    pairs: list[PreferencePair]
    encoded: list  # list[align.data.EncodedPair]
    head_names: list[str]
    pad_token_id: int
    head_index: torch.Tensor = field(init=False)
    strength: torch.Tensor = field(init=False)
    given_margin: torch.Tensor = field(init=False)
    flip: torch.Tensor = field(init=False)
    alpha: torch.Tensor = field(init=False)
    margin: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.pairs)
        self.head_index = torch.tensor([head_index_for(p, self.head_names) for p in self.pairs], dtype=torch.long)
        self.strength = torch.tensor([_float_or_nan(p.strength) for p in self.pairs], dtype=torch.float32)
        self.given_margin = torch.tensor([_float_or_nan(p.margin) for p in self.pairs], dtype=torch.float32)
        self.flip = torch.zeros(n, dtype=torch.bool)
        self.alpha = torch.zeros(n)
        self.margin = torch.zeros(n)

    def __len__(self) -> int:
        return len(self.pairs)

    def length(self, index: int) -> int:
        encoded = self.encoded[index]
        return max(len(encoded.chosen_ids), len(encoded.rejected_ids))

    def apply_plan(self, plan: DenoisePlan) -> None:
        """Take the denoising targets; discarded pairs leave the training set (they are counted in the plan)."""
        self.flip, self.alpha, self.margin = plan.flip, plan.alpha, plan.margin
        if not bool(plan.keep.all()):
            kept = plan.keep.nonzero().squeeze(1).tolist()
            self.pairs = [self.pairs[i] for i in kept]
            self.encoded = [self.encoded[i] for i in kept]
            for name in ("head_index", "strength", "given_margin", "flip", "alpha", "margin"):
                setattr(self, name, getattr(self, name)[plan.keep])

    def lengths(self) -> list[int]:
        return [self.length(i) for i in range(len(self))]

    def collate(self, indices: list[int], device=None, weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Chosen rows then rejected rows, with each pair's head, denoising targets and loss weight (0 for
        the stand-in pair of a process whose share of a global batch is empty)."""
        batch = collate_pairs([self.encoded[i] for i in indices], self.pad_token_id)
        index = torch.tensor(indices, dtype=torch.long)
        batch.update(head_index=self.head_index[index], flip=self.flip[index], alpha=self.alpha[index],
                     margin=self.margin[index], weight=torch.full((len(indices),), float(weight)), index=index)
        return {key: value.to(device) for key, value in batch.items()} if device is not None else batch


@dataclass
class LoadedRMData:
    train: RMData
    eval: RMData
    skipped: Counter
    truncated_response_pairs: int
    identical_after_truncation: int
    pairs_without_strength: int
    data_used: dict[str, Any] = field(default_factory=dict)
    """What the domain says it read (`ReportsDataUsed`), e.g. hh's `hh_subsets_used`."""

    def counts(self) -> dict[str, Any]:
        counts = {"skipped_pairs": sum(self.skipped.values()),
                  **{f"skipped_{reason}": count for reason, count in sorted(self.skipped.items())},
                  "truncated_response_pairs": self.truncated_response_pairs,
                  "identical_after_truncation_pairs": self.identical_after_truncation}
        if self.pairs_without_strength:
            counts["pairs_without_strength"] = self.pairs_without_strength
        return {**self.data_used, **counts}


def _domain_pairs(config, split: str, data_used: dict[str, Any]) -> tuple[list[PreferencePair], Counter]:
    """The domain's pairs of `split` and its skip counts; what it says it read is added to `data_used`."""
    domain = get_domain(config.domain, **config.domain_options)
    pairs = list(domain.preferences(split))
    if isinstance(domain, ReportsDataUsed):
        data_used.update(domain.data_used())
    return pairs, Counter(domain.skipped) if isinstance(domain, CountsSkips) else Counter()


def _attach_strengths(pairs: list[PreferencePair], source: str, strict: bool) -> int:
    """Copy `strength` from an annotated dataset onto `pairs` by id; returns how many found none."""
    annotated = load_preferences(source, strict=strict)
    by_id = {p.id: p.strength for p in annotated.pairs if p.strength is not None}
    missing = 0
    for pair in pairs:
        if pair.id in by_id:
            pair.strength = by_id[pair.id]
        else:
            missing += 1
    return missing


def load_rm_data(config) -> LoadedRMData:
    """Train and eval pairs for `config` (an `align.rm.train.Config`), tokenized with the model's tokenizer."""
    skipped: Counter = Counter()
    data_used: dict[str, Any] = {}
    if config.data:
        loaded = load_preferences(config.data, strict=config.strict)
        train_pairs, skipped = loaded.pairs, Counter(loaded.skipped)
        if config.eval_data:
            eval_pairs = None
        else:
            train_pairs, eval_pairs = split_train_eval(train_pairs, config.eval_fraction, config.seed)
    else:
        train_pairs, skipped = _domain_pairs(config, "train", data_used)
        eval_pairs = None if config.eval_data else _domain_pairs(config, "test", data_used)[0]
    if config.eval_data:
        loaded_eval = load_preferences(config.eval_data, strict=config.strict)
        eval_pairs = loaded_eval.pairs
        skipped.update({f"eval_{k}": v for k, v in loaded_eval.skipped.items()})
    if config.max_examples > 0:
        train_pairs = train_pairs[: config.max_examples]
    if not train_pairs:
        raise ValueError(f"align rm: no training pairs left in {config.data or config.domain!r} "
                         f"(skipped: {dict(skipped) or 'none'})")

    missing_strength = 0
    if config.loss.strengths == "compute":
        pass  # the trainer runs the ensemble on the tokenized pairs (`align.rm.strength.ensemble.compute_strengths`)
    elif config.loss.strengths:
        missing_strength = _attach_strengths(train_pairs, config.loss.strengths, config.strict)
    elif config.loss.needs_strength:
        missing_strength = sum(p.strength is None for p in train_pairs)
        if missing_strength == len(train_pairs):
            raise ValueError(f"loss.type={config.loss.type} needs preference strengths: set loss.strengths= to a "
                             "file written by `align strength`, or train on such a file")

    tokenizer = load_tokenizer(config.model)
    truncated = identical = 0

    def encode(pairs: list[PreferencePair], desc: str) -> list:
        nonlocal truncated, identical
        encoded = []
        for pair in tqdm(pairs, desc=desc, disable=not config.progress or len(pairs) < 2000, leave=False):
            item = encode_pair(tokenizer, pair, config.max_length)
            truncated += item.response_truncated
            identical += item.identical_after_truncation
            encoded.append(item)
        return encoded

    heads = list(config.heads)
    train = RMData(train_pairs, encode(train_pairs, "tokenizing train"), heads, tokenizer.pad_token_id)
    eval_pairs = eval_pairs or []
    held_out = RMData(eval_pairs, encode(eval_pairs, "tokenizing eval"), heads, tokenizer.pad_token_id)
    return LoadedRMData(train, held_out, skipped, truncated, identical, missing_strength, data_used)
