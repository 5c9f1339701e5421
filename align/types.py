"""Types shared by the core, the domains and the sandbox users.

Domains import these; the core never imports a domain. See DESIGN.md ("Domain adapters").
"""
from __future__ import annotations

from collections.abc import Iterable
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
    """Domain data the reward needs (tests, entry point, source language, ...)."""


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
    """A domain adapter: data for RM training and generation, and an optional programmatic reward."""

    name: str

    def preferences(self, split: str) -> Iterable[PreferencePair]: ...

    def prompts(self, split: str) -> Iterable[Prompt]: ...

    def reward(self, prompts: list[Prompt], completions: list[str], **meta: Any) -> list[RewardOutput]: ...


# --------------------------------------------------------------------------- optional domain capabilities
# The core checks for these with isinstance(); a domain implements the ones it has.


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
    """A domain whose reward runs a model: the trainer tells it the device and dtype to use (the policy's)."""

    def place(self, device: Any, dtype: Any) -> None: ...
