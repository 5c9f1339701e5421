"""Judges: win / tie / lose of policy A against policy B on a prompt set.

    judge = make_judge("rm", model="runs/rm/model", tie_band=0.1)
    verdicts = judge.judge(prompts, completions_a, completions_b)      # one Verdict("a" | "b" | "tie") per pair
    summary = win_tie_lose(verdicts)                                     # rates, 95% intervals, sign test

| kind | decides | options |
|---|---|---|
| `rm` | a reward model's score, ties within a band | `model`, `tie_band`, `head`, `batch_size`, `max_length` |
| `execution` | the domain's tests (code): pass beats fail | `domain`, `domain_options` |
| `metric` | chrF or BLEU against the reference (translation), ties within a band | `metric`, `tie_band`, `domain`, `domain_options` |
| `llm` | an OpenAI-compatible chat model, asked in both orders | `base_url`, `model`, `api_key_env`, `template`, `timeout_s`, `retries`, `backoff_s`, `concurrency`, `max_tokens`, `temperature` |
| `human` | annotators' labels on blinded, shuffled pairs | `export_dir`, `labels`, `key`, `seed` |

`align eval judge=<kind>` (align/eval/compare.py) runs them on two policies or two completion files.
"""
from __future__ import annotations

import inspect
from typing import Any

from align.config import ConfigError
from align.eval.judges.base import Judge, Verdict, check_lengths, excluded, verdict_from_scores, win_tie_lose
from align.eval.judges.domain import ExecutionJudge, MetricJudge
from align.eval.judges.human import HumanJudge, LabelsPending, export_pairs, read_labels
from align.eval.judges.llm import EndpointError, LLMJudge
from align.eval.judges.reward_model import RewardModelJudge

JUDGES: dict[str, type] = {"rm": RewardModelJudge, "execution": ExecutionJudge, "metric": MetricJudge,
                           "llm": LLMJudge, "human": HumanJudge}


def make_judge(kind: str, **options: Any) -> Judge:
    """The judge called `kind` built with `options` (see the table in the module docstring)."""
    if kind not in JUDGES:
        raise ConfigError(f"judge: expected one of {', '.join(JUDGES)}, got {kind!r}")
    judge_class = JUDGES[kind]
    parameters = inspect.signature(judge_class).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ConfigError(f"judge_options: {', '.join(unknown)} unknown to the {kind} judge; it takes "
                          f"{', '.join(parameters)}")
    missing = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty and name not in options]
    if missing:
        raise ConfigError(f"judge_options.{missing[0]}: the {kind} judge needs it")
    return judge_class(**options)


__all__ = ["JUDGES", "EndpointError", "ExecutionJudge", "HumanJudge", "Judge", "LLMJudge", "LabelsPending",
           "MetricJudge", "RewardModelJudge", "Verdict", "check_lengths", "excluded", "export_pairs", "make_judge",
           "read_labels", "verdict_from_scores", "win_tie_lose"]
