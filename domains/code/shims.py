"""The code reward in the shapes three RL frameworks call (none of them needs to be installed here).

Each sample needs its task (tests, entry point, code prompt). Put it in the dataset as a *label*:
`task_label(task)` gives a JSON string; a plain task id (`"HumanEval/3"`, `"easy/add_three"`) works
too and is looked up in the task sets named by `$ALIGN_CODE_TASKS` (default `easy,humaneval`).

- TRL (`GRPOTrainer(reward_funcs=[trl_reward_func()])`): called as
  `f(prompts=[...], completions=[...], completion_ids=..., **dataset_columns)`; the label comes from
  the dataset column `label` (or `task_id`). Conversational completions
  (`[[{"role": "assistant", "content": ...}]]`) are read too. Returns list[float | None]
  (None: sandbox failure, which TRL ignores).
- OpenRLHF (`--remote_rm_url /path/to/domains/code/shims.py --label_key label`): this file defines
  `reward_func(queries, prompts, labels)`; queries are prompt + response. Returns
  `{"rewards": tensor, "scores": tensor, "extra_logs": {...}}`; a sandbox failure scores 0 and is
  counted in `extra_logs["sandbox_errors"]` (OpenRLHF has no way to drop a sample).
- verl (`custom_reward_function.path=/path/to/domains/code/shims.py`,
  `custom_reward_function.name=compute_score`): `compute_score(data_source, solution_str,
  ground_truth, extra_info=None)` returns `{"score": float, "status": ..., "pass_ratio": ...}`;
  lists for the batch reward manager are accepted as well.

The reward scheme comes from `$ALIGN_CODE_REWARD` (stepcoder, rltf, pass_rate; default stepcoder).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from align.types import Prompt
from domains.code.rewards import RewardSettings, code_rewards
from domains.code.tasks import CodeTask


def task_label(task: CodeTask) -> str:
    """A self-contained JSON label for a dataset row: everything the reward needs."""
    return json.dumps({"task_id": task.task_id, "entry_point": task.entry_point, "prompt": task.prompt,
                       "tests": task.tests}, default=repr)


@lru_cache(maxsize=4)
def _tasks_by_id(sources: str) -> dict[str, CodeTask]:
    from domains.code.sources import load_tasks

    return {task.task_id: task for source in sources.split(",") if source for task in load_tasks(source)}


def prompt_from_label(label: Any) -> Prompt:
    """A reward Prompt from a label: a JSON task (see `task_label`), a dict, or a task id."""
    if isinstance(label, str) and label.lstrip().startswith("{"):
        label = json.loads(label)
    if isinstance(label, dict):
        missing = [k for k in ("entry_point", "tests") if k not in label]
        if missing:
            raise ValueError(f"code reward label: missing {', '.join(missing)} (make labels with task_label)")
        return Prompt(prompt=label.get("prompt", ""), id=label.get("task_id"),
                      meta={"entry_point": label["entry_point"], "tests": label["tests"],
                            "code_prompt": label.get("prompt", ""), "continuation": None})
    tasks = _tasks_by_id(os.environ.get("ALIGN_CODE_TASKS", "easy,humaneval"))
    if label not in tasks:
        raise ValueError(f"code reward label {label!r}: not a task id of $ALIGN_CODE_TASKS "
                         f"({os.environ.get('ALIGN_CODE_TASKS', 'easy,humaneval')}) nor a JSON task")
    task = tasks[label]
    return Prompt(prompt=task.prompt, id=task.task_id,
                  meta={"entry_point": task.entry_point, "tests": task.tests, "code_prompt": task.prompt,
                        "continuation": None})


def _settings() -> RewardSettings:
    return RewardSettings(scheme=os.environ.get("ALIGN_CODE_REWARD", "stepcoder"))


def _text(completion: Any) -> str:
    """A completion as TRL passes it: a string, or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"completion: expected a string or a list of messages, got {type(completion).__name__}")


def trl_reward_func(settings: RewardSettings | None = None, label_column: str = "label"):
    """A TRL `reward_funcs` entry scoring with the code reward."""
    settings = settings or _settings()

    def code_reward(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        labels = kwargs.get(label_column) or kwargs.get("task_id")
        if labels is None:
            raise ValueError(f"code reward: the dataset needs a `{label_column}` (or `task_id`) column")
        reward_prompts = [prompt_from_label(label) for label in labels]
        return [o.reward for o in code_rewards(reward_prompts, [_text(c) for c in completions], settings)]

    code_reward.__name__ = f"code_{settings.scheme}"
    return code_reward


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict:
    """OpenRLHF's `--remote_rm_url reward_func.py` entry point."""
    import torch

    responses = [q.removeprefix(p) for q, p in zip(queries, prompts)]
    outputs = code_rewards([prompt_from_label(label) for label in labels], responses, _settings())
    rewards = torch.tensor([o.reward if o.reward is not None else 0.0 for o in outputs], dtype=torch.float32)
    passed = torch.tensor([1.0 if o.parts.get("status") == "passed" else 0.0 for o in outputs])
    return {"rewards": rewards, "scores": passed,
            "extra_logs": {"sandbox_errors": torch.tensor(float(sum(o.reward is None for o in outputs)))}}


def compute_score(data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None, **kwargs: Any):
    """verl's custom reward function (per sample, or lists for its batch reward manager)."""
    batched = isinstance(solution_str, list)
    solutions = solution_str if batched else [solution_str]
    truths = ground_truth if batched else [ground_truth]
    outputs = code_rewards([prompt_from_label(t) for t in truths], solutions, _settings())
    scores = [{"score": o.reward if o.reward is not None else 0.0, "status": o.parts.get("status"),
               "pass_ratio": o.parts.get("pass_ratio", 0.0), "sandbox_error": o.reward is None} for o in outputs]
    return scores if batched else scores[0]
