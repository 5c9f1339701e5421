"""`align ppo` configuration: every PPO-max knob with its meaning and default."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from align.config import ConfigError, TrainConfig, check_path, doc, nested
from align.training.lora import LoraOptions


@dataclass
class Config(TrainConfig):
    """`align ppo`: PPO-max against a reward model and/or a domain reward."""

    model: str = doc("Policy to train: an embedded name (`smollm2-135m`, `tiny-llama`), a hub id or a local path.",
                     "smollm2-135m")
    output_dir: str = doc("Directory for config.yaml, metrics.jsonl, summary.json, checkpoints, model/ and "
                          "report.md.", "runs/ppo")
    data: str | None = doc("Prompt file (rows with `prompt`, optionally `response`/`reference`). Empty: the "
                           "domain's `prompts('train')`.", None)
    eval_data: str | None = doc("Held-out prompts for the greedy before/after evaluation. Empty: the domain's "
                                "`prompts('test')` when `eval_prompts` > 0.", None)
    domain_options: dict = doc("Keyword options for the domain adapter (e.g. `domain_options.tasks=easy`).", {})
    prompt_format: Literal["chat", "plain"] = doc("`chat`: the tokenizer's chat template (or Human:/Assistant: "
                                                  "turns); `plain`: the prompt text as is (code completion).",
                                                  "chat")

    max_steps: int = doc("Stop after this many PPO steps (one rollout batch and its update each); -1: `epochs` "
                         "passes over the prompts.", -1)
    epochs: float = doc("Passes over the training prompts when `max_steps` is -1.", 1.0)

    # ---- reward
    reward_model: str | None = doc("A reward model saved by `align rm` (its `model/` directory). It may use "
                                   "another tokenizer than the policy.", None)
    reward_model_head: str | None = doc("Which RM head gives the reward (empty: the first).", None)
    reward_model_weight: float = doc("Weight of the RM score in the total reward.", 1.0)
    reward_batch_size: int = doc("Texts per RM scoring batch.", 16)
    reward_max_length: int = doc("Token limit of the RM input (the oldest context is cut first).", 512)
    domain_reward: bool = doc("Add the domain's programmatic reward (`domain.reward`), e.g. compiler feedback.",
                              False)
    domain_reward_weight: float = doc("Weight of the domain reward in the total reward.", 1.0)
    reward_norm: bool = doc("Normalise scores by running mean/std (PPO-max).", True)
    reward_clip: float = doc("Clip normalised scores to [-c, c] (PPO-max); 0 disables.", 5.0)

    # ---- rollouts
    rollout_batch_size: int = doc("Prompts per PPO step and process (each sampled samples_per_prompt times).", 8)
    max_new_tokens: int = doc("Longest completion in tokens.", 64)
    max_prompt_length: int = doc("Prompt token limit (the start of a longer prompt is cut).", 256)
    temperature: float = doc("Sampling temperature of rollouts.", 1.0)
    top_p: float = doc("Nucleus sampling threshold of rollouts (1: off).", 1.0)
    stop: list[str] = doc("Stop strings: a completion ends at the first one (it is kept in the tokens, cut from "
                          "the text).", [])
    generation_batch_size: int = doc("Completions per generation batch (a prompt's k samples count k).", 8)
    samples_per_prompt: int = doc("Completions sampled per prompt (k), in one batched generation call: a step has "
                                  "rollout_batch_size × k samples. Each process samples all k completions of its "
                                  "own prompts, so a group never spans processes.", 1)

    # ---- advantage estimator
    advantage: Literal["gae", "grpo", "rloo", "reinforce++"] = doc(
        "How advantages are estimated. `gae`: PPO-max, a critic (value model) and GAE. Critic-free, with no critic "
        "loaded, prepared or checkpointed (one trained model fewer: its weights, gradients and Adam moments, about "
        "half the memory of full fine-tuning; `align plan` counts none): `grpo` (Shao et al. 2024) the reward "
        "normalised within the k completions of a prompt, (r - mean) / (std + eps); `rloo` (Ahmadian et al. "
        "2024) the reward minus the mean of the other k - 1; `reinforce++` (Hu 2025) the return of token rewards "
        "carrying the KL penalty, normalised over the global batch. `grpo` and `rloo` need samples_per_prompt "
        ">= 2.", "gae")
    kl_penalty: Literal["auto", "reward", "loss"] = doc(
        "Where the KL to the reference acts. `reward`: -kl_coef × KL_t in the token rewards (per token for gae and "
        "reinforce++; for grpo and rloo summed over the completion before the group statistic); `loss`: kl_coef × "
        "the k3 estimate of KL(pi || pi_ref) per token added to the policy loss (GRPO, Shao et al. 2024, eq. 3), "
        "leaving the advantages to the task reward. `auto`: `loss` for grpo (as in the paper: in the reward the "
        "KL would be divided by each group's reward spread, hugely where every completion scores the same) and "
        "`reward` for the others (as in their papers).", "auto")

    # ---- PPO
    batch_size: int = doc("Rollout samples per PPO minibatch (per optimizer step, times grad_accum).", 4)
    ppo_epochs: int = doc("Passes over each rollout batch.", 2)
    learning_rate: float = doc("Policy learning rate.", 1e-6)
    critic_learning_rate: float = doc("Critic learning rate.", 5e-6)
    warmup_ratio: float = doc("Share of the optimizer steps spent on linear warm-up.", 0.0)
    lr_schedule: Literal["cosine", "linear", "constant"] = doc("Learning-rate decay after warm-up.", "constant")
    clip_range: float = doc("PPO ratio clip epsilon.", 0.2)
    value_clip_range: float = doc("Value clip around the old values (0: unclipped).", 0.2)
    gamma: float = doc("Discount factor of GAE.", 1.0)
    lam: float = doc("GAE lambda.", 0.95)
    whiten_advantages: bool = doc("Whiten advantages within each minibatch (PPO-max; `advantage=gae` only: the "
                                  "critic-free estimators normalise in their own way).", True)
    kl_coef: float = doc("Initial coefficient beta of the token-level KL penalty.", 0.05)
    kl_estimator: Literal["k1", "k3"] = doc("Per-token KL estimator in the reward (the KL loss uses k3): k1 = "
                                           "log ratio, k3 = "
                                           "(r - 1) - log r (non-negative).", "k1")
    kl_target: float | None = doc("Target KL (nats per sequence) of the adaptive controller; empty: fixed beta.",
                                  None)
    kl_horizon: int = doc("Horizon (samples) of the adaptive KL controller.", 10000)
    kl_ceiling: float = doc("Stop the run when the mean per-sequence KL to the reference exceeds this (0: never).",
                            50.0)
    critic_model: Literal["auto", "reward_model", "policy"] = doc(
        "Critic initialisation: `reward_model` (PPO-max; needs the RM to share the policy's tokenizer), `policy` "
        "(the policy's backbone + a zero value head), `auto` (the RM when it can, else the policy).", "auto")
    critic_warmup_steps: int = doc("First PPO steps that train only the critic (the policy stays fixed).", 0)
    ptx_data: str | None = doc("Pretraining text for the PPO-ptx loss (prompt/response rows); empty: off.", None)
    ptx_coef: float = doc("Weight of the language-modelling loss on `ptx_data` in the policy loss.", 0.0)
    ptx_batch_size: int = doc("Texts per PPO-ptx batch.", 4)
    lora: LoraOptions = nested(LoraOptions, "LoRA adapters for the policy and the critic.")

    # ---- bookkeeping
    eval_prompts: int = doc("Held-out prompts scored before and after training (0: none).", 0)
    eval_temperature: float = doc("Temperature of the held-out completions: 0 is greedy (the policy's single best "
                                  "answer); the rollout temperature scores the policy as it is sampled, each "
                                  "completion from its own random stream (from `seed`), the same before and after "
                                  "training.", 0.0)
    eval_samples: int = doc("Completions per held-out prompt (more than 1 needs eval_temperature > 0); "
                            "eval_before/after.jsonl hold one line per completion.", 1)
    precision: Literal["auto", "bf16", "fp32"] = doc("`bf16` autocast is faster on CPUs and GPUs; PPO ratios are "
                                                     "computed in fp32 either way.", "fp32")
    save_steps: int = doc("Write a checkpoint every N PPO steps (0: only at the end).", 50)
    log_steps: int = doc("Append to metrics.jsonl every N PPO steps.", 1)
    report: bool = doc("Write report.md with the training curves at the end.", True)

    def validate(self) -> None:
        super().validate()
        positive = {"rollout_batch_size": self.rollout_batch_size, "samples_per_prompt": self.samples_per_prompt,
                    "max_new_tokens": self.max_new_tokens,
                    "max_prompt_length": self.max_prompt_length, "ppo_epochs": self.ppo_epochs,
                    "critic_learning_rate": self.critic_learning_rate, "generation_batch_size":
                    self.generation_batch_size, "reward_batch_size": self.reward_batch_size,
                    "ptx_batch_size": self.ptx_batch_size}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{key}: expected a positive number, got {value!r}")
        if self.batch_size * self.grad_accum > self.rollout_samples:
            raise ConfigError(f"batch_size: a minibatch of batch_size*grad_accum = {self.batch_size * self.grad_accum} "
                              f"samples is larger than a step's rollout_batch_size*samples_per_prompt = "
                              f"{self.rollout_samples}")
        if self.advantage in ("grpo", "rloo") and self.samples_per_prompt < 2:
            raise ConfigError(f"samples_per_prompt: advantage={self.advantage} compares the completions of one "
                              f"prompt, so it needs samples_per_prompt >= 2 (got {self.samples_per_prompt})")
        if self.critic_free and self.critic_warmup_steps:
            raise ConfigError(f"critic_warmup_steps: advantage={self.advantage} trains no critic; set it to 0")
        if self.critic_free and self.critic_model != "auto":
            raise ConfigError(f"critic_model: advantage={self.advantage} has no critic; leave critic_model unset")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p: expected a number in (0, 1], got {self.top_p!r}")
        for key in ("temperature", "eval_temperature"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: expected a non-negative number, got {getattr(self, key)!r}")
        if self.eval_samples < 1 or (self.eval_samples > 1 and self.eval_temperature == 0):
            raise ConfigError(f"eval_samples: expected 1, or more with eval_temperature > 0 (greedy completions of "
                              f"a prompt are all the same); got eval_samples={self.eval_samples!r}, "
                              f"eval_temperature={self.eval_temperature!r}")
        for key in ("gamma", "lam"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key}: expected a number in [0, 1], got {getattr(self, key)!r}")
        for key in ("clip_range", "value_clip_range", "kl_coef", "reward_clip", "kl_ceiling", "ptx_coef",
                    "critic_warmup_steps", "eval_prompts"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: expected a non-negative number, got {getattr(self, key)!r}")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ConfigError(f"kl_target: expected a positive KL, got {self.kl_target!r}")
        if self.reward_model is None and not self.domain_reward:
            raise ConfigError("reward_model: no reward source; give reward_model=<dir saved by align rm> and/or "
                              "domain_reward=true")
        if self.critic_model == "reward_model" and self.reward_model is None:
            raise ConfigError("critic_model: `reward_model` needs reward_model=<dir>")
        if self.ptx_coef > 0 and not self.ptx_data:
            raise ConfigError("ptx_data: ptx_coef > 0 needs a pretraining text file")
        check_path("reward_model", self.reward_model)
        check_path("ptx_data", self.ptx_data)

    @property
    def critic_free(self) -> bool:
        """No critic: the advantage comes from the rewards alone."""
        return self.advantage != "gae"

    @property
    def rollout_samples(self) -> int:
        """Samples one process generates per step."""
        return self.rollout_batch_size * self.samples_per_prompt

    @property
    def kl_in_loss(self) -> bool:
        """`kl_penalty` resolved: True when the KL is a loss term, False when it is in the reward."""
        return self.kl_penalty == "loss" or (self.kl_penalty == "auto" and self.advantage == "grpo")
