"""MQM annotations -> segment scores per system (overall and per aspect) -> preference pairs.

MQM (Multidimensional Quality Metrics, Freitag et al. 2021, "Experts, Errors, and Context"):
each row of the TSV is one error a rater marked in one system's translation of one segment
(category `No-error` when there is none). A segment's score is minus the sum of its error
weights: Major 5, Minor 1, Minor Fluency/Punctuation 0.1, Non-translation 25, Neutral 0.
Error categories map onto the translators' three aspects (信 达 雅):

    Accuracy, Terminology, Non-translation -> faithfulness
    Fluency, Locale convention             -> expressiveness
    Style                                  -> elegance

`Source error` and other categories (e.g. `Other`) weigh by severity and count in the overall
score only (this reproduces the dataset's own `avg_seg_scores.tsv` exactly).
"""
from __future__ import annotations

import csv
import gzip
import itertools
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from align.types import PreferencePair

REFERENCE_SYSTEM = "ref"  # the human reference the metrics compare against (kept out of metric evaluation)

ASPECTS = ("faithfulness", "expressiveness", "elegance")
COLUMNS = ("system", "doc", "doc_id", "seg_id", "rater", "source", "target", "category", "severity")
_SPAN_MARKER = re.compile(r"</?v>")


class MQMError(ValueError):
    """A malformed MQM row, naming file, line and field."""


def strip_spans(text: str) -> str:
    """Remove the `<v>...</v>` error-span markers, keeping the text inside them."""
    return _SPAN_MARKER.sub("", text)


def aspect_of(category: str) -> str | None:
    """The aspect an MQM error category belongs to, or None when it counts in the overall score only."""
    top = category.split("/", 1)[0].strip().lower()
    if top in ("accuracy", "terminology", "non-translation"):
        return "faithfulness"
    if top in ("fluency", "locale convention"):
        return "expressiveness"
    if top == "style":
        return "elegance"
    return None


def error_weight(category: str, severity: str) -> float:
    """MQM weight of one error (the dataset's documented scheme)."""
    category_l, severity_l = category.strip().lower(), severity.strip().lower()
    if category_l in ("no-error", "") or severity_l in ("no-error", "neutral"):
        return 0.0
    if category_l.startswith("non-translation"):
        return 25.0
    if severity_l == "major":
        return 5.0
    if severity_l == "minor":
        return 0.1 if category_l == "fluency/punctuation" else 1.0
    raise ValueError(f"unknown severity {severity!r}")


@dataclass
class SegmentScore:
    """One system's translation of one segment with its MQM scores (averaged over raters)."""

    system: str
    doc: str
    seg_id: str
    source: str
    target: str
    score: float
    """Overall MQM score: minus the summed error weights (0 is perfect, higher is better)."""
    aspect_scores: dict[str, float] = field(default_factory=dict)
    """Per aspect (`faithfulness`, `expressiveness`, `elegance`): minus that aspect's error weights."""
    raters: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return self.doc, self.seg_id


@dataclass
class _Accumulator:
    source: str
    target: str
    doc: str
    # rater -> summed weights overall and per aspect
    weights: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_mqm_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row dict) for every data row of an MQM TSV; a wrong header or column count raises."""
    path = Path(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(COLUMNS):
            raise MQMError(f"{path}:1: expected the header {' '.join(COLUMNS)!r}, got {header!r}")
        for line_number, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(COLUMNS):
                raise MQMError(f"{path}:{line_number}: expected {len(COLUMNS)} tab-separated fields, got {len(row)}")
            yield line_number, dict(zip(COLUMNS, row))


def score_segments(rows: Iterable[tuple[int, dict[str, str]]], path: str = "<rows>",
                   strict: bool = False) -> tuple[list[SegmentScore], Counter]:
    """Aggregate error rows into one `SegmentScore` per (system, doc, segment).

    Rows with an unknown severity or an empty system/segment/target are skipped and counted
    (or raise naming file, line and field when `strict`)."""
    skipped: Counter = Counter()
    segments: dict[tuple[str, str, str], _Accumulator] = {}
    for line_number, row in rows:
        problem = None
        for key in ("system", "seg_id", "target", "source"):
            if not row[key].strip():
                problem = (key, f"empty {key}")
        try:
            weight = error_weight(row["category"], row["severity"])
        except ValueError as error:
            problem = problem or ("severity", str(error))
        if problem:
            if strict:
                raise MQMError(f"{path}:{line_number}: field {problem[0]!r}: {problem[1]}")
            skipped[f"bad_{problem[0]}"] += 1
            continue
        key = (row["system"], row["doc"], row["seg_id"])
        if key not in segments:
            segments[key] = _Accumulator(strip_spans(row["source"]).strip(), strip_spans(row["target"]).strip(),
                                         row["doc"])
        totals = segments[key].weights[row["rater"]]
        totals["overall"] += weight
        aspect = aspect_of(row["category"])
        if aspect is not None:
            totals[aspect] += weight
    def mean_penalty(raters: list[Counter], name: str) -> float:
        return -sum(r[name] for r in raters) / len(raters) + 0.0  # + 0.0 turns -0.0 into 0.0

    scores = []
    for (system, doc, seg_id), acc in segments.items():
        raters = list(acc.weights.values())
        scores.append(SegmentScore(system, doc, seg_id, acc.source, acc.target, mean_penalty(raters, "overall"),
                                   {a: mean_penalty(raters, a) for a in ASPECTS}, raters=len(raters)))
    return scores, skipped


def load_mqm(path: str | Path, strict: bool = False) -> tuple[list[SegmentScore], Counter]:
    """Parse and score an MQM TSV (optionally .gz)."""
    return score_segments(read_mqm_rows(path), str(path), strict=strict)


# --------------------------------------------------------------------------- documents and pairs


def split_documents(scores: list[SegmentScore], test_fraction: float = 0.2, seed: int = 0,
                    test_docs: list[str] | None = None) -> tuple[set[str], set[str]]:
    """Train and test document names: whole documents go to one side (shuffled with `seed`, test
    filled until it holds `test_fraction` of the segments), or `test_docs` when given."""
    segments_per_doc = Counter()
    for doc, _ in {s.key for s in scores}:
        segments_per_doc[doc] += 1
    docs = sorted(segments_per_doc)
    if test_docs:
        unknown = sorted(set(test_docs) - set(docs))
        if unknown:
            raise ValueError(f"test_docs: unknown documents {unknown}; known: {docs}")
        test = set(test_docs)
    else:
        random.Random(seed).shuffle(docs)
        total, test, taken = sum(segments_per_doc.values()), set(), 0
        for doc in docs:
            if taken >= test_fraction * total or len(test) == len(docs) - 1:
                break
            test.add(doc)
            taken += segments_per_doc[doc]
    return set(segments_per_doc) - test, test


def reference_translations(scores: Iterable[SegmentScore]) -> dict[str, str]:
    """Source text -> the human reference (`REFERENCE_SYSTEM`) translation, for the sources that have one."""
    return {s.source: s.target for s in scores if s.system == REFERENCE_SYSTEM}


def group_by_source(scores: Iterable[SegmentScore]) -> dict[tuple[str, str], list[SegmentScore]]:
    """Translations of one source segment, keyed by (doc, seg_id), systems in name order."""
    groups: dict[tuple[str, str], list[SegmentScore]] = defaultdict(list)
    for score in scores:
        groups[score.key].append(score)
    return {key: sorted(group, key=lambda s: s.system) for key, group in sorted(groups.items())}


def build_pairs(scores: Iterable[SegmentScore], make_prompt, min_gap: float = 1.0,
                aspects: Iterable[str] = ("overall",) + ASPECTS, exclude_systems: Iterable[str] = (),
                skip_identical: bool = True, counts: Counter | None = None) -> list[PreferencePair]:
    """Preference pairs between two systems' translations of the same source.

    For each aspect (`overall` uses the overall MQM score), every pair of systems whose scores
    differ by at least `min_gap` gives a pair: chosen = the better-scored translation,
    `margin` = the score gap, `aspect` = the aspect, `prompt = make_prompt(source)`. Pairs of
    identical texts are skipped (and counted in `counts`)."""
    exclude = set(exclude_systems)
    counts = counts if counts is not None else Counter()
    pairs = []
    for (doc, seg_id), group in group_by_source(scores).items():
        group = [s for s in group if s.system not in exclude]
        for a, b in itertools.combinations(group, 2):
            for aspect in aspects:
                score_a = a.score if aspect == "overall" else a.aspect_scores[aspect]
                score_b = b.score if aspect == "overall" else b.aspect_scores[aspect]
                gap = abs(score_a - score_b)
                if gap < min_gap:
                    continue
                chosen, rejected = (a, b) if score_a > score_b else (b, a)
                if skip_identical and chosen.target == rejected.target:
                    counts["identical_translations"] += 1
                    continue
                pairs.append(PreferencePair(
                    prompt=make_prompt(chosen.source), chosen=chosen.target, rejected=rejected.target,
                    id=f"{doc}:{seg_id}:{chosen.system}>{rejected.system}:{aspect}", margin=round(gap, 4),
                    aspect=aspect, source="mqm",
                    extra={"doc": doc, "seg_id": seg_id, "chosen_system": chosen.system,
                           "rejected_system": rejected.system, "source_text": chosen.source}))
    return pairs
