"""The `align sandbox` command line, the batched API, and degraded / strict mode."""
import json
import os

import pytest
from sandbox_helpers import CHECK_OPT_IN, IN_CI, need_local

from sandbox import ExecRequest, IsolationError, TestCase, run_many
from sandbox.cli import TestsFileError, main, parse_tests

PROGRAM = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    print(add(*map(int, input().split())))\n"


@pytest.fixture(scope="module", autouse=True)
def close_shared_backends():
    """The CLI and run_many use the shared backends of sandbox.api: close them, then nothing
    of this process may remain."""
    yield
    from sandbox import cgroups, close_backends
    close_backends()
    assert cgroups.leftover_cgroups(owner=os.getpid()) == []
    assert not [d for d in os.listdir("/tmp") if d.startswith("align-sandbox-")]


@pytest.fixture
def files(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM)
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps([{"call": "add(1, 2)", "expected": 3},
                                 {"stdin": "2 5\n", "expected_stdout": "7\n", "timeout_s": 2},
                                 {"assert": "assert add(2, 2) == 5"}]))
    return program, tests


def test_run_prints_one_json_result_and_exits_0_even_when_tests_fail(files, capsys):
    need_local()
    program, tests = files
    assert main(["run", str(program), "--tests", str(tests), "--backend", "local", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "failed" and result["backend"] == "local"
    assert [t["status"] for t in result["tests"]] == ["passed", "passed", "failed"]
    assert result["tests"][1]["actual"] == "7\n"


def test_run_human_output(files, capsys):
    need_local()
    program, tests = files
    assert main(["run", str(program), "--tests", str(tests), "--backend", "local"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("status: failed") and "test 2: failed error=AssertionError" in out


def test_bad_tests_file_names_file_line_and_field(tmp_path, files, capsys):
    program, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"call": "add(1, 2)", "expected": 3},\n  {"call": "add(1, 2)", "expect": 3}\n]\n')
    assert main(["run", str(program), "--tests", str(bad)]) == 2
    assert f"{bad}:3: test 1: unknown field(s) ['expect']" in capsys.readouterr().err
    for text, message in [('{"call": 1}', "expected a JSON list"), ('[{"stdin": "x"}]', "expected_stdout"),
                          ('[{"call": "f()", "expected": 1, "timeout_s": -1}]', "timeout_s"),
                          ('[{"call": "f()", "stdin": ""}]', "exactly one"), ("[1,", "invalid JSON")]:
        bad.write_text(text)
        with pytest.raises(TestsFileError, match=message):
            parse_tests(str(bad))


def test_run_many_keeps_order(tmp_path):
    need_local()
    requests = [ExecRequest(f"def f():\n    return {i}\n", [TestCase.call_expr("f()", i)]) for i in range(12)]
    requests[5] = ExecRequest("def f(:\n", [TestCase.call_expr("f()", 5)])
    results = run_many(requests, backend="local", workers=2, progress=True)
    assert [r.status for r in results] == ["passed"] * 5 + ["compile_error"] + ["passed"] * 6
    assert [r.tests[0].actual for r in results if r.status == "passed"] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    # the workers outlive the threads of the first call (bwrap's die-with-parent follows a thread)
    again = run_many(requests[:4], backend="local", workers=2)
    assert [r.status for r in again] == ["passed"] * 4


def test_degraded_mode_is_reported_and_strict_refuses(monkeypatch):
    need_local()
    from sandbox import local
    real_which = local.shutil.which
    monkeypatch.setattr(local.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    with pytest.raises(IsolationError, match="bubblewrap"):
        local.LocalBackend(strict=True)
    backend = local.LocalBackend(workers=1)
    try:
        # benign programs only: destructive attacks never run without isolation
        result = backend.run(ExecRequest("def f():\n    return 2\n", [TestCase.call_expr("f()", 2)]))
    finally:
        backend.close()
    assert result.status == "passed"
    assert result.isolation["full"] is False and result.isolation["namespaces"] is False
    assert any("bubblewrap" in r for r in result.isolation["reasons"])
    assert not [d for d in os.listdir("/tmp") if d.startswith("align-sandbox-")]


def test_docker_missing_daemon_is_reported(monkeypatch):
    from sandbox.docker_backend import DockerBackend, docker_status
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    status = docker_status()
    assert status["ok"] is False and "no Docker daemon answers at unix:///nonexistent/docker.sock" in status["reason"]
    from sandbox import SandboxError
    with pytest.raises(SandboxError, match="no Docker daemon answers"):
        DockerBackend()


@pytest.mark.skipif(not IN_CI and os.environ.get("ALIGN_SANDBOX_CHECK_TEST") != "1",
                    reason=f"`align sandbox check` runs both self-tests (~20 s); on in CI or with {CHECK_OPT_IN}")
def test_check_command(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "self-test (local): all contained" in out
