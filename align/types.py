"""Types shared by the core and the domains: preference pairs, prompts, reward outputs, and the `Domain`
protocol with its optional capabilities.

Domains import these; the core never imports a domain: it finds them by name (`align.registry`) and
checks what an adapter can do with `isinstance(domain, <capability>)`. docs/architecture.md shows where
each is called.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# A prompt is plain text or a list of chat messages ({"role": ..., "content": ...}).
Message = dict[str, str]
PromptText = str | list[Message]


@dataclass
class PreferencePair:
    """One human (or programmatic) preference: `chosen` is preferred over `rejected` for `prompt`.

    `prompt` is the shared context (text, or chat messages whose last turn is the user's);
    `chosen` and `rejected` are the two final responses only.
    """

    prompt: PromptText
    chosen: str
    rejected: str
    id: str | None = None
    margin: float | None = None
    """Optional known preference margin (e.g. a score gap from MQM annotations)."""
    strength: float | None = None
    """Preference strength: mean reward difference over an RM ensemble (see `align strength`)."""
    aspect: str | None = None
    """Which aspect/head this pair trains (e.g. `faithfulness`); None means the overall head."""
    source: str | None = None
    """Where the pair came from: file and line, or dataset name."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other fields of the input row, kept so annotated outputs preserve them."""


@dataclass
class Prompt:
    """A prompt for generation (SFT, PPO, evaluation), with an optional reference answer."""

    prompt: PromptText
    id: str | None = None
    reference: str | None = None
    """A reference response: the SFT target, a reference translation, a canonical solution."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Domain data the reward needs (tests, entry point, source language, ...). Keys the core reads when
    generating: `stop` (stop strings for this prompt), `style: completion` (the prompt text as it is, even in
    a chat-format run), `assistant_prefix` (the start of the answer, written after the chat template)."""


@dataclass
class RewardOutput:
    """What a programmatic reward says about one completion.

    `reward` is None when no reward can be given (e.g. the sandbox failed): the trainer drops
    the sample and counts it, it never treats it as a penalty.
    """

    reward: float | None
    parts: dict[str, Any] = field(default_factory=dict)
    """Named components: per aspect, per test, guard verdicts, status, error line."""
    token_mask: list[int] | None = None
    """Per-token 0/1 mask over the completion's tokens (FGO), aligned with the token offsets
    passed to the reward as `completion_offsets`; None means every token counts."""


@runtime_checkable
class Domain(Protocol):
    """A domain adapter: data for RM training and generation, and a programmatic reward.

    `reward` may return `RewardOutput(None)` for a sample it cannot judge. Trainers pass
    `completion_offsets=` (per completion, the character span of each generated token) so a reward can
    give per-token masks (FGO); a reward that needs no masks ignores it."""

    name: str

    def preferences(self, split: str) -> Iterable[PreferencePair]: ...

    def prompts(self, split: str) -> Iterable[Prompt]: ...

    def reward(self, prompts: list[Prompt], completions: list[str], **meta: Any) -> list[RewardOutput]: ...


# --------------------------------------------------------------------------- optional domain capabilities
# The core checks for these with isinstance(); a domain implements the ones it has.


@runtime_checkable
class CountsSkips(Protocol):
    """A domain that counts the rows it left out, by reason (reported in summary.json as `skipped_<reason>`)."""

    @property
    def skipped(self) -> Mapping[str, int]: ...


@runtime_checkable
class ReportsDataUsed(Protocol):
    """A domain that says which data it read (e.g. which hh subsets were found), once `preferences` or `prompts`
    ran: flat summary.json keys, also printed by the domain. A `datasets` key, when present, names the hub dataset
    ids the data comes from (comma-separated); model cards list them."""

    def data_used(self) -> Mapping[str, Any]: ...


@runtime_checkable
class Evaluable(Protocol):
    """A domain with its own `align eval` (code: pass@k; translation: accuracy per aspect, robustness)."""

    def evaluate(self, config: Any, run_dir: Any) -> dict[str, Any]: ...


@runtime_checkable
class HasDemo(Protocol):
    """A domain with stages for `align demo`: stage name -> function(output_dir) -> summary."""

    def demo_stages(self) -> Mapping[str, Callable[[Any], dict[str, Any]]]: ...


@runtime_checkable
class Curriculum(Protocol):
    """A domain whose training prompts change with what the policy achieves (e.g. CCCS in `code`).

    The PPO trainer shows it every process's scored batch, so all processes agree on the stage, saves its
    state with each checkpoint and logs `log()` with each step."""

    def observe(self, prompts: list[Prompt], outputs: list[RewardOutput]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def log(self) -> dict[str, float]: ...


@runtime_checkable
class Placeable(Protocol):
    """A domain whose reward runs a model: the trainer tells it the device and dtype to use (the policy's);
    `scoring_model()` says which model and how it scores (path or None, batch size, max length), for
    `align plan`."""

    def place(self, device: Any, dtype: Any) -> None: ...

    def scoring_model(self) -> tuple[str | None, int, int]: ...


@runtime_checkable
class ReferenceMetric(Protocol):
    """A domain that scores completions against their prompt's reference (`Prompt.reference`) with a named metric
    (translation: `chrf`, `bleu`; 0-100, higher is better), None for a prompt without a reference. The `metric`
    judge of `align eval` compares two policies with it."""

    def reference_metric(self, prompts: list[Prompt], completions: list[str], metric: str) -> list[float | None]: ...
