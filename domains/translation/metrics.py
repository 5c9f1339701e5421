"""Reference-based translation metrics (sacrebleu): BLEU, chrF, TER, sentence- and corpus-level.

The target language picks the settings: BLEU's default `13a` tokenizer sees a whole Chinese
sentence as one token and scores Chinese at ~0, so Chinese targets use `zh` (and Japanese
`ja-mecab` is left to the user, it needs an extra package); chrF counts no word n-grams for
Chinese (`word_order=0`, there are no spaces between words) and chrF++ (`word_order=2`)
elsewhere; TER uses `asian_support` (with `normalized`) for Chinese.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sacrebleu.metrics import BLEU, CHRF, TER

CJK_LANGUAGES = ("zh", "ja", "ko")


@cache
def _bleu(tgt_lang: str, sentence: bool) -> BLEU:
    # effective_order avoids a zero BLEU for short sentences with no 4-gram match (sentence level only)
    return BLEU(tokenize="zh" if tgt_lang == "zh" else ("char" if tgt_lang in CJK_LANGUAGES else "13a"),
                effective_order=sentence)


@cache
def _chrf(tgt_lang: str) -> CHRF:
    return CHRF(word_order=0 if tgt_lang in CJK_LANGUAGES else 2)


@cache
def _ter(tgt_lang: str) -> TER:
    # asian_support splits CJK characters only together with `normalized` (else a sentence is one word)
    cjk = tgt_lang in CJK_LANGUAGES
    return TER(asian_support=cjk, normalized=cjk)


def sentence_bleu(hypothesis: str, reference: str, tgt_lang: str = "en") -> float:
    """BLEU (0-100) of one hypothesis against one reference."""
    return _bleu(tgt_lang, True).sentence_score(hypothesis, [reference]).score


def sentence_chrf(hypothesis: str, reference: str, tgt_lang: str = "en") -> float:
    """chrF (0-100; chrF++ for space-delimited languages) of one hypothesis."""
    return _chrf(tgt_lang).sentence_score(hypothesis, [reference]).score


def sentence_ter(hypothesis: str, reference: str, tgt_lang: str = "en") -> float:
    """TER (edit rate in %, lower is better) of one hypothesis."""
    return _ter(tgt_lang).sentence_score(hypothesis, [reference]).score


SENTENCE_METRICS = {"bleu": sentence_bleu, "chrf": sentence_chrf, "ter": sentence_ter}


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], tgt_lang: str = "en") -> dict[str, float]:
    """Corpus-level BLEU, chrF and TER of aligned hypotheses and references."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    refs = [list(references)]
    return {"bleu": _bleu(tgt_lang, False).corpus_score(list(hypotheses), refs).score,
            "chrf": _chrf(tgt_lang).corpus_score(list(hypotheses), refs).score,
            "ter": _ter(tgt_lang).corpus_score(list(hypotheses), refs).score}


def sentence_scores(metric: str, hypotheses: Sequence[str], references: Sequence[str],
                    tgt_lang: str = "en") -> list[float]:
    """One sentence-level `metric` score per hypothesis (`bleu`, `chrf`, `ter`)."""
    if metric not in SENTENCE_METRICS:
        raise ValueError(f"metric: expected one of {', '.join(SENTENCE_METRICS)}, got {metric!r}")
    function = SENTENCE_METRICS[metric]
    return [function(h, r, tgt_lang) for h, r in zip(hypotheses, references, strict=True)]


def paired_bootstrap(before: Sequence[str], after: Sequence[str], references: Sequence[str], tgt_lang: str = "en",
                     metric: str = "chrf", samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Corpus `metric` (chrf or bleu) of two systems on the same sentences, and a paired-bootstrap 95% interval of
    after − before (Koehn 2004, "Statistical Significance Tests for Machine Translation Evaluation"): resample
    the sentences with replacement `samples` times, recompute both corpus scores from the summed sentence
    statistics, take the 2.5/97.5 percentiles of the difference. `p` is the share of resamples where after
    does not beat before (one-sided)."""
    import numpy as np

    scorer = {"chrf": _chrf, "bleu": lambda lang: _bleu(lang, False)}[metric](tgt_lang)
    if not (len(before) == len(after) == len(references)) or not references:
        raise ValueError(f"paired_bootstrap: {len(before)} / {len(after)} hypotheses for {len(references)} references")
    # sacrebleu's per-sentence sufficient statistics (n-gram matches and counts): corpus scores add them up
    stats = [np.array(scorer._extract_corpus_statistics(list(h), [list(references)]), dtype=np.float64)
             for h in (before, after)]
    score = lambda rows, index: scorer._compute_score_from_stats(list(rows[index].sum(0))).score
    everything = np.arange(len(references))
    rng = np.random.default_rng(seed)
    deltas = np.empty(samples)
    for i in range(samples):
        index = rng.integers(0, len(references), len(references))
        deltas[i] = score(stats[1], index) - score(stats[0], index)
    first, second = score(stats[0], everything), score(stats[1], everything)
    return {"before": float(first), "after": float(second), "delta": float(second - first),
            "low": float(np.percentile(deltas, 2.5)), "high": float(np.percentile(deltas, 97.5)),
            "p": float((deltas <= 0).mean()), "sentences": len(references)}
