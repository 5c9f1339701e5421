"""The training core every trainer shares: one optimizer step, one checkpoint, one resume path,
one way to share data between processes, one way to count steps.

A trainer (rm, sft, ppo, the ensemble members of `align strength`, MetaRM) reads as its algorithm
and leaves the plumbing to `Trainer`:

    trainer = Trainer(config)                                   # accelerator, seed, run directory
    model = trainer.prepare("model", model, total_steps)        # AdamW + schedule, DDP/DeepSpeed/FSDP
    state = trainer.resume(TrainState())                        # resume=true: everything restored
    for micro in trainer.accumulate(model, micro_batches):      # no gradient sync until the last
        with trainer.autocast():
            loss = ...                                          # this process's share of the step's loss
        trainer.backward(loss)
    grad_norm = trainer.optimizer_step("model")                 # clip, step, schedule, zero
    trainer.save_checkpoint(state)                              # atomic, every process's RNG included

Losses are shares of the optimizer step's loss (sums over this process's examples divided by the
step's global example count), so N processes with per-device batch B/N compute exactly the
gradient of one process with batch B, whatever the micro-batch sizes.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.tracking import filter_trackers
from accelerate.utils import DistributedType, gather_object
from transformers import get_scheduler

from align.config import check_tracker
from align.training.lora import load_trained_weights
from align.training.precision import (
    check_grad_accum,
    make_accelerator,
    mixed_precision,
    set_seed,
    weights_dtype,
)
from align.training.rundir import RunDir

STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """Where a run is. Trainers with more to remember subclass it (PPO); every field is saved."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    """Index of the next global batch of `epoch` (the order is a function of seed and epoch)."""
    examples_seen: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0


@dataclass
class Part:
    """One trained model with its optimizer and schedule (as prepared by accelerate)."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    tokenizer: Any = None


def make_optimizer_and_scheduler(model: torch.nn.Module, config, total_steps: int, learning_rate: float):
    """AdamW (no weight decay on biases and norms) with linear warm-up then `config.lr_schedule` decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over every parameter (HF Trainer's default since torch 2.8); on a 2-core CPU an AdamW step
    # over SmolLM2-135M's fp32 parameters takes 0.06 s instead of 0.5 s with the per-parameter loop
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay)
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate, fused=fused)
    schedule = "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load what `model.save_pretrained(directory)` wrote into the live `model` (our wrappers know their layout)."""
    if hasattr(model, "load_weights"):
        model.load_weights(directory)
    else:
        load_trained_weights(model, directory)


_TRACKING: list = []
"""The accelerator of the last run this process started with a tracker. A process may hold several runs in turn
(`align demo`, the members of `align strength`): a run's trackers are finished when the next run starts or the
process exits, and an earlier run then logs to metrics.jsonl alone. (accelerate's `end_training` would also
destroy the process group, which the later runs of a multi-process launch still need.)"""


def _finish_open_trackers() -> None:
    while _TRACKING:
        accelerator = _TRACKING.pop()
        for tracker in accelerator.trackers:
            tracker.finish()
        accelerator.trackers.clear()


atexit.register(_finish_open_trackers)


def start_trackers(accelerator, config, run_dir: Path) -> None:
    """`report_to`: accelerate's tracker (`log_with`, `init_trackers`) beside metrics.jsonl, started on the main
    process only, with the resolved config as its hyperparameters. TensorBoard writes to `run_dir/tensorboard/`;
    wandb and mlflow name the run after `run_dir` in the project / experiment `align`."""
    _finish_open_trackers()
    report_to = getattr(config, "report_to", "none")
    if report_to == "none":
        return
    check_tracker(report_to)  # a config built in Python skipped validate()
    accelerator.project_configuration.logging_dir = str(run_dir)
    accelerator.log_with = filter_trackers([report_to], accelerator.logging_dir)
    flat: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        for name, item in (value.items() if isinstance(value, dict) else [(None, value)]):
            flat[f"{key}.{name}" if name else key] = item if isinstance(item, (int, float, str, bool)) else str(item)
    accelerator.init_trackers("tensorboard" if report_to == "tensorboard" else "align", config=flat,
                              init_kwargs={"wandb": {"name": run_dir.name, "dir": str(run_dir)},
                                           "mlflow": {"run_name": run_dir.name}})
    _TRACKING.append(accelerator)


class Trainer:
    """See the module docstring."""

    def __init__(self, config, output_dir: str | Path | None = None):
        self.config = config
        self.run = RunDir(output_dir if output_dir is not None else config.output_dir,
                          keep_checkpoints=getattr(config, "keep_checkpoints", 2))
        self.accelerator = make_accelerator(config.precision, config.grad_accum)
        set_seed(config.seed)
        self.parts: dict[str, Part] = {}
        self.stateful: dict[str, Any] = {}
        """Objects with `state_dict()` / `load_state_dict()` saved with each checkpoint (JSON-serialisable
        state: a curriculum, running reward moments, a KL controller)."""
        self.resumed_from: Path | None = None
        self.accelerator.register_save_state_pre_hook(self._save_models)
        self.accelerator.register_load_state_pre_hook(self._load_models)
        start_trackers(self.accelerator, config, self.run.path)

    # ------------------------------------------------------------------ processes and precision
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def bf16(self) -> bool:
        return mixed_precision(self.config.precision) == "bf16"

    @property
    def precision_name(self) -> str:
        """What the run computes in: `bf16` or `fp32` (summary.json `precision`)."""
        return "bf16" if self.bf16 else "fp32"

    def weights_dtype(self, trainable: bool) -> torch.dtype:
        return weights_dtype(self.config.precision, trainable)

    def autocast(self):
        return self.accelerator.autocast()

    def total_steps(self, units_per_epoch: int, units_per_step: int) -> int:
        """The one way steps are counted: `max_steps` if set, else `epochs` passes over `units_per_epoch`
        (global batches, prompts) taken `units_per_step` at a time (fractions of an epoch allowed)."""
        if self.config.max_steps > 0:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * math.ceil(units_per_epoch / units_per_step)))

    # ------------------------------------------------------------------ models and the optimizer step
    def prepare(self, name: str, model: torch.nn.Module, total_steps: int, learning_rate: float | None = None,
                tokenizer=None) -> torch.nn.Module:
        """Give `model` an AdamW optimizer and schedule over `total_steps` optimizer steps, prepare all three
        for the launch (DDP, DeepSpeed, FSDP) and register them as part `name` (checkpointed under that name)."""
        lr = self.config.learning_rate if learning_rate is None else learning_rate
        optimizer, scheduler = make_optimizer_and_scheduler(model, self.config, total_steps, lr)
        model, optimizer, scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        check_grad_accum(self.accelerator, self.config.grad_accum)  # DeepSpeed may have imposed its own
        self.parts[name] = Part(model, optimizer, scheduler, tokenizer)
        return model

    def unwrap(self, name: str) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.parts[name].model)

    def accumulate(self, model: torch.nn.Module, micro_batches: list) -> Iterator:
        """Yield the micro-batches of one optimizer step of `model`; gradients are synchronised between
        processes on the last one only (the forward pass must run inside the loop body)."""
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            self.accelerator.sync_gradients = last
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                yield micro

    def backward(self, loss: torch.Tensor) -> None:
        """`loss` is this process's share of the optimizer step's loss. accelerate divides every backward by
        the gradient-accumulation steps and the data-parallel reduction averages over processes; both are
        undone here, so the gradient is exactly that of the step's loss."""
        self.accelerator.backward(loss * self.world_size * self.accelerator.gradient_accumulation_steps)

    def optimizer_step(self, name: str) -> float | None:
        """Clip the global gradient norm (`max_grad_norm`), step the optimizer and the schedule, zero the
        gradients. Returns the norm before clipping (None without clipping)."""
        part = self.parts[name]
        norm = None
        if self.config.max_grad_norm > 0:  # under DeepSpeed its own `gradient_clipping` clips; the norm may be None
            norm = self.accelerator.clip_grad_norm_(part.model.parameters(), self.config.max_grad_norm)
            norm = float(norm) if norm is not None else None
        part.optimizer.step()
        part.scheduler.step()
        part.optimizer.zero_grad(set_to_none=True)
        return norm

    def end_step(self, state: TrainState, started: float) -> float:
        """Count an optimizer step taken since `started` (a `time.perf_counter()`); returns the next start."""
        now = time.perf_counter()
        state.step += 1
        state.train_seconds += now - started
        return now

    def learning_rate(self, name: str) -> float:
        return self.parts[name].scheduler.get_last_lr()[0]

    # ------------------------------------------------------------------ across processes
    def sum_over_processes(self, *values: float) -> list[float]:
        """Each value summed over every process (one all-reduce)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.accelerator.reduce(tensor, "sum").tolist()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor of the same shape from every process (in rank order)."""
        return self.accelerator.gather(tensor.contiguous()) if self.world_size > 1 else tensor

    def gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """The rows of `tensor` from every process, in rank order (row counts may differ); only this
        process's own rows carry gradient."""
        if self.world_size == 1:
            return tensor
        sizes = self.accelerator.gather(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
        padded = self.accelerator.pad_across_processes(tensor.detach().contiguous(), dim=0)
        everything = self.accelerator.gather(padded)
        width = everything.shape[0] // self.world_size
        pieces = [everything[r * width: r * width + n] for r, n in enumerate(sizes)]
        pieces[self.rank] = tensor
        return torch.cat(pieces)

    def gather_objects(self, items: list) -> list:
        """Concatenate a list of picklable objects from every process (in rank order)."""
        return gather_object(list(items)) if self.world_size > 1 else list(items)

    def map_shards(self, items: list, compute: Callable[[list], list]) -> list:
        """`compute` (a list of items -> a list of CPU results) on this process's share of `items`; returns
        every item's result, in order. Shares are equal (padded with a repeated item), so every process runs
        the same number of forward passes, as sharded models need."""
        if self.world_size == 1 or not items:
            return list(compute(list(items)))
        share = math.ceil(len(items) / self.world_size)
        mine = list(range(self.rank, len(items), self.world_size))
        padded = mine + [mine[-1] if mine else 0] * (share - len(mine))
        results = list(compute([items[i] for i in padded]))[:len(mine)]
        out: list = [None] * len(items)
        for rank, rank_results in enumerate(gather_object([results])):
            for j, result in enumerate(rank_results):
                out[rank + j * self.world_size] = result
        return out

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ run directory
    def log(self, step: int, **metrics: Any) -> None:
        """One line of metrics.jsonl, and the same numbers to the `report_to` tracker (main process only)."""
        if self.is_main:
            self.run.log(step, **metrics)
            if self.accelerator.trackers:
                self.accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def resume(self, state: TrainState) -> TrainState:
        """With `resume=true` and a checkpoint in the run directory: restore the parts, the stateful objects,
        every process's RNG, and return the saved state (metrics logged after it are dropped). Otherwise
        start fresh metrics and return `state` as given. Writes config.yaml either way."""
        checkpoint = self.run.latest_checkpoint() if self.config.resume else None
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint))
            saved = json.loads((checkpoint / STATE_FILE).read_text())
            state = type(state)(**saved["state"])
            for name, obj in self.stateful.items():
                if name in saved:
                    obj.load_state_dict(saved[name])
            self.resumed_from = checkpoint
        if self.is_main:
            if checkpoint is None:
                self.run.reset_metrics()
            else:
                self.run.truncate_metrics_after(state.step)
                print(f"resumed from {checkpoint} (step {state.step})")
            self.run.save_config(self.config)
        self.wait()
        return state

    def save_checkpoint(self, state: TrainState) -> Path | None:
        """checkpoints/step-N/, whole or not at all: every part's model in Hugging Face / peft format under its
        name (loadable on its own), optimizers, schedules and every process's RNG (accelerate's `save_state`),
        and `state` with the stateful objects in trainer_state.json."""
        self.wait()
        if self.is_main:
            self.run.begin_checkpoint(state.step)
        self.wait()
        tmp = self.run.checkpoint_root / f".tmp-step-{state.step}"
        self.accelerator.save_state(str(tmp))
        path = None
        if self.is_main:
            payload = {"state": asdict(state), **{name: obj.state_dict() for name, obj in self.stateful.items()}}
            (tmp / STATE_FILE).write_text(json.dumps(payload, indent=2))
        self.wait()
        if self.is_main:
            path = self.run.commit_checkpoint(tmp, state.step)
        self.wait()
        return path

    def save_model(self, name: str, directory: str | Path) -> None:
        """The trained model of part `name` (and its tokenizer) in Hugging Face / peft format; every process
        calls it (a sharded model is gathered first)."""
        part = self.parts[name]
        sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        state_dict = self.accelerator.get_state_dict(part.model) if sharded else None
        if self.is_main:
            model = self.accelerator.unwrap_model(part.model)
            model.save_pretrained(directory, **({"state_dict": state_dict} if state_dict is not None else {}))
            if part.tokenizer is not None:
                part.tokenizer.save_pretrained(directory)
        self.wait()

    def _ours(self, models: list) -> list[str]:
        """Names of the parts among accelerate's `models` (it lists DDP-wrapped models unwrapped)."""
        listed = [self.accelerator.unwrap_model(model) for model in models]
        return [name for name, part in self.parts.items()
                if any(self.accelerator.unwrap_model(part.model) is model for model in listed)]

    def _save_models(self, models: list, weights: list, output_dir: str) -> None:
        """accelerate's save hook: our parts are written with `save_pretrained` (HF / peft layout) instead of
        accelerate's flat state dicts. Sharded models (DeepSpeed, FSDP) are saved by accelerate itself."""
        for name in self._ours(models):
            part = self.parts[name]
            if self.is_main:
                self.accelerator.unwrap_model(part.model).save_pretrained(Path(output_dir) / name)
                if part.tokenizer is not None:
                    part.tokenizer.save_pretrained(Path(output_dir) / name)
        weights.clear()

    def _load_models(self, models: list, input_dir: str) -> None:
        for name in self._ours(models):
            directory = Path(input_dir) / name
            if not directory.is_dir():
                raise FileNotFoundError(f"{input_dir}: the checkpoint has no {name}/ to resume {name!r} from")
            load_weights(self.accelerator.unwrap_model(self.parts[name].model), directory)
        models.clear()
