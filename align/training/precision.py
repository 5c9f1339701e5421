"""Which precision a run computes in, the dtype its weights load in, and its `Accelerator`.

`precision=auto` means bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU
with AVX512-BF16 or AMX) and fp32 elsewhere: on an AVX2-only CPU PyTorch emulates bf16 and a
MiniLM RM step runs several times slower than in fp32. Under `accelerate launch
--mixed_precision ...` the launch decides `auto`.

Weights: a weight that trains stays fp32 (autocast computes in bf16; DeepSpeed and FSDP make
their own 16-bit copies from it); a weight that does not train (the PPO reference, a frozen reward
model, the base under LoRA adapters) loads directly in bf16 when the run computes in bf16, which
halves its memory.
"""
from __future__ import annotations

import atexit
import os
import random
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState

from align.config import ConfigError


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AVX512-BF16 or AMX (bf16 multiplied in hardware)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision(precision: str) -> str:
    """accelerate's name for the precision a run computes in: `bf16` or `no` (fp32)."""
    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched in ("bf16", "no"):
        return launched
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def weights_dtype(precision: str, trainable: bool) -> torch.dtype:
    """The dtype a model's weights load in (see the module docstring)."""
    return torch.bfloat16 if not trainable and mixed_precision(precision) == "bf16" else torch.float32


def make_accelerator(precision: str, grad_accum: int = 1) -> Accelerator:
    """The `Accelerator` of one run: one process on a CPU, the same code under `accelerate launch`.

    accelerate keeps its state process-wide and refuses a second `Accelerator` with another
    precision. A process may hold several runs in turn (`align demo`, the tests, a notebook that
    trains an fp32 and then a bf16 reward model), so a run that asks for another precision than the
    previous one starts from a fresh accelerator state; the process group (accelerate's
    `PartialState`) is kept. The scheduler is stepped by the trainer once per optimizer step
    (`step_scheduler_with_optimizer=False`; accelerate would otherwise step it once per process).
    """
    wanted = mixed_precision(precision)
    previous = AcceleratorState._shared_state.get("_mixed_precision")
    if previous is not None and previous != wanted:
        AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=wanted, gradient_accumulation_steps=grad_accum,
                              step_scheduler_with_optimizer=False, cpu=cpu_processes())
    check_grad_accum(accelerator, grad_accum)
    if accelerator.num_processes > 1:
        atexit.unregister(destroy_process_group)  # registered once however many runs the process holds
        atexit.register(destroy_process_group)
    return accelerator


def destroy_process_group() -> None:
    """At exit, once: a gloo process group left to the interpreter's teardown sometimes aborts the process
    ("terminate called without an active exception", exit -6) after the run's work is done."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def cpu_processes() -> bool:
    """Several processes on a machine without CUDA (`torchrun --nproc_per_node 2 -m align.cli ...`): CPU
    processes that talk over gloo, which accelerate only sets up when told the run is on the CPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def is_main_process() -> bool:
    """True in the process that writes a run's files (rank 0), for code that holds no `Trainer`."""
    return PartialState(cpu=cpu_processes()).is_main_process


def check_grad_accum(accelerator: Accelerator, grad_accum: int) -> None:
    """The trainer accumulates `grad_accum` micro-batches per optimizer step; an accelerate or DeepSpeed
    config that says otherwise would step on other boundaries."""
    if accelerator.gradient_accumulation_steps != grad_accum:
        raise ConfigError(f"grad_accum: the run accumulates {grad_accum} micro-batches per optimizer step but the "
                          f"accelerate/DeepSpeed config sets gradient_accumulation_steps="
                          f"{accelerator.gradient_accumulation_steps}; remove that key from the accelerate config "
                          "(the trainer passes grad_accum) or make the two equal")
