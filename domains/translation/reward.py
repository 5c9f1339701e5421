"""The translation reward: aspect heads of a reward model and/or reference metrics, gated by guards.

    score  = sum_h w_h * z_h  +  sum_m w_m * metric_m / 100           (z_h = normalised head h)
    gated  : if gate_on_faithfulness and z_faithfulness < gate_threshold, the style terms
             (expressiveness, elegance) may only lower the score: style cannot pay for a
             mistranslation
    reward = soft_floor(score)  when every enabled guard passes: the score itself from guard_reward + 2 up, below
             that guard_reward + 1 + exp(score - guard_reward - 2); else guard_reward - (failed guards - 1)
    The soft floor keeps the order of passing translations and puts every one of them above every failure:
    heads are normalised on human translations, so a weak policy's outputs score several spreads below 0, and
    without the floor failing a guard (a copy of the source) would pay better.

Head normalisation: z_h = (r_h - mean_h) / std_h with statistics measured once on calibration
translations (the MQM training targets when available), so heads on different scales add up.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from align.config import ConfigError, doc, nested
from align.types import Prompt, RewardOutput
from domains.translation.guards import GuardConfig, run_guards
from domains.translation.metrics import SENTENCE_METRICS
from domains.translation.parallel import parse_prompt

STYLE_HEADS = ("expressiveness", "elegance")


@dataclass
class RewardConfig:
    """How the translation reward combines heads, metrics and guards."""

    head_weights: dict = doc("Weight of each normalised reward-model head in the score.",
                             {"overall": 1.0, "faithfulness": 1.0, "expressiveness": 0.5, "elegance": 0.25})
    metric_weights: dict = doc("Weight of each reference metric (bleu, chrf, comet; 0-100 scaled to 0-1; TER "
                               "counts negatively); used only for prompts with a reference.", {})
    gate_on_faithfulness: bool = doc("Style heads may only lower the score when faithfulness is below "
                                     "`gate_threshold`.", True)
    gate_threshold: float = doc("Normalised faithfulness below which style cannot raise the score.", -0.5)
    guard_reward: float = doc("Reward of a completion that fails a guard (minus one per further failed guard).",
                              -5.0)
    soft_floor: bool = doc("Passing completions scoring below guard_reward + 2 are squeezed into (guard_reward + 1, "
                           "guard_reward + 2), order kept, so a failed guard never pays better than a pass.", True)
    guards: GuardConfig = nested(GuardConfig, "Guards that gate the reward.")
    calibration_size: int = doc("Translations used to measure each head's mean and spread.", 256)

    def validate(self) -> None:
        for key, value in {**self.head_weights, **self.metric_weights}.items():
            if not isinstance(value, (int, float)):
                raise ConfigError(f"reward weights: {key}: expected a number, got {value!r}")
        unknown = sorted(set(self.metric_weights) - set(SENTENCE_METRICS) - {"comet"})
        if unknown:
            raise ConfigError(f"metric_weights: unknown metrics {unknown}; known: bleu, chrf, ter, comet")
        self.guards.validate()


@dataclass
class HeadStats:
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def normalise(self, head: str, value: float) -> float:
        return (value - self.mean.get(head, 0.0)) / (self.std.get(head, 1.0) or 1.0)


def measure_head_stats(head_rewards: Sequence[dict[str, float]]) -> HeadStats:
    """Mean and standard deviation of each head over calibration translations."""
    stats = HeadStats()
    for head in head_rewards[0] if head_rewards else []:
        values = [r[head] for r in head_rewards]
        mean = sum(values) / len(values)
        stats.mean[head] = mean
        stats.std[head] = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) or 1.0
    return stats


def combine_heads(heads: dict[str, float], config: RewardConfig, stats: HeadStats) -> tuple[float, dict[str, float]]:
    """Weighted sum of normalised heads, with style gated on faithfulness; returns (score, normalised heads)."""
    z = {head: stats.normalise(head, value) for head, value in heads.items()}
    style = sum(config.head_weights.get(h, 0.0) * z[h] for h in STYLE_HEADS if h in z)
    rest = sum(config.head_weights.get(h, 0.0) * v for h, v in z.items() if h not in STYLE_HEADS)
    if config.gate_on_faithfulness and "faithfulness" in z and z["faithfulness"] < config.gate_threshold:
        style = min(style, 0.0)
    return rest + style, z


def soft_floor(score: float, floor: float) -> float:
    """`score` from floor + 1 up; below that floor + exp(score − floor − 1): strictly increasing, continuous with
    its slope, always above `floor`."""
    knee = floor + 1.0
    return score if score >= knee else floor + math.exp(score - knee)


def metric_term(metrics: dict[str, float], config: RewardConfig) -> float:
    """Weighted reference metrics on a 0-1 scale (TER, an error rate, counts against)."""
    total = 0.0
    for name, weight in config.metric_weights.items():
        if name in metrics:
            value = metrics[name] if name == "comet" else metrics[name] / 100.0
            total += weight * (-value if name == "ter" else value)
    return total


def prompt_fields(prompt: Prompt | str, src_lang: str, tgt_lang: str) -> tuple[str | None, str, str, str | None]:
    """(source, src_lang, tgt_lang, reference) of a prompt: from `meta`, else parsed from the prompt text."""
    if isinstance(prompt, Prompt):
        meta = prompt.meta or {}
        if meta.get("source"):
            return meta["source"], meta.get("src_lang", src_lang), meta.get("tgt_lang", tgt_lang), prompt.reference
        text, reference = prompt.prompt, prompt.reference
    else:
        text, reference = prompt, None
    parsed = parse_prompt(text) if isinstance(text, str) else None
    if parsed:
        return parsed[0], parsed[1], parsed[2], reference
    return None, src_lang, tgt_lang, reference


def translation_reward(prompts: Sequence[Prompt | str], completions: Sequence[str], config: RewardConfig,
                       head_scorer: Callable[[list, list[str]], list[dict[str, float]]] | None = None,
                       head_stats: HeadStats | None = None, comet_scorer: Callable | None = None,
                       src_lang: str = "zh", tgt_lang: str = "en") -> list[RewardOutput]:
    """Score translations: `head_scorer(prompts, completions)` gives each completion's raw head rewards;
    metrics need a reference; guards need the source (from `Prompt.meta` or the prompt text)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    fields = [prompt_fields(p, src_lang, tgt_lang) for p in prompts]
    heads = None
    if head_scorer is not None:
        heads = head_scorer(list(prompts), list(completions))
    comet = None
    if comet_scorer is not None and "comet" in config.metric_weights:
        with_reference = [i for i, f in enumerate(fields) if f[3]]
        values = comet_scorer([fields[i][0] or "" for i in with_reference], [completions[i] for i in with_reference],
                              [fields[i][3] for i in with_reference]) if with_reference else []
        comet = dict(zip(with_reference, values))
    outputs = []
    for index, (completion, (source, s_lang, t_lang, reference)) in enumerate(zip(completions, fields)):
        parts: dict = {}
        score = 0.0
        if heads is not None:
            head_score, z = combine_heads(heads[index], config, head_stats or HeadStats())
            score += head_score
            parts.update({f"head_{h}": v for h, v in z.items()})
        if reference:
            metrics = {name: SENTENCE_METRICS[name](completion, reference, t_lang)
                       for name in config.metric_weights if name in SENTENCE_METRICS}
            if comet is not None and index in comet:
                metrics["comet"] = comet[index]
            score += metric_term(metrics, config)
            parts.update({f"metric_{k}": v for k, v in metrics.items()})
        verdicts = run_guards(completion, source, config.guards, s_lang, t_lang, reference)
        failed = [name for name, verdict in verdicts.items() if not verdict.passed]
        for name, verdict in verdicts.items():
            parts[f"guard_{name}"] = verdict.passed
            if verdict.value is not None:
                parts[f"guard_{name}_value"] = verdict.value
        parts["score"] = score
        parts["guards_failed"] = failed
        if failed:
            reward = config.guard_reward - (len(failed) - 1)
        else:
            reward = soft_floor(score, config.guard_reward + 1) if config.soft_floor else score
        outputs.append(RewardOutput(reward=reward, parts=parts))
    return outputs
