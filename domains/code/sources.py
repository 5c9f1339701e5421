"""Every task set by name: the generated easy set, HumanEval(+), MBPP+, or a JSONL file of the user's."""
from __future__ import annotations

import os
from typing import Any

from domains.code.easy import easy_tasks
from domains.code.tasks import (
    CodeTask,
    TaskError,
    load_humaneval,
    load_humanevalplus,
    load_jsonl_tasks,
    load_mbppplus,
)


def load_tasks(name: str, **options: Any) -> list[CodeTask]:
    """`easy`, `humaneval`, `humanevalplus`, `mbppplus`, or a path to a generic JSONL file."""
    if name == "easy":
        return easy_tasks(**{k: v for k, v in options.items() if k in ("seed", "num_tasks")})
    if name == "humaneval":
        return load_humaneval()
    plus_options = {k: v for k, v in options.items() if k in ("include_plus", "max_tests", "backend", "progress")}
    if name == "humanevalplus":
        return load_humanevalplus(**plus_options)
    if name == "mbppplus":
        return load_mbppplus(**plus_options)
    if name.endswith((".jsonl", ".jsonl.gz")) or os.path.exists(name):
        return load_jsonl_tasks(name, **{k: v for k, v in plus_options.items() if k in ("backend", "progress")})
    raise TaskError(f"unknown task set {name!r}: expected easy, humaneval, humanevalplus, mbppplus or a .jsonl path")
