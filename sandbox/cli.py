"""`align sandbox run PROGRAM.py --tests TESTS.json [--backend ...] [--json]` and `align sandbox check`.

TESTS.json is a JSON list; each item is one of
    {"call": "f(1, 2)", "expected": 3}
    {"stdin": "1 2\\n", "expected_stdout": "3\\n"}
    {"assert": "assert f(1, 2) == 3"}
with an optional "timeout_s" (and "atol" / "rtol" for call tests). `run` exits 0 whenever a
result was produced, whatever the program did; 2 for bad input, 1 when no sandbox could run it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

from .types import ExecRequest, Limits, SandboxError, TestCase

ALLOWED = {"call": {"call", "expected", "timeout_s", "atol", "rtol"},
           "stdin": {"stdin", "expected_stdout", "timeout_s"},
           "assert": {"assert", "timeout_s"}}


class TestsFileError(ValueError):
    __test__ = False


def _line_of_item(text: str, index: int) -> int:
    """Best-effort line number of the index-th top-level item of a JSON list."""
    decoder, pos, count = json.JSONDecoder(), text.index("[") + 1, 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if count == index or pos >= len(text):
            return text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)
        count += 1
    return text.count("\n") + 1


def parse_tests(path: str) -> list[TestCase]:
    """TESTS.json -> TestCases; errors name the file, line, item and field."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise TestsFileError(f"{path}: cannot read: {error.strerror}") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise TestsFileError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    if not isinstance(items, list):
        raise TestsFileError(f"{path}:1: expected a JSON list of tests, got {type(items).__name__}")
    tests = []
    for i, item in enumerate(items):
        where = f"{path}:{_line_of_item(text, i)}: test {i}"
        if not isinstance(item, dict):
            raise TestsFileError(f"{where}: expected an object, got {type(item).__name__}")
        kinds = [k for k in ALLOWED if k in item]
        if len(kinds) != 1:
            raise TestsFileError(f"{where}: needs exactly one of 'call', 'stdin', 'assert' (got {sorted(item)})")
        kind = kinds[0]
        unknown = set(item) - ALLOWED[kind]
        if unknown:
            raise TestsFileError(f"{where}: unknown field(s) {sorted(unknown)} for a {kind!r} test")
        timeout = item.get("timeout_s")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise TestsFileError(f"{where}: field 'timeout_s' must be a positive number, got {timeout!r}")
        if not isinstance(item[kind], str):
            raise TestsFileError(f"{where}: field {kind!r} must be a string, got {type(item[kind]).__name__}")
        if kind == "call":
            if "expected" not in item:
                raise TestsFileError(f"{where}: a 'call' test needs field 'expected'")
            tests.append(TestCase.call_expr(item["call"], item["expected"], timeout_s=timeout,
                                            atol=float(item.get("atol", 0.0)), rtol=float(item.get("rtol", 1e-9))))
        elif kind == "stdin":
            if not isinstance(item.get("expected_stdout"), str):
                raise TestsFileError(f"{where}: a 'stdin' test needs a string field 'expected_stdout'")
            tests.append(TestCase.stdio(item["stdin"], item["expected_stdout"], timeout_s=timeout))
        else:
            tests.append(TestCase.assertion(item["assert"], timeout_s=timeout))
    return tests


def _print_result(result) -> None:
    print(f"status: {result.status}" + (f" ({result.compile_error_kind})" if result.compile_error_kind else ""))
    for i, test in enumerate(result.tests):
        detail = f" actual={test.actual!r}" if test.actual is not None else ""
        detail += " (truncated)" if test.actual_truncated else ""
        if test.error:
            detail += f" error={test.error['type']}: {test.error['message'][:120]}"
            detail += f" (line {test.error['line']})" if test.error.get("line") else ""
        print(f"  test {i}: {test.status}{detail}")
    if result.error and not result.tests:
        print(f"  error: {result.error}")
    for name in ("stdout", "stderr"):
        text = getattr(result, name)
        if text:
            flag = " (truncated)" if getattr(result, f"{name}_truncated") else ""
            print(f"--- {name}{flag} ---\n{text[:2000]}")
    peak = f"{result.peak_memory_bytes / 2**20:.1f} MiB" if result.peak_memory_bytes else "n/a"
    iso = "full" if result.isolation.get("full") else "DEGRADED: " + "; ".join(result.isolation.get("reasons", []))
    print(f"backend: {result.backend}, isolation: {iso}, wall: {result.wall_s:.3f}s, peak memory: {peak}")


def cmd_run(args) -> int:
    from .api import get_backend
    try:
        tests = parse_tests(args.tests) if args.tests else []
        with open(args.program, encoding="utf-8") as f:
            program = f.read()
    except TestsFileError as error:
        print(f"align sandbox run: {error}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as error:
        print(f"align sandbox run: {args.program}: cannot read: {error}", file=sys.stderr)
        return 2
    limits = Limits(wall_s=args.wall_s, cpu_s=args.cpu_s, per_test_wall_s=args.per_test_wall_s,
                    memory_bytes=args.memory_mb << 20)
    request = ExecRequest(program, tests, limits=limits, trace_lines=args.trace_lines)
    try:
        request.validate()
        result = get_backend(args.backend, strict=args.strict, workers=1).run(request)
    except ValueError as error:
        print(f"align sandbox run: {error}", file=sys.stderr)
        return 2
    except SandboxError as error:
        print(f"align sandbox run: no sandbox available: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(result.to_json())
    else:
        _print_result(result)
    return 0


def cmd_check(args) -> int:
    from .docker_backend import docker_status
    from .local import probe_isolation
    from .selftest import run_selftest

    local = probe_isolation()
    bwrap = shutil.which("bwrap")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, check=False).stdout.strip() \
        if bwrap else "not installed"
    docker = docker_status()
    print("local backend")
    print(f"  bubblewrap:  {version}")
    print(f"  namespaces:  {'pid, net, ipc, uts, mount (network: none)' if local['namespaces'] else 'no'}")
    print(f"  cgroups:     {local['cgroups'] or 'no'}")
    print(f"  program uid: {local['user']}")
    print(f"  runtime:     {local['python']}")
    print(f"  isolation:   {'full' if local['full'] else 'DEGRADED: ' + '; '.join(local['reasons'])}")
    print("docker backend")
    print(f"  daemon:      {docker['host']}: " + (f"answers (version {docker.get('version')})" if docker["ok"]
                                                 else docker["reason"]))
    names = [args.backend] if args.backend != "all" else ["local"] + (["docker"] if docker["ok"] else [])
    all_ok = True
    for name in names:
        try:
            if name == "local":
                from .local import LocalBackend
                backend = LocalBackend(workers=1)
            else:
                from .docker_backend import DockerBackend
                backend = DockerBackend(workers=1)
        except SandboxError as error:
            print(f"self-test ({name}): cannot start: {error}")
            all_ok = False
            continue
        try:
            ok, rows = run_selftest(backend)
        finally:
            backend.close()
        all_ok &= ok
        print(f"self-test ({name}): {'all contained' if ok else 'PROBLEMS'}")
        for attack, status, good in rows:
            print(f"  {'ok ' if good else 'BAD'} {attack:<34} {status}")
    return 0 if all_ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="align sandbox", description="run untrusted programs in the sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run PROGRAM.py against TESTS.json")
    run.add_argument("program")
    run.add_argument("--tests", help="JSON list of tests (see `align sandbox run -h`)")
    run.add_argument("--backend", default="auto", choices=["auto", "local", "docker"])
    run.add_argument("--json", action="store_true", help="print the ExecResult as one JSON object")
    run.add_argument("--strict", action="store_true", help="refuse to run without full isolation")
    run.add_argument("--trace-lines", action="store_true", help="report executed line numbers")
    run.add_argument("--wall-s", type=float, default=10.0)
    run.add_argument("--cpu-s", type=float, default=10.0)
    run.add_argument("--per-test-wall-s", type=float, default=5.0)
    run.add_argument("--memory-mb", type=int, default=512)
    check = sub.add_parser("check", help="what isolation this machine provides, and an attack self-test")
    check.add_argument("--backend", default="all", choices=["all", "local", "docker"])
    args = parser.parse_args(argv)
    return cmd_run(args) if args.command == "run" else cmd_check(args)


if __name__ == "__main__":
    raise SystemExit(main())
