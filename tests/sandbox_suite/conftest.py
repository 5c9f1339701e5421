"""Fixtures for the sandbox tests (helpers and the reasoning behind them: sandbox_helpers.py),
and the hooks that end the run with one line naming the skipped sandbox tests."""
import pytest
from sandbox_helpers import (  # noqa: F401 - the two hooks are used by pytest
    PROBE,
    SECRET_NAME,
    _make_backend,
    assert_nothing_left,
    pytest_runtest_logreport,
    pytest_unconfigure,
)

from sandbox import ExecRequest, TestCase


@pytest.fixture(scope="module", params=["local", "docker"])
def backend(request):
    engine = _make_backend(request.param, workers=1)
    yield engine
    engine.close()
    assert_nothing_left(engine)


@pytest.fixture(scope="module")
def proven_isolated(backend):
    """Prove the isolation works before anything destructive runs on this backend."""
    result = backend.run(ExecRequest(PROBE, [TestCase.call_expr("probe()", None)]))
    assert result.tests and result.tests[0].actual is not None, f"probe did not run: {result}"
    seen = result.tests[0].actual
    problems = [p for p in ("/etc/passwd", "/root", "/proc/1/environ", "/work", "/home") if seen.get(p)]
    if SECRET_NAME in seen["env"]:
        problems.append("secret environment variable visible")
    if seen["uid"] == 0:
        problems.append("program runs as root")
    if problems:
        pytest.fail(f"isolation NOT in force on {backend.name}: {problems}; refusing destructive tests")
    return backend
