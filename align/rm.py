"""`align rm`: train a reward model on preference pairs.

The algorithm, top to bottom in `train_reward_model`:
load pairs -> tokenize (keep the end of long dialogues) -> per step: one forward pass over
chosen and rejected -> pairwise loss (plain, denoised, + contrastive term) -> AdamW step ->
periodic eval, metrics and atomic checkpoints -> final eval, model, summary and report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from align import losses
from align.checkpoint import TrainState, load_checkpoint, save_checkpoint
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
from align.runlog import RunDir
from align.training import (
    begin_or_resume,
    make_accelerator,
    make_optimizer_and_scheduler,
    set_seed,
    total_optimizer_steps,
)


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


def pair_losses(chosen: torch.Tensor, rejected: torch.Tensor, flip: torch.Tensor, alpha: torch.Tensor,
                margin: torch.Tensor) -> torch.Tensor:
    """Per-pair loss with the denoising targets applied (all zeros/False = plain Bradley-Terry)."""
    chosen, rejected = losses.flip_pairs(chosen, rejected, flip)
    return losses.soft_label_loss(chosen, rejected, alpha, margin)


def rewards_for_heads(rewards: torch.Tensor, head_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split [2B, heads] rewards into the chosen and rejected reward of each pair's own head."""
    half = rewards.shape[0] // 2
    picked = rewards.gather(1, head_index.repeat(2).unsqueeze(1)).squeeze(1)
    return picked[:half], picked[half:]


def batch_loss(model, batch: dict[str, torch.Tensor], contrastive=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss, with step stats. Plain: one forward pass over chosen+rejected, the mean pair
    loss over kept pairs. With a contrastive term (`align.contrastive.ContrastiveTerm`): two
    passes under dropout give two views; L = mean of the pair loss over both views + β·L_contrastive
    on their features."""
    views = [model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
             for _ in range(1 if contrastive is None else 2)]
    rm_loss, delta = 0.0, 0.0
    for output in views:
        chosen, rejected = rewards_for_heads(output.rewards, batch["head_index"])
        per_pair = pair_losses(chosen, rejected, batch["flip"], batch["alpha"], batch["margin"])
        rm_loss = rm_loss + losses.masked_mean(per_pair, batch["keep"]) / len(views)
        delta = delta + (chosen - rejected).detach().float() / len(views)
    stats = {"accuracy": (delta > 0).float().mean().item(), "reward_gap": delta.mean().item()}
    if contrastive is None:
        return rm_loss, {"loss": rm_loss.item(), **stats}
    contrastive_loss = contrastive(views[0].features, views[1].features)
    loss = rm_loss + contrastive.beta * contrastive_loss
    return loss, {"loss": loss.item(), "rm_loss": rm_loss.item(), "contrastive_loss": contrastive_loss.item(), **stats}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def score_pairs(model, data: RMData, batch_size: int, accelerator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards (each pair's own head) for every pair in `data`, in order."""
    was_training = model.training
    model.eval()
    chosen_all, rejected_all = [], []
    order = sorted(range(len(data)), key=data.length)  # group by length: less padding
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = data.collate(indices, device=accelerator.device if accelerator else None)
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards.float()
        chosen, rejected = rewards_for_heads(rewards, batch["head_index"])
        chosen_all.append(chosen.cpu())
        rejected_all.append(rejected.cpu())
    model.train(was_training)
    if not order:
        return torch.zeros(0), torch.zeros(0)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(chosen_all)[inverse], torch.cat(rejected_all)[inverse]


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, prefix: str = "eval_") -> dict[str, float]:
    """Pairwise accuracy (ties count half), mean BT loss and mean reward gap."""
    if chosen.numel() == 0:
        return {}
    delta = chosen - rejected
    accuracy = ((delta > 0).float() + 0.5 * (delta == 0).float()).mean().item()
    return {f"{prefix}accuracy": accuracy,
            f"{prefix}loss": losses.bradley_terry_loss(chosen, rejected).mean().item(),
            f"{prefix}reward_gap": delta.mean().item()}


def evaluate(model, data: RMData, batch_size: int, accelerator=None) -> dict[str, float]:
    chosen, rejected = score_pairs(model, data, batch_size, accelerator)
    metrics = preference_metrics(chosen, rejected)
    if len(data.head_names) > 1:
        for head, name in enumerate(data.head_names):
            mask = data.head_index == head
            if mask.any():
                head_metrics = preference_metrics(chosen[mask], rejected[mask], prefix=f"eval_{name}_")
                metrics[f"eval_{name}_accuracy"] = head_metrics[f"eval_{name}_accuracy"]
    return metrics


# --------------------------------------------------------------------------- training


def train_reward_model(config: Config) -> dict:
    """Train an RM as `config` says; returns the summary (also written to summary.json)."""
    run = RunDir(config.output_dir)
    set_seed(config.seed)
    accelerator = make_accelerator(config)
    data = load_rm_data(config)  # tokenized train/eval pairs, skip counts, truncation counts
    train, held_out = data.train, data.eval

    plan = plan_denoising(config.loss, train.strength, train.given_margin)
    train.apply_plan(plan)

    from align.models import load_reward_model

    model = load_reward_model(config.model, num_heads=len(config.heads), head_names=list(config.heads),
                              dropout=config.model_dropout)
    if config.contrastive.enabled:  # the term's prototypes train and checkpoint with the model
        model = ContrastiveRewardModel(model, ContrastiveTerm(config.contrastive, model.hidden_size))
    total_steps = total_optimizer_steps(config, train.num_batches(config.batch_size))
    optimizer, scheduler = make_optimizer_and_scheduler(model, config, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = begin_or_resume(run, config, "rm", lambda checkpoint: load_checkpoint(
        checkpoint, accelerator.unwrap_model(model), optimizer, scheduler)) or TrainState()

    contrastive = accelerator.unwrap_model(model).term if config.contrastive.enabled else None
    model.train()
    stream = train.micro_batch_stream(config.batch_size, config.seed, state.epoch, state.batch_in_epoch,
                                      accelerator.process_index, accelerator.num_processes)
    progress = tqdm(total=total_steps, initial=state.step, desc="align rm", disable=not config.progress,
                    dynamic_ncols=True)
    window: list[dict[str, float]] = []
    step_start = time.perf_counter()
    while state.step < total_steps:
        for micro in range(config.grad_accum):
            epoch, position, indices = next(stream)
            batch = train.collate(indices, device=accelerator.device)
            with accelerator.autocast():
                loss, stats = batch_loss(model, batch, contrastive)
            accelerator.backward(loss / config.grad_accum)
            state.pairs_seen += len(indices)
            state.tokens_seen += int(batch["attention_mask"].sum())
            state.epoch, state.batch_in_epoch = epoch, position + 1
            window.append(stats)
        if config.max_grad_norm > 0:
            stats["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.train_seconds += time.perf_counter() - step_start
        step_start = time.perf_counter()
        progress.update(1)

        if state.step % config.log_steps == 0 or state.step == total_steps:
            averaged = {key: sum(s[key] for s in window) / len(window) for key in window[0] if key != "grad_norm"}
            progress.set_postfix(loss=f"{averaged['loss']:.3f}", acc=f"{averaged['accuracy']:.2f}")
            if accelerator.is_main_process:
                run.log(state.step, epoch=state.epoch, learning_rate=scheduler.get_last_lr()[0],
                        grad_norm=stats.get("grad_norm"), **averaged)
            window = []
        if config.eval_steps and state.step % config.eval_steps == 0 and state.step != total_steps and len(held_out):
            metrics = evaluate(model, held_out, config.eval_batch_size, accelerator)
            if accelerator.is_main_process:
                run.log(state.step, **metrics)
        if config.save_steps and state.step % config.save_steps == 0 and state.step != total_steps:
            save_checkpoint(run, state, accelerator, model, optimizer, scheduler)
            step_start = time.perf_counter()  # checkpoint writing is not training time
    progress.close()

    final_metrics = evaluate(model, held_out, config.eval_batch_size, accelerator) if len(held_out) else {}
    eval_chosen_features, eval_rejected_features = eval_features(model, held_out, config.eval_batch_size, accelerator)
    final_metrics.update(feature_separability(eval_chosen_features, eval_rejected_features, config.seed))
    unwrapped = accelerator.unwrap_model(model)
    summary = {
        **final_metrics,
        "train_pairs": len(train), "eval_pairs": len(held_out), "steps": state.step,
        **data.counts(), **plan.counts(),
        "train_seconds": round(state.train_seconds, 3),
        "pairs_per_second": state.pairs_seen / max(state.train_seconds, 1e-9),
        "tokens_per_second": state.tokens_seen / max(state.train_seconds, 1e-9),
        "model_dir": str(run.path / "model"),
    }
    if accelerator.is_main_process:
        run.log(state.step, **final_metrics)
        unwrapped.save_pretrained(run.path / "model")
        if config.report:
            from align.report import write_rm_report

            chosen, rejected = score_pairs(model, held_out, config.eval_batch_size, accelerator)
            summary["report"] = str(write_rm_report(run, summary, chosen - rejected))
            if len(held_out):
                append_contrastive_report(run, eval_chosen_features, eval_rejected_features, final_metrics,
                                          config.contrastive)
        run.write_summary(summary)
    accelerator.wait_for_everyone()
    return summary


def run(config: Config) -> dict:
    summary = train_reward_model(config)
    accuracy = summary.get("eval_accuracy")
    print(f"align rm: {summary['train_pairs']} pairs, {summary['steps']} steps, "
          f"eval accuracy {accuracy:.3f}" if accuracy is not None else "align rm: done (no eval pairs)")
    print(f"align rm: model in {summary['model_dir']}; summary in {config.output_dir}/summary.json"
          + (f"; report in {summary['report']}" if "report" in summary else ""))
    return summary
