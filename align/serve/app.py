"""The HTTP application of `align serve` (FastAPI): routes, limits and error answers.

Every refusal is a 4xx whose body says why, in OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}`: 400 for malformed JSON, a wrong type or a value out of
range (naming the field), 404 for an unknown route or model name or a part not served, 413 for a body
over `max_body_bytes`, 503 when `max_pending` requests already wait for the model. An unexpected failure
is a 500 with the exception's type; the server stays up.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from align.serve.backends import BadInput, Busy, DomainBackend, ModelSlot, PolicyBackend, RewardBackend, log
from align.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    DomainRewardRequest,
    GetRewardRequest,
    Sampling,
)
from align.types import Prompt

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class Limits:
    """Bounds on one request (see `align serve --help` for each)."""

    max_body_bytes: int = 1 << 20
    max_items: int = 64
    max_n: int = 8
    max_tokens: int = 512
    default_max_tokens: int = 128
    max_text_chars: int = 32_000
    max_prompt_tokens: int = 2048
    max_stop: int = 4


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before any route sees it. The excess is
    read and dropped (up to 16 times the limit) so the client, still sending, can read the answer."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size > self.max_bytes:
                while more and size <= 16 * self.max_bytes:
                    message = await receive()
                    size += len(message.get("body", b""))
                    more = message["type"] == "http.request" and message.get("more_body", False)
                response = error_response(413, f"request body over this server's limit of {self.max_bytes} bytes "
                                          "(max_body_bytes)", code="request_too_large")
                await response(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
        body, delivered = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One readable sentence (and the top-level field) from pydantic's validation errors."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(location) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{field}: {first.get('msg', 'invalid value')}{more}", location[0] if location else None


async def read_body(request: Request, schema: type[BaseModel]) -> Any:
    """The request's JSON body validated by `schema` (whatever the Content-Type says), or a 400 saying why not."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as error:
        raise ApiError(400, f"malformed JSON body: not UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ApiError(400, f"malformed JSON body: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"body: expected a JSON object, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ApiError(400, *validation_message(error.errors())) from None


def build_app(policy: PolicyBackend | None, reward: RewardBackend | None, domain: DomainBackend | None,
              limits: Limits, slot: ModelSlot) -> FastAPI:
    app = FastAPI(title="align serve", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, *validation_message(list(error.errors())))

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.param, error.code)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, error: BadInput) -> JSONResponse:
        return error_response(400, str(error), error.param)

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Busy) -> JSONResponse:
        return error_response(503, f"server busy: {error}; retry later", code="busy", headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(error).__name__}: {error}")

    def require(backend: Any, what: str, key: str) -> Any:
        if backend is None:
            raise ApiError(404, f"this server serves no {what} (start it with {key}=...)", code="not_served")
        return backend

    def check_sampling(body: Sampling, texts: list[str], max_tokens: int | None) -> int:
        """The request's max_tokens after every bound on the sampling fields is checked."""
        if body.unsupported():
            raise ApiError(400, f"{', '.join(body.unsupported())}: not supported by this server", body.unsupported()[0])
        if body.model is not None and body.model != policy.served_name:
            raise ApiError(404, f"model: {body.model!r} is not served here (served: {policy.served_name!r})", "model",
                           "model_not_found")
        tokens = limits.default_max_tokens if max_tokens is None else max_tokens
        if tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens: {tokens} is over this server's limit of {limits.max_tokens}",
                           "max_tokens")
        if body.n > limits.max_n:
            raise ApiError(400, f"n: {body.n} is over this server's limit of {limits.max_n}", "n")
        if len(texts) * body.n > limits.max_items:
            raise ApiError(400, f"{len(texts)} prompts x n={body.n} completions: over this server's limit of "
                           f"{limits.max_items} per request", "prompt")
        stops = body.stop_list()
        if len(stops) > limits.max_stop or any(not s or len(s) > 200 for s in stops):
            raise ApiError(400, f"stop: at most {limits.max_stop} non-empty strings of up to 200 characters", "stop")
        return tokens

    def check_texts(texts: list[str], param: str) -> None:
        if len(texts) > limits.max_items:
            raise ApiError(400, f"{param}: {len(texts)} items, over this server's limit of {limits.max_items}", param)
        for index, text in enumerate(texts):
            if len(text) > limits.max_text_chars:
                raise ApiError(400, f"{param}[{index}]: {len(text)} characters, over this server's limit of "
                               f"{limits.max_text_chars}", param)

    def sample(body: Sampling, texts: list[str], max_tokens: int | None) -> tuple[list[Any], int]:
        backend = require(policy, "policy", "model")
        tokens = check_sampling(body, texts, max_tokens)
        with slot.turn():
            lengths = [backend.prompt_tokens(t) for t in texts]
            too_long = [i for i, n in enumerate(lengths) if n > limits.max_prompt_tokens]
            if too_long:
                raise ApiError(400, f"prompt {too_long[0]}: {lengths[too_long[0]]} tokens, over this server's limit "
                               f"of {limits.max_prompt_tokens}", "prompt")
            log.info("generating: %d prompts x n=%d, max_tokens=%d", len(texts), body.n, tokens)
            generations = backend.complete(texts, n=body.n, max_tokens=tokens, temperature=body.temperature,
                                           top_p=body.top_p, stop=body.stop_list(), seed=body.seed)
        return generations, sum(lengths)

    def usage(generations: list[Any], prompt_tokens: int) -> dict[str, int]:
        completion_tokens = sum(len(g.completion_ids) for g in generations)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "policy": policy.served_name if policy else None,
                "reward_model": reward.path if reward else None, "domain": domain.name if domain else None,
                "pending": slot.pending, "served": slot.served}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        served = [policy.served_name] if policy else []
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "align"} for name in served]}

    @app.post("/v1/chat/completions")
    async def chat_route(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(chat, await read_body(request, ChatRequest))

    def chat(body: ChatRequest) -> dict[str, Any]:
        backend = require(policy, "policy", "model")
        check_texts([m.text() for m in body.messages], "messages")
        text = backend.chat_text([{"role": m.role, "content": m.text()} for m in body.messages])
        generations, prompt_tokens = sample(body, [text], body.max_completion_tokens or body.max_tokens)
        choices = [{"index": i, "message": {"role": "assistant", "content": g.text},
                    "finish_reason": FINISH_REASONS[g.finish_reason]} for i, g in enumerate(generations)]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": backend.served_name, "choices": choices, "usage": usage(generations, prompt_tokens)}

    @app.post("/v1/completions")
    async def completions_route(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(completions, await read_body(request, CompletionRequest))

    def completions(body: CompletionRequest) -> dict[str, Any]:
        backend = require(policy, "policy", "model")
        texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not texts:
            raise ApiError(400, "prompt: expected a text or a non-empty list of texts", "prompt")
        check_texts(texts, "prompt")
        generations, prompt_tokens = sample(body, texts, body.max_tokens)
        choices = [{"index": i, "text": g.text, "logprobs": None, "finish_reason": FINISH_REASONS[g.finish_reason]}
                   for i, g in enumerate(generations)]
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": backend.served_name, "choices": choices, "usage": usage(generations, prompt_tokens)}

    @app.post("/get_reward")
    async def get_reward_route(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(get_reward, await read_body(request, GetRewardRequest))

    def get_reward(body: GetRewardRequest) -> dict[str, Any]:
        backend = require(reward, "reward model", "reward_model")
        check_texts(body.query, "query")
        for name, values in (("prompts", body.prompts), ("labels", body.labels)):
            if values is not None and len(values) != len(body.query):
                raise ApiError(400, f"{name}: {len(values)} items for {len(body.query)} queries", name)
        with slot.turn():
            heads = backend.score(body.query)
        rewards = heads[backend.model.head_names[backend.head]]
        extra = {f"reward_{name}": values for name, values in heads.items()} if len(heads) > 1 else {}
        return {"rewards": rewards, "scores": rewards, "extra_logs": extra}

    @app.post("/reward")
    async def domain_reward_route(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(domain_reward, await read_body(request, DomainRewardRequest))

    def domain_reward(body: DomainRewardRequest) -> dict[str, Any]:
        backend = require(domain, "domain reward", "domain")
        check_texts(body.completions, "completions")
        if (body.prompt_ids is None) == (body.prompts is None):
            raise ApiError(400, "prompt_ids / prompts: give exactly one of them", "prompt_ids")
        given = body.prompt_ids if body.prompt_ids is not None else body.prompts
        if len(given) != len(body.completions) or (body.references is not None
                                                   and len(body.references) != len(body.completions)):
            raise ApiError(400, f"{len(body.completions)} completions need as many prompt_ids or prompts (and "
                           "references)", "completions")
        with slot.turn():
            if body.prompt_ids is not None:
                prompts = [backend.prompt(prompt_id) for prompt_id in body.prompt_ids]
            else:
                references = body.references or [None] * len(given)
                prompts = [Prompt(prompt=p if isinstance(p, str) else [{"role": m.role, "content": m.text()}
                                                                      for m in p], reference=r)
                           for p, r in zip(given, references)]
            outputs = backend.reward(prompts, list(body.completions))
        return {"rewards": [finite(o.reward) for o in outputs], "parts": [jsonable(o.parts) for o in outputs]}

    return app


def finite(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def jsonable(value: Any) -> Any:
    """A reward's parts as JSON: containers kept, non-finite floats as null, anything else as text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return finite(value)
    return str(value)
