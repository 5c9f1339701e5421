"""Synthetic major-error pairs (both directions), the length / pair-level evaluation and the paired bootstrap."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from align.types import PreferencePair
from domains.translation.evaluate import MAJOR_GAP, preference_pair_accuracy
from domains.translation.metrics import corpus_scores, paired_bootstrap
from domains.translation.parallel import format_prompt
from domains.translation.synthetic import ERROR_ASPECT, ERRORS, synthetic_pairs, units, with_error

ZH = "2017年全国出生人口为1723万人，比上年减少63万人，国家统计局在北京公布了这些数据。"
EN = "In 2017 the number of births was 17.23 million, down 630,000 on the year before, Beijing statisticians said."
OTHER_EN = "The Foreign Minister of Niger, Kalla Ankourao, attended the meeting in New York on Tuesday."
OTHER_ZH = "尼日尔外长卡拉周二在纽约出席了会议，并发表了讲话。"


@pytest.mark.parametrize("lang,translation,source,other", [("en", EN, ZH, OTHER_EN), ("zh", ZH, EN, OTHER_ZH)])
def test_each_error_changes_the_translation_as_named(lang, translation, source, other):
    source_lang = "zh" if lang == "en" else "en"
    made = {kind: with_error(kind, translation, source, other, lang, source_lang, random.Random(1)) for kind in ERRORS}
    assert all(made.values()) and all(t != translation for t in made.values())
    length = len(units(translation, lang))
    assert len(units(made["omission"], lang)) <= length * 0.75
    assert len(made["added_clause"]) > len(translation)
    assert made["wrong_number"] != translation and len(set(made["wrong_number"]) - set(translation)) <= 10
    digits = lambda text: sorted("".join(c for c in text if c.isdigit()))
    assert digits(made["wrong_number"]) != digits(translation)
    assert Counter(units(made["word_order"], lang)) == Counter(units(translation, lang))
    pasted = made["untranslated_span"]
    if lang == "en":  # Chinese characters in an English translation, English words in a Chinese one
        assert any("\u4e00" <= c <= "\u9fff" for c in pasted)
    else:
        assert any(c.isascii() and c.isalpha() for c in pasted.replace("万", ""))


def test_an_error_that_does_not_apply_gives_none():
    assert with_error("wrong_number", "No numbers here at all.", "这里没有数字。", OTHER_EN, "en", "zh",
                      random.Random(0)) is None
    assert with_error("omission", "Too short.", "太短。", OTHER_EN, "en", "zh", random.Random(0)) is None


def test_synthetic_pairs_are_major_errors_in_both_directions():
    rows = [(ZH, EN, "zh", "en"), (EN, ZH, "en", "zh"), (OTHER_ZH, OTHER_EN, "zh", "en"), (OTHER_EN, OTHER_ZH, "en", "zh")]
    pairs = synthetic_pairs(rows, 60, format_prompt, seed=3)
    assert len(pairs) == 60
    assert all(p.margin == MAJOR_GAP and p.chosen != p.rejected for p in pairs)
    assert {p.aspect for p in pairs} == {"overall", "faithfulness", "expressiveness"}
    assert all(p.aspect in ("overall", ERROR_ASPECT[p.extra["error"]]) for p in pairs)
    assert {p.prompt.splitlines()[0] for p in pairs} == {"Translate this from Chinese to English:",
                                                           "Translate this from English to Chinese:"}
    assert len({p.extra["error"] for p in pairs}) == len(ERRORS)
    assert synthetic_pairs(rows, 60, format_prompt, seed=3) == pairs  # seeded
    only_overall = synthetic_pairs(rows, 10, format_prompt, aspects=("overall",))
    assert {p.aspect for p in only_overall} == {"overall"}


class _PairsOnly:
    """A stand-in domain that only has preference pairs (no reward model)."""

    def __init__(self, pairs):
        self.pairs = pairs

    def preferences(self, split):
        return self.pairs


def test_pair_accuracy_counts_ties_as_wrong_and_splits_by_gap():
    def pair(chosen, rejected, margin):
        return PreferencePair(prompt="p", chosen=chosen, rejected=rejected, margin=margin, aspect="overall",
                              source="mqm", extra={"source_text": "源"})

    pairs = [pair("long enough", "short", 5.0), pair("short", "longer one", 6.0), pair("same", "SAME", 25.0),
             pair("longest of all", "tiny", 1.0)]
    summary = preference_pair_accuracy(_PairsOnly(pairs), None)
    assert summary["pairs"] == 4 and summary["pairs_gap5"] == 3
    assert summary["pairs_length_strict_accuracy"] == 0.5  # the tie (same length) is wrong
    assert summary["pairs_length_strict_accuracy_gap5"] == pytest.approx(1 / 3)


def test_paired_bootstrap_interval_and_corpus_scores():
    references = ["the cat sat on the mat", "a dog barked at the postman", "it rains in paris today"] * 6
    worse = ["the cat on mat", "dog barked", "rain paris"] * 6
    better = ["the cat sat on the mat", "a dog barked at him", "it rains in paris"] * 6
    result = paired_bootstrap(worse, better, references, "en", samples=200)
    assert result["after"] == pytest.approx(corpus_scores(better, references)["chrf"])
    assert result["before"] == pytest.approx(corpus_scores(worse, references)["chrf"])
    assert 0 < result["low"] <= result["delta"] <= result["high"] and result["p"] == 0.0
    same = paired_bootstrap(better, better, references, "en", samples=50)
    assert same["delta"] == same["low"] == same["high"] == 0.0 and same["p"] == 1.0
    zh = paired_bootstrap(["我们讨论。"] * 3, ["我们今天讨论气候。"] * 3, ["我们今天讨论气候变化。"] * 3, "zh",
                          metric="bleu", samples=20)
    assert zh["after"] > zh["before"]  # the zh tokeniser: a Chinese sentence is not one token
    with pytest.raises(ValueError, match="hypotheses"):
        paired_bootstrap(["a"], ["a", "b"], ["a"], "en")
