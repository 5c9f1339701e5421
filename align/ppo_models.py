"""The four models of PPO (policy, reference, critic, reward model) and the resumable training state.

With LoRA the reference is the policy itself with its adapters switched off, so no second copy of
the weights is held. A checkpoint holds the policy and the critic in Hugging Face / peft format
(loadable on their own), both optimizers and schedulers, the RNG states and the PPO state
(step, prompt position, running reward moments, KL coefficient).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from align.checkpoint import _restore_rng, _rng_state
from align.lora import add_lora, load_trained_weights
from align.runlog import RunDir
from align.value_model import HEAD_FILE, ValueModel


@dataclass
class PPOState:
    step: int = 0
    epoch: int = 0
    position: int = 0
    """Index of the next prompt batch within `epoch` (prompt order is a function of seed and epoch)."""
    ptx_position: int = 0
    samples: int = 0
    dropped: dict = field(default_factory=dict)
    generated_tokens: int = 0
    train_seconds: float = 0.0
    generation_seconds: float = 0.0
    reward_moments: dict = field(default_factory=dict)
    kl_coef: float = 0.0


@dataclass
class Models:
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    """None with LoRA: the policy with adapters disabled is the reference."""
    critic: ValueModel
    tokenizer: object
    reward_model: object | None = None
    critic_source: str = "policy"


# --------------------------------------------------------------------------- loading


def _tokenizers_match(a, b) -> bool:
    return a is not None and b is not None and a.get_vocab() == b.get_vocab()


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def load_reward_source(config):
    """The frozen reward model, or None. Reads `align rm`'s saved RewardModel."""
    if config.reward_model is None:
        return None, 0
    from align.models import RewardModel

    reward_model = _frozen(RewardModel.from_pretrained(config.reward_model))
    heads = list(getattr(reward_model, "head_names", None) or ["overall"])
    if config.reward_model_head is None:
        return reward_model, 0
    if config.reward_model_head not in heads:
        from align.config import ConfigError

        raise ConfigError(f"reward_model_head: {config.reward_model_head!r} is not a head of {config.reward_model} "
                          f"(heads: {', '.join(heads)})")
    return reward_model, heads.index(config.reward_model_head)


def load_models(config, device) -> Models:
    """Policy (+ LoRA), reference, critic and RM as `config` says, on `device`."""
    from align.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(config.model, padding_side="left")
    policy = load_causal_lm(config.model)
    reference = None
    if config.lora.enabled:
        policy = add_lora(policy, config.lora)
    else:
        reference = _frozen(load_causal_lm(config.model)).to(device)
    reward_model, head_index = load_reward_source(config)
    if reward_model is not None:
        reward_model = reward_model.to(device)
    shares_tokenizer = reward_model is not None and _tokenizers_match(getattr(reward_model, "tokenizer", None),
                                                                      tokenizer)
    if config.critic_model == "reward_model" and not shares_tokenizer:
        from align.config import ConfigError

        raise ConfigError("critic_model: the reward model does not share the policy's tokenizer, so it cannot "
                          "read the policy's tokens; use critic_model=policy (or auto)")
    if config.critic_model != "policy" and shares_tokenizer:
        from align.models import RewardModel

        classifier = RewardModel.from_pretrained(config.reward_model).model  # a second copy: trained
        critic, source = ValueModel.from_sequence_classifier(classifier, head_index), "reward_model"
    else:
        critic, source = ValueModel.from_causal_lm(load_causal_lm(config.model)), "policy"
    if config.lora.enabled:
        critic.backbone = add_lora(critic.backbone, config.lora, task_type="FEATURE_EXTRACTION")
    policy.eval()   # PPO runs without dropout: the ratio of two passes must be 1 before any update
    critic.eval()
    return Models(policy=policy.to(device), reference=reference, critic=critic.to(device), tokenizer=tokenizer,
                  reward_model=reward_model, critic_source=source)


@contextlib.contextmanager
def reference_mode(models: Models):
    """Yields the model that computes reference log-probabilities."""
    if models.reference is not None:
        yield models.reference
    else:
        with models.policy.disable_adapter():
            yield models.policy


# --------------------------------------------------------------------------- checkpoints


def save_ppo_checkpoint(run: RunDir, state: PPOState, accelerator, models: Models, optimizers: dict,
                        schedulers: dict) -> Path | None:
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None

    def write(directory: Path) -> None:
        accelerator.unwrap_model(models.policy).save_pretrained(directory / "policy")
        models.tokenizer.save_pretrained(directory / "policy")
        accelerator.unwrap_model(models.critic).save_pretrained(directory / "critic")
        for name, optimizer in optimizers.items():
            torch.save(optimizer.state_dict(), directory / f"optimizer_{name}.pt")
        for name, scheduler in schedulers.items():
            torch.save(scheduler.state_dict(), directory / f"scheduler_{name}.pt")
        torch.save(_rng_state(), directory / "rng.pt")
        (directory / "ppo_state.json").write_text(json.dumps(asdict(state), indent=2))

    return run.save_checkpoint(state.step, write)


def load_ppo_checkpoint(directory: Path, accelerator, models: Models, optimizers: dict, schedulers: dict) -> PPOState:
    load_trained_weights(accelerator.unwrap_model(models.policy), directory / "policy")
    critic = accelerator.unwrap_model(models.critic)
    load_trained_weights(critic.backbone, directory / "critic" / "backbone")
    critic.head.load_state_dict(torch.load(directory / "critic" / HEAD_FILE, weights_only=True))
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(torch.load(directory / f"optimizer_{name}.pt", weights_only=False))
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(torch.load(directory / f"scheduler_{name}.pt", weights_only=False))
    _restore_rng(torch.load(directory / "rng.pt", weights_only=False))
    return PPOState(**json.loads((directory / "ppo_state.json").read_text()))
