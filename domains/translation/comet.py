"""COMET (Rei et al. 2020) as an optional metric, loaded from a local checkpoint, offline.

`unbabel-comet` pins transformers<5, so it lives in an environment of its own (`make comet-env`
creates `.venv-comet`); nothing else in the suite imports this module's dependencies, and
`comet` itself is imported only inside `load_comet`.

A checkpoint is a directory in COMET's download layout (`hparams.yaml` + `checkpoints/model.ckpt`)
or the `.ckpt` file itself. `hparams.yaml`'s `pretrained_model` (the encoder's config and
tokenizer) must resolve offline: a local directory, or a hub id already in the local cache.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def resolve_checkpoint(path: str | Path) -> Path:
    """The `.ckpt` file of a COMET model directory (or the file itself)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for candidate in (path / "checkpoints" / "model.ckpt", path / "model.ckpt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no COMET checkpoint at {path}: expected a .ckpt file or a directory with "
                            "hparams.yaml and checkpoints/model.ckpt")


def load_comet(path: str | Path):
    """Load a COMET model from a local checkpoint with the hub switched off."""
    checkpoint = resolve_checkpoint(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from comet import load_from_checkpoint
    except ImportError as error:
        raise ImportError("COMET needs the optional package `unbabel-comet`, which pins transformers<5 and so "
                          "cannot share the suite's environment: run `make comet-env` and use "
                          f".venv-comet/bin/python ({error})") from error
    model = load_from_checkpoint(str(checkpoint), local_files_only=True)
    model.eval()
    return model


def comet_scores(model, sources: Sequence[str], hypotheses: Sequence[str],
                 references: Sequence[str] | None = None, batch_size: int = 16) -> list[float]:
    """Segment-level COMET scores on the CPU (one per hypothesis)."""
    if len(sources) != len(hypotheses) or (references is not None and len(references) != len(hypotheses)):
        raise ValueError("sources, hypotheses and references must have the same length")
    if not hypotheses:
        return []
    samples = [{"src": s, "mt": h} if references is None else {"src": s, "mt": h, "ref": r}
               for s, h, r in zip(sources, hypotheses, references if references is not None else sources)]
    output = model.predict(samples, batch_size=batch_size, gpus=0, accelerator="cpu", progress_bar=False,
                           num_workers=0)
    return [float(score) for score in output.scores]
