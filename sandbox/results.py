"""Trusted side: decode what came out of the sandbox, compare it with the expected values, and
classify the run. Nothing here unpickles or evaluates data the program wrote: the actual values
come as tagged JSON and are rebuilt with plain constructors."""
from __future__ import annotations

import json
import math
import signal
from typing import Any

from .runtime.harness import clip_text, stdout_digest, stdout_lines
from .types import STATUS_PRECEDENCE, ExecRequest, ExecResult, TestCase, TestResult, jsonable

ERROR_TYPE_BYTES, TEST_MESSAGE_BYTES, RESULT_MESSAGE_BYTES = 200, 2000, 4000  # in the result's JSON


class Opaque:
    """An actual value the sandbox could not express as plain data; equal to nothing."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __eq__(self, other):
        return False

    __hash__ = None

    def __repr__(self):
        return f"<opaque {self.type_name}: {self.text}>"


def decode_value(data: Any, depth: int = 0) -> Any:
    if depth > 60:
        return Opaque("?", "too deep")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode_value(v, depth + 1) for v in data]
    if isinstance(data, dict) and len(data) >= 1:
        if "$tuple" in data and isinstance(data["$tuple"], list):
            return tuple(decode_value(v, depth + 1) for v in data["$tuple"])
        if "$set" in data and isinstance(data["$set"], list):
            items = [decode_value(v, depth + 1) for v in data["$set"]]
            try:
                return set(items)
            except TypeError:
                return Opaque("set", repr(items)[:200])
        if "$dict" in data and isinstance(data["$dict"], list):
            pairs = [(decode_value(p[0], depth + 1), decode_value(p[1], depth + 1))
                     for p in data["$dict"] if isinstance(p, list) and len(p) == 2]
            try:
                return dict(pairs)
            except TypeError:
                return Opaque("dict", repr(pairs)[:200])
        if "$float" in data and data["$float"] in ("inf", "-inf", "nan"):
            return float(data["$float"])
        if "$bytes" in data and isinstance(data["$bytes"], str):
            try:
                return bytes.fromhex(data["$bytes"])
            except ValueError:
                pass
        if "$complex" in data and isinstance(data["$complex"], list) and len(data["$complex"]) == 2:
            try:
                return complex(float(data["$complex"][0]), float(data["$complex"][1]))
            except (TypeError, ValueError):
                pass
        if "$opaque" in data:
            return Opaque(str(data.get("$opaque"))[:200], str(data.get("repr"))[:500])
    return Opaque(type(data).__name__, repr(data)[:200])


def values_equal(actual: Any, expected: Any, atol: float = 0.0, rtol: float = 1e-9) -> bool:
    """Python equality with float tolerance; list and tuple compare alike (JSON has no tuple)."""
    if isinstance(actual, Opaque) or isinstance(expected, Opaque):
        return False
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
            try:
                if math.isnan(actual) or math.isnan(expected):
                    return math.isnan(actual) and math.isnan(expected)
                return math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol)
            except OverflowError:  # an int beyond float range (e.g. 2 ** 2000): exact comparison
                return actual == expected
        return False
    if isinstance(expected, complex) or isinstance(actual, complex):
        try:
            return (isinstance(actual, (int, float, complex)) and isinstance(expected, (int, float, complex))
                    and abs(complex(actual) - complex(expected)) <= atol + rtol * abs(complex(expected)))
        except OverflowError:
            return False
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(
            values_equal(a, e, atol, rtol) for a, e in zip(actual, expected))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(
            values_equal(actual[k], expected[k], atol, rtol) for k in expected)
    if type(actual) in (list, tuple, dict) or type(expected) in (list, tuple, dict):
        return False
    try:
        return bool(actual == expected)
    except Exception:  # noqa: BLE001 - e.g. comparing sets of unorderable things
        return False


def stdout_matches(actual: str, expected: str) -> bool:
    """Line by line with trailing whitespace and trailing blank lines ignored."""
    return stdout_lines(actual) == stdout_lines(expected)


def _signal_name(number) -> str:
    try:
        return signal.Signals(number).name
    except (ValueError, TypeError):
        return f"signal {number}"


def _died(report: dict) -> TestResult:
    """A child that did not report the end of its test: how did it end?"""
    status = report.get("how")
    if status == "output_limit":
        return TestResult("output_limit", error={"type": "OutputLimit", "message": "output limit exceeded",
                                                 "line": None})
    if status == "timeout":
        return TestResult("timeout", error={"type": "Timeout", "message": f"{report.get('scope')} wall time "
                                            "limit exceeded", "line": None})
    if status == "memory":
        return TestResult("memory", error={"type": "MemoryLimit", "message": "killed at the memory limit",
                                           "line": None})
    if status == "signal":
        name = _signal_name(report.get("signal"))
        if name == "SIGXCPU":
            return TestResult("timeout", error={"type": "CPUTimeLimit", "message": "CPU time limit exceeded",
                                                "line": None})
        if name == "SIGXFSZ":
            return TestResult("output_limit", error={"type": "FileSizeLimit", "message": "file size limit "
                                                     "exceeded", "line": None})
        return TestResult("runtime_error", error={"type": name, "message": f"killed by {name}", "line": None})
    return TestResult("runtime_error", error={"type": "Exit", "message": "the program exited (code "
                                              f"{report.get('exit_code')}) before reporting the test",
                                              "line": None})


def _seconds(value: Any) -> float | None:
    """A duration from the sandbox, or None: numbers only, finite (a forged 10 ** 4000 is None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    """A non-negative integer from the sandbox that fits in 64 bits, or None."""
    return value if type(value) is int and 0 <= value < 1 << 63 else None


def judge_test(test: TestCase, report: dict | None) -> TestResult:
    if report is None:
        return TestResult("not_run")
    wall = _seconds(report.get("wall_s"))
    status = report.get("status")
    if status == "died":
        result = _died(report)
        result.wall_s = wall
        return result
    error = report.get("error") if isinstance(report.get("error"), dict) else None
    if error is not None:
        error = {"type": str(error.get("type"))[:200], "message": str(error.get("message"))[:2000],
                 "line": _count(error.get("line"))}
    if status == "memory":
        return TestResult("memory", wall_s=wall, error=error)
    if status == "error":
        failed = test.kind == "assert" and error and error["type"] == "AssertionError"
        return TestResult("failed" if failed else "runtime_error", wall_s=wall, error=error)
    if status != "ok":
        return TestResult("sandbox_error", wall_s=wall, error={"type": "Protocol", "message":
                                                               f"unknown test status {status!r}", "line": None})
    if test.kind == "stdio":
        actual = str(report.get("actual") or "")
        digest = report.get("actual_digest")  # of the whole output, when only an excerpt came
        expected = test.expected_stdout or ""
        ok = digest == stdout_digest(expected) if isinstance(digest, str) else stdout_matches(actual, expected)
        return TestResult("passed" if ok else "failed", actual=actual, wall_s=wall,
                          actual_truncated=report.get("actual_truncated") is True)
    if test.kind == "assert":
        return TestResult("passed", wall_s=wall)
    actual = decode_value(report.get("actual"))
    ok = values_equal(actual, test.expected, test.atol, test.rtol)
    return TestResult("passed" if ok else "failed", actual=actual, wall_s=wall)


def _clip_error(error: dict | None, message_bytes: int) -> dict | None:
    if error is None:
        return None
    return {"type": clip_text(str(error.get("type")), ERROR_TYPE_BYTES)[0],
            "message": clip_text(str(error.get("message")), message_bytes)[0], "line": _count(error.get("line"))}


def _kind(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind in (str, bytes, int, float, complex, list, tuple, dict, set) else "value"


def bound_actuals(results: list[TestResult], tests: list[TestCase], budget: int) -> None:
    """Keep the tests' actual values within `budget` bytes of JSON together (after judging): values
    that fit whole are kept, in test order; then stdio outputs that did not fit are cut to what is
    left, and any other value that did not fit is replaced by a placeholder; both are flagged."""
    left_out = []
    for result, test in zip(results, tests):
        if result.actual is None:
            continue
        size = len(json.dumps(jsonable(result.actual)))
        if size <= budget:
            budget -= size
        else:
            left_out.append((result, test, size))
    for result, test, size in left_out:
        result.actual_truncated = True
        if test.kind == "stdio" and isinstance(result.actual, str):
            result.actual = clip_text(result.actual, max(budget - 2, 0))[0]  # 2: the quotes
            budget -= len(json.dumps(result.actual))
        else:
            result.actual = Opaque(_kind(result.actual), f"too large to report ({size:,} bytes as JSON)")


def build_result(request: ExecRequest, reply: dict, backend: str, isolation: dict,
                 peak_memory: int | None = None, program_oom: bool = False) -> ExecResult:
    """Turn the zygote's reply into an ExecResult. `reply` came from inside the sandbox: every
    field is type-checked, nothing is trusted to be well formed."""
    if not isinstance(reply, dict) or "sandbox_error" in reply:
        message = reply.get("sandbox_error") if isinstance(reply, dict) else "malformed reply"
        return sandbox_error(str(message), backend, isolation, len(request.tests))
    limit, excerpt = request.limits.output_bytes, request.limits.excerpt_bytes
    stdout, stderr = str(reply.get("stdout") or ""), str(reply.get("stderr") or "")
    stdout_kept, stdout_cut = clip_text(stdout[:limit], excerpt)
    stderr_kept, stderr_cut = clip_text(stderr[:limit], excerpt)
    result = ExecResult(
        status="passed", backend=backend, isolation=isolation,
        stdout=stdout_kept, stderr=stderr_kept,
        stdout_truncated=bool(reply.get("stdout_truncated")) or len(stdout) > limit or stdout_cut,
        stderr_truncated=bool(reply.get("stderr_truncated")) or len(stderr) > limit or stderr_cut,
        wall_s=_seconds(reply.get("wall_s")) or 0.0,
        peak_memory_bytes=peak_memory if peak_memory is not None else _count(reply.get("maxrss")) or None,
    )
    if request.trace_lines and isinstance(reply.get("lines"), list):
        n_lines = request.program.count("\n") + 1
        result.executed_lines = sorted({x for x in reply["lines"] if isinstance(x, int) and 1 <= x <= n_lines})
    load = reply.get("load") if isinstance(reply.get("load"), dict) else None
    reports = reply.get("tests") if isinstance(reply.get("tests"), list) else []
    reports = (reports + [None] * len(request.tests))[:len(request.tests)]
    result.tests = [judge_test(t, r if isinstance(r, dict) else None) for t, r in zip(request.tests, reports)]
    if load and load.get("status") in ("syntax", "load"):
        result.status, result.compile_error_kind = "compile_error", load["status"]
        result.error = judge_test(TestCase.assertion(""), {"status": "error", "error": load.get("error")}).error
    elif load and load.get("status") == "memory":
        result.status = "memory"
        result.error = {"type": "MemoryError", "message": "while loading the module", "line": None}
    elif load and load.get("status") == "died":
        died = _died(load)
        result.status, result.error = died.status, died.error
    else:
        statuses = {t.status for t in result.tests}
        if reply.get("output_limit"):
            statuses.add("output_limit")
        if reply.get("program_timeout"):
            statuses.add("timeout")
        if "not_run" in statuses and not statuses & {"timeout", "output_limit", "memory"}:
            statuses.add("runtime_error")
        result.status = next(s for s in STATUS_PRECEDENCE if s in statuses or s == "passed")
        first_bad = next((t for t in result.tests if t.status == result.status and t.error), None)
        result.error = first_bad.error if first_bad else None
    if program_oom and result.status == "runtime_error":
        result.status = "memory"
    # judged: now bound what the result keeps (ExecResult's docstring)
    bound_actuals(result.tests, request.tests, excerpt)
    for test in result.tests:
        test.error = _clip_error(test.error, TEST_MESSAGE_BYTES)
    result.error = _clip_error(result.error, RESULT_MESSAGE_BYTES)
    return result


def sandbox_error(message: str, backend: str, isolation: dict, tests: int = 0) -> ExecResult:
    return ExecResult(status="sandbox_error", backend=backend, isolation=isolation,
                      tests=[TestResult("sandbox_error") for _ in range(tests)],
                      error=_clip_error({"type": "SandboxError", "message": message, "line": None},
                                        RESULT_MESSAGE_BYTES))
