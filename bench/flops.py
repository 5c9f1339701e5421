"""Model FLOP utilisation: a transformer's training FLOPs from its shapes, and this machine's measured matmul peak.

Training FLOPs of a transformer encoder (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1;
PaLM's MFU, Chowdhery et al. 2022, App. B): per token, forward + backward = 6·P (P = weights of the linear
layers inside the blocks: embeddings are lookups, not matmuls) plus attention 12·n_layer·L·d (QKᵀ and the
weighted sum of values, 2·L·d multiply-adds each per layer forward, ×3 with backward) for a sequence of L
tokens attending to all L (bidirectional). Model FLOPs count the real tokens at their own lengths; hardware
FLOPs count the padded batch the kernels actually computed.

The peak is what torch reaches on one large square matmul in this process, with this process's threads
(2·n³ FLOPs per product), measured in fp32 and bf16 in the same invocation as the figure it divides.
"""
from __future__ import annotations

import time


def matmul_peak(dtype_name: str, size: int = 2048, seconds: float = 3.0) -> float:
    """Sustained FLOP/s of `size`×`size` matmuls in `dtype_name` (`fp32` or `bf16`), best of 1-second windows."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, page faults
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < min(1.0, seconds):
            torch.matmul(a, b)
            count += 1
        best = max(best, 2 * size ** 3 * count / (time.perf_counter() - started))
    return best


def encoder_shapes(model) -> dict:
    """Linear weights inside the transformer blocks (P), layers and width of a Hugging Face encoder."""
    import torch

    config = model.config
    embedding_modules = {m for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    embedding_weights = {id(m.weight) for m in embedding_modules}
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layer." in f".{name}." and id(m.weight) not in embedding_weights)
    return {"linear_params": linear, "layers": config.num_hidden_layers, "hidden": config.hidden_size}


def train_flops(shapes: dict, sequence_lengths: list[int]) -> float:
    """Forward + backward FLOPs of sequences of the given lengths (each attends to its own length)."""
    p, layers, hidden = shapes["linear_params"], shapes["layers"], shapes["hidden"]
    return float(sum(6 * p * n + 12 * layers * hidden * n * n for n in sequence_lengths))


def batch_flops(shapes: dict, batches: list[tuple[int, int]]) -> float:
    """Hardware FLOPs of padded batches given as (rows, padded length)."""
    return sum(train_flops(shapes, [length]) * rows for rows, length in batches)
