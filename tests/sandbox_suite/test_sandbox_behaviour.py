"""What the sandbox reports for ordinary programs, on every backend."""
import json

from sandbox_helpers import quick_limits

from sandbox import ExecRequest, TestCase

ADD = "def add(a, b):\n    return a + b\n"


def run(backend, program, tests, **kw):
    return backend.run(ExecRequest(program, tests, limits=kw.pop("limits", quick_limits()), **kw))


def test_call_tests_compare_on_the_trusted_side(backend):
    result = run(backend, ADD, [TestCase.call_expr("add(1, 2)", 3),
                                TestCase.call_args("add", [0.1, 0.2], 0.3),
                                TestCase.call_args("add", [[1], [2]], [1, 2]),
                                TestCase.call_expr("add(2, 2)", 5)])
    assert [t.status for t in result.tests] == ["passed", "passed", "passed", "failed"]
    assert result.tests[3].actual == 4
    assert result.status == "failed" and result.backend == backend.name
    assert result.isolation["full"] is True


def test_a_huge_int_where_a_float_is_expected_fails_the_test(backend):
    result = run(backend, "def f():\n    return 2 ** 2000\n", [TestCase.call_expr("f()", 1.5, atol=1e-6)])
    assert result.status == "failed" and result.tests[0].actual == 2 ** 2000


def test_all_passed_and_assertions(backend):
    result = run(backend, ADD, [TestCase.call_expr("add(1, 2)", 3), TestCase.assertion("assert add(2, 3) == 5")])
    assert result.status == "passed" and result.passed
    failing = run(backend, ADD, [TestCase.assertion("assert add(2, 3) == 6, 'nope'")])
    assert failing.status == "failed" and failing.tests[0].error["message"] == "nope"


def test_syntax_error_and_load_error_are_told_apart(backend):
    syntax = run(backend, "def f(:\n    pass\n", [TestCase.call_expr("f()", 1)])
    assert syntax.status == "compile_error" and syntax.compile_error_kind == "syntax"
    assert syntax.error["type"] == "SyntaxError" and syntax.error["line"] == 1
    load = run(backend, "x = 1\ny = 1 / 0\n", [TestCase.call_expr("x", 1)])
    assert load.status == "compile_error" and load.compile_error_kind == "load"
    assert load.error == {"type": "ZeroDivisionError", "message": "division by zero", "line": 2}


def test_runtime_error_names_the_line_in_the_program(backend):
    program = "def f(x):\n    y = x + 1\n    return [][y]\n"
    result = run(backend, program, [TestCase.call_expr("f(1)", 0), TestCase.call_expr("f", None)])
    assert result.status == "runtime_error"
    assert result.tests[0].status == "runtime_error"
    assert result.tests[0].error["type"] == "IndexError" and result.tests[0].error["line"] == 3
    assert result.tests[1].status == "failed"  # a function object comes out opaque


def test_stdio_tests(backend):
    program = "n = int(input())\nprint(n * 2)\nimport sys\nprint('note', file=sys.stderr)\n"
    result = run(backend, program, [TestCase.stdio("21\n", "42\n"), TestCase.stdio("1\n", "3\n"),
                                    TestCase.stdio("x\n", "")])
    assert [t.status for t in result.tests] == ["passed", "failed", "runtime_error"]
    assert result.tests[1].actual == "2\n"
    assert result.tests[2].error["type"] == "ValueError"
    assert "note" in result.stderr


def test_a_timeout_in_one_test_does_not_cost_the_others(backend):
    program = "def f(x):\n    while x == 2:\n        pass\n    return x\n"
    tests = [TestCase.call_expr("f(1)", 1), TestCase.call_expr("f(2)", 2, timeout_s=0.5), TestCase.call_expr("f(3)", 3)]
    result = run(backend, program, tests)
    assert [t.status for t in result.tests] == ["passed", "timeout", "passed"]
    assert result.status == "timeout"


def test_executed_lines(backend):
    program = "def f(x):\n    if x > 0:\n        return 1\n    return -1\n\nunused = 0\n"
    result = run(backend, program, [TestCase.call_expr("f(5)", 1)], trace_lines=True)
    assert result.executed_lines == [1, 2, 3, 6]
    off = run(backend, program, [TestCase.call_expr("f(5)", 1)])
    assert off.executed_lines is None


def test_expected_value_is_not_in_the_sandbox(backend):
    program = ("import gc, sys\n"
               "def look():\n"
               "    hits = [o for o in gc.get_objects() if isinstance(o, str) and 'EXPECTED-' + 'MARKER' in o]\n"
               "    return len(hits) + sum('EXPECTED-' + 'MARKER' in a for a in sys.argv)\n")
    result = run(backend, program, [TestCase.call_expr("look()", "EXPECTED-MARKER-42")])
    assert result.tests[0].actual == 0


def test_output_is_captured_and_peak_memory_reported(backend):
    program = "print('hello')\nblob = bytearray(30 << 20)\ndef f():\n    return len(blob)\n"
    result = run(backend, program, [TestCase.call_expr("f()", 30 << 20)])
    assert result.status == "passed" and result.stdout == "hello\n" and not result.stdout_truncated
    limited = run(backend, "print('x' * 100)\ndef f():\n    return 1\n", [TestCase.call_expr("f()", 1)],
                  limits=quick_limits(output_bytes=40))
    assert limited.status == "output_limit" and limited.stdout == "x" * 40 and limited.stdout_truncated
    assert not limited.stderr_truncated
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 30 << 20


def test_empty_test_list_only_loads(backend):
    assert run(backend, "x = 1\n", []).status == "passed"
    assert run(backend, "x = (\n", []).status == "compile_error"


BINARY = ("import os, sys\n"
          "for _ in range(80):  # 5 MiB of random bytes to each stream, interleaved\n"
          "    sys.stdout.buffer.write(os.urandom(1 << 16))\n"
          "    sys.stderr.buffer.write(os.urandom(1 << 16))\n")


def test_binary_output_is_bounded_in_the_result_json(backend):
    """5 MiB of random bytes on each stream (every invalid byte becomes U+FFFD, six bytes of JSON;
    the program is stopped once a stream passes 1 MiB): the serialised result stays within the
    documented bound, with the truncation flags set."""
    request = ExecRequest(BINARY, [TestCase.stdio("", "not this")], limits=quick_limits(output_bytes=1 << 20))
    result = backend.run(request)
    assert result.status == "output_limit", result.error
    size = len(result.to_json())
    assert size <= request.result_bound() == 3 * (1 << 20) + (8 << 10) + (3 << 10)
    assert result.stdout_truncated and result.stderr_truncated
    data = json.loads(result.to_json())
    assert len(json.dumps(data["stdout"])) - 2 <= 1 << 20 and len(json.dumps(data["stderr"])) - 2 <= 1 << 20


def test_a_huge_actual_value_is_judged_whole_and_reported_as_a_placeholder(backend):
    program = "print('héllo\\x00 wörld')\ndef huge():\n    return '\\x00' * 999_000\ndef small():\n    return 'é'\n"
    request = ExecRequest(program, [TestCase.call_expr("huge()", "\x00" * 999_000), TestCase.call_expr("small()", "é"),
                                    TestCase.call_expr("huge()", "other")], limits=quick_limits())
    result = backend.run(request)
    assert [t.status for t in result.tests] == ["passed", "passed", "failed"]
    assert len(result.to_json()) <= request.result_bound() == 3 * (1 << 20) + (8 << 10) + 3 * (3 << 10)
    assert [t.actual_truncated for t in result.tests] == [True, False, True]
    assert "too large to report" in repr(result.tests[0].actual)
    # small output and values are unchanged, byte for byte
    data = json.loads(result.to_json())
    assert data["stdout"] == "héllo\x00 wörld\n" and not result.stdout_truncated and data["tests"][1]["actual"] == "é"


def test_large_binary_output_is_judged_whole_though_only_an_excerpt_is_kept(backend):
    """Within a raised output limit, 5 MiB of non-UTF-8 bytes on each stream: the stdio test is
    judged on the whole output (its digest), the result keeps excerpts only."""
    block = "bytes(range(256)) * 20480"  # 5 MiB, half of it invalid UTF-8
    program = f"import sys\nsys.stdout.buffer.write({block})\nsys.stderr.buffer.write({block})\n"
    whole = (bytes(range(256)) * 20480).decode("utf-8", "replace")
    request = ExecRequest(program, [TestCase.stdio("", whole), TestCase.stdio("", whole[:-1])],
                          limits=quick_limits(output_bytes=8 << 20))
    result = backend.run(request)
    assert [t.status for t in result.tests] == ["passed", "failed"], result.error
    assert len(result.to_json()) <= request.result_bound() == 3 * (1 << 20) + (8 << 10) + 2 * (3 << 10)
    assert result.stdout_truncated and result.stderr_truncated and result.tests[0].actual_truncated
    assert whole.startswith(result.tests[0].actual) and whole.startswith(result.stdout)


def test_many_large_results_are_never_a_sandbox_error(backend):
    """Every test printing or returning ~6 MB of JSON once overflowed the zygote's reply (a
    sandbox_error: a sample dropped, never penalised). The reply is bounded too now."""
    printing = ExecRequest("import sys\nsys.stdout.buffer.write(b'\\xff' * 1_000_000)\n",
                           [TestCase.stdio("", "\ufffd" * 1_000_000)] * 12, limits=quick_limits(output_bytes=1 << 20))
    result = backend.run(printing)
    assert result.status == "passed", result.error
    assert len(result.to_json()) <= printing.result_bound()
    returning = ExecRequest("def f():\n    return '\\x00' * 999_000\n", [TestCase.call_expr("f()", "\x00" * 999_000)] * 12,
                            limits=quick_limits(wall_s=20.0))
    result = backend.run(returning)
    assert result.status in ("passed", "failed") and result.tests[0].status == "passed", result.error
    assert len(result.to_json()) <= returning.result_bound()
