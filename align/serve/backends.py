"""What `align serve` serves, each loaded once at start: a policy, a reward model, a domain reward.

All of them share one `ModelSlot`: a CPU (or one GPU) computes one request at a time, so requests take
turns instead of fighting over the cores; a bounded number wait, and the next one is told the server is
busy (503) rather than queued without end.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from align.types import Prompt, RewardOutput

log = logging.getLogger("align.serve")


class Busy(RuntimeError):
    """Too many requests are already waiting for the model."""


class BadInput(ValueError):
    """A request the server understood but cannot serve (a prompt over the token limit, an unknown prompt id)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ModelSlot:
    """One request computes at a time; at most `max_pending` are admitted (running or waiting)."""

    def __init__(self, max_pending: int):
        self.max_pending = max_pending
        self.pending = 0
        self.served = 0
        self._count = threading.Lock()
        self._compute = threading.Lock()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._count:
            if self.pending >= self.max_pending:
                raise Busy(f"{self.pending} requests are already running or waiting (max_pending={self.max_pending})")
            self.pending += 1
        try:
            with self._compute:
                yield
                self.served += 1
        finally:
            with self._count:
                self.pending -= 1


class PolicyBackend:
    """A causal LM for the OpenAI-compatible endpoints."""

    def __init__(self, model: str, served_name: str, batch_size: int = 8):
        from align.models import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(model, padding_side="left")
        self.model = load_causal_lm(model)
        self.model.eval()
        self.served_name, self.batch_size = served_name, batch_size

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        from align.generation import format_prompt

        return format_prompt(self.tokenizer, messages, chat=True)

    def prompt_tokens(self, text: str) -> int:
        from align.generation import encode_prompt

        return len(encode_prompt(self.tokenizer, text))

    def complete(self, texts: list[str], *, n: int, max_tokens: int, temperature: float, top_p: float,
                 stop: list[str], seed: int | None) -> list[Any]:
        """`n` Generations per text (align.generation.generate), the samples of a text adjacent."""
        from align.generation import generate

        return generate(self.model, self.tokenizer, texts, max_new_tokens=max_tokens, temperature=temperature,
                        top_p=top_p, stop=stop or None, num_return_sequences=n, batch_size=self.batch_size, seed=seed)


class RewardBackend:
    """A saved reward model scoring whole texts (OpenRLHF's `/get_reward`)."""

    def __init__(self, path: str, head: str | None = None, batch_size: int = 16, max_length: int = 512):
        from align.models import RewardModel

        self.model = RewardModel.from_pretrained(path)
        self.model.eval()
        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        heads = self.model.head_names
        if head is not None and head not in heads:
            raise ValueError(f"reward_head: {head!r} is not a head of {path} ({', '.join(heads)})")
        self.head = heads.index(head) if head is not None else 0

    def score(self, texts: list[str]) -> dict[str, list[float]]:
        """Head name -> one reward per text (texts longer than `max_length` tokens lose their beginning)."""
        from align.models import score_texts

        scores = score_texts(self.model, texts, self.batch_size, self.max_length)
        return {name: scores[:, i].tolist() for i, name in enumerate(self.model.head_names)}


class DomainBackend:
    """A domain's programmatic reward (code: the sandbox and the tests; translation: metrics and guards)."""

    def __init__(self, name: str, options: dict | None = None):
        from align.registry import get_domain

        self.name = name
        self.domain = get_domain(name, **(options or {}))
        self._prompts: dict[str, Prompt] | None = None

    def prompt(self, prompt_id: str) -> Prompt:
        """The domain's prompt with this id (train and test prompts, read once)."""
        if self._prompts is None:
            index: dict[str, Prompt] = {}
            for split in ("train", "test"):
                try:
                    index.update({str(p.id): p for p in self.domain.prompts(split) if p.id is not None})
                except (ValueError, FileNotFoundError) as error:  # a domain may have only one of the splits
                    log.warning("domain %s: no %s prompts (%s)", self.name, split, error)
            self._prompts = index
        if prompt_id not in self._prompts:
            raise BadInput(f"prompt_ids: the {self.name} domain has no prompt {prompt_id!r}", "prompt_ids")
        return self._prompts[prompt_id]

    def reward(self, prompts: list[Prompt], completions: list[str]) -> list[RewardOutput]:
        try:
            return self.domain.reward(prompts, completions)
        except (ValueError, KeyError) as error:  # the domain's own check of the prompts (e.g. no tests in meta)
            raise BadInput(f"the {self.name} reward cannot score these prompts: {error}") from error
