"""Loading tokenizers and causal LMs by embedded name, local directory or hub id."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.utils import logging as hf_logging

from align.models.embedded import hub_error_hint, resolve_model_path

# Tokenizers without a limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 1_000_000
_FALLBACK_MAX_LENGTH = 2048


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' warnings (e.g. the "newly initialized weights" report for a fresh RM
    head, which is expected); callers report what matters themselves."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def from_pretrained(loader, name_or_path: str, path: str, **kwargs):
    """`loader.from_pretrained(path, **kwargs)`, with a useful message when a hub id is unavailable offline."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as error:
        if Path(path).is_dir():
            raise
        raise OSError(hub_error_hint(name_or_path)) from error


def load_config(name_or_path: str) -> PretrainedConfig:
    return from_pretrained(AutoConfig, name_or_path, resolve_model_path(name_or_path))


def is_decoder(name_or_path_or_config) -> bool:
    """True for decoder-only (causal LM) architectures such as LLaMA or GPT-2, False for encoders
    such as BERT. Accepts a name/path, a config, or a model (its `.config` is used)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = name_or_path_or_config
    if isinstance(config, (str, os.PathLike)):
        config = load_config(str(config))
    elif not isinstance(config, PretrainedConfig) and hasattr(config, "config"):
        config = config.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    # BERT-like encoders also appear in the causal-LM mapping (BertLMHeadModel); masked-LM models are encoders.
    model_type = getattr(config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _sane_max_length(tokenizer, path: str) -> None:
    if tokenizer.model_max_length and tokenizer.model_max_length < _NO_LIMIT:
        return
    try:
        limit = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    except (OSError, ValueError):
        limit = None
    tokenizer.model_max_length = int(limit or _FALLBACK_MAX_LENGTH)


def load_tokenizer(name_or_path: str, padding_side: str = "right"):
    """The tokenizer of `name_or_path`, with a pad token guaranteed (decoders without one reuse EOS,
    or UNK) and a finite `model_max_length` (the model's position limit when the files give none)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    path = resolve_model_path(name_or_path)
    tokenizer = from_pretrained(AutoTokenizer, name_or_path, path)
    if tokenizer.pad_token is None:
        substitute = tokenizer.eos_token or tokenizer.unk_token or getattr(tokenizer, "sep_token", None)
        if substitute is None:
            raise ValueError(f"tokenizer of {name_or_path!r} has no pad, eos, unk or sep token to pad with")
        tokenizer.pad_token = substitute
    tokenizer.padding_side = padding_side
    _sane_max_length(tokenizer, path)
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32):
    """A causal LM (e.g. the policy) in `dtype`, with `config.pad_token_id` set from its tokenizer."""
    path = resolve_model_path(name_or_path)
    model = from_pretrained(AutoModelForCausalLM, name_or_path, path, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(name_or_path).pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.pad_token_id
    return model


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass, for every transformers model inside `model` (a peft or
    reward/value wrapper included). Non-reentrant checkpointing, so frozen inputs (a LoRA base) need no
    `requires_grad` trick. It acts in train mode only, as transformers implements it."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            if hasattr(module, "activation_checkpointing_enable"):  # transformers 5 (the old name is deprecated)
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return  # the outermost transformers model enables it for its layers
    raise ValueError(f"gradient_checkpointing: {type(model).__name__} has no transformers model that supports it")


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere in `model` (modules and LLaMA-style attention dropout), so train mode (needed by
    gradient checkpointing) computes exactly what eval mode does. PPO needs this: the probability ratio of two
    passes over the same tokens must be 1 before any update."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The repeated layers of a transformers model (BERT's `encoder.layer`, LLaMA's `layers`): its longest
    ModuleList; empty when it has none."""
    return max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len,
               default=torch.nn.ModuleList())


def freeze_word_embeddings(model: torch.nn.Module) -> None:
    """Fix the input word embeddings (and an output projection tied to them)."""
    model.get_input_embeddings().weight.requires_grad_(False)


def freeze_bottom_layers(model: torch.nn.Module, layers: int) -> int:
    """Fix every parameter registered before block `layers` (the embeddings and the bottom `layers` blocks, in the
    order transformers models register them), so the backward pass stops at block `layers`; returns how many
    parameters were frozen."""
    blocks = transformer_blocks(model)
    if not 0 < layers < len(blocks):
        raise ValueError(f"freeze_layers: expected 0 < N < {len(blocks)} (the model's layers), got {layers}")
    first_trained = next(blocks[layers].parameters())
    frozen = 0
    for parameter in model.parameters():
        if parameter is first_trained:
            return frozen
        parameter.requires_grad_(False)
        frozen += parameter.numel()
    raise ValueError("freeze_layers: the model's layers are not registered in order")
