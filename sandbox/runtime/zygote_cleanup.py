# ruff: noqa: BLE001, SIM102  (this file runs untrusted code and must survive anything it does)
"""Between programs: kill every process of the program uid, reap, and remove what it wrote
(files in the work and scratch dirs, SysV IPC objects), so nothing reaches the next program."""
import ctypes
import os
import shutil
import signal
import stat
import time

IPC_RMID = 0
_libc = ctypes.CDLL(None, use_errno=True)


def oom_kills(opts):
    if not opts.memcg:
        return 0
    try:
        name = "memory.events" if opts.cgroup_version == 2 else "memory.oom_control"
        with open(os.path.join(opts.memcg, name)) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except OSError:
        pass
    return 0


def _other_pids():
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]


def _as_program_uid(opts, action):
    """Run `action` in a helper that has dropped to the program uid (never as root)."""
    helper = os.fork()
    if helper == 0:
        try:
            os.setgroups([])
            os.setresgid(opts.uid, opts.uid, opts.uid)
            os.setresuid(opts.uid, opts.uid, opts.uid)
            if os.getuid() != 0 and os.geteuid() != 0:
                action(opts)
        except BaseException as error:
            os.write(2, f"zygote helper: {type(error).__name__}: {error}\n".encode())
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def _kill_minus_one(_opts=None):
    """kill(-1, SIGKILL): every process we may signal except ourselves (and pid 1 of the
    namespace). Only ever called as pid 1 of our own pid namespace, or as the program uid."""
    assert os.getpid() == 1 or (os.getuid() != 0 and os.geteuid() != 0)
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break


def kill_program(opts, pid):
    """Kill the child and everything it started, reap what is ours, remove what it wrote."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if os.getpid() == 1:  # our own pid namespace: kill(-1) reaches the program's processes only
        _kill_minus_one()
    elif opts.mode == "priv":  # degraded, no pid namespace: the dedicated uid, from a helper
        _as_program_uid(opts, _kill_minus_one)
    for procs in opts.cgroup_procs:
        _kill_listed(procs)
    reap(pid)
    if something_to_clean(opts):
        if opts.mode == "priv":
            _as_program_uid(opts, clean_files)
        else:
            clean_files(opts)


def _workdir_intact(opts):
    try:
        st = os.lstat(opts.workdir)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700


def _entries(root, opts):
    """Entries of a directory to empty, never the work dir itself (it may live in a scratch root)."""
    return [n for n in os.listdir(root) if os.path.join(root, n) != opts.workdir]


def something_to_clean(opts):
    if not _workdir_intact(opts):
        return True
    if opts.mode == "priv":
        # the work dir belongs to the program uid and may be unreadable to us; on tmpfs a
        # directory's size counts its entries, which the owner cannot fake (unlike its mtime)
        if not opts.tmpfs_workdir or os.stat(opts.workdir).st_size != opts.empty_size:
            return True
    for root in ([] if opts.mode == "priv" else [opts.workdir]) + opts.scratch:
        try:
            if _entries(root, opts):
                return True
        except OSError:
            pass
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                if len(f.read().splitlines()) > 1:
                    return True
        except OSError:
            pass
    return False


def _kill_listed(procs):
    try:
        with open(procs) as f:
            for line in f:
                try:
                    os.kill(int(line), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
    except OSError:
        pass


def reap(pid):
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            got, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            got = None
        if os.getpid() != 1:
            return
        if not _other_pids():
            return
        if not got:
            time.sleep(0.002)


def leftovers():
    """Processes other than us inside our namespace (only meaningful as pid 1)."""
    return _other_pids() if os.getpid() == 1 else []


def clean_files(opts):
    """Remove everything the program wrote, and its SysV IPC objects (runs as the program uid
    in priv mode, so directories it made unreadable can be opened again by their owner)."""
    if not _workdir_intact(opts):  # chmod-ed, or (same-uid mode) replaced by a file or a symlink
        if os.path.islink(opts.workdir) or not os.path.isdir(opts.workdir):
            _remove(opts.workdir)
            os.mkdir(opts.workdir, 0o700)
        os.chmod(opts.workdir, 0o700)
    for root in [opts.workdir] + opts.scratch:
        if not os.path.isdir(root) or os.path.islink(root):
            continue
        for name in _entries(root, opts):
            _remove(os.path.join(root, name))
    for kind, ctl in (("shm", _libc.shmctl), ("msg", _libc.msgctl), ("sem", _libc.semctl)):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            ident = int(row.split()[1])
            if kind == "sem":
                ctl(ident, 0, IPC_RMID, None)
            else:
                ctl(ident, IPC_RMID, None)


def _remove(path):
    def fix(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
        except OSError:
            pass
        try:
            func(target)
        except OSError:
            pass
    if os.path.isdir(path) and not os.path.islink(path):
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        shutil.rmtree(path, onerror=fix)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
