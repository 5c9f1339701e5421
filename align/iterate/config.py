"""`align iterate` configuration, and the configs it builds for each round's RM and PPO stages.

The `rm` and `ppo` sections take the keys of `align rm` (plus MetaRM's) and `align ppo`; the keys iterate
sets itself per round (the model to start from, the output directory, resume, the shifted samples, the reward
model) are refused there with the key that sets them. Both sections are validated before any work starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from align.config import ConfigError, build, check_path, doc, validate
from align.ppo.config import Config as PPOConfig
from align.rm.metarm import Config as MetaRMConfig
from align.rm.train import Config as RMConfig

SET_PER_ROUND = {"model": "policy / reward_model (or the previous round)", "output_dir": "output_dir",
                 "resume": "resume", "shifted_data": "the round's samples", "policy": "policy",
                 "reward_model": "the round's reward model", "samples_per_prompt": "samples_per_prompt"}
SHARED_GENERATION = ("prompt_format", "max_new_tokens", "max_prompt_length", "temperature", "top_p")
_PLACEHOLDER = "set-per-round"  # stands for a path iterate fills in, when the sections are checked up front


@dataclass
class Config:
    """`align iterate`: R rounds of sample -> RM update -> PPO round -> evaluation."""

    output_dir: str = doc("Directory for iterate_state.json, summary.json, report.md and round-N/ (samples.jsonl, "
                          "rm/, ppo/, eval_completions.jsonl).", "runs/iterate")
    rounds: int = doc("Rounds R of sample -> RM update -> PPO -> evaluate.", 3)
    policy: str = doc("The round-0 policy (the SFT model): an embedded name, a hub id or a local path.",
                      "smollm2-135m")
    reward_model: str | None = doc("The round-0 reward model (a directory saved by `align rm`); empty: trained first "
                                   "(round-0/rm) on the preference pairs with the `rm` keys.", None)
    reward_model_backbone: str = doc("Backbone of the round-0 reward model when `reward_model` is empty.", "minilm")
    rm_update: Literal["metarm", "vanilla", "none"] = doc(
        "How the RM follows the policy each round: `metarm` (meta step on the round's samples and the original "
        "pairs), `vanilla` (more Bradley-Terry training on the original pairs), `none` (the ablation: the RM stays).",
        "metarm")
    domain: str = doc("Domain adapter for default pairs, prompts and a domain reward (`hh`, `code`, ...).", "hh")
    domain_options: dict = doc("Keyword options for the domain adapter.", {})
    data: str | None = doc("Original preference pairs X_t (RM training and updates); empty: the domain's.", None)
    eval_data: str | None = doc("Held-out preference pairs (RM accuracy each round); empty: `rm.eval_fraction` of "
                                "`data`, or the domain's test pairs.", None)
    prompts: str | None = doc("Training prompts (sampled each round and trained on by PPO); empty: the domain's "
                              "`prompts('train')`.", None)
    eval_prompts_data: str | None = doc("Held-out prompts the judges compare the policies on; empty: the domain's "
                                        "`prompts('test')`.", None)
    max_prompts: int = doc("Use at most this many training prompts (-1: all).", 50)
    eval_prompts: int = doc("Held-out prompts judged each round.", 50)
    samples_per_prompt: int = doc("k: responses sampled per training prompt each round (the shifted samples).", 5)
    prompt_format: Literal["chat", "plain"] = doc("How prompts are given to the policy (sampling, PPO, evaluation).",
                                                  "chat")
    max_new_tokens: int = doc("Longest response in tokens (sampling, PPO rollouts, evaluation).", 64)
    max_prompt_length: int = doc("Prompt token limit (the start of a longer prompt is cut).", 256)
    temperature: float = doc("Sampling temperature of the shifted samples and of PPO rollouts.", 1.0)
    top_p: float = doc("Nucleus sampling threshold of the shifted samples and of PPO rollouts.", 1.0)
    generation_batch_size: int = doc("Prompts per greedy evaluation batch.", 8)
    judges: list[str] = doc("Judges of the round's policy against round 0 and the previous round: `rm`, "
                            "`execution`, `metric`, `llm`, `human` (see `align eval --help`).", ["rm"])
    judge_options: dict = doc("Options per judge, e.g. `judge_options.rm.tie_band=0.1`, "
                              "`judge_options.llm.base_url=http://127.0.0.1:8000/v1`. The `rm` judge scores with "
                              "the round-0 reward model unless `judge_options.rm.model` names another.", {})
    rm: dict = doc("Keys of every RM stage (`align rm --help`, and MetaRM's `meta_learning_rate`, "
                   "`shifted_batch_size`), e.g. `rm.epochs=1` `rm.meta_learning_rate=5e-6`.", {})
    initial_rm: dict = doc("Keys of the round-0 RM training only, over those of `rm` (e.g. `initial_rm.epochs=3`).",
                           {})
    ppo: dict = doc("Keys of every PPO round (`align ppo --help`), e.g. `ppo.max_steps=8`.", {})
    precision: Literal["auto", "bf16", "fp32"] = doc("Precision of the RM and PPO stages (unless their sections "
                                                     "say otherwise).", "auto")
    seed: int = doc("Random seed; round r samples with (seed, r) and its PPO runs with seed + r.", 0)
    resume: bool = doc("Continue a killed run where it stopped: finished stages are skipped, the stage in "
                       "progress resumes from its own checkpoints.", False)
    progress: bool = doc("Show progress bars.", True)

    def validate(self) -> None:
        for key in ("rounds", "max_new_tokens", "max_prompt_length", "generation_batch_size", "eval_prompts"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}: expected a positive number, got {getattr(self, key)!r}")
        if self.samples_per_prompt < 2:
            raise ConfigError(f"samples_per_prompt: J compares responses of one prompt, at least 2 are needed, got "
                              f"{self.samples_per_prompt!r}")
        if self.max_prompts == 0 or self.max_prompts < -1:
            raise ConfigError(f"max_prompts: expected a positive count or -1, got {self.max_prompts!r}")
        for key in ("reward_model", "data", "eval_data", "prompts", "eval_prompts_data"):
            check_path(key, getattr(self, key))
        for section in ("rm", "initial_rm", "ppo"):
            for key in getattr(self, section):
                if key in SET_PER_ROUND:
                    raise ConfigError(f"{section}.{key}: set by iterate ({SET_PER_ROUND[key]}); remove it")
                if section == "ppo" and key in SHARED_GENERATION:
                    raise ConfigError(f"ppo.{key}: set it once at the top level ({key}=...): sampling, PPO and "
                                      "evaluation share it")
        for key in ("data", "eval_data", "eval_fraction", "seed", "domain", "domain_options", "max_examples"):
            if key in self.initial_rm:
                raise ConfigError(f"initial_rm.{key}: every RM of the run must see the same pairs and held-out split; "
                                  f"set it in `rm` (or at the top level)")
        unknown = set(self.judge_options) - set(self.judges)
        if unknown:
            raise ConfigError(f"judge_options.{min(unknown)}: options for a judge not in judges={self.judges}")
        metarm_config(self, _PLACEHOLDER, _PLACEHOLDER, _PLACEHOLDER)  # the sections' own checks, up front
        rm_config(self, _PLACEHOLDER, self.reward_model or _PLACEHOLDER, initial=True)
        ppo_config(self, 1, _PLACEHOLDER, _PLACEHOLDER, _PLACEHOLDER)


def _section(cls: type, section: str, keys: dict):
    """`cls` built from `keys` and validated, errors named as keys of the iterate section."""
    try:
        config = build(cls, keys)
        validate(config)
    except ConfigError as error:
        raise ConfigError(f"{section}.{error}") from None
    return config


def _rm_keys(config: Config, output_dir: str, model: str, initial: bool = False) -> dict:
    shared = {"domain": config.domain, "domain_options": config.domain_options, "data": config.data,
              "eval_data": config.eval_data, "seed": config.seed, "precision": config.precision,
              "progress": config.progress}
    return {**{k: v for k, v in shared.items() if v is not None}, **config.rm,
            **(config.initial_rm if initial else {}), "model": model, "output_dir": output_dir, "resume": config.resume}


def rm_config(config: Config, output_dir: str, model: str, initial: bool = False) -> RMConfig:
    """The `align rm` config of `vanilla` updates, or with `initial` of the round-0 RM (MetaRM-only keys left
    out)."""
    own = {f.name for f in dataclasses.fields(RMConfig)}
    keys = _rm_keys(config, output_dir, model, initial)
    return _section(RMConfig, "initial_rm" if initial else "rm", {k: v for k, v in keys.items() if k in own})


def metarm_config(config: Config, output_dir: str, model: str, samples: str) -> MetaRMConfig:
    """The MetaRM config of a round: from the previous RM, on the round's samples and the original pairs."""
    keys = {**_rm_keys(config, output_dir, model), "shifted_data": samples,
            "samples_per_prompt": config.samples_per_prompt}  # the seed stays: it fixes the held-out split
    return _section(MetaRMConfig, "rm", keys)


def ppo_config(config: Config, round_index: int, output_dir: str, policy: str, reward_model: str) -> PPOConfig:
    """The PPO config of round `round_index`: from the previous policy (also its reference: KL is per round)
    against the round's RM."""
    keys = {"domain": config.domain, "domain_options": config.domain_options, "precision": config.precision,
            "progress": config.progress, "seed": config.seed + round_index,
            **{key: getattr(config, key) for key in SHARED_GENERATION}, **config.ppo,
            "model": policy, "reward_model": reward_model, "output_dir": output_dir, "resume": config.resume}
    return _section(PPOConfig, "ppo", keys)
