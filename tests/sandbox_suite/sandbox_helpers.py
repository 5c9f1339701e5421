"""Helpers shared by the sandbox tests (imported by name: a module called `conftest` could be
shadowed by another conftest.py of the project).

A backend that is missing skips its tests locally (with the reason) but FAILS them when CI=true:
CI installs bubblewrap and Docker (.ci/sandbox-services.sh) so both backends are tested for real.
Destructive attacks run only after `proven_isolated` has shown, on that very backend, that a
probe cannot see a host file or a secret environment variable of ours.
"""
import os
import time

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


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _make_backend(name: str, workers: int):
    from sandbox.types import SandboxError
    if name == "local":
        from sandbox.local import LocalBackend, probe_isolation
        isolation = probe_isolation()
        if not isolation["full"]:
            unavailable("local sandbox isolation incomplete: " + "; ".join(isolation["reasons"]))
        return LocalBackend(workers=workers, strict=True)
    from sandbox.docker_backend import DockerBackend, docker_status
    status = docker_status()
    if not status["ok"]:
        unavailable(f"docker backend unavailable: {status['reason']}")
    try:
        return DockerBackend(workers=workers, strict=True, pool=True)
    except SandboxError as error:
        unavailable(f"docker backend unavailable: {error}")


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
