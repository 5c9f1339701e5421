"""Synthetic error pairs from parallel text: the human translation against a copy with one major error.

MQM differences between strong systems are mostly one minor error; what a translation reward must catch
first are the errors that matter. Each synthetic pair puts a reference translation (chosen) against the
same translation with one accuracy or fluency error (rejected), in either direction (zh→en, en→zh), with
the MQM weight of a major error as its margin:

    omission            a contiguous quarter to half of the translation is left out
    added_clause        a clause of another sentence's translation is added
    wrong_number        a number is changed
    wrong_word          a word (a name, a term; for Chinese, one to three characters) becomes another
                        sentence's word
    untranslated_span   a third of the translation is replaced by the matching stretch of the source
    word_order          the translation's thirds are put in another order

They differ on purpose from the robustness corruptions (`robustness.py`: copied source, wrong language,
first half, duplicated sentence, +1 on a number, unrelated sentence, `。`), which check the whole gated reward.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from align.types import PreferencePair
from domains.translation.guards import CJK_TARGETS

MAJOR_ERROR_WEIGHT = 5.0  # MQM weight of a major error: the margin of every synthetic pair
ERROR_ASPECT = {"omission": "faithfulness", "added_clause": "faithfulness", "wrong_number": "faithfulness",
                "wrong_word": "faithfulness", "untranslated_span": "faithfulness", "word_order": "expressiveness"}
_NUMBER = re.compile(r"\d+")


def units(text: str, lang: str) -> list[str]:
    """Characters for CJK languages, whitespace-separated words elsewhere."""
    return list(text) if lang in CJK_TARGETS else text.split()


def join(parts: Sequence[str], lang: str) -> str:
    return "".join(parts) if lang in CJK_TARGETS else " ".join(parts)


def _span(length: int, low: float, high: float, rng: random.Random) -> tuple[int, int]:
    size = max(1, min(length - 1, round(length * rng.uniform(low, high))))
    start = rng.randrange(0, length - size + 1)
    return start, start + size


def omission(translation: str, lang: str, rng: random.Random, **_) -> str | None:
    words = units(translation, lang)
    if len(words) < 6:
        return None
    start, end = _span(len(words), 0.25, 0.5, rng)
    return join(words[:start] + words[end:], lang)


def added_clause(translation: str, other: str, lang: str, rng: random.Random, **_) -> str | None:
    words, extra = units(translation, lang), units(other, lang)
    if len(words) < 3 or len(extra) < 4:
        return None
    start, end = _span(len(extra), 0.3, 0.6, rng)
    clause = join(extra[start:end], lang).strip("，。,.;；!?！？ ")
    if lang in CJK_TARGETS:
        body = translation.rstrip("。！？")
        return body + "，" + clause + translation[len(body):]
    body = translation.rstrip(".!?")
    return body + ", " + clause + translation[len(body):]


def wrong_number(translation: str, rng: random.Random, **_) -> str | None:
    found = list(_NUMBER.finditer(translation))
    if not found:
        return None
    match = rng.choice(found)
    value = int(match.group())
    changed = value * 10 if rng.random() < 0.5 else value + rng.randint(2, 9)
    return translation[: match.start()] + str(changed) + translation[match.end():]


def wrong_word(translation: str, other: str, lang: str, rng: random.Random, **_) -> str | None:
    words, extra = units(translation, lang), units(other, lang)
    if lang in CJK_TARGETS:
        content = [i for i, c in enumerate(words) if "\u4e00" <= c <= "\u9fff"]
        spare = [c for c in extra if "\u4e00" <= c <= "\u9fff"]
        if len(content) < 4 or len(spare) < 3:
            return None
        size = rng.randint(1, 3)
        start = rng.choice(content[: len(content) - size + 1])
        replacement = rng.sample(spare, size)
        return join(words[:start] + replacement + words[start + size:], lang)
    names = [i for i, w in enumerate(words) if i > 0 and w[:1].isupper()]
    candidates = [w for w in extra if w[:1].isupper() and w not in words] if names else \
        [w for w in extra if len(w) > 3 and w.isalpha() and w not in words]
    positions = names or [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
    if not positions or not candidates:
        return None
    position = rng.choice(positions)
    words[position] = rng.choice(candidates).strip(",.;:!?")
    return join(words, lang)


def untranslated_span(translation: str, source: str, lang: str, source_lang: str, rng: random.Random,
                      **_) -> str | None:
    words, source_words = units(translation, lang), units(source, source_lang)
    if len(words) < 4 or len(source_words) < 4:
        return None
    start, end = _span(len(words), 0.3, 0.5, rng)
    a, b = round(start / len(words) * len(source_words)), round(end / len(words) * len(source_words))
    pasted = join(source_words[a:max(b, a + 1)], source_lang)
    return join(words[:start] + [pasted] + words[end:], lang)


def word_order(translation: str, lang: str, rng: random.Random, **_) -> str | None:
    words = units(translation, lang)
    if len(words) < 6:
        return None
    third = len(words) // 3
    pieces = [words[:third], words[third:2 * third], words[2 * third:]]
    order = rng.choice([(1, 2, 0), (2, 0, 1), (2, 1, 0)])
    return join([w for i in order for w in pieces[i]], lang)


ERRORS: dict[str, Callable[..., str | None]] = {
    "omission": omission, "added_clause": added_clause, "wrong_number": wrong_number, "wrong_word": wrong_word,
    "untranslated_span": untranslated_span, "word_order": word_order}


def with_error(kind: str, translation: str, source: str, other: str, lang: str, source_lang: str,
               rng: random.Random) -> str | None:
    """`translation` with one error of `kind`, or None when it does not apply (e.g. no number to change)."""
    text = ERRORS[kind](translation=translation, source=source, other=other, lang=lang, source_lang=source_lang,
                        rng=rng)
    return text if text is not None and text.strip() != translation.strip() else None


def synthetic_pairs(rows: Sequence[tuple[str, str, str, str]], count: int, make_prompt: Callable[[str, str, str], str],
                    seed: int = 0, aspects: Sequence[str] = ("overall",) + tuple(sorted(set(ERROR_ASPECT.values()))),
                    ) -> list[PreferencePair]:
    """Up to `count` pairs from parallel `rows` (source, translation, source language, target language): each
    takes a random row and error kind (kinds in turn, so they stay balanced) and gives a pair labelled `overall`,
    and, every other time, one labelled with the error's aspect (`ERROR_ASPECT`) when that is in `aspects`.
    `make_prompt(source, src_lang, tgt_lang)` is the text the reward model reads before the translation."""
    rng = random.Random(f"synthetic:{seed}")
    kinds, pairs, attempts = list(ERRORS), [], 0
    while len(pairs) < count and attempts < 20 * max(count, 1) and rows:
        kind = kinds[attempts % len(kinds)]
        attempts += 1
        source, translation, src_lang, tgt_lang = rows[rng.randrange(len(rows))]
        other = rows[rng.randrange(len(rows))][1]
        rejected = with_error(kind, translation, source, other, tgt_lang, src_lang, rng)
        if rejected is None:
            continue
        labels = ["overall"] if "overall" in aspects else []
        if ERROR_ASPECT[kind] in aspects and (len(pairs) % 2 or not labels):
            labels.append(ERROR_ASPECT[kind])
        for aspect in labels[: count - len(pairs)]:
            pairs.append(PreferencePair(
                prompt=make_prompt(source, src_lang, tgt_lang), chosen=translation, rejected=rejected,
                id=f"synthetic:{len(pairs)}:{kind}:{aspect}", margin=MAJOR_ERROR_WEIGHT, aspect=aspect,
                source="synthetic", extra={"error": kind, "source_text": source, "src_lang": src_lang,
                                           "tgt_lang": tgt_lang}))
    return pairs
