"""The code reward in the shapes TRL, OpenRLHF and verl call (`align.shims` has the calling conventions).

Each sample needs its task (tests, entry point, code prompt). Put it in the dataset as a *label*:
`task_label(task)` gives a JSON string; a plain task id (`"HumanEval/3"`, `"easy/add_three"`) works
too and is looked up in the task sets named by `$ALIGN_CODE_TASKS` (default `easy,humaneval`).

- TRL (`GRPOTrainer(reward_funcs=[trl_reward_func()])`): the label comes from the dataset column `label`
  (or `task_id`); plain and conversational completions. Returns list[float | None] (None: sandbox failure,
  which TRL leaves out).
- OpenRLHF (`--remote_rm_url /path/to/domains/code/shims.py --label_key label`): this file's
  `reward_func(queries, prompts, labels)`. `scores` is 1 for a program that passed, else 0; a sandbox failure
  rewards 0 and is counted in `extra_logs["sandbox_errors"]` (OpenRLHF has no way to drop a sample).
- verl (`custom_reward_function.path=/path/to/domains/code/shims.py`, `custom_reward_function.name=compute_score`,
  the label as `reward_model.ground_truth`): one sample (`data_source=, solution_str=, ground_truth=,
  extra_info=`) gives `{"score", "dropped", "status", "pass_ratio"}`; the batch manager's plural keywords give
  a list of them. `custom_reward_function.reward_kwargs.scheme=rltf` picks the scheme.

The reward scheme comes from `$ALIGN_CODE_REWARD` (stepcoder, rltf, pass_rate; default stepcoder) unless given.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from align import shims
from align.types import Prompt, RewardOutput
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


def score_code(prompts: list, completions: list[str], labels: list[Any], settings: RewardSettings | None = None,
               scheme: str | None = None) -> list[RewardOutput]:
    """The code reward of each completion for the task its label names (the prompts are not needed)."""
    if settings is None:
        settings = RewardSettings(scheme=scheme or os.environ.get("ALIGN_CODE_REWARD", "stepcoder"))
    return code_rewards([prompt_from_label(label) for label in labels], completions, settings)


def trl_reward_func(settings: RewardSettings | None = None, label_column: str = "label"):
    """A TRL `reward_funcs` entry scoring with the code reward (named `code_<scheme>` in TRL's logs)."""
    settings = settings or RewardSettings(scheme=os.environ.get("ALIGN_CODE_REWARD", "stepcoder"))
    return shims.trl_reward_func(score_code, f"code_{settings.scheme}", (label_column, "task_id"), settings=settings)


reward_func = shims.openrlhf_reward_func(score_code, score_of=lambda o: o.parts.get("status") == "passed",
                                         dropped_name="sandbox_errors")
compute_score = shims.verl_compute_score(score_code, parts=("status", "pass_ratio"))
