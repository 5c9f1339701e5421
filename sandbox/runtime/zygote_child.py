# ruff: noqa: BLE001, S110  (this file runs untrusted code and must survive anything it does)
"""The per-program child of the zygote: prepared ahead of time (session, cgroups, unprivileged
uid, no_new_privs), then handed its job (rlimits, stdin, fds, work dir) and the harness runs it."""
import ctypes
import json
import os
import resource
import signal
import sys

import harness

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)


def child_prepare(opts):
    """In a freshly forked spare child, before it gets a job: session, cgroups, uid."""
    os.setsid()
    for procs in opts.cgroup_procs:
        with open(procs, "w") as f:  # "0" = the writing task itself
            f.write("0")
    if opts.mode == "priv":
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if opts.oom_adjust:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
    if opts.mode == "priv":
        os.setgroups([])
        os.setresgid(opts.uid, opts.uid, opts.uid)
        os.setresuid(opts.uid, opts.uid, opts.uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def child_setup(opts, limits, stdin_data, out_w, err_w, chan_w):
    """In the child, once its job is known and before any untrusted code: rlimits, fds, cwd."""
    cpu = max(1, int(limits["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    if opts.rlimit_as:  # backstop when no memory cgroup is in force
        cap = limits["memory_bytes"] + (256 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if opts.rlimit_nproc:  # backstop when no pids cgroup is in force (dedicated uid per worker)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    if stdin_data is None:
        stdin_fd = os.open("/dev/null", os.O_RDONLY)
    else:
        stdin_fd = os.memfd_create("stdin")
        os.write(stdin_fd, stdin_data.encode("utf-8", "surrogateescape"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    for src, dst in ((stdin_fd, 0), (out_w, 1), (err_w, 2), (chan_w, 3)):
        os.dup2(src, dst, inheritable=True)
    for fd in os.listdir("/proc/self/fd"):
        if int(fd) > 3:
            try:
                os.close(int(fd))
            except OSError:
                pass
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    os.chdir(opts.workdir)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin", "HOME": opts.workdir, "LANG": "C.UTF-8", "TMPDIR": opts.workdir})
    sys.setrecursionlimit(3000)


class Spare:
    """A child forked ahead of time: it joins the cgroups and drops its uid while the trusted side
    is busy (moving a task into a memory cgroup can take ~10 ms of waiting), then blocks until it
    is handed a job through a pipe."""

    def __init__(self, opts):
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        self.chan_r, chan_w = os.pipe()
        job_r, self.job_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                for fd in (self.out_r, self.err_r, self.chan_r, self.job_w):
                    os.close(fd)
                null = os.open("/dev/null", os.O_RDWR)  # let go of the protocol pipes at once
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.close(null)
                child_prepare(opts)
                chunks = []
                while True:
                    chunk = os.read(job_r, 1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
                os.close(job_r)
                if chunks:
                    job = json.loads(b"".join(chunks))
                    child_setup(opts, job["limits"], job["stdin"], out_w, err_w, chan_w)
                    if job["stdin"] is None:
                        harness.run_tests(job["program"], job["tests"], job["indices"], job["trace"], 3)
                    else:
                        harness.run_script(job["program"], job["trace"], 3, job["indices"][0])
                    harness._flush_std()
            except BaseException:
                pass
            os._exit(0)
        for fd in (out_w, err_w, chan_w, job_r):
            os.close(fd)

    def give(self, job):
        """Hand over the job (a dead spare just reads as a child that died at once)."""
        try:
            view = memoryview(json.dumps(job).encode())
            while view:
                view = view[os.write(self.job_w, view):]
        except OSError:
            pass
        finally:
            os.close(self.job_w)

    def discard(self):
        for fd in (self.job_w, self.out_r, self.err_r, self.chan_r):
            os.close(fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def take_spare(opts):
    """The spare made after the last program, if it is still alive and well; else a new one."""
    spare, opts.spare = opts.spare, None
    if spare is not None:
        try:
            done, _ = os.waitpid(spare.pid, os.WNOHANG)
        except ChildProcessError:
            done = spare.pid
        if done:
            spare.discard()
            spare = None
    return spare or Spare(opts)
