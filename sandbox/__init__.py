"""Hardened execution of untrusted, model-written programs (the contract: README.md, "Sandbox").

    from sandbox import ExecRequest, TestCase, Limits, run, run_many, get_backend
    result = run(ExecRequest("def f(a, b):\n    return a + b\n", [TestCase.call_expr("f(1, 2)", 3)]))
    result.status  # "passed"
"""
from .api import close_backends, get_backend, run, run_async, run_many
from .types import (
           STATUSES,
           ExecRequest,
           ExecResult,
           IsolationError,
           Limits,
           SandboxError,
           TestCase,
           TestResult,
)

__all__ = ["STATUSES", "ExecRequest", "ExecResult", "IsolationError", "Limits", "SandboxError", "TestCase",
           "TestResult", "close_backends", "get_backend", "run", "run_async", "run_many"]
