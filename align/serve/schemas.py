"""Request bodies of `align serve`, validated strictly: a wrong type is an error, never silently coerced
(`"max_tokens": "5"` is rejected as OpenAI rejects it). Fields clients send that the server does not use
(`user`, `frequency_penalty`, ...) are ignored; fields whose meaning the server cannot honour (`stream`,
`logprobs`, `echo`, `best_of` above 1, tools) are refused by the endpoints with a 400 naming them."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class Sampling(Strict):
    """The sampling fields both OpenAI endpoints share."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: Any = None
    best_of: int | None = None
    tools: Any = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def unsupported(self) -> list[str]:
        """The fields set to something this server cannot do."""
        refused = [name for name in ("stream", "logprobs", "tools") if getattr(self, name)]
        return refused + (["best_of"] if self.best_of not in (None, 1) else [])


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool = False

    def unsupported(self) -> list[str]:
        return super().unsupported() + (["echo"] if self.echo else [])


class GetRewardRequest(Strict):
    """OpenRLHF's remote reward model request: `query` holds whole texts (prompt and response as the policy's
    tokenizer decoded them); `prompts` and `labels` come along and are not needed to score."""

    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class DomainRewardRequest(Strict):
    """Completions to score with the served domain's reward: each answers the domain's prompt `prompt_ids[i]`
    (which carries what the reward needs: tests, source text, reference), or a prompt given as text or chat
    messages (`prompts[i]`, optional `references[i]`)."""

    completions: list[str] = Field(min_length=1)
    prompt_ids: list[str] | None = None
    prompts: list[str | list[ChatMessage]] | None = None
    references: list[str | None] | None = None
