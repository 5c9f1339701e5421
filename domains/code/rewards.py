"""Compiler-feedback rewards: run each completion's program in the sandbox and score the outcome.

Schemes (`scheme=`):

| outcome                                        | `stepcoder` | `rltf`                 | `pass_rate`       |
|------------------------------------------------|-------------|------------------------|-------------------|
| every test passes                              | +1          | +1                     | 1                 |
| some test fails (wrong answer)                 | -0.3        | -0.3 + 1.3 * passed/n  | passed/n          |
| runtime error / timeout / memory / output limit| -0.6        | -0.6                   | passed/n          |
| compile error (or no code found)               | -1          | -1                     | 0                 |
| sandbox error (our fault)                      | None: the sample is dropped and counted, never penalised |

StepCoder (Dou et al. 2024) and RLTF (Liu et al. 2023) define these values. A Python "compile
error" is a syntax error; an exception while the module loads (e.g. `List` undefined in a
signature) is counted as a compile error too by default (`load_error_as="compile"`: no test could
run), or as a runtime error with `load_error_as="runtime"`.

`Prompt.meta` carries what the reward needs: `tests` (dicts, see tasks.py), `entry_point`,
`code_prompt` (the code the model was shown or continues) and `continuation` (True for CCCS /
completion-style prompts, None to decide from the text).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from align.types import Prompt, RewardOutput
from domains.code.extract import Extraction, extract_program
from domains.code.fgo import token_mask

SCHEMES = ("stepcoder", "rltf", "pass_rate")
ERROR_STATUSES = ("runtime_error", "timeout", "memory", "output_limit")
STATUSES = ("passed", "failed", "compile_error", "runtime_error", "timeout", "memory", "output_limit",
            "sandbox_error", "no_code")


@dataclass
class RewardSettings:
    scheme: str = "stepcoder"
    load_error_as: str = "compile"
    """`compile`: an exception while loading the module scores as a compile error; `runtime`: as a runtime error."""
    backend: str = "auto"
    workers: int = 2
    wall_s: float = 10.0
    """Wall-time limit per program (all its tests)."""
    per_test_wall_s: float = 3.0
    strict: bool = False
    """Refuse to run when the sandbox's isolation is weaker than asked for."""
    sandbox_retries: int = 1
    """Run a request again this many times when the sandbox (not the program) failed."""
    progress: bool = False

    def validate(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"reward: expected one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if self.load_error_as not in ("compile", "runtime"):
            raise ValueError(f"load_error_as: expected `compile` or `runtime`, got {self.load_error_as!r}")


def outcome(status: str, compile_kind: str | None, load_error_as: str) -> str:
    """The status that decides the reward (a load error may count as a runtime error)."""
    if status == "compile_error" and compile_kind == "load" and load_error_as == "runtime":
        return "runtime_error"
    return status


def scheme_reward(scheme: str, status: str, passed: int, total: int) -> float | None:
    """The reward of one outcome (`status` after `outcome`) under `scheme`; see the module table."""
    if status == "sandbox_error":
        return None
    ratio = passed / total if total else 0.0
    if scheme == "pass_rate":
        return 0.0 if status in ("compile_error", "no_code") else (1.0 if status == "passed" else ratio)
    if status == "passed":
        return 1.0
    if status == "failed":
        return -0.3 + 1.3 * ratio if scheme == "rltf" else -0.3
    if status in ERROR_STATUSES:
        return -0.6
    if status in ("compile_error", "no_code"):
        return -1.0
    raise ValueError(f"unknown execution status {status!r}")


def test_case(test: dict[str, Any], timeout_s: float | None = None):
    """One test dict (tasks.py) as a sandbox TestCase."""
    from sandbox import TestCase

    if "assert" in test:
        return TestCase.assertion(test["assert"], timeout_s=timeout_s)
    if "call" in test:
        return TestCase.call_expr(test["call"], expected=test.get("expected"), atol=float(test.get("atol") or 0.0),
                                  timeout_s=timeout_s)
    if "stdin" in test:
        return TestCase.stdio(stdin=test["stdin"], expected_stdout=test["expected_stdout"], timeout_s=timeout_s)
    raise ValueError(f"a test needs `call`, `assert` or `stdin`, got keys {sorted(test)}")


def extract_for(prompt: Prompt, completion: str) -> Extraction:
    meta = prompt.meta
    code_prompt = meta.get("code_prompt") or (prompt.prompt if isinstance(prompt.prompt, str) else "")
    return extract_program(completion, code_prompt, meta["entry_point"], continuation=meta.get("continuation"))


def _completion_line(completion: str, extraction: Extraction, program_line: int | None) -> int | None:
    """1-based line of `completion` holding program line `program_line`, if it lies in the code slice."""
    if program_line is None or extraction.program is None:
        return None
    index = program_line - extraction.header_lines - 1
    code_lines = completion[extraction.code_start:extraction.code_end].count("\n") + 1
    if not 0 <= index < code_lines:
        return None
    return completion[:extraction.code_start].count("\n") + index + 1


def run_programs(prompts: list[Prompt], extractions: list[Extraction], settings: RewardSettings,
                 trace_lines: bool) -> list[Any]:
    """ExecResult per extraction (None where no program was found); identical requests run once."""
    from sandbox import ExecRequest, Limits, run_many

    keys, requests, index_of = [], [], {}
    for prompt, extraction in zip(prompts, extractions):
        if extraction.program is None:
            keys.append(None)
            continue
        tests = prompt.meta["tests"]
        key = (extraction.program, repr(tests), trace_lines)  # expected values need not be JSON (tuple keys)
        if key not in index_of:
            index_of[key] = len(requests)
            requests.append(ExecRequest(
                program=extraction.program, tests=[test_case(t, settings.per_test_wall_s) for t in tests],
                # the reward reads statuses, errors, executed lines and the end of stderr: a 4 KiB excerpt of
                # the output keeps results small when thousands of completions are scored
                limits=Limits(wall_s=settings.wall_s, excerpt_bytes=4 << 10), trace_lines=trace_lines))
        keys.append(index_of[key])
    results = run_many(requests, backend=settings.backend, workers=settings.workers, strict=settings.strict,
                       progress=settings.progress) if requests else []
    for _ in range(settings.sandbox_retries):
        # A sandbox error is our fault, not the program's: run those requests again before giving up.
        failed = [i for i, result in enumerate(results) if result.status == "sandbox_error"]
        if not failed:
            break
        retried = run_many([requests[i] for i in failed], backend=settings.backend, workers=settings.workers,
                           strict=settings.strict)
        for i, result in zip(failed, retried):
            results[i] = result
    return [results[k] if k is not None else None for k in keys]


def score(prompt: Prompt, completion: str, extraction: Extraction, result: Any, settings: RewardSettings,
          offsets: list[tuple[int, int]] | None = None) -> RewardOutput:
    """The RewardOutput of one executed (or unextractable) completion."""
    total = len(prompt.meta["tests"])
    parts: dict[str, Any] = {"scheme": settings.scheme, "tests_total": total, "extraction": extraction.style,
                             "extraction_failure": extraction.failure, "renamed_from": extraction.renamed_from,
                             "task_id": prompt.id}
    if result is None:
        parts.update(status="no_code", tests_passed=0, pass_ratio=0.0, error_type=None, error_line=None,
                     completion_error_line=None, compile_error_kind=None)
        mask = [1] * len(offsets) if offsets is not None else None
        return RewardOutput(scheme_reward(settings.scheme, "no_code", 0, total), parts, mask)
    passed = sum(1 for t in result.tests if t.status == "passed")
    status = outcome(result.status, result.compile_error_kind, settings.load_error_as)
    error = result.error or {}
    parts.update(status=status, sandbox_status=result.status, tests_passed=passed,
                 pass_ratio=passed / total if total else 0.0, compile_error_kind=result.compile_error_kind,
                 error_type=error.get("type"), error_line=error.get("line"),
                 completion_error_line=_completion_line(completion, extraction, error.get("line")),
                 wall_s=result.wall_s)
    if status == "sandbox_error":
        parts["sandbox_error"] = error.get("message") or result.stderr[-500:]
    mask = None
    if offsets is not None and status != "sandbox_error":
        mask = token_mask(completion, offsets, extraction, result.executed_lines,
                          compile_error=result.status == "compile_error")
    return RewardOutput(scheme_reward(settings.scheme, status, passed, total), parts, mask)


def code_rewards(prompts: list[Prompt], completions: list[str], settings: RewardSettings | None = None,
                 completion_offsets: list[list[tuple[int, int]]] | None = None) -> list[RewardOutput]:
    """Run and score every completion (`prompts[i]` answered by `completions[i]`).

    With `completion_offsets` (each completion's token character spans) the sandbox records executed
    lines and each RewardOutput carries the FGO `token_mask`."""
    settings = settings or RewardSettings()
    settings.validate()
    if len(prompts) != len(completions):
        raise ValueError(f"reward: {len(prompts)} prompts but {len(completions)} completions")
    if completion_offsets is not None and len(completion_offsets) != len(completions):
        raise ValueError(f"reward: {len(completion_offsets)} offset lists for {len(completions)} completions")
    for index, prompt in enumerate(prompts):
        missing = [k for k in ("tests", "entry_point") if k not in prompt.meta]
        if missing:
            raise ValueError(f"reward: prompt {index} ({prompt.id}) has no {', '.join(missing)} in its meta; "
                             "use prompts from the code domain (or a task file)")
    extractions = [extract_for(p, c) for p, c in zip(prompts, completions)]
    results = run_programs(prompts, extractions, settings, trace_lines=completion_offsets is not None)
    return [score(p, c, e, r, settings, completion_offsets[i] if completion_offsets is not None else None)
            for i, (p, c, e, r) in enumerate(zip(prompts, completions, extractions, results))]


def status_counts(outputs: list[RewardOutput]) -> dict[str, int]:
    """Count of each status (every status present, zero or not, so report keys stay stable)."""
    counts = Counter(o.parts.get("status") for o in outputs)
    return {status: int(counts.get(status, 0)) for status in STATUSES}
