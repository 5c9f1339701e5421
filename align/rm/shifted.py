"""Shifted samples for MetaRM: k completions per prompt sampled from the current policy, grouped by prompt.

A file of them (JSONL), one row per prompt:

    {"id": "...", "prompt": <text or chat messages>, "completions": ["...", "..."], "round": 1}

or one row per completion, `{"prompt": ..., "completion": "...", ["id"]}`: rows with the same `id` (without
one, the same prompt) form a group. Groups with fewer than two non-empty completions cannot be told apart
and are skipped and counted by reason; with `strict` the first bad row stops the run naming file, line and
field. `sample_shifted_groups` draws the groups from a policy (each prompt's k samples in one batch, seeded
by the prompt's id, so the groups do not depend on how prompts are shared between processes or batched).
"""
from __future__ import annotations

import json
import math
import os
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from align import losses
from align.data import BadRow, content_id, encode_left_truncated, iter_rows, render_prompt
from align.types import Prompt, PromptText


@dataclass
class ShiftedGroup:
    """The completions one policy sampled for one prompt (no labels)."""

    prompt: PromptText
    completions: list[str]
    id: str
    round: int | None = None

    def row(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "completions": self.completions,
                **({"round": self.round} if self.round is not None else {})}


# --------------------------------------------------------------------------- files


def _prompt_of(row: dict) -> PromptText:
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        return prompt
    raise BadRow("missing_field", "prompt", "missing or empty prompt (text or a list of chat messages)")


def _completions_of(row: dict) -> list[str]:
    if "completions" in row:
        value = row["completions"]
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise BadRow("bad_format", "completions", "expected a list of strings")
        return value
    if isinstance(row.get("completion"), str):
        return [row["completion"]]
    raise BadRow("missing_field", "completions", "expected `completions` (a list) or `completion` (a string)")


def load_shifted_groups(path: str, strict: bool = False) -> tuple[list[ShiftedGroup], Counter]:
    """Groups from a file (see the module docstring) and the count of what was skipped, by reason."""
    groups: dict[str, ShiftedGroup] = {}
    skipped: Counter = Counter()
    for location, row in iter_rows(path, None):
        try:
            if isinstance(row, BadRow):
                raise row
            if not isinstance(row, dict):
                raise BadRow("bad_format", None, f"expected a JSON object, got {type(row).__name__}")
            prompt, completions = _prompt_of(row), _completions_of(row)
        except BadRow as error:
            if strict:
                raise error.located(location) from None
            skipped[error.reason] += 1
            continue
        key = str(row["id"]) if row.get("id") is not None else content_id(prompt)
        group = groups.setdefault(key, ShiftedGroup(prompt, [], key, row.get("round")))
        group.completions += completions
    kept = []
    for group in groups.values():
        group.completions = [c for c in group.completions if c.strip()]
        if len(group.completions) < 2:
            if strict:
                raise BadRow("too_few_completions", "completions", f"group {group.id!r} has "
                             f"{len(group.completions)} non-empty completion(s); J needs two").located(path)
            skipped["too_few_completions"] += 1
        else:
            kept.append(group)
    return kept, skipped


def write_shifted_groups(groups: list[ShiftedGroup], path: str | Path) -> None:
    """One row per group, written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(g.row(), ensure_ascii=False) + "\n" for g in groups))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- sampling


def group_seed(seed: int, round_index: int, prompt_id: str) -> int:
    """The sampling seed of one prompt's group: a function of the run seed, the round and the prompt alone."""
    return zlib.crc32(f"{seed}:{round_index}:{prompt_id}".encode())


def sample_shifted_groups(policy, tokenizer, prompts: list[Prompt], samples_per_prompt: int, *, seed: int,
                          round_index: int | None = None, prompt_format: str = "chat", max_new_tokens: int = 64,
                          temperature: float = 1.0, top_p: float = 1.0, max_prompt_length: int | None = None,
                          map_shards=None) -> list[ShiftedGroup]:
    """`samples_per_prompt` completions of every prompt from `policy`, one batch per prompt (its k samples
    together). `map_shards` (`Trainer.map_shards`) shares the prompts between processes."""
    from align.generation import generate
    from align.ppo.data import prompt_text

    def sample(share: list[Prompt]) -> list[ShiftedGroup]:
        groups = []
        for prompt in share:
            prompt_id = prompt.id or content_id(prompt.prompt)
            generations = generate(policy, tokenizer, [prompt_text(tokenizer, prompt, prompt_format)],
                                   max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                   stop=list(prompt.meta.get("stop") or []), num_return_sequences=samples_per_prompt,
                                   batch_size=samples_per_prompt, max_prompt_length=max_prompt_length,
                                   seed=group_seed(seed, round_index or 0, prompt_id))
            groups.append(ShiftedGroup(prompt.prompt, [g.text for g in generations], prompt_id, round_index))
        return groups

    return map_shards(list(prompts), sample) if map_shards is not None else sample(list(prompts))


# --------------------------------------------------------------------------- tokens and scores


@dataclass
class EncodedGroups:
    """Groups tokenized for a reward model the way preference pairs are (prompt rendered, oldest tokens cut)."""

    groups: list[ShiftedGroup]
    sequences: list[list[list[int]]]
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.groups)

    def length(self, index: int) -> int:
        return max(len(s) for s in self.sequences[index])

    def lengths(self) -> list[int]:
        return [self.length(i) for i in range(len(self))]

    def collate(self, indices: list[int], device=None, weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Every completion of the groups as right-padded rows, with each row's group and slot, and a loss
        weight per group (0 for the stand-in group of a process whose share of a global batch is empty)."""
        rows = [(g, s, ids) for g, index in enumerate(indices) for s, ids in enumerate(self.sequences[index])]
        width = max(len(ids) for _, _, ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (_, _, ids) in enumerate(rows):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "group": torch.tensor([g for g, _, _ in rows]), "slot": torch.tensor([s for _, s, _ in rows]),
                 "weight": torch.full((len(indices),), float(weight))}
        return {key: value.to(device) for key, value in batch.items()} if device is not None else batch


def encode_groups(tokenizer, groups: list[ShiftedGroup], max_length: int) -> EncodedGroups:
    sequences = []
    for group in groups:
        prompt_text = render_prompt(group.prompt, tokenizer)
        sequences.append([encode_left_truncated(tokenizer, prompt_text, c, max_length)[0] for c in group.completions])
    return EncodedGroups(groups, sequences, tokenizer.pad_token_id)


def overall_head(head_names: list[str]) -> int:
    """The head MetaRM trains and measures: `overall`, or the first."""
    return head_names.index("overall") if "overall" in head_names else 0


def group_rewards(model, batch: dict[str, torch.Tensor], head: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over a collated batch of groups: rewards [G, K] and the mask of real entries [G, K]."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards[:, head]
    groups, slots = len(batch["weight"]), int(batch["slot"].max()) + 1
    table = rewards.new_zeros(groups, slots)
    mask = torch.zeros(groups, slots, dtype=torch.bool, device=rewards.device)
    table = table.index_put((batch["group"], batch["slot"]), rewards)
    mask[batch["group"], batch["slot"]] = True
    return table, mask


@torch.no_grad()
def score_groups(model, data: EncodedGroups, batch_size: int, head: int = 0, trainer=None) -> list[list[float]]:
    """Every completion's reward, group by group (`batch_size` groups per pass; with a `trainer`, each
    process scores its share)."""
    was_training = model.training
    model.eval()
    device = trainer.device if trainer is not None else next(model.parameters()).device
    batches = [list(range(start, min(start + batch_size, len(data)))) for start in range(0, len(data), batch_size)]

    def score(share: list[list[int]]) -> list[list[list[float]]]:
        scored = []
        for indices in share:
            rewards, mask = group_rewards(model, data.collate(indices, device=device), head)
            scored.append([row[m].tolist() for row, m in zip(rewards.float().cpu(), mask.cpu())])
        return scored

    results = trainer.map_shards(batches, score) if trainer is not None else score(batches)
    model.train(was_training)
    return [group for batch in results for group in batch]


def discrimination(scores: list[list[float]]) -> dict[str, float]:
    """How well an RM tells a policy's samples apart: `difference` (mean J per group, see
    `losses.metarm_difference_loss`) and `score_spread` (mean within-group standard deviation of rewards)."""
    if not scores:
        return {}
    width = max(len(s) for s in scores)
    table = torch.zeros(len(scores), width)
    mask = torch.zeros(len(scores), width, dtype=torch.bool)
    for i, group in enumerate(scores):
        table[i, :len(group)] = torch.tensor(group)
        mask[i, :len(group)] = True
    spread = [math.sqrt(sum((r - sum(g) / len(g)) ** 2 for r in g) / len(g)) for g in scores]
    return {"difference": losses.metarm_difference_loss(table, mask).mean().item(),
            "score_spread": sum(spread) / len(spread)}
