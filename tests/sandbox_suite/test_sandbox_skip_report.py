"""A run with a sandbox backend missing ends with one loud line: how many sandbox tests were
skipped, why, and the command that enables them; with CI=true they fail instead.

The real hooks (sandbox_helpers.pytest_runtest_logreport / pytest_unconfigure) run in a child
pytest on a tiny generated test file whose backends are forced missing: no `bwrap` on PATH, and a
DOCKER_HOST where no daemon answers. Nothing destructive runs: the backends never start."""
import os
import subprocess
import sys
from pathlib import Path

from sandbox_helpers import skip_summary

SUITE = Path(__file__).resolve().parent
REPO = SUITE.parents[1]

CONFTEST = f"""
import sys
sys.path.insert(0, {str(SUITE)!r})
import pytest
from sandbox_helpers import _make_backend, pytest_runtest_logreport, pytest_unconfigure  # noqa: F401


@pytest.fixture(scope="module", params=["local", "docker"])
def backend(request):
    engine = _make_backend(request.param, workers=1)
    yield engine
    engine.close()
"""

TESTS = """
def test_one(backend):
    raise AssertionError("must not run: the backend is missing")


def test_two(backend):
    raise AssertionError("must not run: the backend is missing")


def test_without_a_backend():
    pass
"""


def run_child(tmp_path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_tiny.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DOCKER_HOST", "PYTEST_ADDOPTS")}
    env.update(PATH=str(tmp_path / "no-bin"),  # no bwrap to be found
               DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock", PYTHONPATH=str(REPO))
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_missing_backends_end_the_run_with_one_line_naming_count_reasons_and_command(tmp_path):
    child = run_child(tmp_path, ci=False)
    lines = [line for line in child.stdout.splitlines() if line.strip()]
    assert child.returncode == 0, child.stdout + child.stderr
    assert "1 passed, 4 skipped" in lines[-2]  # pytest's own summary, then ours
    last = lines[-1]
    assert last.startswith("SANDBOX TESTS SKIPPED: 4 of 5 ("), last
    assert "2 x local sandbox isolation incomplete: bubblewrap (bwrap) not installed" in last
    assert f"2 x docker backend unavailable: no Docker daemon answers at unix://{tmp_path}/no-docker.sock" in last
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert last.endswith(f" -- to run them: {sudo}make test SANDBOX_DOCKER=1")
    assert sum("SANDBOX TESTS SKIPPED" in line for line in lines) == 1


def test_with_ci_true_missing_backends_fail_and_nothing_is_skipped(tmp_path):
    child = run_child(tmp_path, ci=True)
    assert child.returncode == 1, child.stdout + child.stderr
    assert "CI=true but local sandbox isolation incomplete" in child.stdout
    assert "CI=true but docker backend unavailable" in child.stdout
    assert "1 passed, 4 errors" in child.stdout and "SANDBOX TESTS SKIPPED" not in child.stdout


def test_the_command_names_what_each_reason_needs():
    local = "local sandbox isolation incomplete: not root: programs run under our own uid"
    check = "`align sandbox check` runs both self-tests (~20 s); on in CI or with ALIGN_SANDBOX_CHECK_TEST=1"
    line = skip_summary({"a": local, "b": local, "c": check}, 10, root=False)
    assert line == (f"SANDBOX TESTS SKIPPED: 3 of 10 (2 x {local}; 1 x {check}) -- to run them: "
                    "sudo make test ALIGN_SANDBOX_CHECK_TEST=1")
    assert skip_summary({}, 10, root=True) is None
