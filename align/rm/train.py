"""`align rm`: train a reward model on preference pairs.

The algorithm, top to bottom in `train_reward_model`:
load pairs -> tokenize (keep the end of long dialogues) -> per step: one forward pass over
chosen and rejected -> pairwise loss (Bradley-Terry, or its denoised variant, + contrastive term)
-> AdamW step -> periodic eval, metrics and atomic checkpoints -> final eval, model, summary, report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align import losses
from align.config import ConfigError, TrainConfig, doc, nested
from align.rm.contrastive.report import append_contrastive_report
from align.rm.contrastive.separability import eval_features, feature_separability
from align.rm.contrastive.term import ContrastiveConfig
from align.rm.data import load_rm_data, rewards_for_heads
from align.rm.denoise import LossConfig, plan_denoising
from align.rm.evaluate import evaluate, score_pairs
from align.rm.fit import Step, build_reward_model, optimize, pair_sums
from align.rm.probe import probe_heads
from align.rm.strength.ensemble import compute_strengths
from align.training import BatchPlan, Trainer, TrainState
from align.training.lora import LoraOptions


@dataclass
class Config(TrainConfig):
    """`align rm`: reward-model training."""

    output_dir: str = doc("Directory for config.yaml, metrics.jsonl, summary.json, checkpoints, model/ and "
                          "report.md.", "runs/rm")
    heads: list[str] = doc("Reward heads. Pairs whose `aspect` names a head train that head; other pairs train "
                           "`overall` (or the first head).", ["overall"])
    domain_options: dict = doc("Keyword options for the domain adapter (e.g. `domain_options.subset=helpful-base`).",
                               {})
    dropout: float | None = doc("Dropout rate inside the model; empty keeps the model's own.", None)
    freeze_layers: int = doc("Keep the embeddings and the bottom N transformer layers fixed: the backward pass stops "
                             "above them (MiniLM's 6 layers with 3 frozen: a third less compute per step).", 0)
    loss: LossConfig = nested(LossConfig, "Pairwise loss and strength-aware denoising.")
    contrastive: ContrastiveConfig = nested(ContrastiveConfig, "Contrastive term (SimCSE or SwAV) added to the "
                                            "pairwise loss.")
    lora: LoraOptions = nested(LoraOptions, "LoRA adapters on the backbone (the reward head trains in full); the "
                               "final model/ is merged, the adapters alone are saved in adapter/.")
    head_init: Literal["random", "probe"] = doc(
        "How the reward heads start: `random` (normal, std 1/sqrt(hidden+1)), or `probe`: each head first fitted "
        "alone on the frozen backbone's features of its training pairs, then everything fine-tuned from there "
        "(LP-FT; `align.rm.probe`; one extra forward pass over the pairs).", "random")
    probe_l2: float = doc("L2 penalty of the `head_init=probe` fit, on standardised features.", 0.1)
    eval_batch_size: int = doc("Pairs per evaluation batch.", 32)
    report: bool = doc("Write report.md with plots at the end.", True)

    def validate(self) -> None:
        super().validate()
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ConfigError(f"heads: expected distinct head names, got {self.heads!r}")
        if self.probe_l2 < 0:
            raise ConfigError(f"probe_l2: expected a number >= 0, got {self.probe_l2!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        if self.contrastive.enabled and self.dropout is not None and self.dropout != self.contrastive.dropout:
            raise ConfigError(f"dropout: {self.dropout!r} disagrees with contrastive.dropout="
                              f"{self.contrastive.dropout!r}; with a contrastive term set only contrastive.dropout")

    @property
    def model_dropout(self) -> float | None:
        """The dropout the model trains with: the contrastive views' rate when the term is on."""
        return self.contrastive.dropout if self.contrastive.enabled else self.dropout


# --------------------------------------------------------------------------- the loss


def pair_losses(loss_type: str, chosen: torch.Tensor, rejected: torch.Tensor, flip: torch.Tensor,
                alpha: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Per-pair loss of `loss.type`: Bradley-Terry, on flagged pairs flipped (`flip*`), label-smoothed
    (`soft_label*`) or with a margin (`*margin`); `discard` pairs never reach training."""
    if loss_type.startswith("flip"):
        chosen, rejected = losses.flip_pairs(chosen, rejected, flip)
    if loss_type.startswith("soft_label"):
        return losses.soft_label_loss(chosen, rejected, alpha, margin)
    if loss_type.endswith("margin"):
        return losses.margin_loss(chosen, rejected, margin)
    return losses.bradley_terry_loss(chosen, rejected)


def batch_loss(model, batch: dict[str, torch.Tensor], step: Step, loss_type: str = "bt", contrastive=None,
               across=None) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the optimizer step's loss, and sums for the step's stats.

    Plain: one forward pass over chosen+rejected; the share is Σ_pairs w·ℓ / `step.pairs` (w = 0 for a
    stand-in pair). With a contrastive term (`align.rm.contrastive.term.ContrastiveTerm`): two passes under dropout
    give two views; the pair loss is averaged over the views, and β·L_contrastive on their features
    (negatives gathered from every process through `across`) is added with weight `step.share`."""
    views = [model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
             for _ in range(1 if contrastive is None else 2)]
    pair_sum, delta = 0.0, 0.0
    for output in views:
        chosen, rejected = rewards_for_heads(output.rewards, batch["head_index"])
        per_pair = pair_losses(loss_type, chosen, rejected, batch["flip"], batch["alpha"], batch["margin"])
        pair_sum = pair_sum + (per_pair * batch["weight"]).sum() / len(views)
        delta = delta + (chosen - rejected).detach().float() / len(views)
    sums = pair_sums(pair_sum, delta, batch["weight"])
    loss = pair_sum / step.pairs
    if contrastive is not None:
        real = slice(None) if bool(batch["weight"].all()) else slice(0)  # a stand-in pair gives no items
        contrastive_loss = contrastive(views[0].features[real], views[1].features[real], across)
        loss = loss + contrastive.beta * step.share * contrastive_loss
        sums["contrastive_loss"] = contrastive_loss.item() * step.share  # the same on every process
    return loss, sums


# --------------------------------------------------------------------------- training


def train_reward_model(config: Config) -> dict:
    """Train an RM as `config` says; returns the summary (also written to summary.json)."""
    data = load_rm_data(config)  # tokenized train/eval pairs, skip counts, truncation counts
    train, held_out = data.train, data.eval
    if config.loss.strengths == "compute":  # `align strength` first: an in-sample ensemble on these pairs
        compute_strengths(train, config, lambda model, batch, step: batch_loss(model, batch, step, "bt"))
    trainer = Trainer(config)
    plan = plan_denoising(config.loss, train.strength, train.given_margin)
    train.apply_plan(plan)

    batches = BatchPlan(train.lengths(), config.batch_size, config.seed, trainer.rank, trainer.world_size)
    total_steps = trainer.total_steps(len(batches), config.grad_accum)
    model = trainer.prepare("model", build_reward_model(config, trainer), total_steps)
    state = trainer.resume(TrainState())
    contrastive = trainer.unwrap("model").term if config.contrastive.enabled else None
    probe = initial_heads(config, trainer, train) if state.step == 0 else {}  # resumed: heads from the checkpoint

    def loss_fn(model, batch, step):
        return batch_loss(model, batch, step, config.loss.type, contrastive, trainer)

    optimize(trainer, model, train, batches, state, total_steps, loss_fn, held_out, desc="align rm")
    return finish(config, trainer, model, data, plan, state, probe)


def initial_heads(config: Config, trainer: Trainer, train) -> dict:
    """`head_init=probe`: fit the heads on the frozen features of the training pairs; returns the probe's
    figures for the summary (nothing with `head_init=random`)."""
    if config.head_init != "probe":
        return {}
    unwrapped = trainer.unwrap("model")
    return probe_heads(getattr(unwrapped, "reward_model", unwrapped), train, config.eval_batch_size, trainer,
                       config.probe_l2)


def finish(config: Config, trainer: Trainer, model, data, plan, state: TrainState, extra: dict | None = None) -> dict:
    """Final evaluation, the model (merged when trained with LoRA; adapters in adapter/), summary and report."""
    train, held_out, run = data.train, data.eval, trainer.run
    final_metrics = evaluate(model, held_out, config.eval_batch_size, trainer) if len(held_out) else {}
    eval_chosen_features, eval_rejected_features = eval_features(model, held_out, config.eval_batch_size, trainer)
    final_metrics.update(feature_separability(eval_chosen_features, eval_rejected_features, config.seed))
    chosen, rejected = score_pairs(model, held_out, config.eval_batch_size, trainer) if config.report else (None,) * 2
    summary = {
        **final_metrics,
        "train_pairs": len(train), "eval_pairs": len(held_out), "steps": state.step,
        "precision": trainer.precision_name, "processes": trainer.world_size,
        **data.counts(), **plan.counts(), **(extra or {}),
        "train_seconds": round(state.train_seconds, 3),
        "pairs_per_second": state.examples_seen / max(state.train_seconds, 1e-9),
        "tokens_per_second": state.tokens_seen / max(state.train_seconds, 1e-9),
        "model_dir": str(run.path / "model"),
    }
    if config.lora.enabled:
        trainer.save_model("model", run.path / "adapter")
        summary["adapter_dir"] = str(run.path / "adapter")
        if trainer.is_main:
            trainer.unwrap("model").merge_lora()
    trainer.save_model("model", run.path / "model")
    run.write_model_card(config, summary, "rm")
    if trainer.is_main:
        trainer.log(state.step, **final_metrics)
        if config.report:
            from align.report import write_rm_report

            summary["report"] = str(write_rm_report(run, summary, chosen - rejected))
            if len(held_out):
                append_contrastive_report(run, eval_chosen_features, eval_rejected_features, final_metrics,
                                          config.contrastive)
        run.write_summary(summary)
    trainer.wait()
    return summary


def run(config: Config) -> dict:
    summary = train_reward_model(config)
    accuracy = summary.get("eval_accuracy")
    print(f"align rm: {summary['train_pairs']} pairs, {summary['steps']} steps, "
          f"eval accuracy {accuracy:.3f}" if accuracy is not None else "align rm: done (no eval pairs)")
    print(f"align rm: model in {summary['model_dir']}; summary in {config.output_dir}/summary.json"
          + (f"; report in {summary['report']}" if "report" in summary else ""))
    return summary
