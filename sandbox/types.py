"""Requests and results of the sandbox (the contract: README.md, "Sandbox")."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("passed", "failed", "compile_error", "runtime_error", "timeout", "memory", "output_limit",
            "sandbox_error")
# when tests end differently, the result takes the first of these that occurred
STATUS_PRECEDENCE = ("sandbox_error", "compile_error", "output_limit", "memory", "timeout", "runtime_error",
                     "failed", "passed")
TEST_STATUSES = STATUSES[:2] + STATUSES[3:] + ("not_run",)
MAX_EXCERPT_BYTES = 8 << 20     # Limits.excerpt_bytes at most (three of them cross the zygote's pipe)
RESULT_FIXED_BYTES = 8 << 10    # ExecResult.to_json() apart from the excerpts and the tests: status,
                                # flags, timings, error (message <= 4000 bytes), isolation
RESULT_PER_TEST_BYTES = 3 << 10  # one test apart from its actual value: status, wall_s, error (type <=
                                 # 200 bytes, message <= 2000 bytes), the placeholder of a value cut out


class SandboxError(RuntimeError):
    """The sandbox itself could not do its job (never the program's fault)."""


class IsolationError(SandboxError):
    """Strict mode was asked for and this machine cannot provide full isolation."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0            # whole program, all tests together
    cpu_s: float = 10.0             # CPU seconds per process (RLIMIT_CPU); a worker also gets at most 1 CPU
    per_test_wall_s: float = 5.0    # default for a test without its own timeout_s
    memory_bytes: int = 512 << 20   # all processes of the program together (cgroup), swap included
    processes: int = 32             # processes + threads of the program (pids cgroup)
    output_bytes: int = 1 << 20     # stdout and stderr each; more ends the program with output_limit
    file_bytes: int = 16 << 20      # largest file the program may write (RLIMIT_FSIZE)
    excerpt_bytes: int = 1 << 20    # what the result keeps, measured in its JSON: stdout and stderr
                                    # each, and all tests' actual values together (see ExecResult).
                                    # Rewards computed by the thousand want a few KiB here.

    def validate(self) -> None:
        for name in ("wall_s", "cpu_s", "per_test_wall_s", "memory_bytes", "processes", "output_bytes",
                     "file_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)!r}")
        if self.memory_bytes < 16 << 20:
            raise ValueError(f"Limits.memory_bytes must be at least 16 MiB, got {self.memory_bytes}")
        if not (isinstance(self.excerpt_bytes, int) and 0 <= self.excerpt_bytes <= MAX_EXCERPT_BYTES):
            raise ValueError(f"Limits.excerpt_bytes must be an int in [0, {MAX_EXCERPT_BYTES}], "
                             f"got {self.excerpt_bytes!r}")


@dataclass(frozen=True)
class TestCase:
    """One test. `expected` / `expected_stdout` stay on the trusted side; only the call, the
    arguments, the stdin text or the assertion code enter the sandbox."""
    kind: str                       # "call" | "call_args" | "stdio" | "assert"
    expr: str | None = None
    fn: str | None = None
    args: list | None = None
    stdin: str | None = None
    code: str | None = None
    expected: Any = None
    expected_stdout: str | None = None
    atol: float = 0.0
    rtol: float = 1e-9
    timeout_s: float | None = None

    __test__ = False  # not a pytest class

    @classmethod
    def call_expr(cls, expr: str, expected: Any, timeout_s: float | None = None, atol: float = 0.0,
                  rtol: float = 1e-9) -> TestCase:
        return cls("call", expr=expr, expected=expected, timeout_s=timeout_s, atol=atol, rtol=rtol)

    @classmethod
    def call_args(cls, fn: str, args: list, expected: Any, atol: float = 0.0, rtol: float = 1e-9,
                  timeout_s: float | None = None) -> TestCase:
        return cls("call_args", fn=fn, args=list(args), expected=expected, atol=atol, rtol=rtol,
                   timeout_s=timeout_s)

    @classmethod
    def stdio(cls, stdin: str, expected_stdout: str, timeout_s: float | None = None) -> TestCase:
        return cls("stdio", stdin=stdin, expected_stdout=expected_stdout, timeout_s=timeout_s)

    @classmethod
    def assertion(cls, code: str, timeout_s: float | None = None) -> TestCase:
        """Assert-style test code run in the program's namespace (HumanEval `check`, MBPP asserts).
        Forgeable: the program runs in the same process and can, e.g., replace builtins or exit
        early in a way that looks like success. Prefer call tests for rewards."""
        return cls("assert", code=code, timeout_s=timeout_s)

    def to_sandbox(self) -> dict:
        """What enters the sandbox: never the expected value."""
        if self.kind == "call":
            return {"kind": "call", "expr": self.expr}
        if self.kind == "call_args":
            return {"kind": "call_args", "fn": self.fn, "args": self.args}
        if self.kind == "stdio":
            return {"kind": "stdio", "stdin": self.stdin or ""}
        if self.kind == "assert":
            return {"kind": "assert", "code": self.code}
        raise ValueError(f"unknown TestCase kind {self.kind!r}")


@dataclass(frozen=True)
class ExecRequest:
    program: str
    tests: list[TestCase] = field(default_factory=list)
    limits: Limits = Limits()
    language: str = "python"
    trace_lines: bool = False

    def validate(self) -> None:
        if self.language != "python":
            raise ValueError(f"ExecRequest.language: only 'python' is supported, got {self.language!r}")
        if not isinstance(self.program, str):
            raise TypeError("ExecRequest.program must be a str")
        self.limits.validate()
        for i, test in enumerate(self.tests):
            test.to_sandbox()
            if test.timeout_s is not None and not test.timeout_s > 0:
                raise ValueError(f"ExecRequest.tests[{i}].timeout_s must be > 0, got {test.timeout_s!r}")

    def result_bound(self) -> int:
        """Most bytes `ExecResult.to_json()` of this request can take, whatever the program does."""
        lines = 0
        if self.trace_lines:
            n = self.program.count("\n") + 1
            lines = n * (len(str(n)) + 2)
        return (3 * self.limits.excerpt_bytes + RESULT_FIXED_BYTES + RESULT_PER_TEST_BYTES * len(self.tests)
                + lines)

    def to_sandbox(self) -> dict:
        limits = asdict(self.limits)
        limits["per_test_timeouts"] = [t.timeout_s for t in self.tests]
        return {"program": self.program, "tests": [t.to_sandbox() for t in self.tests], "limits": limits,
                "trace": self.trace_lines}


@dataclass
class TestResult:
    status: str                      # passed failed runtime_error timeout memory output_limit sandbox_error not_run
    actual: Any = None               # decoded actual value (call tests) or stdout (stdio tests)
    wall_s: float | None = None
    error: dict | None = None        # {"type", "message", "line"}
    actual_truncated: bool = False   # `actual` did not fit the result (see ExecResult): a stdio test's
                                     # output is cut, any other value is an opaque placeholder

    __test__ = False


@dataclass
class ExecResult:
    """What one program did. Its size is bounded whatever the program wrote (binary output, huge
    return values): in `to_json()` (ASCII JSON, so characters = bytes) `stdout` and `stderr` take
    at most `Limits.excerpt_bytes` bytes each, and the tests' `actual` values at most
    `Limits.excerpt_bytes` together (values that fit whole are kept, in test order; then a stdio
    test's output that did not fit is cut to what is left, any other value becomes a short opaque
    placeholder); `stdout_truncated`, `stderr_truncated` and `TestResult.actual_truncated` say
    when something was cut. Tests are judged before anything is cut. The whole JSON is at most `ExecRequest.result_bound()` bytes = 3 x excerpt_bytes + 8 KiB
    + 3 KiB per test (+ the executed line numbers when traced): 3 MiB + 8 KiB + 3 KiB per test
    with the default Limits."""
    status: str
    tests: list[TestResult] = field(default_factory=list)
    compile_error_kind: str | None = None   # "syntax" | "load" | None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_s: float = 0.0
    peak_memory_bytes: int | None = None
    executed_lines: list[int] | None = None
    error: dict | None = None
    backend: str = ""
    isolation: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        data = asdict(self)
        for test in data["tests"]:
            test["actual"] = jsonable(test["actual"])
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)
