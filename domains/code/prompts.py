"""Code tasks as prompts: chat style (an instruction and the code in a fence) or completion style (the raw
code prompt), and the prompts of the current CCCS stage."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from align.types import Prompt
from domains.code.cccs import Curriculum, stage_prompt
from domains.code.tasks import CodeTask

CHAT_INSTRUCTION = "Complete this Python function. Answer with the whole function in a ```python code block."
COMPLETION_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert", "\n```"]
"""Stop strings for completion style: a new top-level statement ends the function (HumanEval practice)."""
CHAT_STOP = ["\n```\n"]
"""Chat answers end at the closing fence (the explanation that usually follows is not needed)."""


def chat_text(task: CodeTask) -> str:
    return f"{CHAT_INSTRUCTION}\n\n```python\n{task.prompt}```"


def task_prompt(task: CodeTask, style: str = "chat", fraction: float = 0.0) -> Prompt:
    """The Prompt for `task`: `meta` carries what the reward needs (tests, entry point, code prompt).

    With `fraction > 0` (a CCCS stage) the code so far is the prompt plus that share of the canonical
    solution: in completion style it is the prompt text; in chat style it is `meta["assistant_prefix"]`,
    the start of the assistant's answer (a ```python fence and the code) that the generator appends
    after the chat template, so an instruct model continues the code inside its own answer."""
    meta: dict[str, Any] = {"task_id": task.task_id, "entry_point": task.entry_point, "tests": task.tests,
                            "atol": task.atol}
    code_prompt, prefix = stage_prompt(task, fraction) if fraction > 0 else (task.prompt, "")
    if fraction > 0:
        meta.update(cccs_prefix=prefix, cccs_fraction=fraction)
    if style == "completion":
        meta.update(code_prompt=code_prompt, continuation=True if fraction > 0 else None, style="completion",
                    stop=COMPLETION_STOP)
        reference = task.canonical_solution[len(prefix):]
        return Prompt(prompt=code_prompt, id=task.task_id, reference=reference, meta=meta)
    if fraction > 0:
        meta.update(code_prompt=code_prompt, continuation=True, style="chat", stop=["\n```"],
                    assistant_prefix="```python\n" + code_prompt)
        return Prompt(prompt=chat_text(task), id=task.task_id, reference=task.canonical_solution[len(prefix):],
                      meta=meta)
    meta.update(code_prompt=task.prompt, continuation=None, style="chat", stop=CHAT_STOP)
    return Prompt(prompt=chat_text(task), id=task.task_id, reference=task.prompt + task.canonical_solution, meta=meta)


class CCCSPrompts:
    """Prompts of the current CCCS stage, built when iterated (so the stage may change mid-run)."""

    def __init__(self, tasks: list[CodeTask], curriculum: Curriculum, style: str):
        self.tasks, self.curriculum, self.style = tasks, curriculum, style

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Prompt]:
        for task in self.tasks:
            prompt = task_prompt(task, self.style, self.curriculum.fraction)
            prompt.meta["cccs_fraction"] = self.curriculum.fraction  # marks it for the curriculum, 0.0 included
            yield prompt
