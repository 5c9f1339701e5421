"""Worker and container life cycle: cold containers, warm-pool recycling, reaping what a dead
process of ours left behind, and the asyncio entry point."""
import asyncio
import os

import pytest
from sandbox_helpers import DOCKER_MISSING, need_local, unavailable

from sandbox import ExecRequest, TestCase

PROGRAM = ExecRequest("def f():\n    return 1\n", [TestCase.call_expr("f()", 1)])
DEAD_PID = 4_000_000  # above pid_max: never alive


def docker_client():
    from sandbox.docker_backend import _client, docker_status
    status = docker_status()
    if not status["ok"]:
        unavailable(f"{DOCKER_MISSING}: {status['reason']}")
    return _client()


def test_docker_cold_mode_removes_each_container():
    from sandbox.docker_backend import DockerBackend, our_containers
    client = docker_client()
    backend = DockerBackend(workers=1, pool=False)
    try:
        assert backend.run(PROGRAM).status == "passed"
        assert our_containers(client, owner=os.getpid()) == []
    finally:
        backend.close()


def test_docker_pool_recycles_after_n_runs_and_after_an_anomaly():
    from sandbox.docker_backend import DockerBackend, our_containers
    client = docker_client()
    backend = DockerBackend(workers=1, pool=True, recycle_after=2)
    try:
        ids = []
        for _ in range(3):
            assert backend.run(PROGRAM).status == "passed"
            ids.append({c.id for c in our_containers(client, owner=os.getpid())})
        # run 1 leaves its container warm; run 2 is its last (recycle_after=2): it is removed and a
        # replacement starts in the background, which run 3 uses
        assert len(ids[0]) == 1 and not ids[0] & ids[1] and len(ids[2]) == 1 and ids[2] != ids[0]
        before = {c.id for c in our_containers(client, owner=os.getpid())}
        hang = ExecRequest("def f():\n    while True:\n        pass\n",
                           [TestCase.call_expr("f()", 1, timeout_s=0.5)])
        assert backend.run(hang).status == "timeout"
        assert not before & {c.id for c in our_containers(client, owner=os.getpid())}
    finally:
        backend.close()
    assert our_containers(client, owner=os.getpid()) == []


def test_docker_reaps_containers_of_dead_owners():
    from sandbox.docker_backend import LABEL, DockerBackend, our_containers
    from sandbox.docker_image import ensure_image
    client = docker_client()
    image = ensure_image(client)
    stale = client.containers.create(image, command=["/usr/bin/python3", "-c", "pass"], network_mode="none",
                                     labels={LABEL: "1", f"{LABEL}.owner": str(DEAD_PID),
                                             f"{LABEL}.host": os.uname().nodename})
    try:
        DockerBackend(workers=1).close()
        assert stale.id not in {c.id for c in our_containers(client)}
    finally:
        try:
            stale.remove(force=True)
        except Exception:  # noqa: BLE001, S110 - removed by the backend, as it should be
            pass


def test_local_reaps_cgroups_of_dead_owners():
    from sandbox import cgroups
    from sandbox.local import LocalBackend
    need_local()
    version, _ = cgroups.detect()
    stale = cgroups.WorkerCgroup(version, f"{DEAD_PID}-w0-stale")
    assert cgroups.leftover_cgroups(owner=DEAD_PID)
    LocalBackend(workers=1).close()
    assert cgroups.leftover_cgroups(owner=DEAD_PID) == []
    assert not any(os.path.exists(d) for d in stale.dirs.values())


def test_run_async():
    from sandbox import run_async
    need_local()

    async def main():
        return await asyncio.gather(*(run_async(ExecRequest(f"x = {i}", [TestCase.call_expr("x", i)]),
                                                backend="local") for i in range(3)))
    results = asyncio.run(main())
    assert [r.status for r in results] == ["passed"] * 3
    from sandbox import close_backends
    close_backends()


@pytest.mark.parametrize("bad", [{"program": 1}, {"language": "c"}])
def test_bad_requests_raise_clear_errors(bad):
    from sandbox.local import LocalBackend
    fields = {"program": "x = 1", "tests": [], **bad}
    with pytest.raises((ValueError, TypeError), match="program|language"):
        ExecRequest(**fields).validate()
    assert LocalBackend  # imported without starting anything
