"""Per-GPU memory formulas: pure functions of parameter counts, shapes and the sharding strategy.

Everything is in bytes (`GIB` converts for display). Notation: Ψ parameters, N processes that
shard (accelerate's `num_processes`), h hidden size, I MLP (intermediate) size, L layers, V
vocabulary, t tokens in a batch (sequences × length).

Model states (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", §3 and Fig. 1, with K = 12 for mixed-precision Adam):

    strategy            weights       gradients     optimizer (AdamW)     buffers
    one GPU / DDP       4Ψ (fp32)     4Ψ (fp32)     8Ψ (m, v fp32)        DDP: 4Ψ gradient buckets
    ZeRO-1              2Ψ (bf16)     2Ψ            (4 + 8)Ψ / N          reduce bucket
    ZeRO-2              2Ψ            2Ψ / N        (4 + 8)Ψ / N          reduce bucket
    ZeRO-3              2Ψ / N        2Ψ / N        (4 + 8)Ψ / N          2 reduce buckets + live params
    FSDP FULL_SHARD     4Ψ / N        4Ψ / N        8Ψ / N                gathered bf16 units
    FSDP SHARD_GRAD_OP  4Ψ / N        4Ψ / N        8Ψ / N                all bf16 params + one unit

The trainers keep trained weights in fp32 and compute under bf16 autocast (master weights are the
module's own weights); DeepSpeed bf16 casts the module to bf16 and keeps the fp32 master copy in
its optimizer partition (the "4" above); FSDP upcasts trained parameters to fp32 shards and
all-gathers them in bf16 for compute. Frozen weights (a PPO reference, a reward model, a LoRA
base) are bf16 when the run computes in bf16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

GIB = 2**30
"""Sizes print in GiB: a GPU sold as "80 GB" holds 80 GiB (81,920 MiB on an A100 80GB)."""

ALLOWANCE = 4 * GIB
"""Fixed allowance on every GPU for memory no tensor accounts for: the CUDA context and cuBLAS /
cuDNN workspaces (~1 GiB), NCCL communicators (~1 GiB) and allocator fragmentation (~2 GiB)."""

DS_REDUCE_BUCKET = 500_000_000
"""DeepSpeed's default `reduce_bucket_size` (elements); accelerate's generated config keeps it."""
DS_MAX_LIVE_PARAMETERS = 1_000_000_000
"""DeepSpeed's default `stage3_max_live_parameters`: ZeRO-3 keeps at most this many gathered."""


@dataclass(frozen=True)
class Strategy:
    """How the GPUs share a run (read from an accelerate config by `align.plan.accelerate`)."""

    kind: Literal["single", "ddp", "deepspeed", "fsdp"] = "single"
    processes: int = 1
    zero_stage: int = 0
    reshard_after_forward: bool = True
    """FSDP: True is FULL_SHARD (like ZeRO-3), False is SHARD_GRAD_OP (like ZeRO-2)."""
    offload_optimizer: bool = False
    offload_params: bool = False
    activation_checkpointing: bool = False
    """FSDP's own `fsdp_activation_checkpointing` (same effect as `gradient_checkpointing=true`)."""
    mixed_precision: str | None = None
    source: str = ""

    @property
    def shards_params(self) -> bool:
        return (self.kind == "deepspeed" and self.zero_stage == 3) or self.kind == "fsdp"

    def describe(self) -> str:
        n = f"{self.processes} GPU{'s' if self.processes > 1 else ''}"
        if self.kind == "single":
            return f"{n} (no --accelerate)"
        if self.kind == "ddp":
            return f"{n}, data parallel (DDP: every GPU holds everything)"
        if self.kind == "deepspeed":
            offload = ", optimizer offloaded to CPU" if self.offload_optimizer else ""
            return f"{n}, DeepSpeed ZeRO-{self.zero_stage}{offload}"
        mode = "FULL_SHARD" if self.reshard_after_forward else "SHARD_GRAD_OP"
        return f"{n}, FSDP {mode}{', parameters offloaded to CPU' if self.offload_params else ''}"


def sharded(nbytes: int, processes: int) -> int:
    """Bytes per GPU when `nbytes` are split evenly over `processes` GPUs (rounded up)."""
    return math.ceil(nbytes / max(1, processes))


def half_bytes(bf16: bool) -> int:
    """Bytes per element of the 16-bit compute dtype (4 when the run computes in fp32)."""
    return 2 if bf16 else 4


# --------------------------------------------------------------------------- model states


def adamw_bytes(params: int, master_weights: bool = False) -> int:
    """AdamW state: exp_avg and exp_avg_sq in fp32 (8 B per parameter), plus a fp32 master copy
    (4 B) when the module weights themselves are 16-bit (DeepSpeed bf16)."""
    return params * (8 + (4 if master_weights else 0))


def lora_params(shapes: list[tuple[int, int]], r: int) -> int:
    """Adapter parameters: Σ r·(in + out) over the targeted Linear layers (A is r×in, B is out×r;
    Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", §4.1)."""
    return sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes)


def weight_bytes(trainable: int, frozen: int, strategy: Strategy, bf16: bool, prepared: bool = True) -> int:
    """Module weights per GPU. Trained weights: fp32 (one GPU, DDP, FSDP shards) or 16-bit (DeepSpeed,
    whose fp32 master copy `optimizer_bytes` counts). Frozen weights: 16-bit when bf16. A model the
    trainer hands to `accelerator.prepare` (`prepared`) is sharded by ZeRO-3 and FSDP; the others
    (PPO reference, reward models) are whole copies on every GPU."""
    frozen_bytes = frozen * half_bytes(bf16)
    if prepared and strategy.shards_params:
        frozen_bytes = sharded(frozen_bytes, strategy.processes)
    if strategy.kind == "deepspeed":
        if strategy.zero_stage == 3:
            trained = 0 if strategy.offload_params else sharded(trainable * half_bytes(bf16), strategy.processes)
        else:
            trained = trainable * half_bytes(bf16)
    elif strategy.kind == "fsdp":
        trained = 0 if strategy.offload_params else sharded(4 * trainable, strategy.processes)
    else:
        trained = 4 * trainable
    return frozen_bytes + trained


def gradient_bytes(trainable: int, strategy: Strategy, bf16: bool) -> int:
    """Gradients per GPU: fp32 like the weights (one GPU, DDP, FSDP shards), 16-bit under DeepSpeed
    (partitioned from ZeRO-2 on)."""
    if strategy.kind == "deepspeed":
        full = trainable * half_bytes(bf16)
        return sharded(full, strategy.processes) if strategy.zero_stage >= 2 else full
    if strategy.kind == "fsdp":
        return 0 if strategy.offload_params else sharded(4 * trainable, strategy.processes)
    return 4 * trainable


def optimizer_bytes(trainable: int, strategy: Strategy, bf16: bool) -> int:
    """AdamW state per GPU; DeepSpeed bf16 adds the fp32 master weights; ZeRO-1+ and FSDP shard it,
    CPU offload moves it off the GPU."""
    if strategy.kind == "deepspeed":
        if strategy.offload_optimizer:
            return 0
        state = adamw_bytes(trainable, master_weights=bf16)
        return sharded(state, strategy.processes) if strategy.zero_stage >= 1 else state
    if strategy.kind == "fsdp":
        return 0 if strategy.offload_params else sharded(adamw_bytes(trainable), strategy.processes)
    return adamw_bytes(trainable)


def buffer_bytes(trainable: int, total: int, strategy: Strategy, bf16: bool, unit_params: int,
                 root_params: int) -> int:
    """Communication buffers per GPU of a prepared model.

    DDP (N > 1): a second copy of the gradients in its buckets (`gradient_as_bucket_view=False`, the
    default). ZeRO-1/2: one reduce bucket of `reduce_bucket_size` elements; ZeRO-3: two (it overlaps
    communication) plus up to `stage3_max_live_parameters` gathered parameters. FSDP FULL_SHARD: the
    root unit (embeddings, final norm, head) stays gathered, plus the current and the prefetched
    layer and one layer's unsharded gradients, in 16-bit; SHARD_GRAD_OP keeps every gathered
    parameter from forward to backward, plus one layer's gradients.
    """
    half = half_bytes(bf16)
    if strategy.kind == "ddp":
        return 4 * trainable if strategy.processes > 1 and trainable else 0
    if strategy.kind == "deepspeed":
        bucket = min(DS_REDUCE_BUCKET, trainable) * half
        if strategy.zero_stage == 3:
            return 2 * bucket + min(DS_MAX_LIVE_PARAMETERS, total) * half
        return bucket
    if strategy.kind == "fsdp":
        if strategy.reshard_after_forward:
            return min(total, root_params + 3 * unit_params) * half
        return (total + unit_params) * half
    return 0


def autocast_copy_bytes(trainable_linear: int, strategy: Strategy, bf16: bool) -> int:
    """bf16 copies of fp32 weights that autocast casts: it caches each cast until the forward's autocast
    region exits and the backward keeps them, so a training step holds 2 B per trained Linear
    parameter (measured: the saved tensors of a LLaMA layer under CPU autocast include its weights in
    bf16). None under DeepSpeed or FSDP, whose modules already compute in bf16."""
    return 2 * trainable_linear if bf16 and strategy.kind in ("single", "ddp") else 0


# --------------------------------------------------------------------------- activations


def swiglu_layer_bytes(hidden: int, intermediate: int, fp32_residual: bool = False) -> int:
    """Activations one LLaMA-style decoder layer (RMSNorm, SwiGLU MLP) keeps for the backward, per
    token, in 16-bit with SDPA/flash attention (no s² attention scores):

        24·h + 8·I   [+ 10·h when the residual stream is fp32]

    Counted the way Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
    Models", §4.1) count a GPT layer (34·h + 5·a·s there): two RMSNorms keep their fp32 input (4h)
    and normalised output (2h) each → 12h; the q/k/v and MLP inputs 2h + 2h; attention q, k, v and
    output 8h; the MLP gate, up, SiLU and product outputs 4 × 2I. At the 7B shape (I = 2.6875 h)
    that is 45.5·h; measured with saved-tensor hooks on a 4096-wide LLaMA layer: 45.53·h. fp32
    master weights under autocast make the residual stream fp32 (embeddings are not autocast):
    measured 55.5·h, hence the 10·h.
    """
    return 24 * hidden + 8 * intermediate + (10 * hidden if fp32_residual else 0)


def gelu_layer_bytes(hidden: int, intermediate: int, dropout: bool = True, fp32_residual: bool = False) -> int:
    """Activations of a GPT/BERT-style layer (LayerNorm, GELU MLP) per token, 16-bit, flash attention:

        16·h + 4·I   [+ 2·h dropout masks]   [+ 8·h when the residual stream is fp32]

    Korthikanti et al. 2022, Eq. 1 without the 5·a·s attention-score term: 34·h for I = 4h with
    dropout (measured here without dropout: 32.07·h; fp32 residual: 40.08·h)."""
    return 16 * hidden + 4 * intermediate + (2 * hidden if dropout else 0) + (8 * hidden if fp32_residual else 0)


def checkpoint_bytes(hidden: int, fp32_residual: bool = False) -> int:
    """Per token per layer under gradient checkpointing: only the layer's input, 2·h (4·h in fp32)."""
    return (4 if fp32_residual else 2) * hidden


def training_activation_bytes(tokens: int, layers: int, layer_bytes: int, boundary_bytes: int,
                              checkpointing: bool) -> int:
    """Activations of a forward+backward over `tokens`:

        without checkpointing   t·L·A            (A = `layer_bytes` per token per layer)
        with checkpointing      t·L·b + t·A      (b = `boundary_bytes`: the layer inputs, plus one
                                                  layer's activations while it is recomputed)
    """
    if checkpointing:
        return tokens * (layers * boundary_bytes + layer_bytes)
    return tokens * layers * layer_bytes


def inference_bytes(tokens: int, layer_bytes: int) -> int:
    """Working memory of a no-grad pass: at most about one layer's activations, t·A."""
    return tokens * layer_bytes


def logits_bytes(positions: int, vocab: int, logit_bytes: int = 2, fp32_buffers: int = 2) -> int:
    """Vocabulary logits over `positions` tokens: the logits themselves (bf16: 2 B) and `fp32_buffers`
    fp32 tensors of the same shape, positions·V·(logit_bytes + 4·fp32_buffers). A cross-entropy /
    log-prob loss keeps the fp32 copy and the fp32 log-softmax (2), which Korthikanti et al. leave out
    (their B·s·V·4 is the saved log-softmax alone); PPO's entropy adds the softmax (3)."""
    return positions * vocab * (logit_bytes + 4 * fp32_buffers)


def kv_cache_bytes(tokens: int, layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> int:
    """KV cache of generation: keys and values for every token and layer, 2·L·n_kv·d_head bytes·t."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes * tokens


def parse_size(text: str | float) -> int:
    """`80GB`, `80GiB`, `80G`, `80` (GiB), `81920MiB` -> bytes. GB means GiB here, as GPU sizes do."""
    raw = str(text).strip().replace(" ", "")
    units = {"": GIB, "g": GIB, "gb": GIB, "gib": GIB, "m": 2**20, "mb": 2**20, "mib": 2**20,
             "t": 2**40, "tb": 2**40, "tib": 2**40}
    number = raw.rstrip("GgBbIiMmTt")
    unit = raw[len(number):].lower()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a size such as 80GB, got {text!r}") from None
    if unit not in units or value <= 0:
        raise ValueError(f"expected a positive size such as 80GB or 24576MiB, got {text!r}")
    return int(value * units[unit])
