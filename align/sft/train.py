"""`align sft`: supervised fine-tuning of a policy on prompt/response data.

The algorithm, top to bottom in `train_sft`:
load rows -> render each prompt exactly as generation will (chat template or plain text) ->
tokens = prompt + response + EOS, labels = -100 on the prompt (the loss is on the response only)
-> optional packing into `max_length` rows -> per step: next-token cross-entropy, AdamW, schedule
-> periodic eval loss, metrics and atomic checkpoints -> final model (full or LoRA adapters).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from align.config import ConfigError, TrainConfig, doc, nested
from align.generation import keep_logits
from align.models import load_causal_lm, load_tokenizer
from align.models.loading import enable_gradient_checkpointing, freeze_word_embeddings
from align.sft.data import IGNORE, Example, collate, load_examples, pack, response_tokens
from align.training import BatchPlan, Trainer, TrainState
from align.training.lora import LoraOptions, add_lora


@dataclass
class Config(TrainConfig):
    """`align sft`: supervised fine-tuning."""

    model: str = doc("Policy to fine-tune: an embedded name (`smollm2-135m`, `tiny-llama`), a hub id or a path.",
                     "smollm2-135m")
    output_dir: str = doc("Directory for config.yaml, metrics.jsonl, summary.json, checkpoints and model/.",
                          "runs/sft")
    data: str | None = doc("Rows with `prompt` and `response` (or `reference`; preference rows use `chosen`). "
                           "Empty: the domain's prompts with a reference.", None)
    domain_options: dict = doc("Keyword options for the domain adapter.", {})
    prompt_format: Literal["chat", "plain"] = doc("`chat`: the tokenizer's chat template (or Human:/Assistant: "
                                                  "turns); `plain`: prompt text followed directly by the response.",
                                                  "chat")
    packing: bool = doc("Concatenate examples into rows of `max_length` tokens (no padding; examples in one row "
                        "attend to each other, as in TRL's packing).", False)
    learning_rate: float = doc("Peak learning rate.", 2e-5)
    log_steps: int = doc("Append to metrics.jsonl every N optimizer steps.", 5)
    eval_batch_size: int = doc("Examples per evaluation batch.", 16)
    lora: LoraOptions = nested(LoraOptions, "LoRA adapters instead of full fine-tuning.")

    def validate(self) -> None:
        super().validate()
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size: expected a positive number, got {self.eval_batch_size!r}")


def response_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled (response) tokens, and their count: token t predicts
    label t+1. Logits are computed only at positions some row's loss reads (`logits_to_keep`): the prompt's
    vocabulary projection is wasted work, most of a step for a 262k-vocabulary model such as Gemma 3. The
    trainer divides by the step's response tokens over every process and micro-batch."""
    labels = batch["labels"]
    positions = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)
    keep = keep_logits(model, positions)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                   **keep).logits
    logits, targets = (logits if keep else logits[:, positions]).float(), labels[:, positions + 1]
    count = int((targets != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    return loss, count


# --------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model, examples: list[Example], batch_size: int, pad_id: int, trainer: Trainer) -> dict[str, float]:
    """Token-weighted response loss and perplexity on held-out examples (each process takes its share)."""
    if not examples:
        return {}
    was_training = model.training
    model.eval()

    def loss_sums(chunks: list[list[Example]]) -> list[tuple[float, int]]:
        out = []
        for chunk in chunks:
            batch = collate(chunk, pad_id, trainer.device)
            with trainer.autocast():
                loss, count = response_loss(model, batch)
            out.append((loss.item(), count))
        return out

    chunks = [examples[start:start + batch_size] for start in range(0, len(examples), batch_size)]
    results = trainer.map_shards(chunks, loss_sums)
    model.train(was_training)
    mean = sum(loss for loss, _ in results) / max(sum(count for _, count in results), 1)
    return {"eval_loss": mean, "eval_perplexity": math.exp(min(mean, 50.0))}


def build_policy(config: Config, trainer: Trainer):
    """The causal LM to fine-tune: full weights in fp32, or a bf16 base (when the run computes in bf16) with
    LoRA adapters; frozen word embeddings and gradient checkpointing as configured."""
    model = load_causal_lm(config.model, dtype=trainer.weights_dtype(trainable=not config.lora.enabled))
    if config.lora.enabled:
        model = add_lora(model, config.lora)
    if config.freeze_word_embeddings:
        freeze_word_embeddings(model)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def train_sft(config: Config) -> dict:
    """Fine-tune as `config` says; returns the summary (also written to summary.json)."""
    trainer = Trainer(config)
    tokenizer = load_tokenizer(config.model)
    train, held_out, counts = load_examples(config, tokenizer)
    if config.packing:
        train = pack(train, config.max_length)
    batches = BatchPlan([len(e.input_ids) for e in train], config.batch_size, config.seed, trainer.rank,
                        trainer.world_size)
    total_steps = trainer.total_steps(len(batches), config.grad_accum)
    model = trainer.prepare("model", build_policy(config, trainer), total_steps, tokenizer=tokenizer)
    state = trainer.resume(TrainState())

    model.train()
    stream = batches.stream(state.epoch, state.batch_in_epoch)
    progress = tqdm(total=total_steps, initial=state.step, desc="align sft", dynamic_ncols=True,
                    disable=not config.progress or not trainer.is_main)
    window: list[float] = []
    started = time.perf_counter()
    while state.step < total_steps:
        step_batches = [next(stream) for _ in range(config.grad_accum)]
        step_tokens = sum(response_tokens(train[i]) for _, _, global_batch in step_batches for i in global_batch)
        step_loss, step_tokens_here = 0.0, 0
        for epoch, position, global_batch in trainer.accumulate(model, step_batches):
            local = batches.local(global_batch)
            batch = collate([train[i] for i in local or global_batch[:1]], tokenizer.pad_token_id, trainer.device)
            with trainer.autocast():
                loss, count = response_loss(model, batch)
            loss = loss if local else loss * 0.0  # a stand-in example keeps the processes in step, adds nothing
            trainer.backward(loss / max(step_tokens, 1))
            step_loss += loss.item()
            step_tokens_here += count if local else 0
            state.examples_seen += len(global_batch)
            state.epoch, state.batch_in_epoch = epoch, position + 1
        grad_norm = trainer.optimizer_step("model")
        started = trainer.end_step(state, started)
        progress.update(1)
        loss_sum, tokens = trainer.sum_over_processes(step_loss, step_tokens_here)
        state.tokens_seen += int(tokens)
        window.append(loss_sum / max(step_tokens, 1))
        if state.step % config.log_steps == 0 or state.step == total_steps:
            progress.set_postfix(loss=f"{sum(window) / len(window):.3f}")
            trainer.log(state.step, epoch=state.epoch, loss=sum(window) / len(window), grad_norm=grad_norm,
                        learning_rate=trainer.learning_rate("model"))
            window = []
        if config.eval_steps and state.step % config.eval_steps == 0 and state.step != total_steps and held_out:
            trainer.log(state.step, **evaluate(model, held_out, config.eval_batch_size, tokenizer.pad_token_id,
                                               trainer))
        if config.save_steps and state.step % config.save_steps == 0 and state.step != total_steps:
            trainer.save_checkpoint(state)
            started = time.perf_counter()
    progress.close()

    final = evaluate(model, held_out, config.eval_batch_size, tokenizer.pad_token_id, trainer)
    summary = {**final, "train_examples": len(train), "eval_examples": len(held_out), "steps": state.step,
               "precision": trainer.precision_name, "processes": trainer.world_size,
               "packed": config.packing, **counts, "train_seconds": round(state.train_seconds, 3),
               "response_tokens_per_second": state.tokens_seen / max(state.train_seconds, 1e-9),
               "model_dir": str(trainer.run.path / "model")}
    trainer.save_model("model", trainer.run.path / "model")
    trainer.run.write_model_card(config, summary, "sft")
    if trainer.is_main:
        if final:
            trainer.log(state.step, **final)
        trainer.run.write_summary(summary)
    trainer.wait()
    return summary


def run(config: Config) -> dict:
    summary = train_sft(config)
    loss = summary.get("eval_loss")
    print(f"align sft: {summary['train_examples']} examples, {summary['steps']} steps"
          + (f", eval loss {loss:.3f}" if loss is not None else "") + f"; model in {summary['model_dir']}")
    return summary
