"""A short attack self-test for `align sandbox check`.

First a probe must show that the isolation is in force (no host file, no secret environment
variable of ours, not root); only then do the destructive attacks run. In degraded mode they
never run: a fork bomb or kill(-1) there would hit the machine.
"""
from __future__ import annotations

import os

from .types import ExecRequest, Limits, TestCase

SECRET_NAME = "ALIGN_SANDBOX_SELFTEST_SECRET"
LIMITS = Limits(wall_s=5.0, cpu_s=3.0, per_test_wall_s=1.5, memory_bytes=96 << 20, processes=32,
                output_bytes=32 << 10, file_bytes=1 << 20)

PROBE = f"""
import os
def probe():
    leaks = []
    for path in ("/etc/shadow", "/etc/passwd", "/root", "/proc/1/environ"):
        try:
            open(path, "rb").read() if not os.path.isdir(path) else os.listdir(path)
            leaks.append(path)
        except OSError:
            pass
    if "{SECRET_NAME}" in os.environ:
        leaks.append("secret environment variable")
    if os.getuid() == 0:
        leaks.append("runs as root")
    return leaks
"""

# (name, program, statuses that mean "contained and correctly reported")
ATTACKS = [
    ("network connection", "import socket\ndef f():\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n",
     {"runtime_error"}),
    ("infinite loop", "def f():\n    while True:\n        pass\n", {"timeout"}),
    ("memory bomb", "def f():\n    x = []\n    while True:\n        x.append(bytearray(8 << 20))\n", {"memory"}),
    ("fork bomb", ("import os\ndef f():\n    while True:\n        try:\n            os.fork()\n"
     "        except OSError:\n            pass\n"), {"timeout"}),
    ("kill(-1)", "import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)\n", {"runtime_error"}),
    ("huge output", "def f():\n    while True:\n        print('x' * 4096)\n", {"output_limit"}),
    ("double-forked orphan", ("import os, time\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n"
     "        if os.fork() == 0:\n            time.sleep(30)\n        os._exit(0)\n    return 1\n"), {"passed"}),
]


def run_selftest(backend) -> tuple[bool, list[tuple[str, str, bool]]]:
    """(all contained, [(attack, reported status, ok)]). Stops after a failed probe."""
    os.environ[SECRET_NAME] = "must-not-leak"
    try:
        probe = backend.run(ExecRequest(PROBE, [TestCase.call_expr("probe()", [])], limits=LIMITS))
    finally:
        os.environ.pop(SECRET_NAME, None)
    rows = [("isolation probe", probe.status, probe.status == "passed")]
    if probe.status != "passed":
        leaks = probe.tests[0].actual if probe.tests else probe.error
        rows[0] = ("isolation probe", f"{probe.status}: {leaks}", False)
        return False, rows
    if not backend.isolation.get("full"):
        rows.append(("destructive attacks", "skipped: isolation is degraded", False))
        return False, rows
    for name, program, accepted in ATTACKS:
        expected = 1 if name == "double-forked orphan" else None
        result = backend.run(ExecRequest(program, [TestCase.call_expr("f()", expected)], limits=LIMITS))
        rows.append((name, result.status, result.status in accepted))
    after = backend.run(ExecRequest("import os\ndef f():\n    return sorted(p for p in os.listdir('/proc') "
                                    "if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid()))\n",
                                    [TestCase.call_expr("f()", [])], limits=LIMITS))
    rows.append(("nothing left for the next program", after.status, after.status == "passed"))
    return all(ok for _, _, ok in rows), rows
