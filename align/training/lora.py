"""LoRA for the policy (and the critic) through `peft`, shared by `align sft` and `align ppo`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from align.config import ConfigError, doc


@dataclass
class LoraOptions:
    """`lora.*` keys."""

    enabled: bool = doc("Train low-rank adapters instead of every weight (Hu et al. 2021). In PPO the "
                        "reference model is then the policy with its adapters switched off (no second copy).",
                        False)
    r: int = doc("Adapter rank.", 16)
    alpha: int = doc("Adapter scaling numerator (scale = alpha / r).", 32)
    dropout: float = doc("Dropout on the adapter input.", 0.0)
    target_modules: list[str] = doc("Module names that get adapters (LLaMA attention and MLP projections by "
                                    "default); `all-linear` for every linear layer.",
                                    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r: expected a positive rank, got {self.r!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: expected a number in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: expected at least one module name")


def add_lora(model, options: LoraOptions, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with fresh trainable adapters (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if options.target_modules == ["all-linear"] else list(options.target_modules)
    if targets != "all-linear":  # peft matches a target as the whole name or its dotted suffix
        linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not any(name == t or name.endswith("." + t) for name in linear for t in targets):
            raise ConfigError(f"lora.target_modules: none of {targets} is a linear layer of {type(model).__name__}; "
                              f"its linear layers are named {sorted({n.rsplit('.', 1)[-1] for n in linear})} (or "
                              "use lora.target_modules=[all-linear])")
    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=targets, task_type=task_type)
    return get_peft_model(model, config)


def is_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def load_trained_weights(model, directory: Path) -> None:
    """Load what `save_pretrained` wrote into `directory` into the live `model`: adapters for a peft
    model, else every weight (sharded files included; tied weights are saved once)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if is_lora(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(directory / "adapter_model.safetensors"))
        return
    state = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(shard))
    if not state:
        raise FileNotFoundError(f"{directory}: no *.safetensors weights to resume from")
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameters = set(dict(model.named_parameters()))  # a tied weight appears once, under its saved name
    lost = sorted(set(missing) & parameters)
    if lost or unexpected:
        raise RuntimeError(f"{directory}: checkpoint does not match the model (missing {lost[:3]}, "
                           f"unexpected {unexpected[:3]})")
