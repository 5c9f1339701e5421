"""Where the hh-rlhf files are, and how one file becomes a train and a test split."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from align.data import DATA_DIR_ENV, DataError, PreferenceData, data_dirs, in_test_split, load_preferences
from align.types import PreferencePair

SUBSETS = ("helpful-base", "harmless-base", "helpful-online", "helpful-rejection-sampled")
SPLITS = ("train", "test")
HUB_ID = "Anthropic/hh-rlhf"
SPLIT_FILES = {split: (f"{split}.jsonl.gz", f"{split}.jsonl") for split in SPLITS}  # the hub's file names
SINGLE_FILES = ("pairs.jsonl.gz", "pairs.jsonl")


def candidate_dirs(subset: str) -> list[Path]:
    """Local places searched for a subset when no `data=` is given, in order."""
    return [directory / subset for directory in data_dirs("hh-rlhf")]


def find_files(directory: Path) -> dict[str, Path] | None:
    """{"train": file, "test": file} for the hub layout, {"all": file} for a single file; None if neither."""
    if not directory.is_dir():
        return None
    found = {}
    for split, names in SPLIT_FILES.items():
        existing = [directory / name for name in names if (directory / name).is_file()]
        if existing:
            found[split] = existing[0]
    if len(found) == 2:
        return found
    singles = [directory / name for name in SINGLE_FILES if (directory / name).is_file()]
    if singles:
        return {"all": singles[0]}
    if found:  # only one of train/test: it becomes the single file
        return {"all": next(iter(found.values()))}
    return None


def split_by_id(data: PreferenceData, split: str, eval_fraction: float, seed: int) -> PreferenceData:
    """A pair's split is a function of its id and the seed alone: stable across runs, machines and file order."""
    want_test = split == "test"
    pairs = [p for p in data.pairs if in_test_split(f"{seed}:{p.id}", eval_fraction) == want_test]
    # The file's skip counts are reported with both splits: they describe the file, not a split.
    return PreferenceData(pairs=pairs, skipped=Counter(data.skipped), source=f"{data.source} ({split} by id hash)")


def merge(parts: list[PreferenceData]) -> PreferenceData:
    pairs: list[PreferencePair] = []
    skipped: Counter = Counter()
    for part in parts:
        pairs += part.pairs
        skipped.update(part.skipped)
    return PreferenceData(pairs=pairs, skipped=skipped, source=" + ".join(p.source for p in parts))


def load_local(files: dict[str, Path], split: str, eval_fraction: float, seed: int, strict: bool,
               skips_by_file: dict[str, Counter]) -> PreferenceData:
    """The `split` of a local subset; each file's skip counts go to `skips_by_file` (once per file)."""
    path = files.get(split, files.get("all"))
    data = load_preferences(str(path), strict=strict)
    skips_by_file[str(path)] = Counter(data.skipped)
    return data if split in files else split_by_id(data, split, eval_fraction, seed)


def load_from_hub(subset: str, split: str, strict: bool, tried: list[str],
                  skips_by_file: dict[str, Counter]) -> PreferenceData:
    try:
        data = load_preferences(HUB_ID, split=split, data_dir=subset, strict=strict)
        skips_by_file[f"{HUB_ID}/{subset}:{split}"] = Counter(data.skipped)
        return data
    except DataError as e:
        places = "\n  ".join(tried)
        raise DataError(
            f"hh-rlhf subset {subset!r} not found. Looked in:\n  {places}\nand on the hub ({e}).\n"
            f"Put the hub files train.jsonl.gz and test.jsonl.gz (or one pairs.jsonl.gz, split by id) in "
            f"${DATA_DIR_ENV}/hh-rlhf/{subset}/ or {candidate_dirs(subset)[-1]}/, or pass data=<file or directory>."
        ) from e
