"""align strength: statistics by hand, the annotated format, cleaning, the ensembles on a tiny model,
the report, and `align rm loss.strengths=compute`."""
import json
import math

import pytest
import torch

from align import losses
from align.config import ConfigError, load_config
from align.data import load_preferences
from align.rm.denoise import flag_low_strength
from align.rm.fit import Step
from align.rm.strength.annotate import STRENGTH_FIELDS, Config, annotated_rows, cleaned_rows
from align.rm.strength.ensemble import (
    EnsembleScores,
    bootstrap_heads_loss,
    bootstrap_weights,
    fold_ids,
    member_plan,
    strength_statistics,
)
from align.rm.strength.report import strength_groups, strength_slices
from align.types import PreferencePair


def _pairs(n):
    return [PreferencePair(prompt=f"Question {i}?", chosen=f"A good answer number {i}.", rejected=f"bad {i}",
                           id=f"p{i}", extra={"source_note": f"row {i}"}) for i in range(n)]


def _write_pairs(path, n):
    with open(path, "w") as f:
        f.writelines(json.dumps({"prompt": f"Human: question {i}?", "chosen": f"A helpful reply about {i}.",
                                "rejected": f"Go away {i}.", "id": f"q{i}"}) + "\n" for i in range(n))
    return path


def test_strength_statistics_by_hand_population_std():
    # two pairs, three members: d = [[1, 4], [2, 0], [3, -1]]
    differences = torch.tensor([[1.0, 4.0], [2.0, 0.0], [3.0, -1.0]])
    mean, std = strength_statistics(differences)
    assert mean.tolist() == pytest.approx([2.0, 1.0])
    assert std.tolist() == pytest.approx([math.sqrt(2 / 3), math.sqrt(14 / 3)])  # population, not sample, std
    counted = torch.tensor([[True, False], [True, True], [False, True]])
    mean, std = strength_statistics(differences, counted)
    assert mean.tolist() == pytest.approx([1.5, -0.5])
    assert std.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="1 pairs have no member"):
        strength_statistics(differences, torch.tensor([[True, False]] * 3))


def test_out_of_fold_plan_never_scores_a_pair_with_a_member_that_saw_it():
    folds = fold_ids(10, 3, seed=1)
    assert sorted(torch.bincount(folds).tolist()) == [3, 3, 4]
    plan, counted = member_plan("out_of_fold", 10, members=6, folds=3, seed=1)
    assert counted.sum(0).tolist() == [2] * 10  # 6 members, 3 folds: two out-of-fold members per pair
    for m, indices in enumerate(plan):
        assert not counted[m, indices].any()
        assert len(indices) + int(counted[m].sum()) == 10
    plan, counted = member_plan("in_sample", 4, members=2, folds=3, seed=0)
    assert plan == [[0, 1, 2, 3]] * 2 and bool(counted.all())


def test_annotated_rows_round_trip_with_the_release_field_names(tmp_path):
    pairs = _pairs(2)
    chosen, rejected = torch.tensor([[1.0, 0.0], [3.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    mean, std = strength_statistics(chosen - rejected)
    scores = EnsembleScores("in_sample", chosen, rejected, torch.ones(2, 2, dtype=torch.bool), mean, std, 1.0)
    rows = annotated_rows(pairs, scores)
    assert rows[0]["mean_preference_difference"] == pytest.approx(2.0)
    assert rows[0]["std_preference_difference"] == pytest.approx(1.0)
    assert rows[1]["mean_preference_difference"] == pytest.approx(0.0)
    assert rows[0]["chosen_scores"] == [1.0, 3.0] and rows[0]["rejected_scores"] == [0.0, 0.0]
    assert rows[0]["source_note"] == "row 0" and rows[0]["prompt"] == "Question 0?"  # original fields kept
    path = tmp_path / "annotated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_preferences(str(path), strict=True).pairs
    assert [p.id for p in loaded] == ["p0", "p1"]
    assert [p.strength for p in loaded] == pytest.approx([2.0, 0.0])
    assert loaded[0].chosen == pairs[0].chosen and set(STRENGTH_FIELDS) <= set(loaded[0].extra)


def test_cleaned_rows_flip_or_discard_flagged_pairs():
    rows = [{"id": str(i), "chosen": f"c{i}", "rejected": f"r{i}", "mean_preference_difference": s,
             "std_preference_difference": 0.1, "chosen_scores": [s], "rejected_scores": [0.0]}
            for i, s in enumerate([-1.0, 0.5, -0.2, 2.0])]
    flagged = flag_low_strength(torch.tensor([r["mean_preference_difference"] for r in rows]), 0.0, None)
    assert flagged.tolist() == [True, False, True, False]
    flipped = cleaned_rows(rows, flagged, "flip")
    assert [r["chosen"] for r in flipped] == ["r0", "c1", "r2", "c3"]
    assert flipped[0]["mean_preference_difference"] == 1.0 and flipped[0]["rejected_scores"] == [-1.0]
    assert flipped[0]["strength_flipped"] is True and "strength_flipped" not in flipped[1]
    assert [r["id"] for r in cleaned_rows(rows, flagged, "discard")] == ["1", "3"]
    by_quantile = flag_low_strength(torch.tensor([-1.0, 0.5, -0.2, 2.0]), 0.0, 0.25)
    assert [r["id"] for r in cleaned_rows(rows, by_quantile, "discard")] == ["1", "2", "3"]


def test_groups_and_slices_cut_sorted_pairs_evenly():
    mean = torch.tensor([5.0, -1.0, 3.0, 0.0, 2.0, 1.0])
    std = torch.tensor([0.5, 1.0, 0.3, 0.2, 0.1, 0.0])
    groups = strength_groups(mean, std, groups=3)
    assert [g["mean_strength"] for g in groups] == pytest.approx([-0.5, 1.5, 4.0])
    assert [g["mean_std"] for g in groups] == pytest.approx([0.6, 0.05, 0.4])
    assert strength_slices(mean, 3) == [[1, 3], [5, 4], [2, 0]]


def test_bootstrap_heads_loss_by_hand():
    weights = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # head 0 sees pair 0 twice, head 1 only pair 1

    chosen = {0: [1.0, 0.0], 1: [0.0, 2.0]}  # pair -> reward of each head (rejected rewards are 0)

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            rows = [chosen[i] for i in input_ids.tolist()]
            return type("Out", (), {"rewards": torch.tensor(rows + [[0.0, 0.0]] * len(rows))})()

    def batch(indices):
        return {"input_ids": torch.tensor(indices), "attention_mask": None, "index": torch.tensor(indices),
                "weight": torch.ones(len(indices))}

    loss_fn = bootstrap_heads_loss(weights)
    step = Step(pairs=2, indices=[0, 1], share=1.0)
    loss, _ = loss_fn(Fixed(), batch([0, 1]), step)
    bt = lambda d: losses.bradley_terry_loss(torch.tensor([d]), torch.tensor([0.0])).item()
    head0 = (2 * bt(1.0) + 1 * bt(0.0)) / 3
    head1 = (0 * bt(0.0) + 1 * bt(2.0)) / 1
    assert loss.item() == pytest.approx((head0 + head1) / 2, rel=1e-6)
    # the step cut into two micro-batches (or two processes) contributes the same loss in two shares
    halves = [loss_fn(Fixed(), batch([i]), Step(2, [0, 1], 0.5))[0].item() for i in (0, 1)]
    assert sum(halves) == pytest.approx(loss.item(), rel=1e-6)
    weights = bootstrap_weights(1000, 3, seed=0)
    assert weights.shape == (1000, 3) and abs(weights.mean().item() - 1.0) < 0.1
    assert torch.equal(weights, bootstrap_weights(1000, 3, seed=0))


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError, match="members"):
        load_config(Config, None, ["members=1"])
    with pytest.raises(ConfigError, match="folds"):
        load_config(Config, None, ["members=2", "folds=3", "mode=out_of_fold"])
    with pytest.raises(ConfigError, match="compare"):
        load_config(Config, None, ["compare=bagging"])


def test_ensembles_on_a_tiny_model_and_the_report(tmp_path):
    from align.cli import main

    data = _write_pairs(tmp_path / "pairs.jsonl", 24)
    out = tmp_path / "run"
    code = main(["strength", "model=tiny-bert", f"data={data}", f"output_dir={out}", "members=2", "folds=2",
                 "compare=out_of_fold,cheap", "max_steps=2", "batch_size=4", "eval_fraction=0.25", "max_length=32",
                 "learning_rate=1e-3", "precision=fp32", "progress=false"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_pairs"] == 18 and summary["eval_pairs"] == 6
    rows = [json.loads(line) for line in (out / "annotated.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and all(len(r["chosen_scores"]) == 2 for r in rows)
    for row in rows:  # the mean and std are those of the written per-member scores
        d = [c - r for c, r in zip(row["chosen_scores"], row["rejected_scores"])]
        assert row["mean_preference_difference"] == pytest.approx(sum(d) / 2, abs=1e-5)
        assert row["std_preference_difference"] == pytest.approx(abs(d[0] - d[1]) / 2, abs=1e-5)
    negative = sum(r["mean_preference_difference"] < 0 for r in rows)
    assert summary["flagged_pairs"] == summary["flipped_pairs"] == negative
    assert summary["negative_strength_fraction"] == pytest.approx(negative / 18)
    cleaned = [json.loads(line) for line in (out / "cleaned.jsonl").read_text().splitlines()]
    assert len(cleaned) == 18 and sum(r.get("strength_flipped", False) for r in cleaned) == negative
    assert len((out / "annotated_eval.jsonl").read_text().splitlines()) == 6
    for key in ("out_of_fold_spearman_with_in_sample", "cheap_time_ratio", "slice_0_flipped_eval_accuracy",
                "slice_9_eval_accuracy"):
        assert key in summary
    report = (out / "report.md").read_text()
    for image in ("strength_histogram.png", "strength_groups.png", "strength_slices.png"):
        assert image in report and (out / image).stat().st_size > 1000
    assert "Estimators compared" in report


def test_rm_can_compute_strengths_first(tmp_path):
    from align.cli import main

    data = _write_pairs(tmp_path / "pairs.jsonl", 12)
    out = tmp_path / "rm"
    code = main(["rm", "model=tiny-bert", f"data={data}", f"output_dir={out}", "loss.type=discard",
                 "loss.strengths=compute", "max_steps=1", "batch_size=4", "eval_fraction=0.25", "max_length=32",
                 "precision=fp32", "progress=false", "report=false", "save_steps=0"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_pairs"] + summary["discarded_pairs"] == 9
    assert "pairs_without_strength" not in summary
