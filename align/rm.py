"""`align rm`: train a reward model on preference pairs.

The algorithm, top to bottom in `train_reward_model`:
load pairs -> tokenize (keep the end of long dialogues) -> per step: one forward pass over
chosen and rejected -> pairwise loss (Bradley-Terry, or its denoised variant, + contrastive term)
-> AdamW step -> periodic eval, metrics and atomic checkpoints -> final eval, model, summary, report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from align import losses
from align.config import ConfigError, TrainConfig, doc, nested
from align.contrastive import (
    ContrastiveConfig,
    ContrastiveRewardModel,
    ContrastiveTerm,
    append_contrastive_report,
    eval_features,
    feature_separability,
)
from align.denoise import LossConfig, plan_denoising
from align.rm_data import RMData, load_rm_data
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
    loss: LossConfig = nested(LossConfig, "Pairwise loss and strength-aware denoising.")
    contrastive: ContrastiveConfig = nested(ContrastiveConfig, "Contrastive term (SimCSE or SwAV) added to the "
                                            "pairwise loss.")
    lora: LoraOptions = nested(LoraOptions, "LoRA adapters on the backbone (the reward head trains in full); the "
                               "final model/ is merged, the adapters alone are saved in adapter/.")
    eval_batch_size: int = doc("Pairs per evaluation batch.", 32)
    report: bool = doc("Write report.md with plots at the end.", True)

    def validate(self) -> None:
        super().validate()
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ConfigError(f"heads: expected distinct head names, got {self.heads!r}")
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


def rewards_for_heads(rewards: torch.Tensor, head_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split [2B, heads] rewards into the chosen and rejected reward of each pair's own head."""
    half = rewards.shape[0] // 2
    picked = rewards.gather(1, head_index.repeat(2).unsqueeze(1)).squeeze(1)
    return picked[:half], picked[half:]


@dataclass
class Step:
    """What a loss needs to know of the optimizer step a micro-batch belongs to."""

    pairs: int
    """Pairs in the whole step: every process, every micro-batch."""
    indices: list[int]
    """Their indices in the training data."""
    share: float
    """This global micro-batch's part of the step's pairs."""


def batch_loss(model, batch: dict[str, torch.Tensor], step: Step, loss_type: str = "bt", contrastive=None,
               across=None) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the optimizer step's loss, and sums for the step's stats.

    Plain: one forward pass over chosen+rejected; the share is Σ_pairs w·ℓ / `step.pairs` (w = 0 for a
    stand-in pair). With a contrastive term (`align.contrastive.ContrastiveTerm`): two passes under dropout
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


def pair_sums(loss_sum: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor) -> dict[str, float]:
    """Per-micro-batch sums behind the logged loss, accuracy and reward gap."""
    return {"rm_loss": float(loss_sum.detach()), "accuracy": ((delta > 0).float() * weight).sum().item(),
            "reward_gap": (delta * weight).sum().item()}


# --------------------------------------------------------------------------- evaluation


def length_batches(data: RMData, batch_size: int) -> list[list[int]]:
    """Every pair once, in batches of similar length (less padding)."""
    order = sorted(range(len(data)), key=data.length)
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def score_pairs(model, data: RMData, batch_size: int, trainer: Trainer | None = None, all_heads: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards for every pair in `data`, in order: each pair's own head ([N] each), or
    with `all_heads` every head ([N, heads] each). With a `trainer`, each process scores its share."""
    was_training = model.training
    model.eval()
    device = trainer.device if trainer else next(model.parameters()).device

    def score(batches: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        scored = []
        for indices in batches:
            batch = data.collate(indices, device=device)
            rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards.float()
            chosen, rejected = (rewards.chunk(2) if all_heads else rewards_for_heads(rewards, batch["head_index"]))
            scored.append((chosen.cpu(), rejected.cpu()))
        return scored

    batches = length_batches(data, batch_size)
    results = trainer.map_shards(batches, score) if trainer else score(batches)
    model.train(was_training)
    columns = results[0][0].reshape(len(batches[0]), -1).shape[1] if results else 1
    chosen_all, rejected_all = torch.zeros(len(data), columns), torch.zeros(len(data), columns)
    for indices, (chosen, rejected) in zip(batches, results):
        chosen_all[indices] = chosen.reshape(len(indices), -1)
        rejected_all[indices] = rejected.reshape(len(indices), -1)
    if not all_heads:
        return chosen_all[:, 0], rejected_all[:, 0]
    return chosen_all, rejected_all


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, prefix: str = "eval_") -> dict[str, float]:
    """Pairwise accuracy (ties count half), mean BT loss and mean reward gap."""
    if chosen.numel() == 0:
        return {}
    delta = chosen - rejected
    accuracy = ((delta > 0).float() + 0.5 * (delta == 0).float()).mean().item()
    return {f"{prefix}accuracy": accuracy,
            f"{prefix}loss": losses.bradley_terry_loss(chosen, rejected).mean().item(),
            f"{prefix}reward_gap": delta.mean().item()}


def evaluate(model, data: RMData, batch_size: int, trainer: Trainer | None = None) -> dict[str, float]:
    chosen, rejected = score_pairs(model, data, batch_size, trainer)
    metrics = preference_metrics(chosen, rejected)
    if len(data.head_names) > 1:
        for head, name in enumerate(data.head_names):
            mask = data.head_index == head
            if mask.any():
                metrics[f"eval_{name}_accuracy"] = preference_metrics(chosen[mask], rejected[mask],
                                                                      prefix=f"eval_{name}_")[f"eval_{name}_accuracy"]
    return metrics


# --------------------------------------------------------------------------- training


def build_reward_model(config: Config, trainer: Trainer):
    """The RM to train: fresh heads on `config.model` (a LoRA base in bf16 when the run computes in bf16),
    with LoRA adapters, the contrastive term and gradient checkpointing as configured."""
    from align.models import load_reward_model
    from align.models.loading import enable_gradient_checkpointing

    model = load_reward_model(config.model, num_heads=len(config.heads), head_names=list(config.heads),
                              dropout=config.model_dropout,
                              dtype=trainer.weights_dtype(trainable=not config.lora.enabled))
    if config.lora.enabled:
        model.add_lora(config.lora)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.contrastive.enabled:  # the term's prototypes train and checkpoint with the model
        model = ContrastiveRewardModel(model, ContrastiveTerm(config.contrastive, model.hidden_size))
    return model


def train_reward_model(config: Config) -> dict:
    """Train an RM as `config` says; returns the summary (also written to summary.json)."""
    trainer = Trainer(config)
    data = load_rm_data(config)  # tokenized train/eval pairs, skip counts, truncation counts
    train, held_out = data.train, data.eval
    plan = plan_denoising(config.loss, train.strength, train.given_margin)
    train.apply_plan(plan)

    batches = BatchPlan(train.lengths(), config.batch_size, config.seed, trainer.rank, trainer.world_size)
    total_steps = trainer.total_steps(len(batches), config.grad_accum)
    model = trainer.prepare("model", build_reward_model(config, trainer), total_steps)
    state = trainer.resume(TrainState())
    contrastive = trainer.unwrap("model").term if config.contrastive.enabled else None

    def loss_fn(model, batch, step):
        return batch_loss(model, batch, step, config.loss.type, contrastive, trainer)

    optimize(trainer, model, train, batches, state, total_steps, loss_fn, held_out, desc="align rm")
    return finish(config, trainer, model, data, plan, state)


def optimize(trainer: Trainer, model, train: RMData, batches: BatchPlan, state: TrainState, total_steps: int,
             loss_fn, held_out: RMData | None = None, desc: str = "align rm") -> None:
    """The optimizer steps of an RM (`align rm`, and each ensemble member of `align strength`): per step,
    `grad_accum` global batches, each process its share -> `loss_fn(model, batch, step)` -> backward ->
    one AdamW step; metrics every `log_steps`, held-out evaluation every `eval_steps`, checkpoints every
    `save_steps` (time spent writing them is not training time)."""
    config = trainer.config
    model.train()
    stream = batches.stream(state.epoch, state.batch_in_epoch)
    progress = tqdm(total=total_steps, initial=state.step, desc=desc, dynamic_ncols=True, leave=desc == "align rm",
                    disable=not config.progress or not trainer.is_main)
    window: list[dict[str, float]] = []
    step_start = time.perf_counter()
    while state.step < total_steps:
        step_batches = [next(stream) for _ in range(config.grad_accum)]
        step_indices = [i for _, _, global_batch in step_batches for i in global_batch]
        sums: dict[str, float] = {"tokens": 0.0}
        for epoch, position, global_batch in trainer.accumulate(model, step_batches):
            local = batches.local(global_batch)
            batch = train.collate(local or global_batch[:1], device=trainer.device, weight=1.0 if local else 0.0)
            step = Step(len(step_indices), step_indices, len(global_batch) / len(step_indices))
            with trainer.autocast():
                loss, micro_sums = loss_fn(model, batch, step)
            trainer.backward(loss)
            for key, value in micro_sums.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["tokens"] += int(batch["attention_mask"].sum()) if local else 0
            state.examples_seen += len(global_batch)
            state.epoch, state.batch_in_epoch = epoch, position + 1
        grad_norm = trainer.optimizer_step("model")
        state.step += 1
        state.train_seconds += time.perf_counter() - step_start
        step_start = time.perf_counter()
        progress.update(1)
        stats, tokens = step_stats(trainer, sums, len(step_indices))
        state.tokens_seen += int(tokens)
        window.append(stats)

        if state.step % config.log_steps == 0 or state.step == total_steps:
            averaged = {key: sum(s[key] for s in window) / len(window) for key in window[0]}
            progress.set_postfix(loss=f"{averaged['loss']:.3f}", acc=f"{averaged['accuracy']:.2f}")
            trainer.log(state.step, epoch=state.epoch, learning_rate=trainer.learning_rate("model"),
                        grad_norm=grad_norm, **averaged)
            window = []
        last = state.step == total_steps
        if config.eval_steps and state.step % config.eval_steps == 0 and not last and held_out is not None \
                and len(held_out):
            trainer.log(state.step, **evaluate(model, held_out, config.eval_batch_size, trainer))
        if config.save_steps and state.step % config.save_steps == 0 and not last:
            trainer.save_checkpoint(state)
            step_start = time.perf_counter()
    progress.close()


def step_stats(trainer: Trainer, sums: dict[str, float], step_pairs: int) -> tuple[dict[str, float], float]:
    """The step's loss, accuracy and reward gap over every process's pairs, and its tokens."""
    rm_loss, correct, gap, tokens = trainer.sum_over_processes(sums["rm_loss"], sums["accuracy"],
                                                               sums["reward_gap"], sums["tokens"])
    stats = {"loss": rm_loss / step_pairs, "accuracy": correct / step_pairs, "reward_gap": gap / step_pairs}
    if "contrastive_loss" in sums:
        stats.update(rm_loss=stats["loss"], contrastive_loss=sums["contrastive_loss"])
        beta = trainer.unwrap("model").term.beta
        stats["loss"] = stats["rm_loss"] + beta * sums["contrastive_loss"]
    return stats, tokens


def finish(config: Config, trainer: Trainer, model, data, plan, state: TrainState) -> dict:
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
        **data.counts(), **plan.counts(),
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
