"""The translation reward (`TranslationDomain.reward`: reward-model heads, reference metrics, guards) in the shapes
TRL, OpenRLHF and verl call (`align.shims` has the calling conventions).

Each sample needs its source sentence (the guards read it) and, for the metrics, a reference. Put them in the
dataset as a *label*: `translation_label(source, reference, "zh-en")` gives a JSON string. A plain string label
is taken as the reference, the source then being read from the prompt (the documented `format_prompt` text).

The domain's options (`reward_model`, `reward` weights and guards, `direction`, `comet_model`, ... as in
`align ppo domain_options.*`) come from `$ALIGN_TRANSLATION_OPTIONS` (a JSON object) for the file-loaded shims,
from `custom_reward_function.reward_kwargs` in verl, and from `trl_reward_func(**options)` in TRL.

- TRL: `GRPOTrainer(reward_funcs=[trl_reward_func(reward={"metric_weights": {"chrf": 1.0}})])`, dataset
  column `label`.
- OpenRLHF: `--remote_rm_url /path/to/domains/translation/shims.py --label_key label`; `scores` is 1 where
  every guard passed, else 0; samples without a reward are counted in `extra_logs["dropped"]`.
- verl: `custom_reward_function.path=/path/to/domains/translation/shims.py`, `name=compute_score`, the label as
  `reward_model.ground_truth`; each sample gives `{"score", "dropped", "guards_failed"}`.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from align import shims
from align.registry import get_domain
from align.types import Prompt, PromptText, RewardOutput
from domains.translation.parallel import make_prompt, parse_direction

OPTIONS_ENV = "ALIGN_TRANSLATION_OPTIONS"


def translation_label(source: str, reference: str | None = None, direction: str = "zh-en") -> str:
    """A self-contained JSON label for a dataset row: the source sentence, its reference and the direction."""
    return json.dumps({"source": source, "reference": reference, "direction": direction}, ensure_ascii=False)


@lru_cache(maxsize=4)
def _domain(options_json: str):
    return get_domain("translation", **json.loads(options_json))


def domain_for(options: dict[str, Any]):
    """The translation domain with `options` (else those of `$ALIGN_TRANSLATION_OPTIONS`), built once per options:
    its reward model loads on first use and stays loaded."""
    if not options:
        raw = os.environ.get(OPTIONS_ENV, "{}")
        try:
            options = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"${OPTIONS_ENV}: not a JSON object ({error}): {raw[:80]!r}") from error
        if not isinstance(options, dict):
            raise ValueError(f"${OPTIONS_ENV}: expected a JSON object of domain options, got {raw[:80]!r}")
    return _domain(json.dumps(options, sort_keys=True))


def _prompt_text(prompt: PromptText | None) -> str:
    """The prompt as text: conversational prompts give their last user turn."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return prompt or ""


def prompt_from_label(label: Any, prompt: PromptText | None, direction: str) -> Prompt:
    """A reward Prompt from a label (see `translation_label`, or the reference alone) and the framework's prompt."""
    if isinstance(label, str) and label.lstrip().startswith("{"):
        label = json.loads(label)
    if isinstance(label, dict):
        if not label.get("source"):
            raise ValueError("translation reward label: missing `source` (make labels with translation_label)")
        src_lang, tgt_lang = parse_direction(label.get("direction") or direction)
        return make_prompt(label["source"], src_lang, tgt_lang, reference=label.get("reference"))
    if label is not None and not isinstance(label, str):
        raise ValueError(f"translation reward label: expected a JSON label or a reference string, got {label!r}")
    return Prompt(prompt=_prompt_text(prompt), reference=label or None)


def score_translations(prompts: list, completions: list[str], labels: list[Any], **options: Any) -> list[RewardOutput]:
    """The translation reward of each completion (options: the translation domain's)."""
    domain = domain_for(options)
    return domain.reward([prompt_from_label(label, prompt, domain.direction) for label, prompt in zip(labels, prompts)],
                         completions)


def trl_reward_func(label_column: str = "label", **options: Any):
    """A TRL `reward_funcs` entry scoring with the translation reward (options: the translation domain's)."""
    return shims.trl_reward_func(score_translations, "translation", (label_column,), **options)


reward_func = shims.openrlhf_reward_func(score_translations, score_of=lambda o: not o.parts.get("guards_failed"))
compute_score = shims.verl_compute_score(score_translations, parts=("guards_failed",))
