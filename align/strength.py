"""`align strength`: preference strength of every pair from a reward-model ensemble.

The algorithm, top to bottom in `run`:
train M members (different seed and data order) -> score every pair with every member:
d_m = r_m(chosen) − r_m(rejected) -> annotate each pair with the mean and (population) std of d_m
over the members that count for it -> report (histogram, 20 strength groups, slice accuracy,
comparison of estimators) -> cleaned data (flagged pairs flipped or removed).

Three estimators (`mode`, and `compare` for extra ones in the report):
- `in_sample`: every member trains on all pairs and scores them (Wang et al. 2024, "Secrets of RLHF
  Part II: Reward Modeling", §2, with 10 members).
- `out_of_fold`: pairs are cut into K folds; member m trains without fold m mod K, and a pair's
  strength uses only members that never saw it (members a multiple of folds keeps counts equal).
- `cheap`: one backbone with M bootstrap heads trained once (`align.ensemble.fit_bootstrap_heads`).

Output field names follow the public hh-rlhf-strength-cleaned release with underscores:
`mean_preference_difference`, `std_preference_difference`, `chosen_scores`, `rejected_scores`
(that release writes "mean preference difference", ..., "chosen score list"; the data loader reads
the strength under either spelling, so both kinds of files mix).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from align.config import ConfigError, TrainConfig, doc
from align.denoise import flag_low_strength
from align.ensemble import fit_bootstrap_heads, fit_reward_model, remove_checkpoints, subset
from align.rm import score_pairs
from align.rm_data import RMData
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


def member_config(config: Config):
    """The `align rm` config a member trains with (same model, data and optimisation keys, plain BT loss)."""
    from align import rm

    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    return rm.Config(**shared, heads=list(config.heads), domain_options=dict(config.domain_options),
                     dropout=config.dropout, eval_batch_size=config.eval_batch_size, report=False)


# --------------------------------------------------------------------------- statistics


def strength_statistics(differences: torch.Tensor, counted: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std over members of d_m = r_m(chosen) − r_m(rejected).

    `differences` is [M, N]; `counted` ([M, N] bool) says which members count for each pair
    (out-of-fold: the members that never trained on it). Every pair needs one counted member.
    """
    counted = torch.ones_like(differences, dtype=torch.bool) if counted is None else counted
    n = counted.sum(0)
    if bool((n == 0).any()):
        raise ValueError(f"{int((n == 0).sum())} pairs have no member to score them")
    weights = counted.float()
    mean = (differences * weights).sum(0) / n
    variance = (((differences - mean) ** 2) * weights).sum(0) / n
    return mean, variance.sqrt()


def fold_ids(num_pairs: int, folds: int, seed: int) -> torch.Tensor:
    """A random fold in 0..folds-1 for each pair, equal-sized up to one."""
    order = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(seed))
    ids = torch.empty(num_pairs, dtype=torch.long)
    ids[order] = torch.arange(num_pairs) % folds
    return ids


def member_plan(mode: str, num_pairs: int, members: int, folds: int, seed: int
                ) -> tuple[list[list[int]], torch.Tensor]:
    """Training indices of each member and the [M, N] mask of members that count for each pair."""
    everything = list(range(num_pairs))
    if mode == "in_sample":
        return [everything] * members, torch.ones(members, num_pairs, dtype=torch.bool)
    fold = fold_ids(num_pairs, folds, seed)
    held_out = torch.stack([fold == m % folds for m in range(members)])
    return [(~held_out[m]).nonzero().squeeze(1).tolist() for m in range(members)], held_out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


# --------------------------------------------------------------------------- the ensemble


@dataclass
class EnsembleScores:
    """Scores of one estimator: per member and pair, and the pairs' strength statistics."""

    mode: str
    chosen: torch.Tensor       # [M, N]
    rejected: torch.Tensor     # [M, N]
    counted: torch.Tensor      # [M, N] bool
    mean: torch.Tensor         # [N]
    std: torch.Tensor          # [N]
    train_seconds: float
    eval_chosen: torch.Tensor | None = None    # [M, N_eval]: every member scores the held-out pairs
    eval_rejected: torch.Tensor | None = None

    def eval_accuracy(self) -> dict[str, float]:
        """Held-out pairwise accuracy: of the mean member, and of the ensemble's mean difference."""
        if self.eval_chosen is None or self.eval_chosen.shape[1] == 0:
            return {}
        differences = self.eval_chosen - self.eval_rejected
        return {"member_eval_accuracy": (differences > 0).float().mean().item(),
                "ensemble_eval_accuracy": (differences.mean(0) > 0).float().mean().item()}


def run_ensemble(config, train: RMData, held_out: RMData | None, mode: str, members: int, folds: int = 4,
                 seed: int = 0, model_factory=None) -> EnsembleScores:
    """Train an ensemble of `members` on `train` as `mode` says and score every pair (and `held_out`).

    `config` is an `align.rm.Config` (see `member_config`): model and optimisation keys, and `output_dir`,
    under which each member trains in `ensembles/<mode>/<member>/` (its metrics, its checkpoints while it
    trains, then its scores). With `resume=true`, scored members are read back and a member killed
    mid-training resumes from its checkpoint, so the ensemble ends as an uninterrupted one would.
    `model_factory` as in `align.ensemble.fit_reward_model`.
    """
    root = Path(config.output_dir) / "ensembles" / mode
    scored_held_out = held_out is not None and len(held_out) > 0

    def scored(name: str, fit) -> dict:
        path = root / name / "scores.pt"
        if config.resume and path.exists():
            return torch.load(path, weights_only=True)
        fitted = fit(root / name)
        scores = {"train": score_pairs(fitted.model, train, config.eval_batch_size, fitted.trainer,
                                       all_heads=mode == "cheap"),
                  "seconds": torch.tensor(fitted.seconds)}
        if scored_held_out:
            scores["eval"] = score_pairs(fitted.model, held_out, config.eval_batch_size, fitted.trainer,
                                         all_heads=mode == "cheap")
        if fitted.trainer.is_main:
            torch.save(scores, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
        remove_checkpoints(fitted)
        return scores

    if mode == "cheap":
        scores = scored("bootstrap-heads", lambda out: fit_bootstrap_heads(config, train, members, seed, out,
                                                                           model_factory))
        chosen, rejected = (t.T for t in scores["train"])
        counted = torch.ones_like(chosen, dtype=torch.bool)
        eval_scores = [t.T for t in scores["eval"]] if scored_held_out else [None, None]
        seconds = float(scores["seconds"])
    else:
        plan, counted = member_plan(mode, len(train), members, folds, seed)
        chosen, rejected = torch.zeros(members, len(train)), torch.zeros(members, len(train))
        eval_chosen, eval_rejected, seconds = [], [], 0.0
        for m, indices in enumerate(plan):
            scores = scored(f"member-{m}", lambda out, m=m, indices=indices: fit_reward_model(
                config, subset(train, indices), seed * 1000 + m, out, desc=f"{mode} member {m + 1}/{members}",
                model_factory=model_factory))
            seconds += float(scores["seconds"])
            chosen[m], rejected[m] = scores["train"]
            if scored_held_out:
                eval_chosen.append(scores["eval"][0])
                eval_rejected.append(scores["eval"][1])
        eval_scores = [torch.stack(eval_chosen), torch.stack(eval_rejected)] if eval_chosen else [None, None]
    mean, std = strength_statistics(chosen - rejected, counted)
    return EnsembleScores(mode, chosen, rejected, counted, mean, std, seconds, *eval_scores)


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


def compute_strengths(pairs: list[PreferencePair], rm_config, members: int = 8) -> torch.Tensor:
    """In-sample ensemble strengths of `pairs`, set on each pair's `strength` (for `align rm
    loss.strengths=compute`); members train with `rm_config`'s model and optimisation keys."""
    from align.data import encode_pair
    from align.models import load_tokenizer

    tokenizer = load_tokenizer(rm_config.model)
    encoded = [encode_pair(tokenizer, pair, rm_config.max_length) for pair in pairs]
    data = RMData(list(pairs), encoded, list(rm_config.heads), tokenizer.pad_token_id)
    scores = run_ensemble(rm_config, data, None, "in_sample", members, seed=rm_config.seed)
    for pair, strength in zip(pairs, scores.mean.tolist()):
        pair.strength = strength
    return scores.mean


def run(config: Config) -> dict:
    from align.rm_data import load_rm_data
    from align.strength_report import compare_estimators, write_strength_report

    main_process = is_main_process()
    run_dir = RunDir(config.output_dir)
    if main_process:
        run_dir.save_config(config)
    rm_config = member_config(config)
    data = load_rm_data(rm_config)
    train, held_out = data.train, data.eval

    scores = run_ensemble(rm_config, train, held_out, config.mode, config.members, config.folds, config.seed)
    others = {}
    for name in dict.fromkeys(config.compare):
        if name != config.mode:
            others[name] = run_ensemble(rm_config, train, held_out, name, config.members, config.folds,
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
