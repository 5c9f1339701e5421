"""Where PPO's prompts come from, how each is turned into text, and the PPO-ptx texts."""
from __future__ import annotations

from typing import Any

from align.generation import format_prompt
from align.ppo.config import Config
from align.training import epoch_stream
from align.types import Prompt, ReportsDataUsed


def load_prompt_sets(config: Config, domain=None) -> tuple[Any, list[Prompt], dict[str, Any]]:
    """Training prompts, held-out prompts, and counts (skipped rows; what a domain says it read,
    `ReportsDataUsed`): from files when given, else from `domain` (the same instance that gives the reward, so a
    curriculum it keeps sees its own prompts). A domain's training prompts may be a live iterable (a curriculum
    whose stage advances): the trainer re-reads it every step."""
    from align.data import load_prompts

    counts: dict[str, Any] = {}
    if config.data:
        train, skipped = load_prompts(config.data, strict=config.strict)
        counts.update({f"skipped_{k}": v for k, v in skipped.items()})
    else:
        domain = domain or domain_from(config)
        train = domain.prompts("train")
    held_out: list[Prompt] = []
    if config.eval_prompts > 0:
        if config.eval_data:
            held_out, _ = load_prompts(config.eval_data, strict=config.strict)
        else:
            domain = domain or domain_from(config)
            held_out = list(domain.prompts("test"))
        held_out = held_out[:config.eval_prompts]
    if config.max_examples > 0 and isinstance(train, list):
        train = train[:config.max_examples]
    if not len(train):
        raise ValueError(f"no training prompts (data={config.data!r}, domain={config.domain!r})")
    if isinstance(domain, ReportsDataUsed):
        counts.update(domain.data_used())
    return train, held_out, counts


def domain_from(config: Config):
    from align.registry import get_domain

    return get_domain(config.domain, **config.domain_options)


def prompt_batch(source: Any, state, size: int, seed: int, rank: int = 0, world: int = 1) -> list[Prompt]:
    """This process's share of the next global batch of `size × world` prompts. Every prompt comes once per
    epoch (a batch may span two epochs; fewer prompts than a batch repeat), in a shuffle fixed by
    (seed, epoch); the position is `state.epoch` / `state.batch_in_epoch` (a prompt index). The source is
    re-read each time: a curriculum's prompts change with its stage."""
    prompts = source if isinstance(source, list) else list(source)
    stream = epoch_stream(len(prompts), seed, state.epoch, state.batch_in_epoch)
    chosen = []
    for _ in range(size * world):
        state.epoch, state.batch_in_epoch, item = next(stream)
        chosen.append(item)
    return [prompts[i] for i in chosen[rank::world]]


def prompt_text(tokenizer, prompt: Prompt, prompt_format: str) -> str:
    """What the policy continues. Domains may ask for more through `Prompt.meta`: `style: completion` (plain
    text even in chat runs) and `assistant_prefix` (the start of the answer, written after the template)."""
    chat = prompt_format == "chat" and prompt.meta.get("style") != "completion"
    return format_prompt(tokenizer, prompt.prompt, chat=chat) + prompt.meta.get("assistant_prefix", "")


def ptx_texts_from(config: Config) -> list[str]:
    if not config.ptx_data or config.ptx_coef <= 0:
        return []
    from align.data import load_prompts, render_prompt

    rows, _ = load_prompts(config.ptx_data, strict=config.strict)
    texts = [render_prompt(p.prompt) + (" " + p.reference if p.reference else "") for p in rows]
    if not texts:
        raise ValueError(f"ptx_data: no usable rows in {config.ptx_data}")
    return texts
