"""The four models of PPO: policy, reference, critic, reward model (three with a critic-free estimator:
`advantage=grpo|rloo|reinforce++` loads no critic).

Trained weights (the policy and the critic, or their LoRA adapters) are fp32; frozen ones (the
reference, the reward model, LoRA bases) load in bf16 when the run computes in bf16. With LoRA the
reference is the policy itself with its adapters switched off, so no second copy is held.
PPO runs without dropout (the probability ratio of two passes over the same tokens must be 1
before any update), in train mode so that gradient checkpointing acts.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from align.config import ConfigError
from align.models.value import ValueModel
from align.training.lora import add_lora


@dataclass
class Models:
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    """None with LoRA: the policy with adapters disabled is the reference."""
    critic: ValueModel | None
    """None with a critic-free advantage estimator."""
    tokenizer: object
    reward_model: object | None = None
    critic_source: str = "policy"
    """`policy`, `reward_model`, or `none` (critic-free)."""


def _tokenizers_match(a, b) -> bool:
    return a is not None and b is not None and a.get_vocab() == b.get_vocab()


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def load_reward_source(config, dtype: torch.dtype = torch.float32):
    """The frozen reward model (`align rm`'s saved RewardModel) and the index of its rewarding head, or (None, 0)."""
    if config.reward_model is None:
        return None, 0
    from align.models import RewardModel

    reward_model = _frozen(RewardModel.from_pretrained(config.reward_model, dtype=dtype))
    heads = list(getattr(reward_model, "head_names", None) or ["overall"])
    if config.reward_model_head is None:
        return reward_model, 0
    if config.reward_model_head not in heads:
        raise ConfigError(f"reward_model_head: {config.reward_model_head!r} is not a head of {config.reward_model} "
                          f"(heads: {', '.join(heads)})")
    return reward_model, heads.index(config.reward_model_head)


def load_models(config, trainer) -> Models:
    """Policy (+ LoRA), reference, critic and RM as `config` says, on the trainer's device and in its dtypes."""
    from align.models import RewardModel, load_causal_lm, load_tokenizer
    from align.models.loading import disable_dropout, enable_gradient_checkpointing, freeze_word_embeddings

    device, lora = trainer.device, config.lora.enabled
    frozen_dtype, trained_dtype = trainer.weights_dtype(trainable=False), trainer.weights_dtype(trainable=not lora)
    tokenizer = load_tokenizer(config.model, padding_side="left")
    policy = load_causal_lm(config.model, dtype=trained_dtype)
    reference = None
    if config.freeze_word_embeddings:
        freeze_word_embeddings(policy)
    if lora:
        policy = add_lora(policy, config.lora)
    else:
        reference = _frozen(load_causal_lm(config.model, dtype=frozen_dtype)).to(device)
    reward_model, head_index = load_reward_source(config, frozen_dtype)
    if reward_model is not None:
        reward_model = reward_model.to(device)
    shares_tokenizer = reward_model is not None and _tokenizers_match(getattr(reward_model, "tokenizer", None),
                                                                      tokenizer)
    if config.critic_free:
        critic, source = None, "none"
    elif config.critic_model == "reward_model" and not shares_tokenizer:
        raise ConfigError("critic_model: the reward model does not share the policy's tokenizer, so it cannot "
                          "read the policy's tokens; use critic_model=policy (or auto)")
    elif config.critic_model != "policy" and shares_tokenizer:
        classifier = RewardModel.from_pretrained(config.reward_model, dtype=trained_dtype).model  # trained copy
        critic, source = ValueModel.from_sequence_classifier(classifier, head_index), "reward_model"
    else:
        critic, source = ValueModel.from_causal_lm(load_causal_lm(config.model, dtype=trained_dtype)), "policy"
    if lora and critic is not None:
        critic.backbone = add_lora(critic.backbone, config.lora, task_type="FEATURE_EXTRACTION")
    trained = [policy] + ([critic] if critic is not None else [])
    for model in trained:
        disable_dropout(model)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
    return Models(policy=policy.to(device), reference=reference,
                  critic=critic.to(device) if critic is not None else None, tokenizer=tokenizer,
                  reward_model=reward_model, critic_source=source)


@contextlib.contextmanager
def reference_mode(models: Models):
    """Yields the model that computes reference log-probabilities."""
    if models.reference is not None:
        yield models.reference
    else:
        with models.policy.disable_adapter():
            yield models.policy
