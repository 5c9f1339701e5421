"""Local backend: bubblewrap namespaces + an unprivileged uid + cgroups + rlimits.

Each worker is one bubblewrap sandbox (new pid/net/ipc/uts/mount namespaces, no network, a
read-only runtime of just the interpreter and its libraries, a fresh tmpfs, a cleared
environment) whose pid 1 is the zygote (`runtime/zygote.py`). Start-up is paid once per worker;
each program then runs in a fresh forked child under the worker's own uid, in the worker's
program cgroup, and everything it left (processes, files, IPC objects) is removed before the
next program. Without bubblewrap or cgroups the backend runs degraded (rlimits, process groups,
the uid drop when root) and says so in `ExecResult.isolation`; `strict=True` refuses instead.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from . import cgroups, seccomp
from .results import build_result, sandbox_error
from .types import ExecRequest, ExecResult, IsolationError, SandboxError
from .worker import RUNTIME_DIR, FrameReader, WorkerDead, encode_frame

READY_TIMEOUT_S = 20.0
REPLY_MARGIN_S = 15.0  # beyond the program's wall limit: kill + cleanup time in the zygote


def find_runtime_python() -> str | None:
    """A system interpreter whose standard library lives under /usr (bound read-only)."""
    candidates = [os.environ.get("ALIGN_SANDBOX_PYTHON", ""), "/usr/bin/python3", "/usr/local/bin/python3"]
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.realpath(path)
    return None


def probe_isolation() -> dict:
    """What this machine provides for the local backend (used for ExecResult.isolation and
    `align sandbox check`)."""
    reasons = []
    bwrap = shutil.which("bwrap")
    if not bwrap:
        reasons.append("bubblewrap (bwrap) not installed")
    root = os.geteuid() == 0
    if not root:
        reasons.append("not root: programs run under our own uid")
    version, why = cgroups.detect()
    if version is None:
        reasons.append(why)
    python = find_runtime_python()
    if python is None:
        reasons.append("no system python3 for the sandbox runtime")
    namespaces = bool(bwrap and root and python and python.startswith("/usr/"))
    if bwrap and root and python and not python.startswith("/usr/"):
        reasons.append(f"runtime python {python} is outside /usr")
    return {
        "backend": "local",
        "namespaces": namespaces,
        "network": "none" if namespaces else "host",
        "filesystem": "read-only runtime + fresh tmpfs" if namespaces else "host (temporary work dir)",
        "user": "dedicated unprivileged uid per worker" if root else "same uid as the caller",
        "cgroups": f"v{version}" if version else None,
        "rlimits": True,
        "seccomp": "deny list (namespaces, mount, ptrace, bpf, keyring, ...)"
        if namespaces and seccomp.filter_program() is not None else None,
        "full": not reasons,
        "reasons": reasons,
        "python": python,
    }


class LocalWorker:
    def __init__(self, index: int, isolation: dict):
        self.index, self.isolation = index, isolation
        self.uid = 100_000 + os.getpid() * 128 + index  # unique per live process and worker (pid_max <= 2**22)
        self.name = f"{os.getpid()}-w{index}-{os.urandom(3).hex()}"
        self.cgroup = None
        self.workdir = None
        self.proc = None
        self.stderr_tail = deque(maxlen=50)
        self.runs = 0
        self._start()

    # -- start and stop -----------------------------------------------------------------------
    def _command(self) -> list[str]:
        iso, python = self.isolation, self.isolation["python"]
        zygote_args = ["--uid", str(self.uid)]
        if self.cgroup:
            zygote_args += ["--cgroup-version", str(self.cgroup.version)]
        else:
            zygote_args += ["--rlimit-as"]
        if os.geteuid() == 0:
            zygote_args += ["--mode", "priv", "--rlimit-nproc"]
        else:
            zygote_args += ["--mode", "same-uid"]
        if not iso["namespaces"]:
            self.workdir = tempfile.mkdtemp(prefix="align-sandbox-")
            os.chmod(self.workdir, 0o755)
            zygote_args += ["--workdir", os.path.join(self.workdir, "w")]
            if self.cgroup:
                procs = [p.replace("/zygote/", "/prog/") for p in self.cgroup.zygote_procs()
                         if self.cgroup.version == 2 or "/cpu/" not in p]
                for path in procs:
                    zygote_args += ["--cgroup-procs", path]
                memcg = os.path.dirname(procs[0]) if self.cgroup.version == 2 else \
                    os.path.join(self.cgroup.dirs["memory"], "prog")
                zygote_args += ["--memcg", memcg]
            return [python, "-I", "-S", "-B", os.path.join(RUNTIME_DIR, "zygote.py")] + zygote_args
        command = [
            "bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox",
            "--perms", "0755", "--dir", "/usr", "--perms", "0755", "--dir", "/usr/bin",
            "--ro-bind", "/usr/lib", "/usr/lib", "--ro-bind-try", "/usr/lib64", "/usr/lib64",
            "--ro-bind", python, "/usr/bin/python3",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--mqueue", "/dev/mqueue",
            "--ro-bind", RUNTIME_DIR, "/sandbox",
            "--clearenv", "--setenv", "PATH", "/usr/bin",
            # the zygote keeps what it needs to drop children to the worker uid, hand them the work
            # dir, and kill what they leave; the programs themselves run with no capabilities
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
            "--cap-add", "CAP_CHOWN", "--cap-add", "CAP_KILL",
        ]
        if self.cgroup:
            for host_dir, inside in self.cgroup.bind_mounts():
                command += ["--bind", host_dir, inside]
            for path in self.cgroup.prog_procs_inside():
                zygote_args += ["--cgroup-procs", path]
            zygote_args += ["--memcg", self.cgroup.memcg_inside()]
        zygote_args += ["--workdir", "/tmp/w", "--tmpfs-workdir", "--scratch", "/dev/shm", "--scratch", "/dev/mqueue"]
        return command + ["--", "/usr/bin/python3", "-I", "-S", "-B", "/sandbox/zygote.py"] + zygote_args

    def _start(self) -> None:
        version = cgroups.detect()[0] if self.isolation["cgroups"] else None
        self.cgroup = cgroups.WorkerCgroup(version, self.name) if version else None
        command = self._command()
        seccomp_fd = seccomp.filter_fd() if command[0] == "bwrap" else None
        if seccomp_fd is not None:
            command[1:1] = ["--seccomp", str(seccomp_fd)]
        join = self.cgroup.zygote_procs() if self.cgroup else []

        def enter_cgroup():  # runs in the child between fork and exec: plain syscalls only
            for path in join:
                fd = os.open(path, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)

        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=enter_cgroup, start_new_session=True,  # noqa: PLW1509
                                     env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                     pass_fds=() if seccomp_fd is None else (seccomp_fd,))
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.reader = FrameReader(self.proc.stdout.fileno())
        try:
            ready = self.reader.read(READY_TIMEOUT_S)
        except WorkerDead as error:
            self.close()
            raise SandboxError(f"local sandbox worker did not start: {error}; stderr: {self.stderr()}") from None
        if not (isinstance(ready, dict) and ready.get("ready")):
            self.close()
            raise SandboxError(f"local sandbox worker sent {ready!r} instead of ready")
        self.spare_pid = ready.get("spare_pid")

    def _drain_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def stderr(self) -> str:
        return "\n".join(self.stderr_tail)[-2000:]

    def is_spare(self, host_pid: int) -> bool:
        """Whether a host pid is this worker's pre-forked spare child (not a leftover)."""
        return self.spare_pid is not None and self.alive() and _ns_pid(host_pid) == self.spare_pid \
            and host_pid in set(self.cgroup.prog_procs() if self.cgroup else _children_tree(self.proc.pid))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        if self.cgroup is not None:
            self.cgroup.destroy()
            self.cgroup = None
        if self.workdir is not None:
            _force_rmtree(self.workdir)
            self.workdir = None

    # -- one program --------------------------------------------------------------------------
    def run(self, request: ExecRequest) -> tuple[ExecResult, bool]:
        """(result, healthy). An unhealthy worker must be closed and replaced."""
        limits = request.limits
        oom_before = 0
        if self.cgroup:
            self.cgroup.set_limits(limits.memory_bytes, limits.processes)
            oom_before = self.cgroup.oom_kills()
        self.runs += 1
        try:
            self.proc.stdin.write(encode_frame(request.to_sandbox()))
            self.proc.stdin.flush()
            reply = self.reader.read(limits.wall_s + REPLY_MARGIN_S)
        except (WorkerDead, OSError, ValueError) as error:
            return sandbox_error(f"local worker failed: {error}; {self.stderr()}", "local", self.isolation,
                                 len(request.tests)), False
        healthy = isinstance(reply, dict) and "sandbox_error" not in reply and not reply.get("leftovers")
        self.spare_pid = reply.get("spare_pid") if isinstance(reply, dict) else None
        peak, oom = None, False
        if self.cgroup:
            peak = self.cgroup.peak_memory()
            oom = self.cgroup.oom_kills() > oom_before
            if [p for p in self.cgroup.prog_procs() if not self.is_spare(p)]:
                healthy = False  # the zygote's cleanup missed something: never reuse this worker
        result = build_result(request, reply, "local", self.isolation, peak_memory=peak, program_oom=oom)
        return result, healthy


def _status_fields(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


def _ns_pid(host_pid: int) -> int | None:
    """The pid a process has in its innermost pid namespace."""
    ns = _status_fields(host_pid).get("NSpid", "").split()
    return int(ns[-1]) if ns else None


def _children_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        found += kids
        todo += kids
    return found


def _force_rmtree(path: str) -> None:
    def fix(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            func(target)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)


class LocalBackend:
    """A pool of pre-started workers. Thread-safe: `run` may be called from many threads."""

    name = "local"

    def __init__(self, workers: int = 2, strict: bool = False):
        self.isolation = probe_isolation()
        if strict and not self.isolation["full"]:
            raise IsolationError("local sandbox isolation is incomplete: " + "; ".join(self.isolation["reasons"]))
        if not self.isolation["full"]:
            self.isolation["degraded"] = True
        if os.geteuid() == 0:
            cgroups.reap_stale()
        self.max_workers = min(max(1, workers), 64)
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._all: set = set()
        self._closed = False
        self._uids: set = set()
        self._names: set = set()
        self._indices: set = set()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")

    def cgroup_names(self) -> set:
        """Every worker cgroup name this backend has created (for leftover checks)."""
        return set(self._names)

    def stray_processes(self) -> list[int]:
        """Host processes running under a uid this backend gives to programs, other than the
        workers' pre-forked spare children: after every run this must be empty."""
        uids, workers, found = self._uids, list(self._all), []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _status_fields(int(entry))
            uid = int(fields.get("Uid", "-1").split()[0])
            if uid in uids and not any(w.uid == uid and w.is_spare(int(entry)) for w in workers):
                found.append(int(entry))
        return found

    def program_uids(self) -> set:
        """Every uid this backend has given to programs (for leftover checks)."""
        return set(self._uids)

    def _acquire(self) -> LocalWorker | None:
        try:
            worker = self._idle.get_nowait()
            if worker is None or worker.alive():
                return worker
            self._release(worker, False)  # died while idle: replace it
            return None
        except queue.Empty:
            pass
        with self._lock:
            can_start = self._started < self.max_workers
            if can_start:
                self._started += 1
                # the lowest index no live worker holds: uids stay unique per worker
                index = next(i for i in range(128) if i not in self._indices)
                self._indices.add(index)
        if not can_start:
            worker = self._idle.get()
            if worker is None or worker.alive():
                return worker
            self._release(worker, False)
            return None
        try:
            # bwrap --die-with-parent follows the *thread* that started it (PR_SET_PDEATHSIG), so
            # workers are started from one long-lived thread, not from a caller's pool thread
            worker = self._spawner.submit(LocalWorker, index, self.isolation).result()
        except BaseException:
            with self._lock:
                self._started -= 1
                self._indices.discard(index)
            raise
        with self._lock:
            self._all.add(worker)
            self._uids.add(worker.uid)
            self._names.add(worker.name)
        return worker

    def _release(self, worker: LocalWorker, healthy: bool) -> None:
        if healthy and not self._closed:
            self._idle.put(worker)
            return
        worker.close()
        with self._lock:
            self._all.discard(worker)
            self._indices.discard(worker.index)
            self._started -= 1
        if not self._closed:  # wake a waiter so it can start a replacement
            self._idle.put(None)

    def run(self, request: ExecRequest) -> ExecResult:
        request.validate()
        if self._closed:
            raise SandboxError("backend is closed")
        worker = self._acquire()
        while worker is None:
            worker = self._acquire()
        try:
            result, healthy = worker.run(request)
        except BaseException:
            self._release(worker, False)
            raise
        self._release(worker, healthy)
        return result

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
            self._started = 0
        for worker in workers:
            worker.close()
        self._spawner.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
