"""A reward model saved by `align rm` (its `model/` directory) as TRL `reward_funcs`, OpenRLHF `reward_func` and
verl `compute_score` (`align.shims` has the calling conventions).

The model reads what it was trained on: the prompt rendered by `render_prompt` (the RM tokenizer's chat template
for chat messages), the response separator, then the completion; a text too long loses its beginning
(`score_texts`). Labels are not used.

- TRL: `GRPOTrainer(reward_funcs=[rm_reward_func("runs/rm/model")])`. (TRL also loads the directory itself,
  `reward_funcs="runs/rm/model"`, but then tokenizes prompt + completion without special tokens and reads the
  first logit: an encoder RM loses its [CLS] token, a multi-head RM its other heads.)
- OpenRLHF: `ALIGN_RM_DIR=runs/rm/model`, `--remote_rm_url /path/to/align/models/shims.py`
  (`reward_func(queries, prompts, labels)`).
- verl: `custom_reward_function.path=/path/to/align/models/shims.py`, `custom_reward_function.name=compute_score`,
  `custom_reward_function.reward_kwargs.model_dir=runs/rm/model` (or `$ALIGN_RM_DIR`); the prompt comes from
  the dataset's `extra_info.prompt` (a sample without one is an error: scoring the response alone would
  measure something the RM was never trained on). Each sample gives `{"score", "dropped", "head"}`.

Options (TRL arguments, verl `reward_kwargs`): `model_dir` (default `$ALIGN_RM_DIR`), `head` (name or index,
default the first), `batch_size`, `max_length`, `device` (default: CUDA when available, else CPU).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from align import shims
from align.data import render_prompt, response_separator
from align.models.reward import RewardModel, score_texts
from align.types import RewardOutput

MODEL_DIR_ENV = "ALIGN_RM_DIR"


@lru_cache(maxsize=2)
def scoring_model(model_dir: str, device: str | None = None) -> RewardModel:
    """The saved reward model in eval mode on `device`, loaded once per process."""
    import torch

    model = RewardModel.from_pretrained(model_dir)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model


def score_with_reward_model(prompts: list, completions: list[str], labels: list[Any] | None = None,
                            model_dir: str | None = None, head: str | int = 0, batch_size: int = 16,
                            max_length: int = 512, device: str | None = None) -> list[RewardOutput]:
    """The reward of each (prompt, completion) under the saved reward model's `head`."""
    model_dir = model_dir or os.environ.get(MODEL_DIR_ENV)
    if not model_dir:
        raise ValueError(f"reward model shim: pass model_dir= (verl: custom_reward_function.reward_kwargs.model_dir) "
                         f"or set ${MODEL_DIR_ENV} to the reward model directory (align rm's model/)")
    missing = [i for i, prompt in enumerate(prompts) if prompt is None]
    if missing:
        raise ValueError(f"reward model shim: sample {missing[0]} has no prompt (verl: put it in the dataset's "
                         f"extra_info.prompt); the reward model scores a response to a prompt")
    model = scoring_model(str(model_dir), device)
    column = model.head_index(head)
    texts = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_text = render_prompt(prompt, model.tokenizer)
        texts.append(prompt_text + response_separator(prompt_text) + completion)
    rewards = score_texts(model, texts, batch_size, max_length)[:, column].tolist()
    return [RewardOutput(reward=float(r), parts={"head": model.head_names[column]}) for r in rewards]


def rm_reward_func(model_dir: str, head: str | int = 0, batch_size: int = 16, max_length: int = 512,
                   device: str | None = None):
    """A TRL `reward_funcs` entry scoring with the reward model in `model_dir` (named `rm_<head>` in TRL's logs)."""
    model = scoring_model(str(model_dir), device)
    return shims.trl_reward_func(score_with_reward_model, f"rm_{model.head_names[model.head_index(head)]}", label_columns=(), model_dir=model_dir,
                                 head=head, batch_size=batch_size, max_length=max_length, device=device)


reward_func = shims.openrlhf_reward_func(score_with_reward_model)
compute_score = shims.verl_compute_score(score_with_reward_model, parts=("head",))
