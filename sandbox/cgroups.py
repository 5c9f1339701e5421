"""Cgroups for the local backend (v1 hierarchies or the v2 unified tree).

Layout per worker: `<root>/align-sandbox/<owner pid>-<worker>/{zygote,prog}`. The zygote (and
bubblewrap) live in `zygote`; each program's child joins `prog` itself, before dropping
privileges, through a bind mount of the worker directory at /cg. The trusted side sets the
program limits, reads the peak memory and OOM kills, and kills whatever is left.
"""
from __future__ import annotations

import os
import signal
import time

V1_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "pids", "cpu")
TOP = "align-sandbox"


def detect() -> tuple[int | None, str]:
    """(version, reason): 2 for a usable unified tree, 1 for v1 hierarchies, None otherwise."""
    if os.geteuid() != 0:
        return None, "not root: cannot create cgroups"
    controllers_file = os.path.join(V1_ROOT, "cgroup.controllers")
    if os.path.exists(controllers_file):
        with open(controllers_file) as f:
            have = set(f.read().split())
        missing = {"memory", "pids", "cpu"} - have
        if missing:
            return None, f"cgroup v2 without controllers {sorted(missing)}"
        return 2, "cgroup v2"
    missing = [c for c in V1_CONTROLLERS if not os.path.exists(os.path.join(V1_ROOT, c, "tasks"))]
    if missing:
        return None, f"cgroup v1 without hierarchies {missing}"
    if not os.access(os.path.join(V1_ROOT, "memory"), os.W_OK):
        return None, "cgroup v1 hierarchies are read-only"
    return 1, "cgroup v1"


def _write(path: str, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _tops(version: int) -> list[str]:
    if version == 2:
        return [os.path.join(V1_ROOT, TOP)]
    return [os.path.join(V1_ROOT, c, TOP) for c in V1_CONTROLLERS]


class WorkerCgroup:
    def __init__(self, version: int, name: str):
        self.version, self.name = version, name
        self.dirs = {}  # controller (or "unified") -> worker dir on the host
        if version == 2:
            top = os.path.join(V1_ROOT, TOP)
            os.makedirs(top, exist_ok=True)
            for parent in (V1_ROOT, top):
                _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids +cpu")
            self.dirs["unified"] = os.path.join(top, name)
        else:
            for controller in V1_CONTROLLERS:
                self.dirs[controller] = os.path.join(V1_ROOT, controller, TOP, name)
        for path in self.dirs.values():
            os.makedirs(path, exist_ok=True)
            if version == 2:
                os.makedirs(os.path.join(path, "zygote"), exist_ok=True)
                _write(os.path.join(path, "cgroup.subtree_control"), "+memory +pids +cpu")
            os.makedirs(os.path.join(path, "prog"), exist_ok=True)
            os.makedirs(os.path.join(path, "zygote"), exist_ok=True)
        self._limits = None

    # -- paths ------------------------------------------------------------------------------
    def _prog(self, controller: str) -> str:
        return os.path.join(self.dirs["unified" if self.version == 2 else controller], "prog")

    def zygote_procs(self) -> list[str]:
        return [os.path.join(d, "zygote", "cgroup.procs") for d in self.dirs.values()]

    def bind_mounts(self) -> list[tuple[str, str]]:
        return [(d, f"/cg/{key}") for key, d in self.dirs.items()]

    def prog_procs_inside(self) -> list[str]:
        # v1: programs stay in the worker's cpu cgroup (moving a task between cpu cgroups costs
        # ~10 ms here); the CPU quota is set on the zygote's cgroup, which they inherit.
        return [f"/cg/{key}/prog/cgroup.procs" for key in self.dirs if key != "cpu"]

    def memcg_inside(self) -> str:
        return "/cg/unified/prog" if self.version == 2 else "/cg/memory/prog"

    # -- limits and accounting ----------------------------------------------------------------
    def set_limits(self, memory_bytes: int, processes: int, cpus: float = 1.0) -> None:
        """Limits of the program cgroup (written only when they change) and a fresh peak."""
        if self._limits == (memory_bytes, processes, cpus):
            if self.version == 1:
                _write(os.path.join(self._prog("memory"), "memory.max_usage_in_bytes"), 0)
            else:
                try:
                    _write(os.path.join(self._prog("memory"), "memory.peak"), "reset")
                except OSError:
                    pass
            return
        self._limits = (memory_bytes, processes, cpus)
        period = 100_000
        if self.version == 2:
            prog = self._prog("memory")
            _write(os.path.join(prog, "memory.max"), memory_bytes)
            _write(os.path.join(prog, "memory.swap.max"), 0)
            _write(os.path.join(prog, "pids.max"), processes)
            _write(os.path.join(prog, "cpu.max"), f"{int(cpus * period)} {period}")
            try:
                _write(os.path.join(prog, "memory.peak"), "reset")
            except OSError:
                pass  # kernels before 6.12 cannot reset the peak
            return
        memory = self._prog("memory")
        limit, memsw = os.path.join(memory, "memory.limit_in_bytes"), os.path.join(memory, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        # memsw must stay >= limit at every step: raise memsw first when growing, limit first when shrinking
        current = int(_read(limit))
        order = [(memsw, memory_bytes), (limit, memory_bytes)] if memory_bytes > current else \
            [(limit, memory_bytes), (memsw, memory_bytes)]
        for path, value in order:
            if path == memsw and not has_memsw:
                continue
            _write(path, value)
        _write(os.path.join(memory, "memory.max_usage_in_bytes"), 0)
        _write(os.path.join(self._prog("pids"), "pids.max"), processes)
        cpu = os.path.join(self.dirs["cpu"], "zygote")
        _write(os.path.join(cpu, "cpu.cfs_period_us"), period)
        _write(os.path.join(cpu, "cpu.cfs_quota_us"), int(cpus * period))

    def peak_memory(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int(_read(os.path.join(self._prog("memory"), name)))
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in _read(os.path.join(self._prog("memory"), name)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def procs(self) -> list[int]:
        return procs_under(list(self.dirs.values()))

    def prog_procs(self) -> list[int]:
        found = set()
        for d in self.dirs.values():
            try:
                found.update(int(x) for x in _read(os.path.join(d, "prog", "cgroup.procs")).split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def destroy(self) -> bool:
        """Kill everything in the worker's cgroups and remove them. True when all are gone."""
        return destroy_dirs(list(self.dirs.values()))


def procs_under(dirs: list[str]) -> list[int]:
    found = set()
    for top in dirs:
        for root, _subdirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    found.update(int(x) for x in _read(os.path.join(root, "cgroup.procs")).split())
                except (OSError, ValueError):
                    pass
    return sorted(found)


def destroy_dirs(dirs: list[str], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = procs_under(dirs)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    ok = True
    for top in dirs:
        for root, subdirs, _files in sorted(os.walk(top, topdown=False), key=lambda x: -len(x[0])):
            try:
                os.rmdir(root)
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
    return ok


def reap_stale() -> int:
    """Remove worker cgroups left by sandbox processes that died without cleaning up."""
    removed = 0
    for version in (1, 2):
        for top in _tops(version):
            if not os.path.isdir(top):
                continue
            for name in os.listdir(top):
                owner = name.split("-", 1)[0]
                if not owner.isdigit() or process_alive(int(owner)):
                    continue
                path = os.path.join(top, name)
                if os.path.isdir(path):
                    destroy_dirs([path])
                    removed += 1
    return removed


def leftover_cgroups(owner: int | None = None) -> list[str]:
    """Worker cgroups that still exist (all, or those of one owner pid)."""
    found = []
    for version in (1, 2):
        for top in _tops(version):
            if os.path.isdir(top):
                found += [os.path.join(top, n) for n in os.listdir(top)
                          if owner is None or n.split("-", 1)[0] == str(owner)]
    return found


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
