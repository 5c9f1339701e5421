"""`align strength`: preference strength of every pair from a reward-model ensemble.

The algorithm, top to bottom in `run`:
train M members (different seed and data order) -> score every pair with every member:
d_m = r_m(chosen) − r_m(rejected) -> annotate each pair with the mean and (population) std of d_m
over the members that count for it -> report (histogram, 20 strength groups, slice accuracy,
comparison of estimators) -> cleaned data (flagged pairs flipped or removed).

The estimators (`mode`, and `compare` for extra ones in the report) are `align.rm.strength.ensemble`'s.

Output field names follow the public hh-rlhf-strength-cleaned release with underscores:
`mean_preference_difference`, `std_preference_difference`, `chosen_scores`, `rejected_scores`
(that release writes "mean preference difference", ..., "chosen score list"; the data loader reads
the strength under either spelling, so both kinds of files mix).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from align.config import ConfigError, TrainConfig, doc, nested
from align.rm import train as rm
from align.rm.data import load_rm_data
from align.rm.denoise import flag_low_strength
from align.rm.strength.ensemble import EnsembleScores, run_ensemble, strength_statistics
from align.rm.strength.report import compare_estimators, write_strength_report
from align.training.lora import LoraOptions
from align.training.precision import is_main_process
from align.training.rundir import RunDir
from align.types import PreferencePair

Mode = Literal["in_sample", "out_of_fold", "cheap"]
STRENGTH_FIELDS = ("mean_preference_difference", "std_preference_difference", "chosen_scores", "rejected_scores")


@dataclass
class Config(TrainConfig):
    """`align strength`: annotate preference pairs with ensemble preference strength."""

    output_dir: str = doc("Directory for annotated.jsonl, annotated_eval.jsonl, cleaned.jsonl, summary.json and "
                          "report.md.", "runs/strength")
    members: int = doc("Ensemble size M (the reference used 10).", 8)
    mode: Mode = doc("Strengths written to the annotated data: `in_sample` (the reference), `out_of_fold` "
                     "(each pair scored only by members that never saw it) or `cheap` (M bootstrap heads on one "
                     "shared backbone, trained once).", "in_sample")
    compare: list[str] = doc("Further estimators computed for the report only (e.g. `compare=out_of_fold,cheap`): "
                             "Spearman correlation with `mode`, negative share and training-time ratio.", [])
    folds: int = doc("K for out-of-fold strengths.", 4)
    heads: list[str] = doc("Reward heads of each member (pairs train and are scored by their aspect's head).",
                           ["overall"])
    domain_options: dict = doc("Keyword options for the domain adapter.", {})
    dropout: float | None = doc("Dropout rate inside the members; empty keeps the model's own.", None)
    lora: LoraOptions = nested(LoraOptions, "LoRA adapters on each member's backbone (as `align rm`).")
    clean_action: Literal["flip", "discard"] = doc("What cleaned.jsonl does with flagged pairs.", "flip")
    flag_threshold: float = doc("Flag a pair when its mean strength is below this value.", 0.0)
    flag_quantile: float | None = doc("Instead of the threshold, flag the lowest q-quantile (e.g. 0.1).", None)
    slice_accuracy: bool = doc("Report: train a fresh RM on each 10% slice of the pairs sorted by strength (and "
                               "on the lowest slice flipped) and evaluate it on the held-out pairs.", True)
    eval_batch_size: int = doc("Pairs per scoring batch.", 32)
    report: bool = doc("Write report.md with plots.", True)

    def validate(self) -> None:
        super().validate()
        if self.members < 2:
            raise ConfigError(f"members: expected at least 2 ensemble members, got {self.members!r}")
        for name in self.compare:
            if name not in ("in_sample", "out_of_fold", "cheap"):
                raise ConfigError(f"compare: unknown estimator {name!r}; expected in_sample, out_of_fold or cheap")
        uses_folds = "out_of_fold" in (self.mode, *self.compare)
        if uses_folds and not 2 <= self.folds <= self.members:
            raise ConfigError(f"folds: expected 2 <= folds <= members ({self.members}) so every pair has an "
                              f"out-of-fold member, got {self.folds!r}")
        if "cheap" in (self.mode, *self.compare) and len(self.heads) > 1:
            raise ConfigError("mode/compare: the cheap ensemble supports one head; got heads="
                              f"{self.heads!r}")
        if self.flag_quantile is not None and not 0.0 < self.flag_quantile < 1.0:
            raise ConfigError(f"flag_quantile: expected a number in (0, 1), got {self.flag_quantile!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")


def member_config(config: Config) -> rm.Config:
    """The `align rm` config a member trains with (same model, data and optimisation keys, plain BT loss)."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    return rm.Config(**shared, heads=list(config.heads), domain_options=dict(config.domain_options),
                     dropout=config.dropout, lora=dataclasses.replace(config.lora),
                     eval_batch_size=config.eval_batch_size, report=False)


# --------------------------------------------------------------------------- annotated and cleaned data


def pair_row(pair: PreferencePair) -> dict:
    """A pair as a JSONL row `align.data.load_preferences` reads back to the same pair (same id)."""
    row = {"id": pair.id, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.margin is not None:
        row["margin"] = pair.margin
    if pair.aspect is not None:
        row["aspect"] = pair.aspect
    row.update({k: v for k, v in pair.extra.items() if k not in STRENGTH_FIELDS})
    return row


def annotated_rows(pairs: list[PreferencePair], scores: EnsembleScores, which: str = "train") -> list[dict]:
    """Original fields + the four strength fields. Score lists hold the members that count for the pair."""
    if which == "train":
        chosen, rejected, counted, mean, std = scores.chosen, scores.rejected, scores.counted, scores.mean, scores.std
    else:
        chosen, rejected = scores.eval_chosen, scores.eval_rejected
        counted = torch.ones_like(chosen, dtype=torch.bool)
        mean, std = strength_statistics(chosen - rejected)
    rows = []
    for i, pair in enumerate(pairs):
        members = counted[:, i]
        rows.append({**pair_row(pair), "mean_preference_difference": round(float(mean[i]), 6),
                     "std_preference_difference": round(float(std[i]), 6),
                     "chosen_scores": [round(float(s), 6) for s in chosen[members, i]],
                     "rejected_scores": [round(float(s), 6) for s in rejected[members, i]]})
    return rows


def cleaned_rows(rows: list[dict], flagged: torch.Tensor, action: str) -> list[dict]:
    """Flagged rows removed (`discard`) or flipped (`flip`: chosen/rejected and their scores swapped,
    strength negated, `strength_flipped: true` added)."""
    cleaned = []
    for row, flag in zip(rows, flagged.tolist()):
        if not flag:
            cleaned.append(row)
        elif action == "flip":
            cleaned.append({**row, "chosen": row["rejected"], "rejected": row["chosen"],
                            "mean_preference_difference": -row["mean_preference_difference"],
                            "chosen_scores": row["rejected_scores"], "rejected_scores": row["chosen_scores"],
                            "strength_flipped": True})
    return cleaned


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- the command


def member_loss(model, batch, step):
    """Members train with `align rm`'s Bradley-Terry loss."""
    return rm.batch_loss(model, batch, step, "bt")


def run(config: Config) -> dict:
    main_process = is_main_process()
    run_dir = RunDir(config.output_dir)
    if main_process:
        run_dir.save_config(config)
    rm_config = member_config(config)
    data = load_rm_data(rm_config)
    train, held_out = data.train, data.eval

    scores = run_ensemble(rm_config, train, held_out, config.mode, config.members, member_loss, config.folds,
                          config.seed)
    others = {}
    for name in dict.fromkeys(config.compare):
        if name != config.mode:
            others[name] = run_ensemble(rm_config, train, held_out, name, config.members, member_loss, config.folds,
                                        config.seed)

    rows = annotated_rows(train.pairs, scores)
    flagged = flag_low_strength(scores.mean, config.flag_threshold, config.flag_quantile)
    cleaned = cleaned_rows(rows, flagged, config.clean_action)
    if main_process:
        write_jsonl(run_dir.path / "annotated.jsonl", rows)
        if len(held_out) and scores.eval_chosen is not None:
            write_jsonl(run_dir.path / "annotated_eval.jsonl", annotated_rows(held_out.pairs, scores, which="eval"))
        write_jsonl(run_dir.path / "cleaned.jsonl", cleaned)

    summary = {
        "mode": config.mode, "members": config.members, "train_pairs": len(train), "eval_pairs": len(held_out),
        **data.counts(),
        "negative_strength_fraction": (scores.mean < 0).float().mean().item(),
        "mean_strength": scores.mean.mean().item(), "mean_std": scores.std.mean().item(),
        "flagged_pairs": int(flagged.sum()),
        f"{'flipped' if config.clean_action == 'flip' else 'discarded'}_pairs": int(flagged.sum()),
        "cleaned_pairs": len(cleaned), "train_seconds": round(scores.train_seconds, 3),
        **scores.eval_accuracy(),
        **compare_estimators(scores, others),
        "annotated": str(run_dir.path / "annotated.jsonl"), "cleaned": str(run_dir.path / "cleaned.jsonl"),
    }
    if config.report:
        started = time.perf_counter()
        report, slice_summary = write_strength_report(run_dir, rm_config, train, held_out, scores, others,
                                                      config.slice_accuracy, summary, main_process=main_process)
        summary.update(slice_summary)
        summary["report"] = str(report)
        summary["report_seconds"] = round(time.perf_counter() - started, 3)
    if not main_process:
        return summary
    run_dir.write_summary(summary)
    print(f"align strength: {len(train)} pairs, {config.members} members ({config.mode}); "
          f"{summary['negative_strength_fraction']:.1%} with negative mean strength; "
          f"{int(flagged.sum())} flagged ({config.clean_action}); annotated data in {summary['annotated']}")
    return summary
