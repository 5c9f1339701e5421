"""Docker backend: one container per worker, the zygote as its pid 1.

Containers run with no network, a read-only root, a tmpfs /tmp (mode 1777), pids / memory
(= memory + swap) / CPU limits, every capability dropped, no-new-privileges, user nobody, capped
logs and our labels. A container is removed in `finally` (cold mode: after every program; warm
pool: after `recycle_after` programs or any anomaly: timeout, memory, output limit, sandbox
error, or a process the zygote could not kill). Containers a dead process of ours left behind are
removed at start-up, found by label. The daemon is the one `DOCKER_HOST` names (docker's usual
variable); when none answers, `docker_status()` says so and the backend refuses.
"""
from __future__ import annotations

import os
import queue
import select
import struct
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from .cgroups import process_alive
from .results import build_result, sandbox_error
from .types import ExecRequest, ExecResult, SandboxError
from .worker import FrameReader, WorkerDead, encode_frame

LABEL = "align-sandbox"
USER = "65534:65534"
ZYGOTE_OVERHEAD = 48 << 20  # the zygote shares the container's memory limit with the program
ANOMALIES = {"timeout", "memory", "output_limit", "sandbox_error"}


def _client(timeout: int = 10):
    import docker
    return docker.from_env(timeout=timeout)


def docker_status() -> dict:
    """{"ok": bool, "reason": str, "host": DOCKER_HOST or the default socket, "version": ...}."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        import docker  # noqa: F401
    except ImportError:
        return {"ok": False, "reason": "the docker Python SDK is not installed", "host": host}
    try:
        client = _client(timeout=5)
        client.ping()
        version = client.version().get("Version")
        client.close()
        return {"ok": True, "reason": "", "host": host, "version": version}
    except Exception as error:  # noqa: BLE001 - any failure means "no daemon answers"
        return {"ok": False, "reason": f"no Docker daemon answers at {host}: {type(error).__name__}: "
                f"{str(error)[:200]}", "host": host}


def our_containers(client, owner: int | None = None) -> list:
    filters = {"label": [LABEL]} if owner is None else {"label": [f"{LABEL}.owner={owner}"]}
    return client.containers.list(all=True, filters=filters)


def reap_stale(client) -> int:
    """Remove containers left by processes of ours that died (label owner pid not alive here)."""
    removed = 0
    hostname = os.uname().nodename
    for container in our_containers(client):
        labels = container.labels or {}
        owner = labels.get(f"{LABEL}.owner", "")
        if labels.get(f"{LABEL}.host") == hostname and owner.isdigit() and process_alive(int(owner)):
            continue
        if labels.get(f"{LABEL}.host") != hostname and container.status == "running":
            continue  # another machine's daemon client: not ours to judge
        try:
            container.remove(force=True)
            removed += 1
        except Exception:  # noqa: BLE001, S112 - already gone
            continue
    return removed


class DockerWorker:
    def __init__(self, client, image: str, memory_bytes: int, processes: int, isolation: dict):
        self.client, self.isolation = client, isolation
        self.key = (memory_bytes, processes)
        self.runs = 0
        self.stderr_tail = deque(maxlen=50)
        self.container = None
        import docker
        limit = memory_bytes + ZYGOTE_OVERHEAD
        try:
            self.container = client.containers.create(
                image, command=["/usr/bin/python3", "-I", "-S", "-B", "/sandbox/zygote.py", "--mode", "same-uid",
                                "--workdir", "/tmp/w", "--scratch", "/tmp", "--scratch", "/dev/shm",
                                "--scratch", "/dev/mqueue",
                                "--memcg", "auto", "--oom-adjust"],
                user=USER, working_dir="/tmp", environment={"PATH": "/usr/bin", "LANG": "C.UTF-8"},
                stdin_open=True, tty=False, network_mode="none", network_disabled=True, read_only=True,
                # tmpfs pages count against the memory limit and cannot be reclaimed: keep the
                # tmpfs well below it so a disk-filling program meets ENOSPC, not an OOM of the zygote
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={max(memory_bytes // 2, 8 << 20)},mode=1777"},
                mem_limit=limit, memswap_limit=limit, pids_limit=processes + 4, nano_cpus=1_000_000_000,
                cap_drop=["ALL"], security_opt=["no-new-privileges"],
                ulimits=[docker.types.Ulimit(name="nofile", soft=256, hard=256),
                         docker.types.Ulimit(name="core", soft=0, hard=0)],
                log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
                labels={LABEL: "1", f"{LABEL}.owner": str(os.getpid()), f"{LABEL}.host": os.uname().nodename},
                hostname="sandbox", init=False)
            self.sock = client.api.attach_socket(self.container.id, params={
                "stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self.raw = getattr(self.sock, "_sock", self.sock)
            self.container.start()
            self.reader = FrameReader(-1)
            self._pending = bytearray()
            ready = self.reader.read(30.0, read_chunk=self._read_stdout)
            if not (isinstance(ready, dict) and ready.get("ready")):
                raise WorkerDead(f"sent {ready!r} instead of ready")
        except Exception as error:  # noqa: BLE001 - docker API, runc or protocol: all mean "did not start"
            logs = self.stderr()
            self.close()
            raise SandboxError(f"docker sandbox container did not start: {error}; {logs}") from None

    def _read_stdout(self, timeout_s: float) -> bytes | None:
        """Demultiplex docker's attach stream (8-byte headers: stream, 0, 0, 0, size)."""
        out = bytearray()
        ready, _, _ = select.select([self.raw], [], [], timeout_s)
        if not ready:
            return None
        chunk = self.raw.recv(1 << 20)
        if not chunk:
            return b""
        self._pending += chunk
        while len(self._pending) >= 8:
            kind, size = self._pending[0], struct.unpack(">I", self._pending[4:8])[0]
            if len(self._pending) < 8 + size:
                break
            payload = bytes(self._pending[8:8 + size])
            del self._pending[:8 + size]
            if kind == 1:
                out += payload
            else:
                self.stderr_tail.append(payload.decode("utf-8", "replace"))
        return bytes(out) if out else None

    def stderr(self) -> str:
        return "".join(self.stderr_tail)[-2000:]

    def run(self, request: ExecRequest) -> tuple[ExecResult, bool]:
        self.runs += 1
        try:
            self.raw.sendall(encode_frame(request.to_sandbox()))
            reply = self.reader.read(request.limits.wall_s + 15.0, read_chunk=self._read_stdout)
        except (WorkerDead, OSError, ValueError) as error:
            return sandbox_error(f"docker worker failed: {error}; {self.stderr()}", "docker", self.isolation,
                                 len(request.tests)), False
        result = build_result(request, reply, "docker", self.isolation)
        healthy = isinstance(reply, dict) and not reply.get("leftovers") and result.status not in ANOMALIES
        return result, healthy

    def close(self) -> None:
        try:
            if getattr(self, "sock", None) is not None:
                self.sock.close()
        except OSError:
            pass
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001, S110 - already gone; reap_stale catches the rest
                pass
            self.container = None


class DockerBackend:
    """Warm pool (`pool=True`, default) or one fresh container per program (`pool=False`)."""

    name = "docker"

    def __init__(self, workers: int = 2, strict: bool = False, pool: bool = True, recycle_after: int = 100):
        status = docker_status()
        if not status["ok"]:
            raise SandboxError(status["reason"])
        from .docker_image import ensure_image
        self.client = _client(timeout=60)
        reap_stale(self.client)
        self.image = ensure_image(self.client)
        self.pool, self.recycle_after = pool, recycle_after
        self.isolation = {"backend": "docker", "namespaces": True, "network": "none",
                          "filesystem": "read-only image root + tmpfs /tmp", "user": USER,
                          "cgroups": "docker (memory = swap, pids, cpu)", "capabilities": "all dropped",
                          "no_new_privileges": True, "warm_pool": pool, "full": True, "reasons": [],
                          "daemon": status["host"], "image": self.image}
        self._idle: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(max(1, workers))
        self._lock = threading.Lock()
        self._all: set = set()
        self._closed = False
        self._pending = 0  # replacement containers being started in the background
        self._prewarm = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-docker-prewarm")

    def _take(self, request: ExecRequest) -> DockerWorker:
        key = (request.limits.memory_bytes, request.limits.processes)
        while self.pool:
            with self._lock:
                pending = self._pending
            try:  # wait for a replacement already on its way rather than start another
                worker = self._idle.get(timeout=60) if pending and self._idle.empty() else self._idle.get_nowait()
            except queue.Empty:
                break
            if worker is None:  # a replacement that failed to start
                continue
            if worker.key == key:
                return worker
            self._drop(worker)
        try:
            worker = DockerWorker(self.client, self.image, key[0], key[1], self.isolation)
        except SandboxError:  # a daemon under heavy load sometimes fails a start: one more try
            worker = DockerWorker(self.client, self.image, key[0], key[1], self.isolation)
        with self._lock:
            self._all.add(worker)
        return worker

    def _drop(self, worker: DockerWorker) -> None:
        worker.close()
        with self._lock:
            self._all.discard(worker)

    def _replace(self, key: tuple) -> None:
        """Start a fresh warm container in the background for a recycled one."""
        def start():
            try:
                worker = DockerWorker(self.client, self.image, key[0], key[1], self.isolation)
            except SandboxError:
                worker = None
            with self._lock:
                self._pending -= 1
                if worker is not None and self._closed:
                    worker.close()
                    return
                if worker is not None:
                    self._all.add(worker)
            self._idle.put(worker)

        with self._lock:
            if self._closed:
                return
            self._pending += 1
        self._prewarm.submit(start)

    def run(self, request: ExecRequest) -> ExecResult:
        request.validate()
        if self._closed:
            raise SandboxError("backend is closed")
        with self._slots:
            worker = self._take(request)
            healthy = False
            try:
                result, healthy = worker.run(request)
            finally:
                keep = healthy and self.pool and not self._closed and worker.runs < self.recycle_after
                if keep:
                    self._idle.put(worker)
                else:
                    self._drop(worker)
                    if self.pool and not self._closed:
                        self._replace(worker.key)
        return result

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.close()
        self._prewarm.shutdown(wait=True)  # no container may start after the sweep below
        for container in our_containers(self.client, owner=os.getpid()):
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001, S110
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


