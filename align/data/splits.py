"""Where data lives, and how items are split into train and held-out parts deterministically."""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

DATA_DIR_ENV = "ALIGN_DATA_DIR"
"""Environment variable naming a folder with one sub-folder per data set (`hh-rlhf/`, `translation/`, ...)."""


def checkout_root() -> Path:
    """The directory holding the `align` package (the project checkout for an editable install)."""
    return Path(__file__).resolve().parents[2]


def data_dirs(name: str) -> list[Path]:
    """Where a data set called `name` is looked for when no path is given, in order: `$ALIGN_DATA_DIR/name`,
    then `<checkout>/../shared/data/name` (the team's shared data beside the checkout)."""
    dirs = [Path(os.environ[DATA_DIR_ENV]) / name] if os.environ.get(DATA_DIR_ENV) else []
    return dirs + [checkout_root().parent / "shared" / "data" / name]


def in_test_split(key: str, test_fraction: float) -> bool:
    """Whether the item identified by `key` is held out: a function of the key alone (stable across runs,
    machines and file order). Put the seed in the key to draw another split."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def split_train_eval(items: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle-and-cut: (train, eval), eval holding round(len * eval_fraction) items."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(items) * eval_fraction)
    return [items[i] for i in sorted(order[n_eval:])], [items[i] for i in sorted(order[:n_eval])]
