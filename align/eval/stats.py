"""Small statistics for evaluations: intervals of proportions and paired tests."""
from __future__ import annotations

import math


def wilson_interval(passed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (Wilson 1927); (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    p = passed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (ties already left out): under no difference, each of the
    n = wins + losses decided comparisons goes either way with probability 1/2, so
    p = min(1, 2 * sum_{i <= min(wins, losses)} C(n, i) / 2^n); 1 when nothing was decided."""
    if wins < 0 or losses < 0:
        raise ValueError(f"sign_test: counts must be non-negative, got {wins} and {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: under no change, the discordant tasks (passed only after:
    `gained`; only before: `lost`) split as Binomial(gained + lost, 1/2), which is the sign test on them."""
    return sign_test(gained, lost)


def bootstrap_mean_interval(values: list[float], resamples: int = 5000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of `values` (e.g. per-task differences, so the interval
    covers the sampling of tasks; Efron & Tibshirani 1993); (nan, nan) when empty."""
    import random

    if not values:
        return math.nan, math.nan
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def roc_auc(labels: list[bool], scores: list[float]) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative, ties
    counting half (the Mann-Whitney U statistic over positives x negatives). NaN without both classes."""
    positives = [s for s, label in zip(scores, labels) if label]
    negatives = [s for s, label in zip(scores, labels) if not label]
    if not positives or not negatives:
        return float("nan")
    ranked = sorted((s, 0 if label else 1) for s, label in zip(scores, labels))
    # average ranks over ties, then U = sum of positive ranks - p(p+1)/2
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average = (i + 1 + j) / 2
        rank_sum += average * sum(1 for k in range(i, j) if ranked[k][1] == 0)
        i = j
    p, n = len(positives), len(negatives)
    return (rank_sum - p * (p + 1) / 2) / (p * n)
