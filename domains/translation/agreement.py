"""Segment-level agreement between a metric (or reward model) and human MQM scores.

- strict pairwise accuracy: over pairs the humans rank (score gap >= min_gap), the share the
  metric ranks the same way; a metric tie counts as wrong.
- tie-calibrated pairwise accuracy `acc_eq` (Deutsch, Foster & Freitag 2023, "Ties Matter";
  used in the WMT 2023 metrics task): over all pairs of translations of the same source, a
  pair is correct when humans tie and the metric's difference is within epsilon, or humans
  prefer one and the metric prefers the same by more than epsilon. Epsilon is chosen to
  maximise the accuracy. Grouped by item: the accuracy of each source's pairs, averaged over
  sources (every source weighs the same however many systems translated it).

The all-ties baseline is the acc_eq of a constant metric: the (grouped) share of human ties.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Group = tuple[Sequence[float], Sequence[float]]  # (human scores, metric scores) of one source's translations


@dataclass
class _Pairs:
    human_sign: np.ndarray
    metric_diff: np.ndarray
    weight: np.ndarray


def _within_group_pairs(groups: Sequence[Group], tie_tolerance: float) -> _Pairs:
    signs, diffs, weights = [], [], []
    used = [g for g in groups if len(g[0]) >= 2]
    for human, metric in used:
        if len(human) != len(metric):
            raise ValueError(f"a group has {len(human)} human scores but {len(metric)} metric scores")
        pairs = list(itertools.combinations(range(len(human)), 2))
        for i, j in pairs:
            h = human[i] - human[j]
            signs.append(0 if abs(h) <= tie_tolerance else (1 if h > 0 else -1))
            diffs.append(metric[i] - metric[j])
            weights.append(1.0 / (len(pairs) * len(used)))
    return _Pairs(np.array(signs, dtype=np.int8), np.array(diffs, dtype=np.float64), np.array(weights))


def tie_calibrated_accuracy(groups: Sequence[Group], epsilon: float | None = None,
                            tie_tolerance: float = 1e-9) -> tuple[float, float]:
    """(acc_eq, epsilon): tie-calibrated pairwise accuracy grouped by item, at `epsilon` or at the
    epsilon that maximises it (searched over 0 and every |metric difference|)."""
    pairs = _within_group_pairs(groups, tie_tolerance)
    if pairs.weight.size == 0:
        return float("nan"), 0.0
    gap = np.abs(pairs.metric_diff)
    agrees = (np.sign(pairs.metric_diff) == pairs.human_sign) & (pairs.human_sign != 0)
    human_tie = pairs.human_sign == 0
    if epsilon is not None:
        correct = (human_tie & (gap <= epsilon)) | (agrees & (gap > epsilon))
        return min(1.0, float(pairs.weight[correct].sum())), float(epsilon)
    # acc(t) = weight(ties with gap <= t) + weight(agreeing non-ties with gap > t), for t in the candidates
    order = np.argsort(gap, kind="stable")
    gap_sorted = gap[order]
    tie_cum = np.cumsum(np.where(human_tie[order], pairs.weight[order], 0.0))
    agree_cum = np.cumsum(np.where(agrees[order], pairs.weight[order], 0.0))
    candidates = np.unique(np.concatenate([[0.0], gap_sorted]))
    upto = np.searchsorted(gap_sorted, candidates, side="right") - 1  # last index with gap <= t
    ties_within = np.where(upto >= 0, tie_cum[np.maximum(upto, 0)], 0.0)
    agree_within = np.where(upto >= 0, agree_cum[np.maximum(upto, 0)], 0.0)
    accuracy = ties_within + (agree_cum[-1] - agree_within)
    best = int(np.argmax(accuracy))  # first maximum: the smallest epsilon reaching it
    return min(1.0, float(accuracy[best])), float(candidates[best])  # min: summed weights may overshoot 1 by 1e-16


def all_ties_baseline(groups: Sequence[Group], tie_tolerance: float = 1e-9) -> float:
    """acc_eq of a metric that ties everything: the grouped share of human ties."""
    constant = [(human, [0.0] * len(human)) for human, _ in groups]
    return tie_calibrated_accuracy(constant, epsilon=0.0, tie_tolerance=tie_tolerance)[0]


def strict_pairwise_accuracy(groups: Sequence[Group], min_gap: float = 1.0,
                             skip: Sequence[Sequence[bool]] | None = None) -> tuple[float, int]:
    """(accuracy, pairs): share of within-source pairs with a human gap >= `min_gap` that the metric
    orders the same way strictly (metric ties are wrong). `skip[g][i]` leaves item i of group g out
    (e.g. a translation identical to another)."""
    correct = total = 0
    for index, (human, metric) in enumerate(groups):
        keep = [i for i in range(len(human)) if not (skip and skip[index][i])]
        for i, j in itertools.combinations(keep, 2):
            h = human[i] - human[j]
            if abs(h) < min_gap:
                continue
            total += 1
            correct += (metric[i] - metric[j]) * h > 0
    return (correct / total if total else float("nan")), total
