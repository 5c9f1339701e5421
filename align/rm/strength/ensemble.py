"""Reward-model ensembles for preference strength: lean in-memory training of members, and a cheap
ensemble of M heads on one shared backbone.

`fit_reward_model` trains one member on the shared training core (`align.rm.fit.optimize`, in its own run
directory: metrics, checkpoints, resume; no model is saved, an ensemble only needs its scores). It trains
with the loss it is given: `align rm`'s `batch_loss`, so a denoising plan applied to the data (flip, soft
labels, margins, discards) trains exactly as in `align rm`. `run_ensemble` trains and scores the members
of one estimator (below), member by member, resumable.

The cheap ensemble (`fit_bootstrap_heads`) is our own design: M linear heads on one backbone,
trained in one run; head m sees pair i with a fixed Poisson(1) weight w_mi, the online-bootstrap
approximation of resampling the data with replacement (Oza & Russell 2001; Osband et al. 2016,
"Deep Exploration via Bootstrapped DQN", which shares one torso between bootstrap heads). It costs
about one training instead of M. Its members share every backbone feature, so they disagree less
than independently trained members: its std of the preference difference underestimates the
full ensemble's (measured in `align strength` reports and `bench/denoise.py`).

Three estimators (`mode`, and `compare` for extra ones in the report):
- `in_sample`: every member trains on all pairs and scores them (Wang et al. 2024, "Secrets of RLHF
  Part II: Reward Modeling", §2, with 10 members).
- `out_of_fold`: pairs are cut into K folds; member m trains without fold m mod K, and a pair's
  strength uses only members that never saw it (members a multiple of folds keeps counts equal).
- `cheap`: one backbone with M bootstrap heads trained once (`fit_bootstrap_heads`).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from align import losses
from align.rm.data import RMData
from align.rm.evaluate import score_pairs
from align.rm.fit import Step, build_reward_model, optimize, pair_sums
from align.training import BatchPlan, Trainer, TrainState


def subset(data: RMData, indices: list[int]) -> RMData:
    """The pairs at `indices` as their own RMData (tokenization reused, denoising targets reset)."""
    return RMData([data.pairs[i] for i in indices], [data.encoded[i] for i in indices], data.head_names,
                  data.pad_token_id)


@dataclass
class Fitted:
    model: torch.nn.Module
    """The trained RM (unwrapped, eval mode)."""
    seconds: float
    """Training time (checkpoint writing excluded)."""
    trainer: Trainer
    """Its trainer: score with `score_pairs(..., trainer)` to share the work between processes."""


def fit_reward_model(config, data: RMData, seed: int, output_dir: str | Path, loss_fn, head_names=None,
                     desc: str = "member", model_factory=None) -> Fitted:
    """Train a fresh RM on `data` with `config`'s optimisation keys (an `align.rm.train.Config`) and `seed`
    (initialisation and data order), on the shared training core: checkpoints every `save_steps` and
    `resume=true` in `output_dir`, where its metrics.jsonl goes too; no model, summary or report is written.

    `loss_fn(model, batch, step) -> (loss, sums)`: this micro-batch's share of the step's loss (`align.rm.train.
    batch_loss` with a `loss.type`, or `bootstrap_heads_loss`);
    `model_factory(head_names) -> RewardModel` replaces `build_reward_model(config, ...)` (a benchmark
    uses it to train only the top layers on cached hidden states).
    """
    member = dataclasses.replace(config, seed=seed, output_dir=str(output_dir))
    trainer = Trainer(member)
    head_names = list(head_names or data.head_names)
    model = model_factory(head_names) if model_factory is not None else build_reward_model(member, trainer, head_names)
    batches = BatchPlan(data.lengths(), config.batch_size, seed, trainer.rank, trainer.world_size)
    total_steps = trainer.total_steps(len(batches), config.grad_accum)
    prepared = trainer.prepare("model", model, total_steps)
    state = trainer.resume(TrainState())
    optimize(trainer, prepared, data, batches, state, total_steps, loss_fn, desc=desc)
    model = trainer.unwrap("model")
    model.eval()
    return Fitted(model, state.train_seconds, trainer)


def remove_checkpoints(fitted: Fitted) -> None:
    """A member's checkpoints are only needed until it is scored."""
    if fitted.trainer.is_main:
        shutil.rmtree(fitted.trainer.run.checkpoint_root, ignore_errors=True)
    fitted.trainer.wait()


def bootstrap_weights(num_pairs: int, num_heads: int, seed: int) -> torch.Tensor:
    """[N, M] Poisson(1) weights: how often pair i would appear in head m's bootstrap resample."""
    generator = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.ones(num_pairs, num_heads), generator=generator)


def bootstrap_heads_loss(weights: torch.Tensor):
    """Loss for `fit_bootstrap_heads`: per head, the bootstrap-weighted mean Bradley-Terry loss over the step.

        L = (1/M) Σ_m  Σ_i w_mi · (−log σ(r_m(x_i, y_c) − r_m(x_i, y_r))) / Σ_i w_mi

    (i over the step's pairs; this micro-batch contributes its pairs' terms)."""
    def loss_fn(model, batch, step: Step):
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards
        half = rewards.shape[0] // 2
        per_pair = losses.bradley_terry_loss(rewards[:half], rewards[half:])  # [B, M]
        indices = batch["index"].cpu()
        w = weights[indices].to(per_pair.device) * batch["weight"].unsqueeze(1)
        step_weight = weights[torch.tensor(step.indices)].sum(0).clamp(min=1.0).to(per_pair.device)
        loss = ((per_pair * w).sum(0) / step_weight).mean()
        delta = (rewards[:half] - rewards[half:]).detach().float().mean(1)
        return loss, pair_sums(per_pair.detach().mean(1) @ batch["weight"], delta, batch["weight"])
    return loss_fn


def fit_bootstrap_heads(config, data: RMData, members: int, seed: int, output_dir: str | Path,
                        model_factory=None) -> Fitted:
    """The cheap ensemble: one backbone with `members` heads, trained once on bootstrap-weighted data."""
    weights = bootstrap_weights(len(data), members, seed)
    names = [f"member_{m}" for m in range(members)]
    return fit_reward_model(config, data, seed, output_dir, bootstrap_heads_loss(weights), head_names=names,
                            desc="bootstrap heads", model_factory=model_factory)


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


def run_ensemble(config, train: RMData, held_out: RMData | None, mode: str, members: int, loss_fn, folds: int = 4,
                 seed: int = 0, model_factory=None) -> EnsembleScores:
    """Train an ensemble of `members` on `train` as `mode` says and score every pair (and `held_out`).

    `config` is an `align.rm.train.Config` (see `member_config`): model and optimisation keys, and `output_dir`,
    under which each member trains in `ensembles/<mode>/<member>/` (its metrics, its checkpoints while it
    trains, then its scores). With `resume=true`, scored members are read back and a member killed
    mid-training resumes from its checkpoint, so the ensemble ends as an uninterrupted one would.
    `loss_fn` and `model_factory` as in `fit_reward_model` (the cheap ensemble has its own loss).
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
                config, subset(train, indices), seed * 1000 + m, out, loss_fn, desc=f"{mode} member {m + 1}/{members}",
                model_factory=model_factory))
            seconds += float(scores["seconds"])
            chosen[m], rejected[m] = scores["train"]
            if scored_held_out:
                eval_chosen.append(scores["eval"][0])
                eval_rejected.append(scores["eval"][1])
        eval_scores = [torch.stack(eval_chosen), torch.stack(eval_rejected)] if eval_chosen else [None, None]
    mean, std = strength_statistics(chosen - rejected, counted)
    return EnsembleScores(mode, chosen, rejected, counted, mean, std, seconds, *eval_scores)


def compute_strengths(data: RMData, config, loss_fn, members: int = 8) -> torch.Tensor:
    """In-sample ensemble strengths of the tokenized pairs `data` (for `align rm loss.strengths=compute`): set on
    `data.strength` and on each pair's `strength`, and returned. Members train with `config`'s model and
    optimisation keys and `loss_fn`, in `<output_dir>/ensembles/in_sample/`."""
    scores = run_ensemble(config, data, None, "in_sample", members, loss_fn, seed=config.seed)
    data.strength = scores.mean.clone()
    for pair, strength in zip(data.pairs, scores.mean.tolist()):
        pair.strength = strength
    return scores.mean
