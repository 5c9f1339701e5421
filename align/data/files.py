"""Reading rows: JSONL and JSON files (optionally gzipped), `save_to_disk` dataset directories and hub ids.

Every row comes with its location (`file:line`, or the record number for JSON lists and datasets); a line
that cannot be read becomes a `BadRow` naming why, so the parser can count it or stop on it.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from typing import Any


class DataError(ValueError):
    """A row or file that cannot be read; the message names file, line and field."""


class BadRow(Exception):
    """A row that cannot become a pair or prompt: the skip reason, the field at fault and a message."""

    def __init__(self, reason: str, field_name: str | None, message: str):
        super().__init__(message)
        self.reason, self.field_name, self.message = reason, field_name, message

    def located(self, location: str) -> DataError:
        """The error strict mode raises: file, line and field."""
        field = f"field '{self.field_name}': " if self.field_name else ""
        return DataError(f"{location}: {field}{self.message}")


def open_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from e
    return raw


def iter_rows(source: str, split: str | None, data_dir: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield (location "<file>:<n>", row or BadRow) from a file, a saved dataset or a hub id.

    n is the line for JSONL and the 1-based record number for JSON lists and datasets.
    """
    if os.path.isdir(source):
        yield from _iter_dataset_rows(_load_saved_dataset(source, split), source)
    elif os.path.isfile(source):
        name = source.removesuffix(".gz")
        raw = open_bytes(source)
        json_document = name.endswith(".json") and not _looks_like_json_lines(raw)
        yield from (_iter_json_rows if json_document else _iter_jsonl_rows)(raw, source)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not re.search(r"\.(jsonl?|gz)$", source):
        hub_options = {"data_dir": data_dir} if data_dir else {}
        yield from _iter_dataset_rows(_load_hub_dataset(source, split or "train", **hub_options), source)
    else:
        raise DataError(f"{source}: no such file or directory (expected .jsonl/.json[.gz], a dataset "
                        "directory saved with `save_to_disk`, or a hub id like owner/name)")


def _looks_like_json_lines(raw: bytes) -> bool:
    """Many `.json` files are JSON lines (the hub's loaders accept both): one object per line, no enclosing list."""
    lines = raw.lstrip().split(b"\n", 1)
    return lines[0].rstrip().endswith(b"}") and len(lines) > 1 and lines[1].lstrip().startswith(b"{")


def _iter_jsonl_rows(raw: bytes, source: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        location = f"{source}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield location, BadRow("bad_utf8", None, f"undecodable bytes (not UTF-8: {e.reason})")
            continue
        try:
            yield location, json.loads(text)
        except json.JSONDecodeError as e:
            yield location, BadRow("bad_json", None, f"bad JSON line ({e.msg}, column {e.colno})")


def _iter_json_rows(raw: bytes, source: str) -> Iterator[tuple[str, Any]]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{source}:{line}: undecodable bytes (not UTF-8)") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{source}:{e.lineno}: bad JSON ({e.msg}, column {e.colno})") from e
    # {"data": [...]}, a list of rows, or a lone row
    rows = document.get("data", [document]) if isinstance(document, dict) else document
    if not isinstance(rows, list):
        raise DataError(f"{source}: expected a JSON list of rows or an object with a 'data' list")
    for number, row in enumerate(rows, start=1):
        yield f"{source}:{number}", row


def _load_saved_dataset(path: str, split: str | None):
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: a directory, but not a dataset saved with `save_to_disk` ({e})") from e
    if isinstance(loaded, datasets.DatasetDict):
        split = split or "train"
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    return loaded


def _load_hub_dataset(hub_id: str, split: str, **kwargs: Any):
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=split, **kwargs)
    except Exception as e:  # offline, unknown id, missing split: all end the same way for the user
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise DataError(f"{hub_id}: could not load split {split!r} from the Hugging Face hub{offline}: "
                        f"{type(e).__name__}: {e}. Download the files and pass a local path instead.") from e


def _iter_dataset_rows(dataset, source: str) -> Iterator[tuple[str, Any]]:
    for number, row in enumerate(dataset, start=1):
        yield f"{source}:{number}", row
