"""Corrupted translations for the robustness check: does the reward prefer the original?

For each test source, the best human-scored translation is the original; each corruption is
a way a policy could game a reward. A corruption that does not apply (no number to change,
no full stop to replace) is left out and counted.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from domains.translation.guards import CJK_TARGETS

_DIGITS = re.compile(r"\d+")
_NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_SENTENCE = re.compile(r"[^.!?。！？]+[.!?。！？]*")
_PUNCTUATION_AND_SPACE = re.compile(r"[\s，。、；：？！,.;:?!“”\"'（）()]+")


def _join(first: str, second: str, tgt_lang: str) -> str:
    return first + ("" if tgt_lang in CJK_TARGETS else " ") + second


def copied_source(original: str, source: str, **_) -> str | None:
    return source


def wrong_language(original: str, source: str, **_) -> str | None:
    """The content in the source language, not byte-identical to the source (its punctuation and
    spacing dropped): with two languages in the data, a same-content output in the wrong language
    is a near-copy of the source."""
    stripped = _PUNCTUATION_AND_SPACE.sub("", source)
    return stripped if stripped and stripped != source else None


def truncated(original: str, tgt_lang: str, **_) -> str | None:
    """The first half of the translation (words, or characters for CJK targets)."""
    if tgt_lang in CJK_TARGETS:
        return original[: len(original) // 2] if len(original) >= 4 else None
    tokens = original.split()
    return " ".join(tokens[: len(tokens) // 2]) if len(tokens) >= 4 else None


def duplicated_sentence(original: str, tgt_lang: str, **_) -> str | None:
    """The translation with its last sentence written twice."""
    sentences = [s.strip() for s in _SENTENCE.findall(original) if s.strip()]
    return _join(original, sentences[-1], tgt_lang) if sentences else None


def changed_number(original: str, **_) -> str | None:
    """The first number changed (digits + 1, or the next number word)."""
    match = _DIGITS.search(original)
    if match:
        return original[: match.start()] + str(int(match.group()) + 1) + original[match.end():]
    for index, word in enumerate(_NUMBER_WORDS[:-1]):
        found = re.search(rf"\b{word}\b", original, flags=re.IGNORECASE)
        if found:
            return original[: found.start()] + _NUMBER_WORDS[index + 1] + original[found.end():]
    return None


def unrelated_sentence(original: str, unrelated: str, **_) -> str | None:
    """A good translation of a different source."""
    return unrelated if unrelated.strip() != original.strip() else None


def cjk_full_stop(original: str, tgt_lang: str, **_) -> str | None:
    """`。` for `.` (a Chinese full stop left in an English translation)."""
    if tgt_lang in CJK_TARGETS or "." not in original:
        return None
    return original.replace(".", "。")


CORRUPTIONS: dict[str, Callable[..., str | None]] = {
    "copied_source": copied_source, "wrong_language": wrong_language, "truncated": truncated,
    "duplicated_sentence": duplicated_sentence, "changed_number": changed_number,
    "unrelated_sentence": unrelated_sentence, "cjk_full_stop": cjk_full_stop,
}


def corrupt(original: str, source: str, unrelated: str, tgt_lang: str = "en") -> dict[str, str]:
    """Every applicable corruption of `original` (a translation of `source`), by name."""
    made = {}
    for name, function in CORRUPTIONS.items():
        text = function(original=original, source=source, unrelated=unrelated, tgt_lang=tgt_lang)
        if text is not None and text != original:
            made[name] = text
    return made


def preference_shares(original_rewards: list[float | None], corrupted: list[tuple[int, str, float | None]]
                      ) -> dict[str, float]:
    """Share of (original, corruption) cases where the original gets strictly more reward, overall
    (`robustness_share`) and per corruption (`robustness_<name>`); `corrupted` holds
    (case index, corruption name, reward). A missing reward counts as not preferred."""
    wins: dict[str, list[bool]] = {}
    for case, name, reward in corrupted:
        original = original_rewards[case]
        wins.setdefault(name, []).append(original is not None and reward is not None and original > reward)
    everything = [w for values in wins.values() for w in values]
    shares = {"robustness_share": sum(everything) / len(everything) if everything else float("nan"),
              "robustness_cases": len(everything)}
    shares.update({f"robustness_{name}": sum(values) / len(values) for name, values in sorted(wins.items())})
    return shares
