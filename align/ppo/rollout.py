"""PPO experience: sample completions, score them, and lay them out as tensors for the update.

Layout: every row is `[left padding | prompt | completion | right padding]`, so all responses
start at the same column P and the response tensors ([B, T]) line up with
`logits[:, P-1 : P+T-1]` (the distribution that produced each response token).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from align.data import render_prompt, response_separator
from align.generation import Generation, cache_argument, keep_logits
from align.ppo.losses import entropy_from_logits, logprobs_from_logits
from align.types import Prompt, RewardOutput

# --------------------------------------------------------------------------- layout


@dataclass
class Batch:
    """Token tensors of B prompt+completion sequences, responses aligned at column `prompt_width`."""

    input_ids: torch.Tensor        # [B, P+T]
    attention_mask: torch.Tensor   # [B, P+T]
    position_ids: torch.Tensor     # [B, P+T]
    response_ids: torch.Tensor     # [B, T]
    response_mask: torch.Tensor    # [B, T] 1 on real response tokens
    prompt_width: int

    def select(self, index: torch.Tensor) -> Batch:
        return Batch(self.input_ids[index], self.attention_mask[index], self.position_ids[index],
                     self.response_ids[index], self.response_mask[index], self.prompt_width)

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.response_ids.to(device), self.response_mask.to(device), self.prompt_width)


def collate(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int) -> Batch:
    """Left-pad the prompts and right-pad the completions (see the module docstring)."""
    width = max(len(p) for p in prompt_ids)
    length = max(1, max(len(c) for c in completion_ids))
    rows = len(prompt_ids)
    input_ids = torch.full((rows, width + length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, width + length), dtype=torch.long)
    for i, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[i, width - len(prompt):width] = torch.tensor(prompt, dtype=torch.long)
        input_ids[i, width:width + len(completion)] = torch.tensor(completion, dtype=torch.long)
        attention_mask[i, width - len(prompt):width + len(completion)] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(input_ids, attention_mask, position_ids, input_ids[:, width:].clone(),
                 attention_mask[:, width:].clone(), width)


def response_logits(model, batch: Batch) -> torch.Tensor:
    """Logits [B, T, V] of the distributions that produced the response tokens (only those are computed where
    the model's forward takes `logits_to_keep`). Rows that share a prompt (a group's samples) run it once: see
    `shared_prompt_logits`."""
    shared = shared_prompt_rows(model, batch)
    if shared is not None:
        return shared_prompt_logits(model, batch, *shared)
    length = batch.response_ids.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False, **keep_logits(model, length + 1))
    return out.logits[:, -(length + 1):-1]


def shared_prompt_rows(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(first row of each distinct prompt [U], each row's distinct prompt [B]) when some rows share a prompt
    and `model` can run a prompt once for them; None otherwise. Not under a distributed wrapper (DDP, FSDP,
    DeepSpeed: two forwards before one backward) nor with activation checkpointing (it turns the cache off)."""
    if hasattr(model, "module") or (model.training and any(getattr(m, "gradient_checkpointing", False) is True
                                                           for m in model.modules())):
        return None
    prompts = torch.cat([batch.input_ids[:, :batch.prompt_width], batch.attention_mask[:, :batch.prompt_width]], 1)
    distinct, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    if len(distinct) == len(prompts):
        return None
    rows = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((len(distinct),), len(inverse), device=inverse.device).scatter_reduce(0, inverse, rows, "amin")
    return first, inverse


def shared_prompt_logits(model, batch: Batch, first: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """`response_logits` with each distinct prompt run once: its forward fills a KV cache that is then indexed
    out to every row of it (gradients flow back through the index to the one prompt pass), and the responses
    run on that cache. A step then costs U·P + B·T tokens instead of B·(P+T) for U distinct prompts of width P
    among B rows (RLOO's 4 prompts x 8 samples of the code demo: 2.3x fewer). Same log-probs up to rounding (1e-5
    in fp32); in a bf16 run whose minibatches mix this path and the full one, the ratio before any update is
    exactly 1 (both tested)."""
    width, length = batch.prompt_width, batch.response_ids.shape[1]
    cache_key = cache_argument(model)
    prompt = model(input_ids=batch.input_ids[first, :width], attention_mask=batch.attention_mask[first, :width],
                   position_ids=batch.position_ids[first, :width], use_cache=True, **keep_logits(model, 1))
    first_token_logits = prompt.logits[inverse, -1:]  # the last prompt position predicts the first response token
    if length == 1:
        return first_token_logits
    cache = getattr(prompt, cache_key)
    cache.batch_select_indices(inverse)
    rest = model(input_ids=batch.input_ids[:, width:width + length - 1],
                 attention_mask=batch.attention_mask[:, :width + length - 1],
                 position_ids=batch.position_ids[:, width:width + length - 1], use_cache=True, **{cache_key: cache})
    return torch.cat([first_token_logits, rest.logits], dim=1)


def response_logprobs(model, batch: Batch, with_entropy: bool = False):
    """Per-token log pi(response token) [B, T] (and the entropy [B, T], a statistic without gradient, when asked)."""
    logits = response_logits(model, batch)
    logprobs = logprobs_from_logits(logits, batch.response_ids)
    if with_entropy:
        with torch.no_grad():
            return logprobs, entropy_from_logits(logits)
    return logprobs


def response_values(critic, batch: Batch) -> torch.Tensor:
    """V(s_t) [B, T] for the state before each response token."""
    values = critic(batch.input_ids, batch.attention_mask, batch.position_ids)
    width, length = batch.prompt_width, batch.response_ids.shape[1]
    return values[:, width - 1:width + length - 1].float()


# --------------------------------------------------------------------------- rewards


def completion_offsets(tokenizer, generation: Generation) -> list[tuple[int, int]]:
    """Character span of each completion token inside `generation.text` (empty spans past a stop cut)."""
    offsets, previous = [], 0
    limit = len(generation.text)
    for i in range(len(generation.completion_ids)):
        end = len(tokenizer.decode(generation.completion_ids[:i + 1], skip_special_tokens=True))
        offsets.append((min(previous, limit), min(end, limit)))
        previous = end
    return offsets


@dataclass
class Scores:
    """Rewards for a batch: the combined score per sample (NaN = dropped), named parts, FGO masks."""

    total: torch.Tensor
    parts: dict[str, list[float]] = field(default_factory=dict)
    token_masks: list[list[int] | None] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    details: list[dict] = field(default_factory=list)
    """The domain reward's own `parts` per sample (empty without a domain reward)."""
    outputs: list[RewardOutput] = field(default_factory=list)
    """The domain reward's outputs (empty without a domain reward), for a curriculum to observe."""


RewardFunction = Callable[..., list[RewardOutput]]


class RewardSources:
    """A weighted sum of a reward model's score and a programmatic (domain) reward.

    The RM may use another tokenizer than the policy: it reads the decoded prompt and completion,
    rendered the way it was trained (`render_prompt` + the response separator)."""

    def __init__(self, reward_model=None, rm_weight: float = 1.0, rm_head: int = 0, rm_batch_size: int = 16,
                 rm_max_length: int = 512, domain_reward: RewardFunction | None = None,
                 domain_weight: float = 1.0):
        if reward_model is None and domain_reward is None:
            raise ValueError("no reward source: set reward_model=<dir> and/or domain_reward=true")
        self.reward_model, self.rm_weight, self.rm_head = reward_model, rm_weight, rm_head
        self.rm_batch_size, self.rm_max_length = rm_batch_size, rm_max_length
        self.domain_reward, self.domain_weight = domain_reward, domain_weight

    def rm_texts(self, prompts: list[Prompt], completions: list[str]) -> list[str]:
        tokenizer = getattr(self.reward_model, "tokenizer", None)
        texts = []
        for prompt, completion in zip(prompts, completions):
            prompt_text = render_prompt(prompt.prompt, tokenizer)
            texts.append(prompt_text + response_separator(prompt_text) + completion)
        return texts

    @torch.no_grad()
    def __call__(self, prompts: list[Prompt], generations: list[Generation], tokenizer) -> Scores:
        completions = [g.text for g in generations]
        total = torch.zeros(len(generations), dtype=torch.float64)
        scores = Scores(total=total, token_masks=[None] * len(generations))
        if self.reward_model is not None:
            from align.models import score_texts

            rm = score_texts(self.reward_model, self.rm_texts(prompts, completions), batch_size=self.rm_batch_size,
                             max_length=self.rm_max_length)[:, self.rm_head].double().cpu()
            total += self.rm_weight * rm
            scores.parts["rm"] = rm.tolist()
        if self.domain_reward is not None:
            offsets = [completion_offsets(tokenizer, g) for g in generations]
            outputs = self.domain_reward(prompts, completions, completion_offsets=offsets)
            if len(outputs) != len(generations):
                raise ValueError(f"domain reward returned {len(outputs)} outputs for {len(generations)} completions")
            domain = torch.tensor([math.nan if o.reward is None else float(o.reward) for o in outputs],
                                  dtype=torch.float64)
            total += self.domain_weight * domain
            scores.parts["domain"] = domain.tolist()
            for i, (output, generation) in enumerate(zip(outputs, generations)):
                if output.reward is None:
                    scores.dropped["no_reward"] += 1
                if output.token_mask is not None:
                    if len(output.token_mask) != len(generation.completion_ids):
                        scores.dropped["bad_token_mask"] += 1
                        total[i] = math.nan
                    else:
                        scores.token_masks[i] = list(output.token_mask)
            scores.parts.update(_numeric_parts(outputs))
            scores.details = [dict(o.parts) for o in outputs]
            scores.outputs = list(outputs)
        return scores


def _numeric_parts(outputs: list[RewardOutput]) -> dict[str, list[float]]:
    """Per-sample numbers from `RewardOutput.parts` for the logs: numeric values as they are, and for a text
    value that most samples carry and that takes few levels, each shared by several samples (a status, not
    an id), one 0/1 indicator per level."""
    keys = sorted({k for o in outputs for k in o.parts})
    parts: dict[str, list[float]] = {}
    for key in keys:
        values = [o.parts.get(key) for o in outputs]
        present = [v for v in values if v is not None]
        if not present:
            continue
        if all(isinstance(v, (int, float)) for v in present):
            parts[f"domain_{key}"] = [math.nan if v is None else float(v) for v in values]
        elif all(isinstance(v, str) for v in present) and 2 * len(present) >= len(values):
            levels = sorted(set(present))
            if len(levels) <= 8 and 2 * len(levels) <= len(present):  # a status, not an id
                for level in levels:
                    parts[f"domain_{key}_{level}"] = [float(v == level) for v in values]
    return parts


def mean_parts(parts: dict[str, list[float]], keep: list[int]) -> dict[str, float]:
    """Mean of each part over the kept samples, NaNs ignored."""
    means = {}
    for key, values in parts.items():
        kept = [values[i] for i in keep if not math.isnan(values[i])]
        if kept:
            means[f"reward_{key}"] = sum(kept) / len(kept)
    return means


def policy_mask(batch: Batch, token_masks: list[list[int] | None]) -> torch.Tensor:
    """The response mask restricted by per-token FGO masks where the reward gave one."""
    mask = batch.response_mask.clone()
    for i, token_mask in enumerate(token_masks):
        if token_mask is not None:
            row = torch.zeros(mask.shape[1], dtype=mask.dtype)
            row[:len(token_mask)] = torch.tensor(token_mask, dtype=mask.dtype)
            mask[i] = mask[i] * row
    return mask
