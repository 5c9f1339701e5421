"""Preference pairs and prompts: loading (every skip counted), rendering, left truncation, batching.

Formats read per row: native `{prompt, chosen, rejected, ...}`, raw hh-rlhf dialogues (no prompt),
TRL plain or conversational columns, and strength-annotated rows (`mean_preference_difference`, ...).
See DESIGN.md "Pitfalls": truncation keeps the end of the text, and nothing is dropped silently.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from align.types import Message, PreferencePair, Prompt, PromptText

SKIP_REASONS = ("bad_json", "bad_utf8", "bad_format", "missing_field", "empty_response", "identical_responses")
"""Why a row can be skipped; `skipped_summary()` reports every reason, zero or not, so keys stay stable."""

KNOWN_PAIR_FIELDS = ("prompt", "chosen", "rejected", "id", "margin", "strength", "aspect")
"""Row fields that become PreferencePair attributes; every other field (a row's own `source` too) goes to `extra`."""
STRENGTH_FIELDS = ("mean_preference_difference", "mean preference difference")
"""An `align strength` row's strength; the second is how the public hh-rlhf-strength-cleaned release spells it."""
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
HH_ASSISTANT_MARKER = "\n\nAssistant:"


class DataError(ValueError):
    """A row or file that cannot be read; the message names file, line and field."""


class _BadRow(Exception):
    def __init__(self, reason: str, field_name: str | None, message: str):
        super().__init__(message)
        self.reason, self.field_name, self.message = reason, field_name, message


@dataclass
class PreferenceData:
    pairs: list[PreferencePair]
    skipped: Counter = field(default_factory=Counter)
    """reason (one of SKIP_REASONS) -> number of rows skipped for it."""
    source: str = ""

    def skipped_summary(self) -> dict[str, int]:
        """Flat `skipped_<reason>` counts for summary.json (every reason present, zero or not)."""
        return {f"skipped_{reason}": int(self.skipped.get(reason, 0)) for reason in SKIP_REASONS}


# ----------------------------------------------------------------------------- reading rows


def _open_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from e
    return raw


def _iter_rows(source: str, split: str | None, data_dir: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (location "<file>:<n>", row or _BadRow) from a file, a saved dataset or a hub id.

    n is the line for JSONL and the 1-based record number for JSON lists and datasets.
    """
    if os.path.isdir(source):
        yield from _iter_dataset_rows(_load_saved_dataset(source, split), source)
    elif os.path.isfile(source):
        name = source.removesuffix(".gz")
        raw = _open_bytes(source)
        json_document = name.endswith(".json") and not _looks_like_json_lines(raw)
        yield from (_iter_json_rows if json_document else _iter_jsonl_rows)(raw, source)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not re.search(r"\.(jsonl?|gz)$", source):
        hub_options = {"data_dir": data_dir} if data_dir else {}
        yield from _iter_dataset_rows(_load_hub_dataset(source, split or "train", **hub_options), source)
    else:
        raise DataError(f"{source}: no such file or directory (expected .jsonl/.json[.gz], a dataset "
                        "directory saved with `save_to_disk`, or a hub id like owner/name)")


def _looks_like_json_lines(raw: bytes) -> bool:
    """Many `.json` files are JSON lines (the hub's loaders accept both): one object per line, no enclosing list."""
    lines = raw.lstrip().split(b"\n", 1)
    return lines[0].rstrip().endswith(b"}") and len(lines) > 1 and lines[1].lstrip().startswith(b"{")


def _iter_jsonl_rows(raw: bytes, source: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        location = f"{source}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield location, _BadRow("bad_utf8", None, f"undecodable bytes (not UTF-8: {e.reason})")
            continue
        try:
            yield location, json.loads(text)
        except json.JSONDecodeError as e:
            yield location, _BadRow("bad_json", None, f"bad JSON line ({e.msg}, column {e.colno})")


def _iter_json_rows(raw: bytes, source: str) -> Iterator[tuple[str, Any]]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{source}:{line}: undecodable bytes (not UTF-8)") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{source}:{e.lineno}: bad JSON ({e.msg}, column {e.colno})") from e
    # {"data": [...]}, a list of rows, or a lone row
    rows = document.get("data", [document]) if isinstance(document, dict) else document
    if not isinstance(rows, list):
        raise DataError(f"{source}: expected a JSON list of rows or an object with a 'data' list")
    for number, row in enumerate(rows, start=1):
        yield f"{source}:{number}", row


def _load_saved_dataset(path: str, split: str | None):
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: a directory, but not a dataset saved with `save_to_disk` ({e})") from e
    if isinstance(loaded, datasets.DatasetDict):
        split = split or "train"
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    return loaded


def _load_hub_dataset(hub_id: str, split: str, **kwargs: Any):
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=split, **kwargs)
    except Exception as e:  # offline, unknown id, missing split: all end the same way for the user
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise DataError(f"{hub_id}: could not load split {split!r} from the Hugging Face hub{offline}: "
                        f"{type(e).__name__}: {e}. Download the files and pass a local path instead.") from e


def _iter_dataset_rows(dataset, source: str) -> Iterator[tuple[str, Any]]:
    for number, row in enumerate(dataset, start=1):
        yield f"{source}:{number}", row


# ----------------------------------------------------------------------------- parsing rows


def parse_hh_dialogue(text: str) -> list[Message]:
    """"\\n\\nHuman: a\\n\\nAssistant: b" -> [{"role": "user", "content": "a"}, {"role": "assistant", ...}]."""
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise ValueError(f"not an hh dialogue: text before the first 'Human:'/'Assistant:' turn: {parts[0][:60]!r}")
    return [{"role": HH_ROLES[speaker], "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2])]


def _split_hh_pair(chosen: str, rejected: str) -> tuple[list[Message], str, str]:
    """Shared history and the two final responses of a raw hh pair.

    The history ends at the last "Assistant:" turn the two texts share; everything after it is the
    response (in a handful of hh pairs one side holds further turns: they stay in its response).
    """
    common = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(HH_ASSISTANT_MARKER, 0, common)
    if cut < 0 or not HH_TURN.search(chosen):
        raise _BadRow("missing_field", "prompt", "no 'prompt' field, and chosen/rejected are not hh dialogues "
                      "sharing a history up to an 'Assistant:' turn")
    start = cut + len(HH_ASSISTANT_MARKER)
    try:
        history = parse_hh_dialogue(chosen[:cut])
    except ValueError as e:
        raise _BadRow("bad_format", "chosen", str(e)) from e
    return history, chosen[start:].strip(), rejected[start:].strip()


def _as_message_list(value: Any, field_name: str) -> list[Message]:
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in value):
        raise _BadRow("bad_format", field_name, "messages must be objects with 'role' and 'content' text")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _split_conversational(prompt: list[Message], chosen: list[Message], rejected: list[Message]):
    """TRL conversational rows: messages both completions share move to the prompt; one assistant turn each remains."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = prompt + chosen[:shared]
    responses = []
    for name, messages in (("chosen", chosen[shared:]), ("rejected", rejected[shared:])):
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise _BadRow("bad_format", name, "expected one final assistant message after the shared history")
        responses.append(messages[0]["content"].strip())
    return prompt, responses[0], responses[1]


def content_id(*parts: Any) -> str:
    """A stable id from content (same text -> same id on every machine and run)."""
    return hashlib.sha1(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _optional_float(row: dict, name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise _BadRow("bad_format", name, f"expected a number, got {value!r}") from e


def _pair_from_row(row: Any, location: str) -> PreferencePair:
    if not isinstance(row, dict):
        raise _BadRow("bad_format", None, f"expected a JSON object, got {type(row).__name__}")
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise _BadRow("missing_field", name, "missing field")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):
        prompt = [] if prompt is None else prompt
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        prompt, chosen, rejected = _split_conversational(
            _as_message_list(prompt, "prompt"), _as_message_list(chosen, "chosen"), _as_message_list(rejected, "rejected"))
    elif isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:
            prompt, chosen, rejected = _split_hh_pair(chosen, rejected)
        elif isinstance(prompt, list):
            prompt = _as_message_list(prompt, "prompt")
        elif not isinstance(prompt, str):
            raise _BadRow("bad_format", "prompt", "expected text or a list of chat messages")
        chosen, rejected = chosen.strip(), rejected.strip()
    else:
        raise _BadRow("bad_format", "chosen", "chosen and rejected must both be text or both be message lists")
    for name, response in (("chosen", chosen), ("rejected", rejected)):
        if not response:
            raise _BadRow("empty_response", name, "empty response")
    if chosen == rejected:
        raise _BadRow("identical_responses", "rejected", "identical chosen and rejected responses")
    strength = _optional_float(row, "strength")
    for name in STRENGTH_FIELDS:  # an annotated row: the ensemble's mean difference is the strength
        if name in row:
            strength = _optional_float(row, name)
    return PreferencePair(
        prompt=prompt, chosen=chosen, rejected=rejected,
        id=str(row["id"]) if row.get("id") is not None else content_id(prompt, chosen, rejected),
        margin=_optional_float(row, "margin"), strength=strength, aspect=row.get("aspect"),
        source=location,
        extra={k: v for k, v in row.items() if k not in KNOWN_PAIR_FIELDS},
    )


def _progress(rows: Iterable, source: str) -> Iterable:
    return tqdm(rows, desc=f"reading {os.path.basename(source.rstrip('/'))}", unit=" rows", leave=False,
                mininterval=1.0)


def _field_prefix(error: _BadRow) -> str:
    return f"field '{error.field_name}': " if error.field_name else ""


def parse_preference_rows(rows: Iterable[tuple[str, Any]], source: str, *, strict: bool = False,
                          limit: int = -1) -> PreferenceData:
    """Turn (location, row) items into pairs; bad rows raise (strict) or are counted by reason."""
    data = PreferenceData(pairs=[], skipped=Counter(), source=source)
    for location, row in _progress(rows, source):
        if 0 <= limit <= len(data.pairs):
            break
        try:
            if isinstance(row, _BadRow):
                raise row
            data.pairs.append(_pair_from_row(row, location))
        except _BadRow as e:
            if strict:
                raise DataError(f"{location}: {_field_prefix(e)}{e.message}") from None
            data.skipped[e.reason] += 1
    return data


def load_preferences(source: str, *, strict: bool = False, limit: int = -1, split: str | None = None,
                     data_dir: str | None = None) -> PreferenceData:
    """Preference pairs from a .jsonl/.json file (plain or .gz), a `save_to_disk` directory or a hub id.

    `limit` stops after that many pairs (-1: all); `split` picks a split of a dataset dict or the hub;
    `data_dir` (hub ids only) picks a folder of the hub repository (e.g. hh-rlhf's `harmless-base`).
    """
    return parse_preference_rows(_iter_rows(source, split, data_dir), source, strict=strict, limit=limit)


def load_prompts(source: str, *, strict: bool = False, limit: int = -1,
                 split: str | None = None) -> tuple[list[Prompt], Counter]:
    """Prompts from rows `{prompt, [response|reference], [id]}` or from preference rows (chosen = reference)."""
    prompts: list[Prompt] = []
    skipped: Counter = Counter()
    for location, row in _progress(_iter_rows(source, split), source):
        if 0 <= limit <= len(prompts):
            break
        try:
            if isinstance(row, _BadRow):
                raise row
            prompts.append(_prompt_from_row(row, location))
        except _BadRow as e:
            if strict:
                raise DataError(f"{location}: {_field_prefix(e)}{e.message}") from None
            skipped[e.reason] += 1
    return prompts, skipped


def _prompt_from_row(row: Any, location: str) -> Prompt:
    if isinstance(row, dict) and "chosen" in row and "rejected" in row:
        pair = _pair_from_row(row, location)
        return Prompt(prompt=pair.prompt, id=pair.id, reference=pair.chosen, meta={"source": location})
    if not isinstance(row, dict):
        raise _BadRow("bad_format", None, f"expected a JSON object, got {type(row).__name__}")
    prompt = row.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()) or prompt == []:
        raise _BadRow("missing_field", "prompt", "missing or empty prompt")
    if isinstance(prompt, list):
        prompt = _as_message_list(prompt, "prompt")
    elif not isinstance(prompt, str):
        raise _BadRow("bad_format", "prompt", "expected text or a list of chat messages")
    reference = row.get("response", row.get("reference"))
    meta = {k: v for k, v in row.items() if k not in ("prompt", "response", "reference", "id")}
    return Prompt(prompt=prompt, id=str(row["id"]) if row.get("id") is not None else content_id(prompt),
                  reference=reference, meta={**meta, "source": location})


def split_train_eval(items: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle-and-cut: (train, eval), eval holding round(len * eval_fraction) items."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(items) * eval_fraction)
    return [items[i] for i in sorted(order[n_eval:])], [items[i] for i in sorted(order[:n_eval])]


# ----------------------------------------------------------------------------- rendering and encoding


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


def _encode_left_truncated(tokenizer, prompt_text: str, response: str, max_length: int) -> tuple[list[int], bool]:
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
    chosen_ids, chosen_cut = _encode_left_truncated(tokenizer, prompt_text, pair.chosen, max_length)
    rejected_ids, rejected_cut = _encode_left_truncated(tokenizer, prompt_text, pair.rejected, max_length)
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
