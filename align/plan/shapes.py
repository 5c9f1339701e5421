"""The models of a run, built from their config.json on the meta device: exact parameter counts and
the shapes the memory formulas need, without reading (or even allocating) a single weight.

    shape = model_shape(config_source, "causal_lm")          # LlamaForCausalLM on torch.device("meta")
    shape.params, shape.layers, shape.lora_shapes(["q_proj", "v_proj"])
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from align.config import ConfigError

Kind = Literal["causal_lm", "sequence_classification", "backbone"]
_DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "hidden_dropout",
                   "dropout", "resid_pdrop", "attn_pdrop")
_HEAD_NAMES = ("lm_head", "score", "classifier")


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about one model."""

    source: str
    """The config.json that was read."""
    architecture: str
    params: int
    """Exact parameter count (tied weights once), from the meta-device model."""
    linears: tuple[tuple[str, int, int, int], ...]
    """Every nn.Linear: (qualified name, in_features, out_features, parameters)."""
    layers: int
    layer_params: int
    """Parameters of one repeated block (a decoder / encoder layer)."""
    hidden: int
    intermediate: int
    vocab: int
    kv_heads: int
    head_dim: int
    decoder: bool
    gated_mlp: bool
    dropout: bool

    @property
    def linear_params(self) -> int:
        return sum(p for *_, p in self.linears)

    @property
    def head_params(self) -> int:
        """Parameters of the output head (`lm_head`, `score`, `classifier`)."""
        return sum(p for name, *_, p in self.linears if name.split(".")[0] in _HEAD_NAMES)

    @property
    def root_params(self) -> int:
        """Parameters outside the repeated layers (embeddings, final norm, head): FSDP's root unit."""
        return self.params - self.layers * self.layer_params

    def lora_shapes(self, targets: list[str]) -> list[tuple[int, int]]:
        """(in, out) of the Linear layers peft would give adapters: a name equal to a target or ending in
        `.target`; `all-linear` is every Linear except the output head (peft's rule)."""
        if list(targets) == ["all-linear"]:
            return [(i, o) for name, i, o, _ in self.linears if name.split(".")[0] not in _HEAD_NAMES]
        return [(i, o) for name, i, o, _ in self.linears
                if any(name == t or name.endswith("." + t) for t in targets)]


# --------------------------------------------------------------------------- finding config.json


def _config_file(path: Path) -> Path | None:
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    if path.is_file() and path.suffix == ".json":
        return path
    return None


def find_config(name: str, key: str, fallback: str | None = None) -> str:
    """The config.json for model `name` (named by config key `key`): a local directory or file, an embedded
    model (`align.models.resolve_model_path`), a hub id already in the local Hugging Face cache, else
    `fallback` (--model-config). ConfigError naming `key` when none exists."""
    from align.models.embedded import EMBEDDED_MODELS, looks_like_path, resolve_model_path

    found = _config_file(Path(name).expanduser())
    if found is None and name in EMBEDDED_MODELS:
        found = _config_file(Path(resolve_model_path(name)))
    if found is None and not looks_like_path(name):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            found = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - not a valid repo id: no cached config
            found = None
    if found is None and fallback:
        found = _config_file(Path(fallback).expanduser())
        if found is None:
            raise ConfigError(f"--model-config: no config.json at {fallback}")
    if found is None:
        raise ConfigError(f"{key}: no config.json for {name!r} on this machine (not a local directory, an embedded "
                          f"model ({', '.join(EMBEDDED_MODELS)}) or a hub id in the local Hugging Face cache); pass "
                          f"--model-config PATH (a directory with config.json, or the file) to plan with that shape")
    return str(found.resolve())


def is_classifier_config(source: str) -> bool:
    """True when the config.json is a saved sequence classifier (a reward model saved by `align rm`)."""
    architectures = json.loads(Path(source).read_text()).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


# --------------------------------------------------------------------------- the meta-device model


@functools.lru_cache(maxsize=32)
def model_shape(source: str, kind: Kind, num_labels: int | None = None) -> ModelShape:
    """Build the model of `source` (a config.json) on the meta device and measure it.

    `causal_lm`: AutoModelForCausalLM; `sequence_classification`: AutoModelForSequenceClassification
    (`num_labels` heads; None keeps the file's); `backbone`: AutoModel (the critic's transformer)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    from align.models.loading import is_decoder, transformer_blocks

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"{source}: not a config.json transformers can read: {error}") from None
    if num_labels is not None:
        config.num_labels = num_labels
    loader = {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification,
              "backbone": AutoModel}[kind]
    try:
        with torch.device("meta"):
            model = loader.from_config(config)
    except ValueError as error:
        raise ConfigError(f"{source}: cannot build a {kind.replace('_', ' ')} model from it: {error}") from None
    linears = tuple((name, m.in_features, m.out_features, sum(p.numel() for p in m.parameters()))
                    for name, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    blocks = transformer_blocks(model)
    hidden = config.hidden_size
    heads = config.num_attention_heads
    return ModelShape(
        source=source, architecture=type(model).__name__,
        params=sum(p.numel() for p in model.parameters()), linears=linears,
        layers=len(blocks), layer_params=sum(p.numel() for p in blocks[0].parameters()) if len(blocks) else 0,
        hidden=hidden, intermediate=getattr(config, "intermediate_size", None) or 4 * hidden,
        vocab=config.vocab_size, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or hidden // heads, decoder=is_decoder(config),
        gated_mlp=any("gate" in name.split(".")[-1] for name, *_ in linears),
        dropout=any(isinstance(getattr(config, f, None), float) and getattr(config, f) > 0 for f in _DROPOUT_FIELDS))
