"""Controlled preference pairs, whose right answer is known: a human English sentence (chosen) against a
visibly worse copy (rejected: a span shuffled, a clause dropped, the sentence cut short, or the end of another
sentence spliced in), with a known share flipped. Preference strength should find the flipped pairs, and a
reward model trained on the cleaned pairs should recover what the flips cost (`align demo`'s strength stage,
bench/denoise.py).

The sentences are the English side of the ALMA zh-en training set in the shared data folder
(`align.data.data_dirs("translation")`), or any gzipped file of one sentence per line.
"""
from __future__ import annotations

import dataclasses
import gzip
import random
from pathlib import Path

from align.data import data_dirs
from align.types import PreferencePair

ALMA_EN = Path("alma-zhen") / "train.zh-en.en.gz"
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


def english_sentences_file() -> Path:
    """The ALMA English sentences in the shared data folder (FileNotFoundError naming where it looked)."""
    for directory in data_dirs("translation"):
        if (directory / ALMA_EN).is_file():
            return directory / ALMA_EN
    raise FileNotFoundError(f"controlled pairs need English sentences: {ALMA_EN} in "
                            + " or ".join(str(d) for d in data_dirs("translation")))


def controlled_pairs(count: int, seed: int = 0, sentences_file: str | Path | None = None) -> list[PreferencePair]:
    """`count` pairs (fewer if a corruption leaves a sentence unchanged): a human English sentence over a
    corrupted copy, the corruption kinds in turn; ids `alma-<i>`, the kind in `extra["corruption"]`."""
    with gzip.open(sentences_file or english_sentences_file(), "rt", encoding="utf-8") as f:
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


def inject_flips(pairs: list[PreferencePair], rate: float, seed: int) -> tuple[list[PreferencePair], list[bool]]:
    """A copy of `pairs` with a random `rate` share of them swapped (chosen <-> rejected), and which ones."""
    rng = random.Random(f"flips:{seed}")
    flipped = set(rng.sample(range(len(pairs)), round(rate * len(pairs))))
    noisy = [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen) if i in flipped else p
             for i, p in enumerate(pairs)]
    return noisy, [i in flipped for i in range(len(pairs))]
