"""Pieces every trainer shares: seeding, the accelerate set-up, optimizer and schedule."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import get_scheduler


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Elsewhere PyTorch
    emulates it: a MiniLM RM step under bf16 autocast measured ~15x slower than fp32 on an
    AVX2-only EPYC."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision(precision: str) -> str:
    """`auto` -> bf16 where the device runs it natively (CUDA with bf16, a CPU with AVX512-BF16/AMX),
    else full precision."""
    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def make_accelerator(config) -> Accelerator:
    """One process on a CPU; the same code under `accelerate launch` on several GPUs."""
    return Accelerator(mixed_precision=mixed_precision(config.precision))


def make_optimizer_and_scheduler(model: torch.nn.Module, config, total_steps: int):
    """AdamW (no weight decay on biases and norms) with linear warm-up then `config.lr_schedule` decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    schedule = "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


def total_optimizer_steps(config, micro_batches_per_epoch: int) -> int:
    """`max_steps` if set, else enough optimizer steps for `epochs` passes (fractions allowed)."""
    if config.max_steps > 0:
        return config.max_steps
    steps_per_epoch = max(1, math.ceil(micro_batches_per_epoch / config.grad_accum))
    return max(1, math.ceil(config.epochs * steps_per_epoch))


def begin_or_resume(run, config, command: str, restore):
    """With `resume=true` and a checkpoint in `run`, return `restore(checkpoint_dir)` (the training
    state) and drop the metrics logged after it; otherwise start fresh metrics and return None."""
    checkpoint = run.latest_checkpoint() if config.resume else None
    if checkpoint is None:
        run.reset_metrics()
        run.save_config(config)
        return None
    state = restore(checkpoint)
    run.truncate_metrics_after(state.step)
    run.save_config(config)
    print(f"align {command}: resumed from {checkpoint} (step {state.step})")
    return state
