"""Where PPO's prompts come from, how each is turned into text, and the PPO-ptx texts."""
from __future__ import annotations

import math
import random
from typing import Any

from align.generation import format_prompt
from align.ppo_config import Config
from align.ppo_models import PPOState
from align.types import Prompt


def load_prompt_sets(config: Config, domain=None) -> tuple[Any, list[Prompt], dict[str, int]]:
    """Training prompts and held-out prompts: from files when given, else from `domain` (the same instance
    that gives the reward, so a curriculum it keeps sees its own prompts). A domain's training prompts may be
    a live iterable (a curriculum whose stage advances): the trainer re-reads it every step."""
    from align.data import load_prompts

    counts: dict[str, int] = {}
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
            held_out = list((domain or domain_from(config)).prompts("test"))
        held_out = held_out[:config.eval_prompts]
    if config.max_examples > 0 and isinstance(train, list):
        train = train[:config.max_examples]
    if not len(train):
        raise ValueError(f"no training prompts (data={config.data!r}, domain={config.domain!r})")
    return train, held_out, counts


def domain_from(config: Config):
    from align.registry import get_domain

    return get_domain(config.domain, **config.domain_options)


def prompt_batch(source: Any, state: PPOState, size: int, seed: int, rank: int = 0,
                 world: int = 1) -> list[Prompt]:
    """The next `size` prompts of this process; the order is a shuffle fixed by (seed, epoch)."""
    prompts = source if isinstance(source, list) else list(source)
    per_epoch = max(1, len(prompts) // (size * world))
    if state.position >= per_epoch:
        state.epoch, state.position = state.epoch + 1, 0
    order = list(range(len(prompts)))
    random.Random(f"{seed}:{state.epoch}").shuffle(order)
    if len(order) < size * world:  # fewer prompts than a batch: repeat them
        order = (order * math.ceil(size * world / len(order)))[:size * world]
    start = state.position * size * world
    state.position += 1
    return [prompts[i] for i in order[start + rank:start + size * world:world]]


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
