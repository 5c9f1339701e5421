"""What every benchmark result records beside its figures, so a reader can tell where a number came from.

`Run(__file__)` at the start of a benchmark notes the time, the load average and the other busy processes;
`run.write(path, figures, headline)` adds the end-of-run load, the date, the commit (and whether the tree had
uncommitted changes in the code the figure depends on), the CPU model and its SIMD/bf16 flags, the package
versions, torch's thread count and the exact command, then writes the JSON. `headline` rows are what
`bench/summary.py` puts in `bench/results/summary.md`: one row per figure, ours against a peer measured in
the same invocation.

Scripts run as `python bench/<name>.py`; they import this as `from bench.provenance import Run` after putting
the repository root first on `sys.path` (a bare `import sandbox` would otherwise find `bench/sandbox.py`).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "accelerate", "datasets", "peft", "trl", "tokenizers", "numpy")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# environment variables that change what a CPU benchmark computes or how many threads it uses
ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "PYTHONPATH")


def cpu() -> dict:
    """CPU model, cores, the flags that decide matmul speed, and whether bf16 is computed natively."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = info.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    present = [flag for flag in CPU_FLAGS if flag in flags]
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    return {"model": model, "cores": os.cpu_count(), "flags": present,
            "bf16": "native (AVX512-BF16/AMX)" if native else "emulated (no AVX512-BF16/AMX)"}


def packages() -> dict:
    """Installed versions of the packages a figure depends on (peers included when importable)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def commit() -> dict:
    """HEAD and the files under align/, domains/, sandbox/ and bench/ that differ from it (uncommitted work
    the figure was measured with)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--", "align", "domains", "sandbox",
                                        "bench/*.py").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short=12", "HEAD").strip() or "unknown", "uncommitted_files": changed}


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the program and its first non-option argument: enough to tell what it is, never its settings
        words = [a.decode(errors="replace") for a in argv if a and not a.startswith(b"-")][:2]
        ticks[int(entry.name)] = (int(fields[11]) + int(fields[12]), " ".join(Path(w).name if i == 0 else w
                                                                             for i, w in enumerate(words)))
    return ticks


def busy_processes(window_s: float = 1.0, threshold: float = 0.1) -> list[dict]:
    """Other processes using more than `threshold` of a core over `window_s` (this process excluded)."""
    if not Path("/proc/self/stat").exists():
        return []
    before = _cpu_ticks()
    time.sleep(window_s)
    after = _cpu_ticks()
    hertz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (ticks, name) in after.items():
        if pid == os.getpid() or pid not in before or not name:
            continue
        share = (ticks - before[pid][0]) / hertz / window_s
        if share >= threshold:
            busy.append({"process": name, "cores": round(share, 2)})
    return sorted(busy, key=lambda p: -p["cores"])


def load() -> dict:
    one, five, fifteen = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2),
            "busy_processes": busy_processes()}


def headline(figure: str, ours: float | None, peer: str, peer_value: float | None, unit: str,
             higher_is_better: bool = True, goal: float | None = None, note: str = "") -> dict:
    """One summary row: `ratio` is ours / peer when higher is better (a speed), peer / ours otherwise (a time);
    `met` compares it with `goal` when there is one."""
    ratio = None
    if ours and peer_value:
        ratio = ours / peer_value if higher_is_better else peer_value / ours
    row = {"figure": figure, "ours": ours, "peer": peer, "peer_value": peer_value, "unit": unit,
           "ratio": round(ratio, 3) if ratio is not None else None, "goal": goal,
           "met": (ratio >= goal) if goal is not None and ratio is not None else None}
    if note:
        row["note"] = note
    return row


class Run:
    """One benchmark invocation: started at construction, written once with `write`."""

    def __init__(self, script: str):
        self.name = Path(script).stem
        self.command = " ".join([f"python bench/{Path(script).name}", *(shlex.quote(a) for a in sys.argv[1:])])
        self.started = time.time()
        self.at_start = load()

    def write(self, path: str | Path, figures: dict, headlines: list[dict]) -> dict:
        """Figures + provenance as JSON at `path`; returns what was written. This run's provenance wins over
        same-named keys in `figures` (a script that merges into its previous file must not keep the old date)."""
        threads = None
        if "torch" in sys.modules:
            threads = sys.modules["torch"].get_num_threads()
        provenance = {
            "benchmark": self.name, "command": self.command, "date": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
            **commit(), "cpu": cpu(), "packages": packages(), "torch_threads": threads,
            "environment": {k: os.environ[k] for k in ENVIRONMENT if k in os.environ},
            "wall_seconds": round(time.time() - self.started, 1),
            "load_at_start": self.at_start, "load_at_end": load(),
            "headline": headlines}
        result = {**provenance, **{k: v for k, v in figures.items() if k not in provenance}}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result
