"""Parallel text as prompts and SFT data, the prompt format, and users' own preference files.

Prompt format (both directions; the ALMA format, Xu et al. 2024):

    Translate this from Chinese to English:
    Chinese: {source}
    English:

The completion is the translation alone (the reward's guards penalise anything around it).

A reward model can also be conditioned on the human reference (`domain_options.rm_reference`):
it then reads `reward_model_prompt`, the same prompt with the reference on the line before the
answer, where left truncation keeps it.
"""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

from align.types import PreferencePair, Prompt

LANGUAGE_NAMES = {"zh": "Chinese", "en": "English", "de": "German", "fr": "French", "ja": "Japanese",
                  "ru": "Russian", "es": "Spanish", "cs": "Czech"}
PROMPT_STOP = ("\n",)  # a translation of one segment is one line
PROMPT_TEMPLATE = "Translate this from {src_name} to {tgt_name}:\n{src_name}: {source}\n{tgt_name}:"


class TranslationDataError(ValueError):
    """Bad translation data, naming file, line and field."""


def parse_direction(direction: str) -> tuple[str, str]:
    """`zh-en` -> ("zh", "en")."""
    parts = direction.split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"direction: expected `src-tgt` such as `zh-en`, got {direction!r}")
    return parts[0], parts[1]


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def format_prompt(source: str, src_lang: str = "zh", tgt_lang: str = "en") -> str:
    """The documented translation prompt for `source`."""
    return PROMPT_TEMPLATE.format(src_name=language_name(src_lang), tgt_name=language_name(tgt_lang),
                                  source=source.strip())


def reward_model_prompt(source: str, src_lang: str, tgt_lang: str, reference: str | None = None) -> str:
    """What a translation reward model reads before the translation: the documented prompt, and with
    a `reference`, a `Reference {tgt_name}: ...` line before the answer. An English-only encoder
    sees the Chinese source mostly as unknown tokens; the reference gives it text it can compare."""
    prompt = format_prompt(source, src_lang, tgt_lang)
    if reference is None:
        return prompt
    head, answer = prompt.rsplit("\n", 1)
    return f"{head}\nReference {language_name(tgt_lang)}: {reference.strip()}\n{answer}"


def parse_prompt(prompt: str) -> tuple[str, str, str] | None:
    """(source, src_lang, tgt_lang) from a prompt in the documented format, or None."""
    match = re.search(r"Translate this from (.+?) to (.+?):\n\1: (.*)\n\2:\s*$", prompt, flags=re.DOTALL)
    if not match:
        return None
    codes = {name: code for code, name in LANGUAGE_NAMES.items()}
    return match.group(3), codes.get(match.group(1), match.group(1)), codes.get(match.group(2), match.group(2))


def make_prompt(source: str, src_lang: str, tgt_lang: str, reference: str | None = None,
                id: str | None = None) -> Prompt:
    """A `Prompt` carrying what the reward needs in `meta` (source text and both languages), generated as a
    plain completion (`style`: the ALMA prompt is a completion prompt, also for a base model without a chat
    template) that ends at the first line break (`stop`: a translation of one segment is one line; a base model
    would otherwise go on with a new "Translate this..." block)."""
    return Prompt(prompt=format_prompt(source, src_lang, tgt_lang), id=id, reference=reference,
                  meta={"source": source.strip(), "src_lang": src_lang, "tgt_lang": tgt_lang,
                        "style": "completion", "stop": list(PROMPT_STOP)})


# --------------------------------------------------------------------------- parallel text


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_parallel_lines(src_path: Path, tgt_path: Path) -> list[tuple[str, str]]:
    """Aligned (source, target) lines; a different line count raises, empty lines are dropped."""
    with _open(src_path) as f:
        sources = f.read().splitlines()
    with _open(tgt_path) as f:
        targets = f.read().splitlines()
    if len(sources) != len(targets):
        raise TranslationDataError(f"{src_path} has {len(sources)} lines but {tgt_path} has {len(targets)}: "
                                   "parallel files must be aligned line by line")
    return [(s.strip(), t.strip()) for s, t in zip(sources, targets) if s.strip() and t.strip()]


def read_parallel_json(path: Path, src_lang: str, tgt_lang: str) -> list[tuple[str, str]]:
    """(source, target) from a JSON list of `{"translation": {lang: text, ...}}` (the ALMA/WMT layout)."""
    with _open(path) as f:
        rows = json.load(f)
    pairs = []
    for index, row in enumerate(rows):
        translation = row.get("translation") if isinstance(row, dict) else None
        if not isinstance(translation, dict) or src_lang not in translation or tgt_lang not in translation:
            raise TranslationDataError(f"{path}: item {index}: expected "
                                       f"{{\"translation\": {{\"{src_lang}\": ..., \"{tgt_lang}\": ...}}}}")
        pairs.append((translation[src_lang].strip(), translation[tgt_lang].strip()))
    return pairs


def parallel_split(alma_dir: Path, split: str, src_lang: str, tgt_lang: str) -> list[tuple[str, str]]:
    """(source, target) sentence pairs of the ALMA zh-en data for `split` (train, valid, test) and direction."""
    pair_name = "-".join(sorted((src_lang, tgt_lang), key=lambda c: c != "zh"))  # files are named zh-en
    if split == "train":
        return [(a, b) if src_lang == pair_name[:2] else (b, a) for a, b in read_parallel_lines(
            alma_dir / f"train.{pair_name}.{pair_name[:2]}.gz", alma_dir / f"train.{pair_name}.{pair_name[3:]}.gz")]
    if split in ("valid", "validation", "eval"):
        return read_parallel_json(alma_dir / f"valid.{pair_name}.json.gz", src_lang, tgt_lang)
    if split == "test":
        directed = alma_dir / f"test.{src_lang}-{tgt_lang}.json.gz"
        return read_parallel_json(directed if directed.exists() else alma_dir / f"test.{pair_name}.json.gz",
                                  src_lang, tgt_lang)
    raise ValueError(f"split: expected train, valid or test, got {split!r}")


# --------------------------------------------------------------------------- users' preference files

USER_FORMAT = """One JSON object per line:
  {"source": "...", "chosen": "...", "rejected": "...",            # required
   "reference": "...", "aspect": "faithfulness", "margin": 2.0,     # optional
   "src_lang": "zh", "tgt_lang": "en", "id": "..."}                  # optional (default: the domain direction)
`aspect` is one of overall, faithfulness, expressiveness, elegance (missing: overall)."""


def load_user_preferences(path: str | Path, src_lang: str = "zh", tgt_lang: str = "en",
                          strict: bool = False) -> tuple[list[PreferencePair], Counter]:
    """Translation preference pairs from a user's JSONL file (format: `USER_FORMAT`).

    Bad rows raise naming file, line and field when `strict`; otherwise they are skipped and counted."""
    from domains.translation.mqm import ASPECTS

    path = Path(path)
    pairs, skipped = [], Counter()
    with _open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TranslationDataError("row: expected a JSON object")
                for key in ("source", "chosen", "rejected"):
                    if not isinstance(row.get(key), str) or not row[key].strip():
                        raise TranslationDataError(f"field {key!r}: expected a non-empty string")
                aspect = row.get("aspect") or "overall"
                if aspect not in ("overall",) + ASPECTS:
                    raise TranslationDataError(f"field 'aspect': expected one of overall, {', '.join(ASPECTS)}, "
                                               f"got {aspect!r}")
                margin = row.get("margin")
                if margin is not None and not isinstance(margin, (int, float)):
                    raise TranslationDataError(f"field 'margin': expected a number, got {margin!r}")
            except (json.JSONDecodeError, TranslationDataError) as error:
                if strict:
                    raise TranslationDataError(f"{path}:{line_number}: {error}") from None
                skipped["bad_json" if isinstance(error, json.JSONDecodeError) else "bad_field"] += 1
                continue
            s, t = row.get("src_lang", src_lang), row.get("tgt_lang", tgt_lang)
            pairs.append(PreferencePair(
                prompt=format_prompt(row["source"], s, t), chosen=row["chosen"].strip(),
                rejected=row["rejected"].strip(), id=row.get("id") or f"{path.name}:{line_number}",
                margin=float(margin) if margin is not None else None, aspect=aspect,
                source=f"{path}:{line_number}",
                extra={"source_text": row["source"].strip(), "reference": row.get("reference"),
                       "src_lang": s, "tgt_lang": t}))
    return pairs, skipped
