"""`CodeDomain`: code tasks as prompts, compiler-feedback rewards, execution-labelled preference pairs.

    domain = CodeDomain(tasks="easy", reward="stepcoder")
    prompts = list(domain.prompts("train"))
    outputs = domain.reward(prompts, completions, completion_offsets=offsets)   # FGO masks with offsets

Prompt styles: `chat` (an instruction plus the code prompt in a ```python fence; the model answers
with a fenced function) or `completion` (the raw code prompt; the model continues the function
body). CCCS (`cccs=True`): the code given ends inside the canonical solution and the model writes the
rest; in chat style that code opens the assistant's answer (`Prompt.meta["assistant_prefix"]`,
which the generator must append after the chat template).
"""
from __future__ import annotations

import logging
from typing import Any

from align.data import load_preferences, split_train_eval
from align.types import PreferencePair, Prompt, RewardOutput
from domains.code.cccs import CCCSSchedule, Curriculum
from domains.code.easy import split_easy
from domains.code.prompts import CCCSPrompts, task_prompt
from domains.code.rewards import RewardSettings, code_rewards
from domains.code.sources import load_tasks
from domains.code.tasks import CodeTask

log = logging.getLogger(__name__)


class CodeDomain:
    """Code generation with rewards from running the code (StepCoder / RLTF); see the package README."""

    name = "code"

    def __init__(self, tasks: str = "easy", reward: str = "stepcoder", prompt_style: str = "chat",
                 load_error_as: str = "compile", seed: int = 0, held_out_fraction: float = 0.2,
                 limit: int = -1, cccs: bool = False, cccs_fractions: list[float] | None = None,
                 cccs_threshold: float = 0.5, cccs_window: int = 64, pairs: str | None = None,
                 eval_pairs: str | None = None, backend: str = "auto", workers: int = 2, wall_s: float = 10.0,
                 strict: bool = False, include_plus: bool = True, max_tests: int = 50, tiers: list[str] | None = None):
        if prompt_style not in ("chat", "completion"):
            raise ValueError(f"domain_options.prompt_style: expected `chat` or `completion`, got {prompt_style!r}")
        self.task_source = tasks
        self.settings = RewardSettings(scheme=reward, load_error_as=load_error_as, backend=backend, workers=workers,
                                       wall_s=wall_s, strict=strict)
        self.settings.validate()
        self.prompt_style = prompt_style
        self.seed, self.held_out_fraction, self.limit = seed, held_out_fraction, limit
        self.tiers = list(tiers) if tiers else None  # easy tasks only: `one-step`, `two-step` (after the split)
        if self.tiers and (tasks != "easy" or not set(self.tiers) <= {"one-step", "two-step"}):
            raise ValueError(f"domain_options.tiers: the easy task set's tiers are one-step and two-step; got "
                             f"{self.tiers!r} for tasks={tasks!r}")
        self.pairs_path, self.eval_pairs_path = pairs, eval_pairs
        self.load_options = {"include_plus": include_plus, "max_tests": max_tests, "backend": backend, "seed": seed}
        self.curriculum = None
        if cccs:
            schedule = CCCSSchedule(**{k: v for k, v in (("fractions", cccs_fractions), ("threshold", cccs_threshold),
                                                         ("window", cccs_window)) if v is not None})
            self.curriculum = Curriculum(schedule)
        self.dropped_sandbox_errors = 0
        self._tasks: list[CodeTask] | None = None

    # ---------------------------------------------------------------- data
    def tasks(self, split: str = "all") -> list[CodeTask]:
        """`train` / `test` (held-out) for the easy set (`tiers` keeps some of its tiers; the split is made
        first, so it does not move); a benchmark or task file is one set served
        for every split (evaluate benchmarks whole; train on your own task file)."""
        if self._tasks is None:
            self._tasks = load_tasks(self.task_source, **self.load_options)
        tasks = self._tasks
        if self.task_source == "easy" and split in ("train", "test"):
            train, held_out = split_easy(tasks, self.held_out_fraction)
            tasks = train if split == "train" else held_out
        elif split not in ("train", "test", "all"):
            raise ValueError(f"code domain: unknown split {split!r} (expected train, test or all)")
        if self.tiers:
            tasks = [task for task in tasks if task.meta.get("tier") in self.tiers]
        return tasks[: self.limit] if self.limit > 0 else tasks

    def prompts(self, split: str) -> Any:
        tasks = self.tasks(split)
        if self.curriculum is not None and split == "train":
            return CCCSPrompts(tasks, self.curriculum, self.prompt_style)
        return [task_prompt(task, self.prompt_style) for task in tasks]

    def preferences(self, split: str) -> list[PreferencePair]:
        """Execution-labelled pairs from the configured file (`domain_options.pairs=...`)."""
        if not self.pairs_path:
            raise ValueError(
                "code domain: no preference pairs configured. Make them by running a policy on the tasks:\n"
                "  python -m domains.code.pairs --tasks easy --model smollm2-135m --samples 4 --out runs/code_pairs.jsonl\n"
                "then pass domain_options.pairs=runs/code_pairs.jsonl (or data=runs/code_pairs.jsonl to `align rm`).")
        if split == "test" and self.eval_pairs_path:
            return load_preferences(self.eval_pairs_path).pairs
        pairs = load_preferences(self.pairs_path).pairs
        train, held_out = split_train_eval(pairs, 0.1, self.seed)
        return held_out if split == "test" else train

    # ---------------------------------------------------------------- reward
    def reward(self, prompts: list[Prompt], completions: list[str], **meta: Any) -> list[RewardOutput]:
        """Run every completion's program against its prompt's tests; see domains/code/rewards.py.

        `completion_offsets` (each completion's token character spans) turns on FGO masks. Samples
        the sandbox failed on get reward None (dropped by the trainer, counted here)."""
        outputs = code_rewards(prompts, completions, self.settings, meta.get("completion_offsets"))
        self.dropped_sandbox_errors += sum(1 for o in outputs if o.reward is None)
        return outputs

    # ---------------------------------------------------------------- curriculum (align.types.Curriculum)
    def observe(self, prompts: list[Prompt], outputs: list[RewardOutput]) -> None:
        """CCCS: the trainer shows every process's scored training batch; passes move the stage."""
        if self.curriculum is None:
            return
        staged = [o.parts.get("status") == "passed" for p, o in zip(prompts, outputs)
                  if p.meta.get("cccs_fraction") is not None and o.reward is not None]
        if staged and self.curriculum.record(staged):
            log.info("CCCS: stage %d (prefix fraction %.2f)", self.curriculum.stage, self.curriculum.fraction)

    def state_dict(self) -> dict:
        return self.curriculum.state_dict() if self.curriculum is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.curriculum is not None and state:
            self.curriculum.load_state_dict(state)

    def log(self) -> dict[str, float]:
        return self.curriculum.log() if self.curriculum is not None else {}

    def demo_stages(self) -> dict:
        """`align demo` stages (align.types.HasDemo): `code`, SmolLM2 on held-out easy tasks and HumanEval CCCS
        subtasks with the sandboxed reward; `ppo`, SmolLM2 trained on the easy tasks with compiler feedback."""
        from domains.code.demo import demo_stage
        from domains.code.ppo_demo import demo_stage as ppo_stage

        return {"code": demo_stage, "ppo": ppo_stage}

    def evaluate(self, config: Any, run_dir: Any) -> dict:
        """`align eval domain=code`: pass@k for `config.model`, per-status counts, report.md + PNG."""
        from domains.code.evaluate import evaluate_code

        return evaluate_code(self, config, run_dir)
