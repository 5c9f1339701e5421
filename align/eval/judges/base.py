"""What every judge returns, and the win / tie / lose figures computed from it.

A judge compares two completions of the same prompt, `a` and `b`, and says which is better or that
neither is. Some pairs cannot be judged at all (the sandbox failed, an annotator left the row blank,
the endpoint never answered): their verdict is a tie carrying `detail["excluded"] = <reason>`, and
`win_tie_lose` leaves them out of every rate and counts them by reason instead, so a broken judge
never shows up as a policy that ties.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from align.config import ConfigError
from align.eval.stats import sign_test, wilson_interval
from align.types import Prompt, PromptText

Winner = Literal["a", "b", "tie"]
WINNERS: tuple[str, ...] = ("a", "b", "tie")


@dataclass
class Verdict:
    """The judgement of one pair: `a` won, `b` won, or a tie."""

    winner: Winner
    detail: dict[str, Any] = field(default_factory=dict)
    """How the judge decided: scores, both orders' answers, latency, or `excluded` with the reason the pair
    could not be judged."""

    def __post_init__(self) -> None:
        if self.winner not in WINNERS:
            raise ValueError(f"Verdict.winner: expected one of {', '.join(WINNERS)}, got {self.winner!r}")

    @property
    def excluded(self) -> str | None:
        """Why this pair could not be judged, or None when it was."""
        return self.detail.get("excluded")


@runtime_checkable
class Judge(Protocol):
    """Compares completions_a[i] with completions_b[i] as answers to prompts[i]; one verdict per pair."""

    name: str

    def judge(self, prompts: list[Prompt], completions_a: list[str], completions_b: list[str]) -> list[Verdict]: ...


def check_lengths(prompts: list, completions_a: list, completions_b: list) -> None:
    """Raise unless there is exactly one completion of each side per prompt."""
    if not len(prompts) == len(completions_a) == len(completions_b):
        raise ValueError(f"judge: {len(prompts)} prompts, {len(completions_a)} completions A and "
                         f"{len(completions_b)} completions B; expected one of each per prompt")


def prompt_for_judge(prompt: PromptText) -> str:
    """A prompt as a judge (a model or a person) reads it: the text, or the conversation's turns without the
    opened answer turn."""
    from align.data import render_prompt

    return prompt if isinstance(prompt, str) else render_prompt(prompt).removesuffix("Assistant:").rstrip()


def verdict_from_scores(score_a: float, score_b: float, tie_band: float = 0.0, **detail: Any) -> Verdict:
    """The higher score wins; |score_a - score_b| <= tie_band is a tie (so equal scores always tie)."""
    if tie_band < 0:
        raise ConfigError(f"tie_band: expected a non-negative number, got {tie_band!r}")
    difference = score_a - score_b
    winner: Winner = "tie" if abs(difference) <= tie_band else ("a" if difference > 0 else "b")
    return Verdict(winner, {"score_a": score_a, "score_b": score_b, "difference": difference, **detail})


def excluded(reason: str, **detail: Any) -> Verdict:
    """The verdict of a pair that could not be judged (left out of the rates, counted by `reason`)."""
    return Verdict("tie", {"excluded": reason, **detail})


def swapped(verdict: Verdict) -> Verdict:
    """The same verdict with the roles of a and b exchanged."""
    return Verdict({"a": "b", "b": "a", "tie": "tie"}[verdict.winner], dict(verdict.detail))  # type: ignore[arg-type]


def win_tie_lose(verdicts: list[Verdict]) -> dict[str, float]:
    """Wins of A, ties and losses of A over the judged pairs, with rates, 95% Wilson intervals of each rate
    and the two-sided exact sign test of wins against losses (ties left out).

    Keys: `wins`, `ties`, `losses`, `n` (judged pairs), `win_rate`, `tie_rate`, `lose_rate`, each rate's
    `<rate>_ci95_low` / `<rate>_ci95_high`, `sign_test_p`, and `excluded` (pairs that could not be judged)
    with `excluded_<reason>` per reason."""
    judged = [v for v in verdicts if v.excluded is None]
    counts = Counter(v.winner for v in judged)
    n = len(judged)
    summary: dict[str, float] = {"wins": counts["a"], "ties": counts["tie"], "losses": counts["b"], "n": n}
    for name, count in (("win_rate", counts["a"]), ("tie_rate", counts["tie"]), ("lose_rate", counts["b"])):
        low, high = wilson_interval(count, n)
        summary[name] = count / n if n else 0.0
        summary[f"{name}_ci95_low"], summary[f"{name}_ci95_high"] = low, high
    summary["sign_test_p"] = sign_test(counts["a"], counts["b"])
    reasons = Counter(v.excluded for v in verdicts if v.excluded is not None)
    summary["excluded"] = sum(reasons.values())
    summary.update({f"excluded_{reason}": count for reason, count in sorted(reasons.items())})
    return summary
