"""Rows -> preference pairs and prompts, every skipped row counted by reason (or, strict, the first one
raised with file, line and field).

Formats read per row: native `{prompt, chosen, rejected, ...}`, raw hh-rlhf dialogues (no prompt: the
shared history becomes the prompt), TRL plain or conversational columns, and strength-annotated rows
(`mean_preference_difference`, or the public hh-rlhf-strength-cleaned release's spelling).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from align.data.files import BadRow, iter_rows
from align.types import Message, PreferencePair, Prompt

SKIP_REASONS = ("bad_json", "bad_utf8", "bad_format", "missing_field", "empty_response", "identical_responses")
"""Why a row can be skipped."""

KNOWN_PAIR_FIELDS = ("prompt", "chosen", "rejected", "id", "margin", "strength", "aspect")
"""Row fields that become PreferencePair attributes; every other field (a row's own `source` too) goes to `extra`."""
STRENGTH_FIELDS = ("mean_preference_difference", "mean preference difference")
"""An `align strength` row's strength; the second is how the public hh-rlhf-strength-cleaned release spells it."""
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
HH_ASSISTANT_MARKER = "\n\nAssistant:"


@dataclass
class PreferenceData:
    pairs: list[PreferencePair]
    skipped: Counter = field(default_factory=Counter)
    """reason (one of SKIP_REASONS) -> number of rows skipped for it."""
    source: str = ""


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
        raise BadRow("missing_field", "prompt", "no 'prompt' field, and chosen/rejected are not hh dialogues "
                      "sharing a history up to an 'Assistant:' turn")
    start = cut + len(HH_ASSISTANT_MARKER)
    try:
        history = parse_hh_dialogue(chosen[:cut])
    except ValueError as e:
        raise BadRow("bad_format", "chosen", str(e)) from e
    return history, chosen[start:].strip(), rejected[start:].strip()


def _as_message_list(value: Any, field_name: str) -> list[Message]:
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in value):
        raise BadRow("bad_format", field_name, "messages must be objects with 'role' and 'content' text")
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
            raise BadRow("bad_format", name, "expected one final assistant message after the shared history")
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
        raise BadRow("bad_format", name, f"expected a number, got {value!r}") from e


def _pair_from_row(row: Any, location: str) -> PreferencePair:
    if not isinstance(row, dict):
        raise BadRow("bad_format", None, f"expected a JSON object, got {type(row).__name__}")
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise BadRow("missing_field", name, "missing field")
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
            raise BadRow("bad_format", "prompt", "expected text or a list of chat messages")
        chosen, rejected = chosen.strip(), rejected.strip()
    else:
        raise BadRow("bad_format", "chosen", "chosen and rejected must both be text or both be message lists")
    for name, response in (("chosen", chosen), ("rejected", rejected)):
        if not response:
            raise BadRow("empty_response", name, "empty response")
    if chosen == rejected:
        raise BadRow("identical_responses", "rejected", "identical chosen and rejected responses")
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


def parse_preference_rows(rows: Iterable[tuple[str, Any]], source: str, *, strict: bool = False,
                          limit: int = -1) -> PreferenceData:
    """Turn (location, row) items into pairs; bad rows raise (strict) or are counted by reason."""
    data = PreferenceData(pairs=[], skipped=Counter(), source=source)
    for location, row in _progress(rows, source):
        if 0 <= limit <= len(data.pairs):
            break
        try:
            if isinstance(row, BadRow):
                raise row
            data.pairs.append(_pair_from_row(row, location))
        except BadRow as e:
            if strict:
                raise e.located(location) from None
            data.skipped[e.reason] += 1
    return data


def load_preferences(source: str, *, strict: bool = False, limit: int = -1, split: str | None = None,
                     data_dir: str | None = None) -> PreferenceData:
    """Preference pairs from a .jsonl/.json file (plain or .gz), a `save_to_disk` directory or a hub id.

    `limit` stops after that many pairs (-1: all); `split` picks a split of a dataset dict or the hub;
    `data_dir` (hub ids only) picks a folder of the hub repository (e.g. hh-rlhf's `harmless-base`).
    """
    return parse_preference_rows(iter_rows(source, split, data_dir), source, strict=strict, limit=limit)


def load_prompts(source: str, *, strict: bool = False, limit: int = -1,
                 split: str | None = None) -> tuple[list[Prompt], Counter]:
    """Prompts from rows `{prompt, [response|reference], [id]}` or from preference rows (chosen = reference)."""
    prompts: list[Prompt] = []
    skipped: Counter = Counter()
    for location, row in _progress(iter_rows(source, split), source):
        if 0 <= limit <= len(prompts):
            break
        try:
            if isinstance(row, BadRow):
                raise row
            prompts.append(_prompt_from_row(row, location))
        except BadRow as e:
            if strict:
                raise e.located(location) from None
            skipped[e.reason] += 1
    return prompts, skipped


def _prompt_from_row(row: Any, location: str) -> Prompt:
    if isinstance(row, dict) and "chosen" in row and "rejected" in row:
        pair = _pair_from_row(row, location)
        return Prompt(prompt=pair.prompt, id=pair.id, reference=pair.chosen, meta={"source": location})
    if not isinstance(row, dict):
        raise BadRow("bad_format", None, f"expected a JSON object, got {type(row).__name__}")
    prompt = row.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()) or prompt == []:
        raise BadRow("missing_field", "prompt", "missing or empty prompt")
    if isinstance(prompt, list):
        prompt = _as_message_list(prompt, "prompt")
    elif not isinstance(prompt, str):
        raise BadRow("bad_format", "prompt", "expected text or a list of chat messages")
    reference = row.get("response", row.get("reference"))
    meta = {k: v for k, v in row.items() if k not in ("prompt", "response", "reference", "id")}
    return Prompt(prompt=prompt, id=str(row["id"]) if row.get("id") is not None else content_id(prompt),
                  reference=reference, meta={**meta, "source": location})
