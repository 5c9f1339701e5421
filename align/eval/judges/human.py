"""The `human` judge: blinded A/B pairs for annotators, and their labels read back.

Export (`export_pairs`) writes into `export_dir`:
- `pairs.csv` and `pairs.jsonl` for the annotators: `id`, `prompt`, `response_1`, `response_2` and an empty
  `label` to fill with `1`, `2` or `tie`. The rows are shuffled and each pair's two responses are put in a
  random order, so neither the row, the id nor the position tells which policy wrote a response;
- `key.json`, kept from the annotators: per id, which side is response 1, the pair's index in the prompt set
  and a fingerprint of its prompt and responses (labels are only applied to the texts they were given for);
- `INSTRUCTIONS.md`, what to do.

Import (`read_labels`) takes the filled CSV or JSONL back; a blank label excludes its pair (`unlabelled`,
counted, not a tie); any other value than `1`, `2` or `tie`, an unknown or repeated id is an error naming
the file, line and field.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

from align.config import ConfigError
from align.data import BadRow, DataError, iter_rows
from align.eval.judges.base import Verdict, check_lengths, excluded, prompt_for_judge
from align.types import Prompt

FIELDS = ("id", "prompt", "response_1", "response_2", "label")
LABELS = ("1", "2", "tie")
INSTRUCTIONS = """# Pairwise judgement

Each row of `pairs.csv` (or line of `pairs.jsonl`) is a request and two responses. Read both and fill
`label` with `1` if response 1 is better, `2` if response 2 is better, or `tie` if neither is. Leave it blank
to skip a row. The order of the rows and of the two responses is random. Return the file with the same ids.
"""


class LabelsPending(RuntimeError):
    """The pairs were exported; the judgement waits for the annotators' labels."""

    def __init__(self, export_dir: Path, pairs: int):
        self.export_dir, self.pairs = export_dir, pairs
        super().__init__(f"human judge: {pairs} blinded pairs in {export_dir}/pairs.csv and pairs.jsonl; fill "
                         f"`label` (1, 2 or tie), then judge again with judge_options.labels=<the filled file>")


def fingerprint(prompt: Prompt, completion_a: str, completion_b: str) -> str:
    text = json.dumps([prompt.prompt, completion_a, completion_b], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def export_pairs(prompts: list[Prompt], completions_a: list[str], completions_b: list[str], export_dir: str | Path,
                 seed: int = 0) -> Path:
    """Write the blinded files and the key (see the module docstring); returns `export_dir`."""
    check_lengths(prompts, completions_a, completions_b)
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    order = list(range(len(prompts)))
    rng.shuffle(order)
    rows, key = [], {}
    for position, index in enumerate(order):
        pair_id = f"pair-{position + 1:04d}"
        a_first = rng.random() < 0.5
        a, b = completions_a[index], completions_b[index]
        rows.append({"id": pair_id, "prompt": prompt_for_judge(prompts[index].prompt),
                     "response_1": a if a_first else b, "response_2": b if a_first else a, "label": ""})
        key[pair_id] = {"index": index, "response_1": "a" if a_first else "b",
                        "fingerprint": fingerprint(prompts[index], a, b)}
    with open(export_dir / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(export_dir / "pairs.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (export_dir / "key.json").write_text(json.dumps({"seed": seed, "pairs": key}, indent=1) + "\n")
    (export_dir / "INSTRUCTIONS.md").write_text(INSTRUCTIONS)
    return export_dir


def _label_rows(path: Path) -> list[tuple[str, dict]]:
    """(location, row) of a filled CSV, JSONL or JSON file."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return [(f"{path}:{number}", row) for number, row in enumerate(csv.DictReader(handle), start=2)]
    rows = []
    for location, row in iter_rows(str(path), None):
        if isinstance(row, BadRow):
            raise row.located(location)
        if not isinstance(row, dict):
            raise DataError(f"{location}: expected a JSON object with `id` and `label`")
        rows.append((location, row))
    return rows


def read_labels(path: str | Path, known_ids: set[str]) -> dict[str, str | None]:
    """id -> `1`, `2`, `tie`, or None for a blank label, from a filled CSV or JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"judge_options.labels: file not found: {path}")
    labels: dict[str, str | None] = {}
    for location, row in _label_rows(path):
        pair_id = str(row.get("id") or "").strip()
        if pair_id not in known_ids:
            raise DataError(f"{location}: field `id`: {pair_id!r} is not a pair of this export")
        if pair_id in labels:
            raise DataError(f"{location}: field `id`: {pair_id} is labelled twice")
        raw = row.get("label")
        label = "" if raw is None else str(raw).strip().lower()
        if label and label not in LABELS:
            raise DataError(f"{location}: field `label`: expected 1, 2 or tie (or blank to skip), got {raw!r}")
        labels[pair_id] = label or None
    return labels


class HumanJudge:
    """Without `labels`: exports the pairs to `export_dir` and raises `LabelsPending`. With `labels` (the filled
    CSV or JSONL): reads them with the key (`key`, default `export_dir/key.json`) and returns the verdicts."""

    name = "human"

    def __init__(self, export_dir: str | Path = "runs/human_judge", labels: str | None = None, key: str | None = None,
                 seed: int = 0):
        self.export_dir, self.labels, self.seed = Path(export_dir), labels, seed
        self.key_path = Path(key) if key else self.export_dir / "key.json"

    def judge(self, prompts: list[Prompt], completions_a: list[str], completions_b: list[str]) -> list[Verdict]:
        check_lengths(prompts, completions_a, completions_b)
        if self.labels is None:
            export_pairs(prompts, completions_a, completions_b, self.export_dir, self.seed)
            raise LabelsPending(self.export_dir, len(prompts))
        if not self.key_path.is_file():
            raise ConfigError(f"judge_options.key: key file not found: {self.key_path} (export the pairs first)")
        key = json.loads(self.key_path.read_text())["pairs"]
        if len(key) != len(prompts):
            raise ConfigError(f"{self.key_path}: {len(key)} exported pairs, but {len(prompts)} pairs to judge now")
        for pair_id, entry in key.items():
            index = entry["index"]
            if fingerprint(prompts[index], completions_a[index], completions_b[index]) != entry["fingerprint"]:
                raise ConfigError(f"{self.key_path}: {pair_id} was exported for another prompt or other completions "
                                  f"than pair {index} now; judge the completions that were exported")
        labels = read_labels(self.labels, set(key))
        verdicts: list[Verdict | None] = [None] * len(prompts)
        for pair_id, entry in key.items():
            label = labels.get(pair_id)
            if label is None:
                verdicts[entry["index"]] = excluded("unlabelled", id=pair_id)
                continue
            shown_first = entry["response_1"]
            winner = "tie" if label == "tie" else (shown_first if label == "1" else {"a": "b", "b": "a"}[shown_first])
            verdicts[entry["index"]] = Verdict(winner, {"id": pair_id, "label": label, "response_1": shown_first})
        return verdicts  # type: ignore[return-value]
