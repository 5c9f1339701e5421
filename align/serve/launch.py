"""Start `align serve` in a subprocess on a free port and stop it again (tests, or a judge that needs a
local endpoint).

    with ServerProcess(["model=tiny-llama"]) as server:
        requests.post(server.url + "/v1/chat/completions", json={...})
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class ServerProcess:
    """`align serve <args> host=127.0.0.1 port=0`; `url` once it accepts connections. Its output goes to
    `log_path`. `stop()` sends SIGTERM (in-flight requests finish) and returns the exit code."""

    def __init__(self, args: list[str], startup_timeout_s: float = 300.0, env: dict[str, str] | None = None):
        self.args, self.startup_timeout_s = list(args), startup_timeout_s
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.workdir = Path(tempfile.mkdtemp(prefix="align-serve-"))
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> ServerProcess:
        ready = self.workdir / "ready.json"
        command = [sys.executable, "-m", "align.cli", "serve", *self.args, "host=127.0.0.1", "port=0",
                   f"ready_file={ready}"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready.is_file():
            if self.process.poll() is not None:
                raise RuntimeError(f"align serve exited with {self.process.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"align serve not listening after {self.startup_timeout_s} s:\n{self.log()}")
            time.sleep(0.1)
        self.url = json.loads(ready.read_text())["url"]
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then wait for the graceful shutdown (SIGKILL after `timeout_s`)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):  # -> the started ServerProcess
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
