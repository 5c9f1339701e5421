"""SFT examples: a prompt rendered exactly as generation will see it, the response and EOS after it, labels on
the response only; optional packing; collation."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from align.data import load_prompts, response_separator, split_train_eval
from align.generation import encode_prompt, format_prompt
from align.registry import get_domain
from align.types import Prompt, ReportsDataUsed

IGNORE = -100
"""Label of tokens the loss skips (the prompt, padding)."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def encode_example(tokenizer, prompt: Prompt, response: str, max_length: int,
                   chat: bool) -> tuple[Example, bool]:
    """prompt + response + EOS with the prompt's labels masked. The prompt is tokenized on its own,
    exactly as generation sees it, so training and sampling agree at the boundary. A too-long
    example loses its oldest prompt tokens first, then the end of the response; returns (example, cut)."""
    prompt_text = format_prompt(tokenizer, prompt.prompt, chat=chat)
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    separator = "" if chat and getattr(tokenizer, "chat_template", None) else response_separator(prompt_text)
    response_ids = tokenizer(separator + response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    overflow = len(prompt_ids) + len(response_ids) - max_length
    if overflow > 0:
        prompt_ids = prompt_ids[min(overflow, len(prompt_ids) - 1):]  # oldest context first, one token stays
        response_ids = response_ids[:max_length - len(prompt_ids)]
    return Example(prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + response_ids), overflow > 0


def pack(examples: list[Example], max_length: int) -> list[Example]:
    """Concatenate examples (labels included) and cut into rows of `max_length` tokens."""
    ids = [t for e in examples for t in e.input_ids]
    labels = [t for e in examples for t in e.labels]
    return [Example(ids[i:i + max_length], labels[i:i + max_length]) for i in range(0, len(ids), max_length)]


def collate(examples: list[Example], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (-100 on padding)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def response_tokens(example: Example) -> int:
    """Tokens the loss is computed on (labels shifted by one)."""
    return sum(label != IGNORE for label in example.labels[1:])


def load_examples(config, tokenizer) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Train and held-out examples of `config` (an `align.sft.train.Config`): its `data` file or the domain's
    prompts with a reference; counts of skipped and truncated rows, and what the domain says it read."""
    counts: Counter = Counter()
    data_used: dict[str, Any] = {}  # what the domain says it read (`ReportsDataUsed`)
    if config.data:
        rows, skipped = load_prompts(config.data, strict=config.strict)
        counts.update({f"skipped_{k}": v for k, v in skipped.items()})
    else:
        domain = get_domain(config.domain, **config.domain_options)
        rows = list(domain.prompts("train"))
        data_used = dict(domain.data_used()) if isinstance(domain, ReportsDataUsed) else {}
    with_response = [r for r in rows if r.reference]
    counts["skipped_no_response"] += len(rows) - len(with_response)
    if config.max_examples > 0:
        with_response = with_response[:config.max_examples]
    if not with_response:
        raise ValueError(f"no prompt/response examples in {config.data or 'domain ' + config.domain}")
    train_rows, eval_rows = split_train_eval(with_response, config.eval_fraction, config.seed)
    encoded = {}
    for name, part in (("train", train_rows), ("eval", eval_rows)):
        encoded[name] = []
        for row in part:
            example, cut = encode_example(tokenizer, row, row.reference, config.max_length,
                                          chat=config.prompt_format == "chat")
            counts["truncated"] += cut
            encoded[name].append(example)
    return encoded["train"], encoded["eval"], {**data_used, **{k: v for k, v in counts.items() if v}}
