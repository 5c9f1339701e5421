"""Text for the models: prompts rendered as the tokenizer expects, pairs tokenized keeping their ends.

Chosen and rejected responses share the dialogue history and differ only at the end, so a long pair loses
its OLDEST tokens first (left truncation); cutting from the right would make many pairs identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from align.types import PreferencePair, PromptText


def render_prompt(prompt: PromptText, tokenizer=None) -> str:
    """Chat messages -> text (the tokenizer's chat template if it has one, else Human:/Assistant: turns)."""
    if isinstance(prompt, str):
        return prompt
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    turns = [f"{names.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in prompt]
    return "\n\n".join(turns + ["Assistant:"])


def response_separator(prompt_text: str) -> str:
    """Between a rendered prompt and its response: nothing after whitespace (chat templates end in a newline)."""
    return "" if not prompt_text or prompt_text[-1].isspace() else " "


@dataclass
class EncodedPair:
    chosen_ids: list[int]
    rejected_ids: list[int]
    response_truncated: bool
    """Some token of the chosen or the rejected response was cut (the prompt alone did not make room)."""
    identical_after_truncation: bool


def encode_left_truncated(tokenizer, prompt_text: str, response: str, max_length: int) -> tuple[list[int], bool]:
    """Token ids of prompt + separator + response, at most `max_length`, the oldest text cut first (special
    tokens at either end stay); and whether any response token was cut."""
    text = prompt_text + response_separator(prompt_text)
    response_start = len(text)
    text += response
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = bool(bos) and text.startswith(bos)  # chat templates already wrote it
    encoding = tokenizer(text, add_special_tokens=not has_bos, return_offsets_mapping=True,
                         return_special_tokens_mask=True, truncation=False, verbose=False)
    ids, offsets, special = encoding["input_ids"], encoding["offset_mapping"], list(encoding["special_tokens_mask"])
    if has_bos:
        special[0] = 1
    lead = 0
    while lead < len(ids) and special[lead]:
        lead += 1
    trail = 0
    while trail < len(ids) - lead and special[len(ids) - 1 - trail]:
        trail += 1
    budget = max_length - lead - trail
    if budget <= 0:
        raise ValueError(f"max_length={max_length} leaves no room beside {lead + trail} special tokens")
    body = range(lead, len(ids) - trail)
    kept = body[max(0, len(body) - budget):]  # keep the end: the oldest context goes first
    is_response = [offsets[i][1] > response_start for i in body]
    truncated = sum(is_response[: len(body) - len(kept)]) > 0
    return ids[:lead] + [ids[i] for i in kept] + ids[len(ids) - trail:], truncated


def encode_pair(tokenizer, pair: PreferencePair, max_length: int) -> EncodedPair:
    """Tokenize prompt+chosen and prompt+rejected, truncating FROM THE LEFT to `max_length` tokens.

    Leading/trailing special tokens (BOS, CLS, SEP, EOS) stay; the oldest text goes first, so the
    responses (where the pair differs) survive. Needs a fast tokenizer (character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("encode_pair needs a fast (Rust) tokenizer: it locates the response by character offsets")
    prompt_text = render_prompt(pair.prompt, tokenizer)
    chosen_ids, chosen_cut = encode_left_truncated(tokenizer, prompt_text, pair.chosen, max_length)
    rejected_ids, rejected_cut = encode_left_truncated(tokenizer, prompt_text, pair.rejected, max_length)
    return EncodedPair(chosen_ids, rejected_ids, response_truncated=chosen_cut or rejected_cut,
                       identical_after_truncation=chosen_ids == rejected_ids)


def collate_pairs(encoded: list[EncodedPair], pad_token_id: int,
                  pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`/`attention_mask` of shape [2B, L]: rows 0..B-1 chosen, B..2B-1 rejected."""
    sequences = [e.chosen_ids for e in encoded] + [e.rejected_ids for e in encoded]
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = math.ceil(length / pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, : len(sequence)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
