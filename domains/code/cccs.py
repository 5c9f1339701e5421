"""CCCS (curriculum of code completion subtasks, StepCoder, Dou et al. 2024).

Long programs give a sparse reward: the policy rarely gets a whole solution right. CCCS splits each
canonical solution at statement boundaries of its AST and first asks the policy to complete only
the end of the solution (a long prefix is given), then shorter and shorter prefixes, ending at full
generation. Cut points at conditionals and loops come first (they are where a solution's
reasoning branches, as in the paper); a solution without any falls back to every statement start.

The schedule (`CCCSSchedule`) is a list of fractions of the solution given as prefix, one per
stage; the curriculum moves to the next stage once the pass rate over the last `window`
completions reaches `threshold`. Every change is recorded in `Curriculum.events` for the log.
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field

from domains.code.tasks import CodeTask

BRANCHING = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With)


@dataclass
class CutPoint:
    line: int
    """0-based line of the canonical solution where the completion starts (the prefix is the lines before)."""
    kind: str
    """`branch` (an if/for/while/try/with starts here) or `statement`."""


def split_points(task: CodeTask) -> list[CutPoint]:
    """Statement boundaries inside the canonical solution, in order (line 0 excluded: that is full generation)."""
    program = task.canonical_program
    prompt_lines = task.prompt.count("\n")
    if not task.prompt.endswith("\n"):
        raise ValueError(f"{task.task_id}: CCCS needs a prompt that ends with a newline")
    tree = ast.parse(program)
    points: dict[int, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        line = node.lineno - 1 - prompt_lines  # 0-based line in the solution
        if line <= 0:
            continue
        kind = "branch" if isinstance(node, BRANCHING) else "statement"
        if points.get(line) != "branch":
            points[line] = kind
    return [CutPoint(line, kind) for line, kind in sorted(points.items())]


def choose_cut(task: CodeTask, fraction: float) -> int:
    """Line of the solution to start from when about `fraction` of it is given: the latest branch
    point (else statement point) at or before `fraction` of the solution's lines; 0 = no prefix."""
    if fraction <= 0:
        return 0
    points = split_points(task)
    branch = [p.line for p in points if p.kind == "branch"]
    candidates = branch if branch else [p.line for p in points]
    total = max(1, len(task.canonical_solution.rstrip("\n").splitlines()))
    allowed = [line for line in candidates if line <= fraction * total]
    return max(allowed) if allowed else 0


def stage_prompt(task: CodeTask, fraction: float) -> tuple[str, str]:
    """(prompt with the given prefix appended, the prefix) for the stage that gives `fraction`."""
    cut = choose_cut(task, fraction)
    prefix = "".join(task.canonical_solution.splitlines(keepends=True)[:cut])
    return task.prompt + prefix, prefix


@dataclass
class CCCSSchedule:
    fractions: list[float] = field(default_factory=lambda: [0.75, 0.5, 0.25, 0.0])
    """Share of each canonical solution given as prefix, per stage; the last stage should be 0.0."""
    threshold: float = 0.5
    """Pass rate over the window that moves the curriculum to the next stage."""
    window: int = 64
    """Completions over which the pass rate is measured (the window restarts at each stage)."""

    def validate(self) -> None:
        if not self.fractions or any(not 0.0 <= f < 1.0 for f in self.fractions):
            raise ValueError(f"cccs.fractions: expected fractions in [0, 1), got {self.fractions!r}")
        if any(a < b for a, b in zip(self.fractions, self.fractions[1:])):
            raise ValueError(f"cccs.fractions: expected a non-increasing list, got {self.fractions!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"cccs.threshold: expected a number in (0, 1], got {self.threshold!r}")
        if self.window <= 0:
            raise ValueError(f"cccs.window: expected a positive count, got {self.window!r}")


class Curriculum:
    """Tracks the current stage; `record(passed)` after each batch of rewards."""

    def __init__(self, schedule: CCCSSchedule):
        schedule.validate()
        self.schedule = schedule
        self.stage = 0
        self.seen = 0
        self.recent: deque[bool] = deque(maxlen=schedule.window)
        self.events: list[dict] = [{"stage": 0, "fraction": schedule.fractions[0], "at_sample": 0, "pass_rate": None}]

    @property
    def fraction(self) -> float:
        return self.schedule.fractions[self.stage]

    @property
    def finished(self) -> bool:
        """True at the last stage (full generation when the schedule ends with 0.0)."""
        return self.stage == len(self.schedule.fractions) - 1

    def pass_rate(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def record(self, passed: list[bool]) -> bool:
        """Add a batch of outcomes; returns True when the curriculum moved to the next stage."""
        self.seen += len(passed)
        self.recent.extend(bool(p) for p in passed)
        rate = self.pass_rate()
        full_window = len(self.recent) == self.schedule.window
        if not self.finished and full_window and rate is not None and rate >= self.schedule.threshold:
            self.stage += 1
            self.events.append({"stage": self.stage, "fraction": self.fraction, "at_sample": self.seen,
                                "pass_rate": rate})
            self.recent.clear()
            return True
        return False

    def prompt_for(self, task: CodeTask) -> tuple[str, str]:
        return stage_prompt(task, self.fraction)

    def log(self) -> dict:
        """Flat metrics for metrics.jsonl."""
        rate = self.pass_rate()
        return {"cccs_stage": self.stage, "cccs_fraction": self.fraction,
                "cccs_window_pass_rate": rate if rate is not None else float("nan")}

    def state_dict(self) -> dict:
        return {"stage": self.stage, "seen": self.seen, "recent": list(self.recent), "events": self.events}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.seen, self.events = state["stage"], state["seen"], list(state["events"])
        self.recent = deque((bool(x) for x in state["recent"]), maxlen=self.schedule.window)
