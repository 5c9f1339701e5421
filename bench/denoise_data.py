"""The controlled preference pairs of bench/denoise.py: a human English sentence against a visibly worse copy.

chosen = an English sentence of the ALMA zh-en training set, rejected = a corrupted copy (a span shuffled, a
clause dropped, the sentence cut short, or the end of another sentence spliced in), one kind in turn.
"""
from __future__ import annotations

import gzip
import random
from pathlib import Path

ALMA_EN = Path(__file__).resolve().parents[2] / "shared" / "data" / "translation" / "alma-zhen" / "train.zh-en.en.gz"
PROMPT = "Write one sentence of an English news article."


def corrupt(words: list[str], other: list[str], kind: str, rng: random.Random) -> list[str]:
    """A visibly worse copy of a sentence (`kind`: shuffle, drop, truncate, splice)."""
    n = len(words)
    if kind == "shuffle":  # shuffle the words of a span
        width = max(4, n // 3)
        start = rng.randrange(0, n - width + 1)
        span = words[start:start + width]
        while span == words[start:start + width]:
            rng.shuffle(span)
        return words[:start] + span + words[start + width:]
    if kind == "drop":  # drop a clause: between commas if there are any, else a middle span
        cuts = [i for i, w in enumerate(words[:-1]) if w.endswith(",")]
        if cuts:
            i = rng.choice(cuts)
            following = [j for j in cuts if j > i]
            end = following[0] + 1 if following else min(n - 1, i + 1 + max(3, (n - i) // 2))
            return words[:i + 1] + words[end:] if end > i + 1 else words[: i + 1] + words[i + 4:]
        start, width = n // 3, max(3, n // 3)
        return words[:start] + words[start + width:]
    if kind == "truncate":  # stop mid-sentence
        return words[: max(3, int(n * rng.uniform(0.4, 0.7)))]
    half, other_half = n // 2, len(other) // 2  # splice in the end of another sentence
    return words[:half] + other[other_half:]


def controlled_pairs(count: int, seed: int = 0):
    from align.types import PreferencePair

    with gzip.open(ALMA_EN, "rt", encoding="utf-8") as f:
        sentences = list(dict.fromkeys(line.strip() for line in f))
    sentences = [s for s in sentences if 10 <= len(s.split()) <= 40 and s[-1] in ".!?\""]
    rng = random.Random(seed)
    rng.shuffle(sentences)
    pairs = []
    for i, sentence in enumerate(sentences[:count]):
        kind = ("shuffle", "drop", "truncate", "splice")[i % 4]
        rejected = " ".join(corrupt(sentence.split(), sentences[-1 - i].split(), kind, rng))
        if rejected != sentence:
            pairs.append(PreferencePair(prompt=PROMPT, chosen=sentence, rejected=rejected, id=f"alma-{i}",
                                        extra={"corruption": kind}))
    return pairs
