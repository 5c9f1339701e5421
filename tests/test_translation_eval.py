"""Tie-calibrated accuracy on hand-computed cases, robustness corruptions, the reward combination."""
from __future__ import annotations

import math

import pytest

from align.types import Prompt
from domains.translation.agreement import all_ties_baseline, strict_pairwise_accuracy, tie_calibrated_accuracy
from domains.translation.guards import GuardConfig
from domains.translation.parallel import make_prompt
from domains.translation.reward import (
    HeadStats,
    RewardConfig,
    combine_heads,
    measure_head_stats,
    soft_floor,
    translation_reward,
)
from domains.translation.robustness import corrupt, preference_shares

# One source, three translations. Human: [0, -1, -1]; metric: [3, 1, 1.5].
# Pairs: (0,1) human prefers 0, metric gap +2; (0,2) human prefers 0, gap +1.5; (1,2) human tie, gap -0.5.
ONE = [([0.0, -1.0, -1.0], [3.0, 1.0, 1.5])]


def test_acc_eq_at_fixed_epsilon_by_hand():
    assert tie_calibrated_accuracy(ONE, epsilon=0.0) == (pytest.approx(2 / 3), 0.0)  # the tie is missed
    assert tie_calibrated_accuracy(ONE, epsilon=0.5)[0] == pytest.approx(1.0)  # |−0.5| <= 0.5 is a tie
    assert tie_calibrated_accuracy(ONE, epsilon=1.5)[0] == pytest.approx(2 / 3)  # the 1.5 gap becomes a tie
    assert tie_calibrated_accuracy(ONE, epsilon=2.0)[0] == pytest.approx(1 / 3)  # only the tie is right


def test_acc_eq_picks_the_best_epsilon():
    accuracy, epsilon = tie_calibrated_accuracy(ONE)
    assert accuracy == pytest.approx(1.0) and epsilon == pytest.approx(0.5)  # the smallest epsilon reaching it


def test_acc_eq_averages_over_sources():
    # second source: two translations the humans tie, metric gap 1 -> right only when epsilon >= 1
    two = ONE + [([0.0, 0.0], [1.0, 2.0])]
    # at epsilon 1: source 1 -> 3/3 (gaps 2, 1.5 > 1; tie 0.5 <= 1), source 2 -> 1/1: mean 1.0
    assert tie_calibrated_accuracy(two) == (pytest.approx(1.0), pytest.approx(1.0))
    # at epsilon 0.5: source 1 -> 1.0, source 2 -> 0.0: mean 0.5 (not pooled 3/4)
    assert tie_calibrated_accuracy(two, epsilon=0.5)[0] == pytest.approx(0.5)
    # all ties: source 1 has 1 tie of 3 pairs, source 2 is all ties: (1/3 + 1) / 2
    assert all_ties_baseline(two) == pytest.approx((1 / 3 + 1) / 2)
    # a source with one translation has no pair and does not count
    assert tie_calibrated_accuracy(two + [([1.0], [5.0])], epsilon=0.5)[0] == pytest.approx(0.5)


def test_acc_eq_of_a_metric_that_disagrees():
    reversed_metric = [([0.0, -1.0, -2.0], [0.0, 1.0, 2.0])]
    accuracy, epsilon = tie_calibrated_accuracy(reversed_metric)
    assert accuracy == 0.0 and epsilon == 0.0
    assert math.isnan(tie_calibrated_accuracy([([1.0], [1.0])])[0])


def test_strict_accuracy_counts_metric_ties_as_wrong():
    groups = [([0.0, -1.0, -5.0], [2.0, 2.0, 1.0])]
    # pairs with gap >= 1: (0,1) metric tie -> wrong; (0,2) right; (1,2) right
    assert strict_pairwise_accuracy(groups, min_gap=1.0) == (pytest.approx(2 / 3), 3)
    assert strict_pairwise_accuracy(groups, min_gap=4.0) == (pytest.approx(1.0), 2)
    # an item left out (e.g. identical to another translation)
    assert strict_pairwise_accuracy(groups, 1.0, skip=[[False, True, False]]) == (pytest.approx(1.0), 1)


ORIGINAL = "In 2019, about 15% of people felt they could trust others. That was low."
SOURCE = "2019年，大约15%的人觉得他们可以信任他人。这很低。"


def test_corruptions():
    made = corrupt(ORIGINAL, SOURCE, unrelated="The sky is blue.", tgt_lang="en")
    assert made["copied_source"] == SOURCE
    assert made["wrong_language"] == "2019年大约15%的人觉得他们可以信任他人这很低"
    assert made["truncated"] == "In 2019, about 15% of people felt"
    assert made["duplicated_sentence"] == ORIGINAL + " That was low."
    assert made["changed_number"] == ORIGINAL.replace("2019", "2020")
    assert made["unrelated_sentence"] == "The sky is blue."
    assert made["cjk_full_stop"] == ORIGINAL.replace(".", "。")
    # corruptions that do not apply are left out
    plain = corrupt("Thanks", "谢谢", unrelated="Thanks", tgt_lang="en")
    # no number, too short to truncate, no full stop, nothing to strip from the source, "unrelated" = original
    assert plain == {"copied_source": "谢谢", "duplicated_sentence": "Thanks Thanks"}
    assert corrupt("我有两个苹果。", "I have two apples.", "别的。", tgt_lang="zh")["truncated"] == "我有两"


def test_preference_shares():
    shares = preference_shares([1.0, 0.0], [(0, "copy", -5.0), (1, "copy", 0.0), (1, "truncated", -1.0),
                                            (0, "truncated", None)])
    assert shares["robustness_share"] == pytest.approx(2 / 4)  # a tie and a missing reward are not preferences
    assert shares["robustness_copy"] == 0.5 and shares["robustness_truncated"] == 0.5
    assert shares["robustness_cases"] == 4


def test_head_combination_and_faithfulness_gate():
    config = RewardConfig(head_weights={"overall": 1.0, "faithfulness": 1.0, "expressiveness": 1.0, "elegance": 1.0},
                          gate_threshold=-0.5)
    stats = HeadStats(mean={"overall": 1.0, "faithfulness": 0.0, "expressiveness": 0.0, "elegance": 0.0},
                      std={"overall": 2.0, "faithfulness": 1.0, "expressiveness": 1.0, "elegance": 1.0})
    score, z = combine_heads({"overall": 3.0, "faithfulness": 0.0, "expressiveness": 2.0, "elegance": 1.0},
                             config, stats)
    assert z["overall"] == 1.0 and score == pytest.approx(1.0 + 0.0 + 2.0 + 1.0)
    # a mistranslation (faithfulness -2 < -0.5): good style cannot raise the score...
    gated, _ = combine_heads({"overall": 1.0, "faithfulness": -2.0, "expressiveness": 2.0, "elegance": 1.0},
                             config, stats)
    assert gated == pytest.approx(0.0 - 2.0 + 0.0)
    # ...but bad style still lowers it
    worse, _ = combine_heads({"overall": 1.0, "faithfulness": -2.0, "expressiveness": -1.0, "elegance": 0.0},
                             config, stats)
    assert worse == pytest.approx(-2.0 - 1.0)
    config.gate_on_faithfulness = False
    ungated, _ = combine_heads({"overall": 1.0, "faithfulness": -2.0, "expressiveness": 2.0, "elegance": 1.0},
                               config, stats)
    assert ungated == pytest.approx(-2.0 + 3.0)


def test_measure_head_stats():
    stats = measure_head_stats([{"a": 1.0}, {"a": 3.0}])
    assert stats.mean == {"a": 2.0} and stats.std["a"] == pytest.approx(math.sqrt(2))


def test_reward_with_heads_metrics_and_guards():
    prompts = [make_prompt(SOURCE, "zh", "en", reference=ORIGINAL)] * 3
    completions = [ORIGINAL, SOURCE, "In 2019, about 15% of people felt they could trust others."]

    def fake_heads(given_prompts, outputs):
        assert given_prompts[0].prompt.startswith("Translate this from Chinese to English:")
        return [{"overall": float(len(o)) / 10} for o in outputs]

    config = RewardConfig(head_weights={"overall": 1.0}, metric_weights={"chrf": 2.0})
    outputs = translation_reward(prompts, completions, config, head_scorer=fake_heads, head_stats=HeadStats())
    first = outputs[0]
    assert first.parts["metric_chrf"] == pytest.approx(100.0)
    assert first.reward == pytest.approx(len(ORIGINAL) / 10 + 2.0)
    assert first.parts["guards_failed"] == [] and first.parts["guard_copy"] is True
    # the copied source fails guards: the gate replaces its score
    copied = outputs[1]
    assert "copy" in copied.parts["guards_failed"] and "language" in copied.parts["guards_failed"]
    assert copied.reward == config.guard_reward - (len(copied.parts["guards_failed"]) - 1)
    assert outputs[2].parts["guards_failed"] == [] and outputs[2].reward < first.reward


def test_a_failed_guard_never_pays_better_than_a_pass():
    # a weak translation with heads far below the calibration mean against a copy of the source
    prompts = [make_prompt(SOURCE, "zh", "en", reference=ORIGINAL)] * 3
    weak, weaker = ORIGINAL, "In 2019, about 15% of people felt they could trust others, which was low."
    heads = {weak: -4.0, weaker: -6.0, SOURCE: 3.0}
    config = RewardConfig(head_weights={"overall": 2.0})
    outputs = translation_reward(prompts, [weak, weaker, SOURCE], config, head_stats=HeadStats(),
                                 head_scorer=lambda _, outs: [{"overall": heads[o]} for o in outs])
    assert [o.parts["score"] for o in outputs[:2]] == [-8.0, -12.0]  # both below guard_reward (-5)
    assert outputs[2].parts["guards_failed"] and outputs[2].reward == config.guard_reward - (
        len(outputs[2].parts["guards_failed"]) - 1)
    assert outputs[0].reward > outputs[1].reward > config.guard_reward + 1 > outputs[2].reward  # order kept
    assert soft_floor(1.0, 0.0) == 1.0 and soft_floor(0.0, 0.0) == pytest.approx(math.exp(-1))
    config.soft_floor = False
    unfloored = translation_reward(prompts[:1], [weak], config, head_stats=HeadStats(),
                                   head_scorer=lambda _, outs: [{"overall": heads[o]} for o in outs])
    assert unfloored[0].reward == -8.0


def test_reward_parses_a_plain_text_prompt():
    config = RewardConfig(guards=GuardConfig(enabled=["copy"]))
    text = make_prompt(SOURCE, "zh", "en").prompt
    [output] = translation_reward([text], [SOURCE], config)
    assert output.parts["guard_copy"] is False  # the source came out of the prompt text
    [untouched] = translation_reward([Prompt(prompt="Say hi")], ["hi"], config)
    assert untouched.reward == 0.0 and untouched.parts["guard_copy"] is True  # no source: nothing to compare
