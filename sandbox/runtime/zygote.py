# ruff: noqa: BLE001, SIM102  (this file runs untrusted code and must survive anything it does)
"""The pre-started worker inside the sandbox: pays the interpreter and namespace start-up once,
then forks one fresh child per program (and per stdin/stdout test, or after a test that timed out
or crashed, to go on with the remaining tests).

Standard library only. Talks to the trusted side over fds 0/1 in frames (4-byte big-endian
length + JSON). Two modes:
- `priv` (local bubblewrap backend): the zygote is root inside its namespaces with only
  CAP_SETUID, CAP_SETGID, CAP_CHOWN and CAP_KILL; each child joins the per-program cgroup, drops
  to the worker's unprivileged uid, sets no_new_privs and rlimits. The program cannot signal or
  trace the zygote (another uid).
- `same-uid` (docker backend, container user already unprivileged): the zygote is pid 1 of the
  container, which the kernel shields from signals sent inside the namespace, and it makes
  itself non-dumpable so the program cannot ptrace it or read its memory.
After every program, every process of the program uid is killed, its files and SysV IPC objects
removed, so nothing carries over to the next program.
"""
import argparse
import ctypes
import json
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import clip_text, json_len, stdout_digest
from zygote_child import Spare, take_spare
from zygote_cleanup import kill_program, leftovers, oom_kills
from zygote_io import preload, read_frame, write_frame

PR_SET_DUMPABLE = 4
CHANNEL_MAX = 16 << 20
# What a program's test results may add to the reply (result-channel lines kept, stdio outputs),
# so that the reply stays well under the trusted side's frame limit (worker.MAX_REPLY, 64 MiB)
# together with the stdout/stderr excerpts (Limits.excerpt_bytes <= 8 MiB each). Results beyond
# it are replaced by markers: only a program that returns tens of MiB of values meets it.
RESULTS_MAX = 32 << 20
TOO_LARGE = {"$opaque": "?", "repr": "<results too large to report>"}
_libc = ctypes.CDLL(None, use_errno=True)


# ----------------------------------------------------------------------------- one child
def run_child(opts, request, indices, stdin_data, deadline, wire):
    """Run tests[indices] (or the script run when stdin_data is not None) in a fresh child, watch
    it until it ends or a deadline, and return what came out (`wire`: the program's budgets)."""
    limits = request["limits"]
    oom_before = oom_kills(opts)
    child = take_spare(opts)
    pid, out_r, err_r, chan_r = child.pid, child.out_r, child.err_r, child.chan_r
    child.give({"program": request["program"], "tests": request["tests"], "trace": request["trace"],
                "indices": indices, "stdin": stdin_data, "limits": limits})
    pidfd = os.pidfd_open(pid)
    watch = Watch(limits, deadline, wire)
    poller = select.poll()
    names = {out_r: "stdout", err_r: "stderr", chan_r: "chan", pidfd: "exit"}
    for fd in names:
        poller.register(fd, select.POLLIN)
    open_fds, exited, wait_status, rusage = set(names), False, None, None
    while True:
        now = time.monotonic()
        budget = watch.next_deadline() - now
        if budget <= 0:
            watch.timed_out = True
            break
        if exited and not (open_fds & {out_r, err_r, chan_r}):
            break
        for fd, _ in poller.poll(max(1, int(budget * 1000)) if not exited else 50):
            if names[fd] == "exit":
                _, wait_status, rusage = os.wait4(pid, 0)
                exited = True
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            watch.feed(names[fd], data)
        if watch.over_limit:
            break
        if exited and open_fds & {out_r, err_r, chan_r}:
            # the program ended but something it started still holds a pipe: drain briefly
            if time.monotonic() - watch.exit_seen(now) > 0.05:
                break
    if not exited:
        try:
            os.kill(pid, signal.SIGKILL)
            _, wait_status, rusage = os.wait4(pid, 0)
        except (ChildProcessError, ProcessLookupError):
            pass
    kill_program(opts, pid)
    for fd in (out_r, err_r, chan_r, pidfd):
        os.close(fd)
    watch.finish(wait_status, rusage, oom_kills(opts) > oom_before)
    return watch


class Watch:
    """What one child produced: capped stdout/stderr, result-channel events, how it ended."""

    def __init__(self, limits, deadline, wire):
        self.limits, self.deadline, self.wire = limits, deadline, wire
        self.stdout, self.stderr, self.chan = bytearray(), bytearray(), bytearray()
        self.totals = {"stdout": 0, "stderr": 0}  # bytes written, kept or not
        self.events, self.current, self.test_started = [], None, None
        self.timed_out = self.over_limit = False
        self.exit_time = None
        self.signal = self.exit_code = None
        self.maxrss = 0
        self.oom = False

    def exit_seen(self, now):
        if self.exit_time is None:
            self.exit_time = now
        return self.exit_time

    def next_deadline(self):
        if self.test_started is not None and self.current is not None:
            return min(self.deadline, self.test_started + self.current_timeout)
        return self.deadline

    def feed(self, name, data):
        if name == "chan":
            self.chan += data
            if len(self.chan) > CHANNEL_MAX:
                self.over_limit = True
                return
            while b"\n" in self.chan:
                line, _, rest = bytes(self.chan).partition(b"\n")
                self.chan = bytearray(rest)
                self.on_event(line)
            return
        self.totals[name] += len(data)
        buffer = self.stdout if name == "stdout" else self.stderr
        room = self.limits["output_bytes"] - len(buffer)
        buffer += data[:max(room, 0)]
        if self.totals[name] > self.limits["output_bytes"]:
            self.over_limit = True

    def on_event(self, line):
        try:
            event = json.loads(line)
            kind = event["ev"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return  # garbage on the channel is the program's doing; it only loses its results
        # the program can write anything here: keep only well-formed events
        if not isinstance(event, dict) or not isinstance(kind, str):
            return
        if "i" in event and (type(event["i"]) is not int):
            return
        event = self.bounded(event, len(line))
        self.events.append(event)
        if kind == "start":
            self.current = event.get("i")
            self.test_started = time.monotonic()
            self.current_timeout = self.timeout_of(self.current)
        elif kind == "end":
            self.current = self.test_started = None

    def bounded(self, event, size):
        """Only the fields the trusted side reads, each of bounded size; once the program's results
        have used up wire["results"], values and messages are replaced by markers."""
        clean = {"ev": event["ev"][:20]}
        if "i" in event:
            clean["i"] = event["i"]
        status = event.get("status")
        clean["status"] = status[:20] if isinstance(status, str) else None
        wall = event.get("wall_s")
        clean["wall_s"] = wall if type(wall) in (int, float) and -1e18 < wall < 1e18 else None
        lines = event.get("lines")
        clean["lines"] = [x for x in lines if type(x) is int and 1 <= x <= self.wire["n_lines"]] \
            if isinstance(lines, list) else None
        fits = size <= self.wire["results"]
        if fits:
            self.wire["results"] -= size
        if "actual" in event:
            clean["actual"] = event["actual"] if fits else TOO_LARGE
        error = event.get("error")
        if isinstance(error, dict):
            line = error.get("line")
            clean["error"] = {"type": str(error.get("type"))[:200],
                              "message": str(error.get("message"))[:2000] if fits else "<results too large to report>",
                              "line": line if type(line) is int and 0 <= line < 1 << 63 else None}
        return clean

    def timeout_of(self, i):
        per_test = self.limits.get("per_test_timeouts") or []
        if isinstance(i, int) and 0 <= i < len(per_test) and per_test[i]:
            return float(per_test[i])
        return float(self.limits["per_test_wall_s"])

    def finish(self, wait_status, rusage, oom):
        self.oom = oom
        if rusage is not None:
            self.maxrss = rusage.ru_maxrss * 1024
        if wait_status is not None:
            if os.WIFSIGNALED(wait_status):
                self.signal = os.WTERMSIG(wait_status)
            else:
                self.exit_code = os.WEXITSTATUS(wait_status)


# ----------------------------------------------------------------------------- one program
def handle(opts, request):
    started = time.monotonic()
    limits = request["limits"]
    deadline = started + float(limits["wall_s"])
    tests = request["tests"]
    reports = [None] * len(tests)
    excerpt = int(limits.get("excerpt_bytes", 1 << 20))
    wire = {"results": RESULTS_MAX, "n_lines": request["program"].count("\n") + 1}
    out = {"stdout": bytearray(), "stderr": bytearray(), "lines": set(), "load": None,
           "program_timeout": False, "output_limit": False, "maxrss": 0, "leftovers": 0,
           "written": {"stdout": 0, "stderr": 0}}

    def absorb(watch):
        for name in ("stdout", "stderr"):
            room = limits["output_bytes"] - len(out[name])
            out[name] += getattr(watch, name)[:max(room, 0)]
            out["written"][name] += watch.totals[name]
        out["output_limit"] |= watch.over_limit
        out["maxrss"] = max(out["maxrss"], watch.maxrss)
        for event in watch.events:
            if event.get("lines"):
                out["lines"].update(x for x in event["lines"] if isinstance(x, int))

    def load_status(watch):
        for event in watch.events:
            if event.get("ev") == "load" and event.get("status") != "ok":
                return event
        return None

    def abnormal(watch):
        """How a child ended that did not report the end of its test."""
        if watch.over_limit:
            return {"how": "output_limit"}
        if watch.timed_out:
            return {"how": "timeout", "scope": "program" if time.monotonic() >= deadline else "test"}
        if watch.oom:
            return {"how": "memory"}
        if watch.signal is not None:
            return {"how": "signal", "signal": watch.signal}
        return {"how": "exit", "exit_code": watch.exit_code}

    i = 0
    while i < len(tests) or (not tests and out["load"] is None):
        if time.monotonic() >= deadline:
            out["program_timeout"] = True
            break
        if tests and tests[i]["kind"] == "stdio":
            watch = run_child(opts, request, [i], tests[i].get("stdin") or "", deadline, wire)
            watch_index = {i: i}
            indices = [i]
        else:
            stop = i
            while stop < len(tests) and tests[stop]["kind"] != "stdio":
                stop += 1
            indices = list(range(i, stop))
            watch = run_child(opts, request, indices, None, deadline, wire)
            watch_index = {k: k for k in indices}
        absorb(watch)
        failed_load = load_status(watch)
        if failed_load and not tests:
            out["load"] = failed_load
            break
        if failed_load:
            out["load"] = failed_load
            break
        loaded = any(e.get("ev") == "load" and e.get("status") == "ok" for e in watch.events)
        if not tests:
            out["load"] = {"status": "ok"} if loaded else {"status": "died", **abnormal(watch)}
            break
        if not loaded:  # died while loading the module (timeout, memory, crash, os._exit)
            out["load"] = {"status": "died", **abnormal(watch)}
            break
        stdout_for = tests[i]["kind"] == "stdio"
        finished = set()
        for event in watch.events:
            if event.get("ev") == "end" and event.get("i") in watch_index:
                k = watch_index[event["i"]]
                report = {key: event.get(key) for key in ("status", "actual", "error", "wall_s")}
                if stdout_for:
                    # judged by the digest of the whole output; only an excerpt crosses the wire
                    text = bytes(watch.stdout).decode("utf-8", "replace")
                    kept, cut = clip_text(text, max(min(excerpt, wire["results"]) - 2, 0))
                    wire["results"] -= json_len(kept) + 2
                    report.update(actual=kept, actual_truncated=cut, actual_digest=stdout_digest(text))
                reports[k] = report
                finished.add(k)
        missing = [k for k in indices if k not in finished]
        if not missing:
            i = indices[-1] + 1
            continue
        first = missing[0]
        started_tests = [watch_index.get(e.get("i")) for e in watch.events if e.get("ev") == "start"]
        reports[first] = {"status": "died", "wall_s": None, **abnormal(watch)}
        if first not in started_tests:  # ended between tests (e.g. os._exit at load's end)
            reports[first]["before_start"] = True
        if watch.over_limit:
            out["output_limit"] = True
            break
        if watch.timed_out and time.monotonic() >= deadline:
            out["program_timeout"] = True
            break
        i = first + 1
    out["leftovers"] = len(leftovers())
    stdout, stdout_cut = clip_text(bytes(out["stdout"]).decode("utf-8", "replace"), excerpt)
    stderr, stderr_cut = clip_text(bytes(out["stderr"]).decode("utf-8", "replace"), excerpt)
    return {
        "tests": reports,
        "load": out["load"],
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": out["written"]["stdout"] > len(out["stdout"]) or stdout_cut,
        "stderr_truncated": out["written"]["stderr"] > len(out["stderr"]) or stderr_cut,
        "lines": sorted(out["lines"]) if request["trace"] else None,
        "program_timeout": out["program_timeout"],
        "output_limit": out["output_limit"],
        "maxrss": out["maxrss"],
        "leftovers": out["leftovers"],
        "wall_s": time.monotonic() - started,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["priv", "same-uid"], required=True)
    parser.add_argument("--uid", type=int, default=65534)
    parser.add_argument("--workdir", default="/tmp/w")
    parser.add_argument("--scratch", action="append", default=[], help="more dirs to empty after a run")
    parser.add_argument("--cgroup-procs", action="append", default=[])
    parser.add_argument("--memcg", default="", help="memory cgroup dir to read OOM kills from, or 'auto' "
                        "for the one mounted at /sys/fs/cgroup (docker: the container's own)")
    parser.add_argument("--cgroup-version", type=int, default=1)
    parser.add_argument("--rlimit-as", action="store_true")
    parser.add_argument("--rlimit-nproc", action="store_true")
    parser.add_argument("--no-prefork", dest="prefork", action="store_false",
                        help="fork each child when its job arrives instead of ahead of time")
    parser.add_argument("--oom-adjust", action="store_true",
                        help="children raise their OOM score so the kernel picks them, not the zygote")
    parser.add_argument("--tmpfs-workdir", action="store_true", help="the work dir is on our own tmpfs")
    opts = parser.parse_args()
    if opts.memcg == "auto":
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        opts.memcg, opts.cgroup_version = ("/sys/fs/cgroup", 2) if v2 else ("/sys/fs/cgroup/memory", 1)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.makedirs(opts.workdir, exist_ok=True)
    os.chmod(opts.workdir, 0o700)
    if opts.mode == "priv":
        os.chown(opts.workdir, opts.uid, opts.uid)
    opts.empty_size = os.stat(opts.workdir).st_size
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a dead spare's job pipe: EPIPE, not death
    preload()
    opts.spare = Spare(opts) if opts.prefork else None
    write_frame(1, {"ready": True, "pid": os.getpid(), "spare_pid": opts.spare.pid if opts.spare else None})
    while True:
        request = read_frame(0)
        if request is None:
            return
        try:
            reply = handle(opts, request)
        except Exception as error:  # our own fault: reported, and the trusted side recycles us
            reply = {"sandbox_error": f"{type(error).__name__}: {error}"}
        if opts.prefork:
            opts.spare = Spare(opts)  # prepares itself while the trusted side reads the reply
            reply["spare_pid"] = opts.spare.pid
        write_frame(1, reply)


if __name__ == "__main__":
    main()
