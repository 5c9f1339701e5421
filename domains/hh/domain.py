"""`HHDomain`: Anthropic hh-rlhf helpful/harmless dialogue preferences (no programmatic reward)."""
from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

from align.data import DataError, PreferenceData
from align.types import PreferencePair, Prompt, RewardOutput
from domains.hh.data import (
    HUB_ID,
    SPLITS,
    SUBSETS,
    candidate_dirs,
    find_files,
    load_from_hub,
    load_local,
    merge,
)


class HHDomain:
    """hh-rlhf pairs: the shared dialogue history as chat messages, the two final assistant turns as responses.

    Data: `data=` (a pairs file, or a directory with the files or with `<subset>/` folders), else
    `$ALIGN_DATA_DIR/hh-rlhf/<subset>/`, else `<checkout>/../shared/data/hh-rlhf/<subset>/`, else the hub.
    A lone file (e.g. `pairs.jsonl.gz`) is split into train/test by a hash of each pair's id.
    """

    name = "hh"

    def __init__(self, subset: str = "harmless-base", data: str | None = None, eval_fraction: float = 0.1,
                 seed: int = 0, strict: bool = False):
        if subset != "all" and subset not in SUBSETS:
            raise ValueError(f"unknown hh subset {subset!r}; choose one of {', '.join(SUBSETS)} or 'all'")
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        self.subset, self.data, self.eval_fraction, self.seed, self.strict = subset, data, eval_fraction, seed, strict
        self._cache: dict[str, PreferenceData] = {}
        self._skips_by_file: dict[str, Counter] = {}
        self._used: dict[str, str] = {}  # subset (or unnamed path) -> where it was read
        self._missing: list[str] = []  # requested subsets found nowhere

    @property
    def skipped(self) -> Counter:
        """Rows skipped (reason -> count) in every file read so far; a file split by id hash counts once."""
        return sum(self._skips_by_file.values(), Counter())

    def preference_data(self, split: str) -> PreferenceData:
        """The pairs of `split` with the counts of skipped rows (for summary.json)."""
        if split not in SPLITS:
            raise ValueError(f"hh has splits {', '.join(SPLITS)}; got {split!r}")
        if split not in self._cache:
            self._cache[split] = self._load(split)
        return self._cache[split]

    def preferences(self, split: str) -> list[PreferencePair]:
        return self.preference_data(split).pairs

    def prompts(self, split: str) -> list[Prompt]:
        """One prompt per pair: the dialogue history (chat messages) with the chosen response as reference."""
        return [Prompt(prompt=p.prompt, id=p.id, reference=p.chosen, meta={"source": p.source})
                for p in self.preferences(split)]

    def reward(self, prompts: list[Prompt], completions: list[str], **meta) -> list[RewardOutput]:
        raise ValueError("the hh domain has no programmatic reward: human preferences are its only signal. "
                         "Train a reward model (`align rm domain=hh`) and pass it as the reward model.")

    def data_used(self) -> dict[str, str]:
        """What the splits loaded so far came from (summary.json keys): `hh_subsets_used` (in SUBSETS order; a
        file or directory without subset folders is named by its path), `hh_subsets_missing` (asked for, found
        nowhere: `subset=all` uses the subsets it finds), `datasets` (the hub id)."""
        keys = {"hh_subsets_used": ",".join(self._used), "datasets": HUB_ID}
        if self._missing:
            keys["hh_subsets_missing"] = ",".join(self._missing)
        return keys

    def _note(self, split: str, data: PreferenceData, used: dict[str, str], missing: list[str],
              looked: str = "") -> PreferenceData:
        """Record and print which subsets `split` came from; warn when a requested subset is missing."""
        self._used.update(used)
        self._used = dict(sorted(self._used.items(), key=lambda kv: SUBSETS.index(kv[0]) if kv[0] in SUBSETS
                                 else len(SUBSETS)))
        new_missing = [s for s in missing if s not in self._missing]
        self._missing += new_missing
        if new_missing:
            warnings.warn(f"hh: subset={self.subset} asks for {', '.join(SUBSETS)}, but "
                          f"{', '.join(new_missing)} {'was' if len(new_missing) == 1 else 'were'} not found (looked in "
                          f"{looked}); using {', '.join(used)} only", stacklevel=2)
        print(f"hh: {split}: {len(data.pairs)} pairs from "
              + "; ".join(f"{name} ({where})" for name, where in used.items()), file=sys.stderr)
        return data

    def _load(self, split: str) -> PreferenceData:
        if self.data is not None:
            return self._load_given(Path(self.data), split)
        subsets = SUBSETS if self.subset == "all" else (self.subset,)
        parts, used, missing, tried = [], {}, [], []
        for subset in subsets:
            files = None
            for directory in candidate_dirs(subset):
                tried.append(str(directory))
                files = find_files(directory)
                if files:
                    break
            if files:
                parts.append(load_local(files, split, self.eval_fraction, self.seed, self.strict, self._skips_by_file))
                used[subset] = str(directory)
            else:
                missing.append(subset)
        if self.subset == "all" and parts:  # "all" means every subset found locally (the rest is warned about)
            return self._note(split, merge(parts), used, missing, ", ".join(tried))
        parts += [load_from_hub(s, split, self.strict, tried, self._skips_by_file) for s in missing]
        return self._note(split, merge(parts), {**used, **{s: f"hub {HUB_ID}" for s in missing}}, [])

    def _load_given(self, path: Path, split: str) -> PreferenceData:
        # a lone file or a flat directory is named by its folder when that folder is a subset's name
        name = path.parent.name if path.is_file() else path.name
        named = {name if name in SUBSETS else f"unnamed: {path}": str(path)}
        if path.is_file():
            data = load_local({"all": path}, split, self.eval_fraction, self.seed, self.strict, self._skips_by_file)
            return self._note(split, data, named, [])
        files = find_files(path)
        if files:
            data = load_local(files, split, self.eval_fraction, self.seed, self.strict, self._skips_by_file)
            return self._note(split, data, named, [])
        subsets = SUBSETS if self.subset == "all" else (self.subset,)
        found = {s: f for s in subsets if (f := find_files(path / s))}
        parts = [load_local(f, split, self.eval_fraction, self.seed, self.strict, self._skips_by_file)
                 for f in found.values()]
        if not parts:
            raise DataError(f"data={path}: no hh-rlhf files found. Expected train.jsonl.gz + test.jsonl.gz or "
                            f"pairs.jsonl.gz in {path}/ or in {path}/<subset>/ ({', '.join(subsets)}).")
        return self._note(split, merge(parts), {s: str(path / s) for s in found},
                          [s for s in subsets if s not in found], f"{path}/<subset>/")
