"""The reward-modelling demo stages and the statistics behind their verdicts."""
from __future__ import annotations

import json

import pytest

from align.data import data_dirs
from align.eval.stats import roc_auc
from align.rm.strength.controlled import ALMA_EN, controlled_pairs, inject_flips


def test_roc_auc_by_hand():
    # positives 0.9 and 0.4; negatives 0.5 and 0.1: of the 4 (positive, negative) pairs, 3 are ordered right
    assert roc_auc([True, False, True, False], [0.9, 0.5, 0.4, 0.1]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.3, 0.3]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([True, True], [0.1, 0.2]) != roc_auc([True, True], [0.1, 0.2])  # NaN without negatives


def test_inject_flips_swaps_the_stated_share():
    from align.types import PreferencePair

    pairs = [PreferencePair(prompt="p", chosen=f"good {i}", rejected=f"bad {i}", id=str(i)) for i in range(20)]
    noisy, flipped = inject_flips(pairs, 0.25, seed=3)
    assert sum(flipped) == 5
    assert all((n.chosen == p.rejected) == f for n, p, f in zip(noisy, pairs, flipped))
    assert inject_flips(pairs, 0.25, seed=3)[1] == flipped  # the same seed flips the same pairs


needs_sentences = pytest.mark.skipif(not any((d / ALMA_EN).is_file() for d in data_dirs("translation")),
                                     reason="the ALMA English sentences (shared data) are not here")


@needs_sentences
def test_controlled_pairs_are_a_sentence_over_a_worse_copy():
    pairs = controlled_pairs(12, seed=0)
    assert len(pairs) == 12 and len({p.id for p in pairs}) == 12
    assert {p.extra["corruption"] for p in pairs} == {"shuffle", "drop", "truncate", "splice"}
    assert all(p.chosen != p.rejected for p in pairs)


@needs_sentences
def test_strength_stage_reports_the_flip_auc_and_both_accuracies(tmp_path):
    from align.rm.demo import strength_stage

    summary = strength_stage(tmp_path, train_pairs=40, eval_pairs=16, members=2,
                             overrides=["model=tiny-bert", "max_length=64", "epochs=1", "progress=false"])
    assert summary["flipped_pairs"] == 10 and summary["train_pairs"] == 40
    assert 0.0 <= summary["flip_auc"] <= 1.0 and f"{summary['flip_auc']:.3f}" in summary["verdict"]
    for key in ("noisy_eval_accuracy", "cleaned_eval_accuracy"):
        assert 0.0 <= summary[key] <= 1.0
    assert (tmp_path / "strength_by_label.png").exists() and (tmp_path / "report.md").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["verdict"] == summary["verdict"]


def test_rm_stage_trains_with_the_margins_of_its_own_strengths(tmp_path):
    from align.rm.demo import rm_stage

    summary = rm_stage(tmp_path, overrides=["model=tiny-bert", "max_length=64", "epochs=1", "max_examples=48",
                                            "progress=false", "report=false", "freeze_layers=1"])
    annotated = [json.loads(line) for line in (tmp_path / "strength" / "annotated.jsonl").read_text().splitlines()]
    assert len(annotated) == summary["train_pairs"] == 48
    # every training pair got a margin from its strength (λ·μ_i, clipped): none is exactly zero in float
    assert summary["margin_pairs"] == sum(row["mean_preference_difference"] != 0 for row in annotated) > 0
    assert summary["eval_pairs"] >= 300 and f"{summary['eval_accuracy']:.3f}" in summary["verdict"]
    assert f"{summary['negative_strength_fraction']:.0%} of the training pairs" in summary["verdict"]
