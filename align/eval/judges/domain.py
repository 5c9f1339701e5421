"""Judges that ask a domain: `execution` (the tests decide) and `metric` (a reference metric decides).

Both find the domain by name through the registry (or take the instance the caller already built, e.g. the
one that supplied the prompts), so the core imports no domain:

- `execution` runs both completions through the domain's own reward (`Domain.reward`; code: the sandbox and
  the task's tests) and reads `RewardOutput.parts["status"]`: `passed` beats anything else; both passed or
  both not passed is a tie. A completion the domain could not judge (reward None, e.g. a sandbox error)
  excludes the pair.
- `metric` scores both against the prompt's reference through the `ReferenceMetric` capability
  (translation: sentence chrF or BLEU, 0-100); the higher score wins beyond the tie band. A prompt without
  a reference excludes the pair.
"""
from __future__ import annotations

from typing import Any

from align.config import ConfigError
from align.eval.judges.base import Verdict, check_lengths, excluded, verdict_from_scores
from align.types import Domain, Prompt, ReferenceMetric


def domain_instance(domain: str | Domain, options: dict | None = None) -> Domain:
    """The domain named `domain` (from the registry, built with `options`), or `domain` itself if it is one."""
    if isinstance(domain, str):
        from align.registry import get_domain

        return get_domain(domain, **(options or {}))
    if options:
        raise ConfigError("domain_options: only with a domain name (the domain given is already built)")
    return domain


class ExecutionJudge:
    """Pass beats fail, as the domain's tests decide; see the module docstring."""

    name = "execution"

    def __init__(self, domain: str | Domain = "code", domain_options: dict | None = None):
        self.domain = domain_instance(domain, domain_options)

    def judge(self, prompts: list[Prompt], completions_a: list[str], completions_b: list[str]) -> list[Verdict]:
        check_lengths(prompts, completions_a, completions_b)
        n = len(prompts)
        outputs = self.domain.reward(list(prompts) * 2, list(completions_a) + list(completions_b))
        if len(outputs) != 2 * n:
            raise ValueError(f"execution judge: the {self.domain.name} reward returned {len(outputs)} outputs "
                             f"for {2 * n} completions")
        if outputs and all("status" not in o.parts for o in outputs):
            raise ValueError(f"execution judge: the {self.domain.name} reward reports no `status` part; it needs "
                             "a domain whose reward runs tests (code)")
        verdicts = []
        for output_a, output_b in zip(outputs[:n], outputs[n:]):
            status_a, status_b = output_a.parts.get("status"), output_b.parts.get("status")
            if output_a.reward is None or output_b.reward is None:
                verdicts.append(excluded("no_reward", status_a=status_a, status_b=status_b))
                continue
            passed_a, passed_b = status_a == "passed", status_b == "passed"
            winner = "tie" if passed_a == passed_b else ("a" if passed_a else "b")
            verdicts.append(Verdict(winner, {"status_a": status_a, "status_b": status_b,
                                             "reward_a": output_a.reward, "reward_b": output_b.reward}))
        return verdicts


class MetricJudge:
    """The completion closer to the reference wins (chrF or BLEU); see the module docstring."""

    name = "metric"

    def __init__(self, metric: str = "chrf", tie_band: float = 0.0, domain: str | Domain = "translation",
                 domain_options: dict | None = None):
        if tie_band < 0:
            raise ConfigError(f"judge_options.tie_band: expected a non-negative number, got {tie_band!r}")
        self.domain = domain_instance(domain, domain_options)
        if not isinstance(self.domain, ReferenceMetric):
            raise TypeError(f"metric judge: the {self.domain.name} domain cannot score completions against a "
                             "reference (it lacks `reference_metric`); use translation")
        self.metric, self.tie_band = metric, tie_band

    def judge(self, prompts: list[Prompt], completions_a: list[str], completions_b: list[str]) -> list[Verdict]:
        check_lengths(prompts, completions_a, completions_b)
        n = len(prompts)
        scores: list[Any] = self.domain.reference_metric(list(prompts) * 2, list(completions_a) + list(completions_b),
                                                         self.metric)
        verdicts = []
        for score_a, score_b in zip(scores[:n], scores[n:]):
            if score_a is None or score_b is None:
                verdicts.append(excluded("no_reference"))
            else:
                verdicts.append(verdict_from_scores(float(score_a), float(score_b), self.tie_band, metric=self.metric))
        return verdicts
