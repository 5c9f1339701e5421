"""The shared training plumbing: precision and the accelerator, batches shared between processes,
the optimizer step, checkpoints and resume (`Trainer`), the run directory, LoRA."""
from align.training.batches import BatchPlan, PairBatcher, epoch_stream
from align.training.precision import cpu_has_native_bf16, mixed_precision, set_seed, weights_dtype
from align.training.rundir import RunDir
from align.training.trainer import Part, Trainer, TrainState

__all__ = ["BatchPlan", "PairBatcher", "Part", "RunDir", "TrainState", "Trainer", "cpu_has_native_bf16",
           "epoch_stream", "mixed_precision", "set_seed", "weights_dtype"]
