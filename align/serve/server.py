"""`align serve`: one HTTP server (FastAPI on uvicorn) for a policy, a reward model and a domain reward.

    align serve model=runs/ppo/model reward_model=runs/rm/model domain=code port=8000

| route | serves | request -> answer |
|---|---|---|
| `POST /v1/chat/completions` | `model` | OpenAI chat: `messages`, `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `n`, `stop`, `seed` -> `choices[].message.content`, `finish_reason`, `usage` |
| `POST /v1/completions` | `model` | OpenAI completions: `prompt` (text or list), same sampling fields -> `choices[].text`, `usage` |
| `GET /v1/models` | `model` | the served model name |
| `POST /get_reward` | `reward_model` | OpenRLHF's remote RM: `{"query": [texts], "prompts": [...], "labels": [...]}` -> `{"rewards": [...], "scores": [...], "extra_logs": {...}}` |
| `POST /reward` | `domain` | `{"completions": [...], "prompt_ids": [...]}` or `{"completions", "prompts", "references"}` -> `{"rewards": [float or null], "parts": [...]}` |
| `GET /health` | always | what is served, requests pending and served |

Each model is loaded once, before the port opens; requests compute one at a time (`max_pending` may wait).
SIGTERM or Ctrl-C stops accepting connections, lets the requests in flight finish (up to
`graceful_shutdown_s`), then exits 0. With `port=0` the system picks a free port; the address is printed
and, with `ready_file=`, written there as JSON once the server accepts connections.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from align.config import ConfigError, doc


@dataclass
class Config:
    """`align serve`."""

    model: str | None = doc("Policy behind the OpenAI-compatible routes: an embedded name, hub id or local path.",
                            None)
    served_model_name: str | None = doc("The name clients pass as `model` (default: `model` as given).", None)
    reward_model: str | None = doc("A saved reward model directory behind `POST /get_reward` (OpenRLHF's shape).",
                                   None)
    reward_head: str | None = doc("Head whose reward `/get_reward` returns (default: the first; every head is also "
                                  "in `extra_logs` when there are several).", None)
    domain: str | None = doc("Domain whose reward `POST /reward` serves (`code`, `translation`).", None)
    domain_options: dict = doc("Keyword options for the domain adapter.", {})
    host: str = doc("Address to listen on (127.0.0.1: this machine only).", "127.0.0.1")
    port: int = doc("Port to listen on (0: a free port chosen by the system, printed and written to `ready_file`).",
                    8000)
    ready_file: str | None = doc("Write `{\"host\", \"port\", \"url\", \"pid\"}` here once the server accepts "
                                 "connections.", None)
    max_body_bytes: int = doc("Largest request body; larger ones get 413.", 1 << 20)
    max_items: int = doc("Most prompts x n, queries, messages or completions in one request.", 64)
    max_n: int = doc("Largest `n` (completions per prompt).", 8)
    max_tokens: int = doc("Largest `max_tokens` a request may ask for.", 512)
    default_max_tokens: int = doc("`max_tokens` of a request that gives none.", 128)
    max_text_chars: int = doc("Longest prompt, message, query or completion, in characters.", 32_000)
    max_prompt_tokens: int = doc("Longest prompt after the chat template, in tokens of the policy.", 2048)
    max_pending: int = doc("Requests computing or waiting for the model at once; the next ones get 503.", 32)
    max_connections: int = doc("Open connections at once (uvicorn's limit_concurrency); the next ones get 503.", 128)
    batch_size: int = doc("Completions generated per batch.", 8)
    rm_batch_size: int = doc("Texts scored per reward-model batch.", 16)
    rm_max_length: int = doc("Tokens per scored text (older text is cut first).", 512)
    graceful_shutdown_s: int = doc("After SIGTERM, seconds the requests in flight get to finish.", 60)
    log_level: str = doc("uvicorn log level: `debug`, `info`, `warning`, `error`.", "info")

    def validate(self) -> None:
        if not (self.model or self.reward_model or self.domain):
            raise ConfigError("model / reward_model / domain: nothing to serve; give at least one")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: expected 0..65535, got {self.port!r}")
        for key in ("max_body_bytes", "max_items", "max_n", "max_tokens", "default_max_tokens", "max_text_chars",
                    "max_prompt_tokens", "max_pending", "max_connections", "batch_size", "rm_batch_size",
                    "rm_max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {getattr(self, key)!r}")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(f"default_max_tokens: {self.default_max_tokens} is over max_tokens={self.max_tokens}")
        if self.graceful_shutdown_s < 0:
            raise ConfigError(f"graceful_shutdown_s: expected a non-negative number, got {self.graceful_shutdown_s!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: expected debug, info, warning or error, got {self.log_level!r}")


def build_server(config: Config) -> Server:
    """Load what is served (once) and make the uvicorn server; `run` starts it."""
    from align.serve.app import BodyLimit, Limits, build_app
    from align.serve.backends import DomainBackend, ModelSlot, PolicyBackend, RewardBackend

    policy = PolicyBackend(config.model, config.served_model_name or config.model, config.batch_size) \
        if config.model else None
    reward = RewardBackend(config.reward_model, config.reward_head, config.rm_batch_size, config.rm_max_length) \
        if config.reward_model else None
    domain = DomainBackend(config.domain, config.domain_options) if config.domain else None
    limits = Limits(max_body_bytes=config.max_body_bytes, max_items=config.max_items, max_n=config.max_n,
                    max_tokens=config.max_tokens, default_max_tokens=config.default_max_tokens,
                    max_text_chars=config.max_text_chars, max_prompt_tokens=config.max_prompt_tokens)
    app = BodyLimit(build_app(policy, reward, domain, limits, ModelSlot(config.max_pending)), config.max_body_bytes)
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                              limit_concurrency=config.max_connections,
                              timeout_graceful_shutdown=config.graceful_shutdown_s, lifespan="off")
    return Server(settings, config.ready_file)


class Server(uvicorn.Server):
    """uvicorn's server, which reports its address once listening and ends normally on SIGTERM / SIGINT
    (uvicorn re-raises the signal after its graceful shutdown, which would end the process with it)."""

    def __init__(self, settings, ready_file: str | None):
        super().__init__(settings)
        self.ready_file = ready_file

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        address = {"host": host, "port": port, "url": f"http://{host}:{port}", "pid": os.getpid()}
        print(f"align serve: listening on {address['url']}", flush=True)
        if self.ready_file:
            path = Path(self.ready_file)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(address) + "\n")
            os.replace(tmp, path)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run(config: Config) -> dict:
    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    server = build_server(config)
    server.run()
    print("align serve: stopped", flush=True)
    return {"stopped": True}
