"""Guards against reward hacking: cheap checks that gate the translation reward.

A learned reward can be gamed: copy the source, answer in the wrong language, pad, repeat,
chat around the translation, or get the numbers wrong while reading fluently. Each guard
looks at one such failure and returns a verdict with the value it measured, so a report
can say *why* a completion was gated. All thresholds are config (`GuardConfig`).
"""
from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from align.config import ConfigError, doc

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+", re.UNICODE)
_CJK_PUNCTUATION = re.compile(r"[。，、；：？！「」『』（）【】《》]")
CJK_TARGETS = ("zh", "ja", "ko")
_NUMBER = re.compile(r"(?<![A-Za-z\d])\d+(?:[.,]\d+)*")
# digits joined to a word (COVID-19, G7, F-35, windows11) name a thing; they are not a quantity
_NAMED_NUMBER = re.compile(r"(?<![A-Za-z\d])(?:[A-Za-z]*[A-Z][A-Za-z]*-?|[A-Za-z]+)\d+(?![\d.,]\d)")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")
# A number written with Chinese numerals or magnitudes (两万, 25万, 二〇一九, 3.5亿): its value is parsed,
# and may explain a number on the other side in any of the usual scales (250000 = "250,000" = "250 thousand").
_CHINESE_NUMBER = re.compile(r"(?:(\d+(?:\.\d+)?)\s*(?=[十百千万亿]))?([零〇一二两三四五六七八九十百千万亿]+)")
_CHINESE_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
                   "九": 9}
_CHINESE_UNITS = {"十": 10, "百": 100, "千": 1000}
_CHINESE_MAGNITUDES = {"万": 10**4, "亿": 10**8}
_SCALES = (1, 10**3, 10**4, 10**6, 10**9, 10**12)  # as written, thousand, 万, million, billion, trillion
_ONES = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_NUMBER_WORDS = {w: i for i, w in enumerate(
    ["zero", *_ONES, "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"])}
_NUMBER_WORDS.update({w: 10 * i for i, w in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"],
                                                       start=2)})
# "one" is left out: as a pronoun ("this one") it is far more common than as a number
del _NUMBER_WORDS["one"]
_NUMBER_WORDS.update({m: i for i, m in enumerate(["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"], start=1)})
del _NUMBER_WORDS["may"]  # a verb far more often than a month
_UNIT_WORDS = {w: i for i, w in enumerate(_ONES, start=1)}  # after a hyphen ("twenty-one"), "one" is a number
_NUMBER_WORD = re.compile(r"\b(" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")(?:-("
                          + "|".join(_UNIT_WORDS) + r"))?\b", re.IGNORECASE)

DEFAULT_COMMENTARY = [
    r"^\s*(here is|here's|below is|sure|certainly|of course|okay|ok)\b[^\n]{0,80}(translat|version)",
    r"^\s*(the )?(english |chinese )?translation( is)?\s*:",
    r"^\s*(english|chinese|译文|翻译)\s*[:：]",
    r"^\s*(以下是|下面是|好的|当然)[^\n]{0,40}(翻译|译文)",
    r"\n\s*\(?\s*(note|notes|explanation|translator'?s note|注|注释|说明)\s*[:：)]",
    r"\b(I hope this helps|let me know if)\b",
]


@dataclass
class GuardConfig:
    """Thresholds of the translation guards; `enabled` lists the guards that gate the reward."""

    enabled: list[str] = doc("Guards that gate the reward: empty, language, length_ratio, copy, repetition, "
                             "commentary, numbers.",
                             ["empty", "language", "length_ratio", "copy", "repetition", "commentary", "numbers"])
    min_script_ratio: float = doc("Share of the output's words (CJK characters count one each) that must be in "
                                  "the target language's script.",
                                  0.5)
    length_ratio_range: list[float] = doc("Allowed output/expected length (in words, CJK characters counting as "
                                          "one word each); expected = the reference, else the source times the "
                                          "typical ratio of the direction.", [0.6, 2.5])
    max_copy_similarity: float = doc("Highest character similarity (difflib ratio) allowed between output and "
                                     "source.", 0.6)
    max_repeated_ngrams: float = doc("Highest share of repeated word 4-grams in the output.", 0.3)
    commentary_patterns: list[str] = doc("Regular expressions (case-insensitive) that mark commentary around the "
                                         "translation.", DEFAULT_COMMENTARY)

    def validate(self) -> None:
        unknown = sorted(set(self.enabled) - set(GUARDS))
        if unknown:
            raise ConfigError(f"guards.enabled: unknown guards {unknown}; known: {sorted(GUARDS)}")
        low, high = self.length_ratio_range
        if not 0 <= low < high:
            raise ConfigError(f"guards.length_ratio_range: expected [low, high] with 0 <= low < high, "
                              f"got {self.length_ratio_range}")
        for pattern in self.commentary_patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"guards.commentary_patterns: {pattern!r}: {error}") from None


# Typical target/source length (words, CJK characters as words) per direction, measured on the
# ALMA zh-en training sentences (median of the per-sentence ratio; see tests/test_translation_guards.py).
TYPICAL_LENGTH_RATIO = {("zh", "en"): 0.68, ("en", "zh"): 1.47}


@dataclass
class Verdict:
    passed: bool
    value: float | None = None
    detail: str = ""


def words(text: str) -> list[str]:
    """Word tokens; each CJK character is a token of its own."""
    return _WORD.findall(text.lower())


def script_counts(text: str) -> Counter:
    """Word tokens of `text` (each CJK character a token) per script: `cjk`, `cyrillic`, `latin`."""
    counts = Counter()
    for token in words(text):
        if _CJK.match(token):
            counts["cjk"] += 1
        elif _CYRILLIC.search(token):
            counts["cyrillic"] += 1
        elif _LATIN.search(token):
            counts["latin"] += 1
    return counts


def language_script(language: str) -> str:
    return {"zh": "cjk", "ja": "cjk", "ko": "cjk", "ru": "cyrillic"}.get(language, "latin")


def script_ratio(text: str, language: str) -> float | None:
    """Share of the word tokens of `text` (each CJK character a token) written in `language`'s script
    (Latin for languages without an entry); None when there are no letters."""
    counts = script_counts(text)
    total = sum(counts.values())
    return counts[language_script(language)] / total if total else None


def numbers(text: str) -> Counter:
    """Multiset of the numbers in `text`: Arabic numerals (thousands separators removed), English
    number words up to ninety-nine ("six" -> "6", "twenty-five" -> "25") and month names ("August" -> "8")."""
    found = Counter()
    text = re.sub(r"(?<=\d):00\b", "", _NAMED_NUMBER.sub(" ", text))  # 10:00 is the hour 10
    for match in _NUMBER.findall(text):
        cleaned = match.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", match) else match
        found[cleaned.rstrip(".,")] += 1
    for tens, unit in _NUMBER_WORD.findall(text):
        found[str(_NUMBER_WORDS[tens.lower()] + (_UNIT_WORDS[unit.lower()] if unit else 0))] += 1
    return found


def chinese_number_values(text: str) -> list[float]:
    """Values of the numbers written with Chinese numerals in `text`: 二十五 -> 25, 两万 -> 20000,
    25万 -> 250000, 一百零五 -> 105, 1.77万亿 -> 1.77e12; a digit right after a digit starts a new
    number (十四五 -> 14, 5); a run of digits only (二〇一九, 两三) -> the run read digit by digit and
    each digit (a year, or "two or three")."""
    values: list[float] = []
    for prefix, chars in _CHINESE_NUMBER.findall(text):
        if all(c in _CHINESE_DIGITS for c in chars):
            digits = [_CHINESE_DIGITS[c] for c in chars]
            values += [float(d) for d in digits] + ([float("".join(map(str, digits)))] if len(digits) > 1 else [])
            continue
        total, section, number = 0.0, 0.0, float(prefix) if prefix else 0.0
        previous = ""
        for char in chars:
            if char in _CHINESE_DIGITS:
                if previous in _CHINESE_DIGITS and previous not in "零〇":  # 十四五: 五 is a number of its own
                    values.append(total + section + number)
                    total = section = 0.0
                number = _CHINESE_DIGITS[char]
            elif char in _CHINESE_UNITS:
                section += (number or 1) * _CHINESE_UNITS[char]
                number = 0
            elif section + number == 0 and total:  # 万亿: magnitudes multiply
                total *= _CHINESE_MAGNITUDES[char]
            else:
                total += (section + number or 1) * _CHINESE_MAGNITUDES[char]
                section = number = 0
            previous = char
        values.append(total + section + number)
    return values


def _explained(number: str, values: list[float]) -> bool:
    """Whether `number` is one of `values` in some usual scale (20000 = "20 thousand" = "2万")."""
    try:
        value = float(number)
    except ValueError:
        return False
    return any(abs(value * scale - v) < 1e-6 * max(1.0, abs(v)) for v in values for scale in _SCALES)


def check_empty(output: str, **_) -> Verdict:
    return Verdict(bool(words(output)), float(len(output.strip())))


def check_language(output: str, tgt_lang: str, config: GuardConfig, source: str | None = None, **_) -> Verdict:
    ratio = script_ratio(output, tgt_lang)
    if ratio is None:  # digits or punctuation only: nothing to judge here (empty/length catch it)
        return Verdict(True, None, "no letters")
    # full-width CJK punctuation (。，？) in a space-delimited target is a source-language leftover
    if tgt_lang not in CJK_TARGETS and _CJK_PUNCTUATION.search(output):
        return Verdict(False, ratio, "CJK punctuation in the output")
    # a script that is neither the target's nor in the source (Russian words inside an en->zh translation: a
    # sampled policy does produce them) is a third language, however few of its words there are
    stray = set(script_counts(output)) - {language_script(tgt_lang)} - set(script_counts(source)) if source else ()
    if stray:
        return Verdict(False, ratio, f"{', '.join(sorted(stray))} words in neither the source nor the target language")
    return Verdict(ratio >= config.min_script_ratio, ratio)


def check_length_ratio(output: str, source: str | None, reference: str | None, src_lang: str, tgt_lang: str,
                       config: GuardConfig, **_) -> Verdict:
    if reference:
        expected = len(words(reference))
    elif source:
        expected = len(words(source)) * TYPICAL_LENGTH_RATIO.get((src_lang, tgt_lang), 1.0)
    else:
        return Verdict(True, None, "no source or reference")
    ratio = len(words(output)) / max(expected, 1.0)
    low, high = config.length_ratio_range
    # very short sentences ("谢谢。" -> "Thank you.") make ratios noisy: allow one word of slack
    slack = 1 / max(expected, 1.0)
    return Verdict(low - slack <= ratio <= high + slack, ratio)


def check_copy(output: str, source: str | None, config: GuardConfig, **_) -> Verdict:
    if not source:
        return Verdict(True, None, "no source")
    similarity = difflib.SequenceMatcher(None, output.strip(), source.strip(), autojunk=False).ratio()
    contains = len(source.strip()) >= 8 and source.strip() in output
    return Verdict(similarity <= config.max_copy_similarity and not contains, similarity,
                   "contains the source" if contains else "")


def check_repetition(output: str, config: GuardConfig, **_) -> Verdict:
    tokens = words(output)
    grams = [tuple(tokens[i:i + 4]) for i in range(len(tokens) - 3)]
    repeated = 1 - len(set(grams)) / len(grams) if grams else 0.0
    sentences = [s.strip().lower() for s in _SENTENCE_END.split(output) if len(words(s)) >= 3]
    duplicate_sentence = len(sentences) != len(set(sentences))
    return Verdict(repeated <= config.max_repeated_ngrams and not duplicate_sentence, repeated,
                   "a sentence occurs twice" if duplicate_sentence else "")


def check_commentary(output: str, config: GuardConfig, **_) -> Verdict:
    for pattern in config.commentary_patterns:
        if re.search(pattern, output, flags=re.IGNORECASE | re.MULTILINE):
            return Verdict(False, 1.0, pattern)
    return Verdict(True, 0.0)


def check_numbers(output: str, source: str | None, **_) -> Verdict:
    """Digits and English number words must match across the translation; a number written with
    Chinese numerals on one side need not reappear, but explains a number on the other side."""
    if not source:
        return Verdict(True, None, "no source")
    source, output = unicodedata.normalize("NFKC", source), unicodedata.normalize("NFKC", output)
    expected, found = numbers(_CHINESE_NUMBER.sub(" ", source)), numbers(_CHINESE_NUMBER.sub(" ", output))
    source_values, output_values = chinese_number_values(source), chinese_number_values(output)
    missing = Counter({n: c for n, c in (expected - found).items() if not _explained(n, output_values)})
    extra = Counter({n: c for n, c in (found - expected).items() if not _explained(n, source_values)})
    if missing.get("1") and re.search(r"\bone\b", output, flags=re.IGNORECASE):
        del missing["1"]  # "one" is not counted as a number word (a pronoun too often), but it renders a 1
    mismatches = sum(missing.values()) + sum(extra.values())
    detail = f"missing {sorted(missing)} extra {sorted(extra)}" if mismatches else ""
    return Verdict(mismatches == 0, float(mismatches), detail)


GUARDS = {"empty": check_empty, "language": check_language, "length_ratio": check_length_ratio,
          "copy": check_copy, "repetition": check_repetition, "commentary": check_commentary,
          "numbers": check_numbers}


def run_guards(output: str, source: str | None, config: GuardConfig, src_lang: str = "zh", tgt_lang: str = "en",
               reference: str | None = None) -> dict[str, Verdict]:
    """Every enabled guard's verdict on `output` (a translation of `source`)."""
    context = {"output": output, "source": source, "reference": reference, "src_lang": src_lang,
               "tgt_lang": tgt_lang, "config": config}
    if not words(output):  # an empty output fails `empty` only; other guards have nothing to measure
        return {name: (Verdict(False, 0.0) if name == "empty" else Verdict(True, None, "empty output"))
                for name in config.enabled}
    return {name: GUARDS[name](**context) for name in config.enabled}
