"""Resumable training state: model, optimizer, scheduler, RNG and data position, saved atomically.

A checkpoint directory holds `model/` (Hugging Face format, loadable on its own), `optimizer.pt`,
`scheduler.pt`, `rng.pt` and `trainer_state.json`. Restoring all of them makes a resumed run
take exactly the steps an uninterrupted run would have taken.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from align.runlog import RunDir


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    """Index of the next micro-batch of `epoch` (data order is a function of seed and epoch)."""
    pairs_seen: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: RunDir, state: TrainState, accelerator, model, optimizer, scheduler) -> Path | None:
    """Write a whole checkpoint or none (temp dir + rename); main process only."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None

    def write(directory: Path) -> None:
        accelerator.unwrap_model(model).save_pretrained(directory / "model")
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")
        torch.save(scheduler.state_dict(), directory / "scheduler.pt")
        torch.save(_rng_state(), directory / "rng.pt")
        (directory / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))

    return run.save_checkpoint(state.step, write)


def load_checkpoint(directory: Path, model, optimizer, scheduler) -> TrainState:
    """Restore everything `save_checkpoint` wrote into live objects; returns the training state."""
    restored = type(model).from_pretrained(directory / "model")
    model.load_state_dict(restored.state_dict())
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=False))
    _restore_rng(torch.load(directory / "rng.pt", weights_only=False))
    return TrainState(**json.loads((directory / "trainer_state.json").read_text()))
