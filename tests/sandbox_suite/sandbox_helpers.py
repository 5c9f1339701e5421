"""Helpers shared by the sandbox tests (imported by name: a module called `conftest` could be
shadowed by another conftest.py of the project).

A backend that is missing skips its tests locally (with the reason) but FAILS them when CI=true:
CI installs bubblewrap and Docker (.ci/sandbox-services.sh) so both backends are tested for real.
Skips are counted (`pytest_runtest_logreport`) and the run ends with one loud line after pytest's
own summary (`pytest_unconfigure`): how many sandbox tests were skipped, why, and the command
that enables them; conftest.py imports both hooks.
Destructive attacks run only after `proven_isolated` has shown, on that very backend, that a
probe cannot see a host file or a secret environment variable of ours.
"""
import os
import time
from collections import Counter

import pytest

from sandbox import Limits

IN_CI = os.environ.get("CI", "").lower() == "true"
SECRET_NAME = "ALIGN_SANDBOX_TEST_SECRET"
SECRET_VALUE = "s3cr3t-" + os.urandom(6).hex()
os.environ[SECRET_NAME] = SECRET_VALUE

PROBE = """
import os
def probe():
    seen = {}
    for path in ("/etc/passwd", "/root", "/proc/1/environ", "/work", "/home"):
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                open(path, "rb").read()
            seen[path] = True
        except OSError:
            seen[path] = False
    seen["env"] = sorted(os.environ)
    seen["uid"] = os.getuid()
    return seen
"""


LOCAL_MISSING = "local sandbox isolation incomplete"
DOCKER_MISSING = "docker backend unavailable"
CHECK_OPT_IN = "ALIGN_SANDBOX_CHECK_TEST=1"


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def need_local() -> None:
    """Skip (fail in CI) unless the local backend has full isolation, naming what is missing."""
    from sandbox.local import probe_isolation
    isolation = probe_isolation()
    if not isolation["full"]:
        unavailable(f"{LOCAL_MISSING}: " + "; ".join(isolation["reasons"]))


# -- the skip report: one line at the very end of the run -------------------------------------------
_seen: set = set()
_skipped: dict = {}  # nodeid -> reason


def pytest_runtest_logreport(report) -> None:
    """Hook (imported by conftest.py, so it sees only the tests below that conftest)."""
    _seen.add(report.nodeid)
    if report.skipped and not hasattr(report, "wasxfail") and report.nodeid not in _skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped[report.nodeid] = reason.removeprefix("Skipped: ")


def _short(reason: str, limit: int = 160) -> str:
    """A long reason (e.g. docker's exception text) cut after its last ': ' within `limit`."""
    return reason if len(reason) <= limit else reason[:limit].rsplit(": ", 1)[0] + ": ..."


def skip_summary(skipped: dict, total: int, root: bool) -> str | None:
    """The one line: how many sandbox tests were skipped, grouped by reason, and the command that
    enables them (None when nothing was skipped)."""
    if not skipped:
        return None
    reasons = Counter(skipped.values())
    groups = "; ".join(f"{n} x {_short(r)}" for r, n in reasons.most_common())
    local = any(r.startswith(LOCAL_MISSING) for r in reasons)
    docker = any(r.startswith(DOCKER_MISSING) for r in reasons)
    command = ("sudo " if (local or docker) and not root else "") + "make test" \
        + (" SANDBOX_DOCKER=1" if docker else "") + (f" {CHECK_OPT_IN}" if any(CHECK_OPT_IN in r for r in reasons) else "")
    return (f"SANDBOX TESTS SKIPPED: {len(skipped)} of {total} ({groups}) -- to run them: {command}")


def pytest_unconfigure(config) -> None:
    """Hook: runs after pytest's own summary line, so this line is the last of the run."""
    line = skip_summary(_skipped, len(_seen), os.geteuid() == 0)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if line and reporter is not None:
        reporter.write_line(line, red=True, bold=True)


def _make_backend(name: str, workers: int):
    from sandbox.types import SandboxError
    if name == "local":
        from sandbox.local import LocalBackend, probe_isolation
        isolation = probe_isolation()
        if not isolation["full"]:
            unavailable(f"{LOCAL_MISSING}: " + "; ".join(isolation["reasons"]))
        return LocalBackend(workers=workers, strict=True)
    from sandbox.docker_backend import DockerBackend, docker_status
    status = docker_status()
    if not status["ok"]:
        unavailable(f"{DOCKER_MISSING}: {status['reason']}")
    try:
        return DockerBackend(workers=workers, strict=True, pool=True)
    except SandboxError as error:
        unavailable(f"{DOCKER_MISSING}: {error}")


def assert_nothing_left(engine) -> None:
    """No process of a program uid, no cgroup, no container, no temp dir survives a closed backend."""
    from sandbox import cgroups
    if engine.name == "local":
        names = engine.cgroup_names()
        assert [p for p in cgroups.leftover_cgroups(owner=os.getpid()) if os.path.basename(p) in names] == []
        assert not [d for d in os.listdir("/tmp") if d.startswith("align-sandbox-")]
        assert not program_processes(engine)
    else:
        from sandbox.docker_backend import our_containers
        assert our_containers(engine.client) == []


def program_processes(engine, settle_s: float = 3.0) -> list[int]:
    """Host processes running under any uid the local backend gives its programs (a closed
    backend has no spare children either, so then this is every such process).

    A worker forks its next spare child right after a run and the trusted side learns its pid a
    moment later; in that window the spare looks like a stray. A real leftover stays, so look
    again for up to `settle_s` before reporting."""
    deadline = time.monotonic() + settle_s
    while True:
        found = engine.stray_processes()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def quick_limits(**overrides) -> Limits:
    values = {"wall_s": 6.0, "cpu_s": 4.0, "per_test_wall_s": 2.0, "memory_bytes": 128 << 20, "processes": 32,
                  "output_bytes": 64 << 10, "file_bytes": 1 << 20}
    values.update(overrides)
    return Limits(**values)
