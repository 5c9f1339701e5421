"""The output directory of a run: config.yaml, metrics.jsonl, summary.json and checkpoints.

Checkpoints are written into a temporary directory and renamed into place, so a killed run
leaves either a whole checkpoint or none. `metrics.jsonl` is flushed line by line; on resume,
lines logged after the checkpoint are dropped so the resumed run re-logs them exactly once.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from align.config import save_config

CHECKPOINT_PREFIX = "step-"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null rather than produce an unreadable file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class RunDir:
    """Everything a run writes lives under one directory."""

    def __init__(self, output_dir: str | Path, keep_checkpoints: int = 2):
        self.path = Path(output_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint_root = self.path / "checkpoints"
        self.keep_checkpoints = keep_checkpoints
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"

    # ---------------------------------------------------------------- config, metrics, summary
    def save_config(self, config: Any) -> None:
        save_config(config, self.path / "config.yaml")

    def write_model_card(self, config: Any, summary: dict[str, Any], command: str, model: str = "model") -> None:
        """README.md (a Hugging Face model card: base model, data, metrics of `summary`, config) in the model
        directory `model` of this run; rank 0 writes it. Here so that each trainer's final save needs one line."""
        from align.models.card import write_model_card
        from align.training.precision import is_main_process

        if is_main_process():
            write_model_card(self.path / model, config, summary, command)

    def log(self, step: int, **metrics: Any) -> None:
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({k: _finite(v.item() if hasattr(v, "item") else v) for k, v in metrics.items()})
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record, default=_json_default) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics_after(self, step: int) -> None:
        """Drop records logged after `step` (they belong to work a resumed run will redo)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics_path)

    def reset_metrics(self) -> None:
        self.metrics_path.unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_path, {k: _finite(v) for k, v in summary.items()})

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, write: Callable[[Path], None]) -> Path:
        """Call `write(tmp_dir)` to fill a checkpoint, then rename it to `checkpoints/step-N` atomically."""
        tmp = self.begin_checkpoint(step)
        write(tmp)
        return self.commit_checkpoint(tmp, step)

    def begin_checkpoint(self, step: int) -> Path:
        """An empty temporary directory for the checkpoint of `step` (the same path in every process)."""
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_root / f".tmp-{CHECKPOINT_PREFIX}{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    def commit_checkpoint(self, tmp: Path, step: int) -> Path:
        """Rename a filled temporary directory to `checkpoints/step-N`, then drop old checkpoints."""
        final = self.checkpoint_root / f"{CHECKPOINT_PREFIX}{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        return final

    def checkpoints(self) -> list[Path]:
        if not self.checkpoint_root.exists():
            return []
        found = [p for p in self.checkpoint_root.iterdir()
                 if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def _prune(self) -> None:
        for stale in self.checkpoint_root.glob(".tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        for old in self.checkpoints()[: -self.keep_checkpoints or None]:
            shutil.rmtree(old, ignore_errors=True)

