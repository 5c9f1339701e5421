"""The `llm` judge: any OpenAI-compatible chat endpoint compares the two completions, in both orders.

Position bias is the known failure of LLM judges (Zheng et al. 2023, "Judging LLM-as-a-Judge"): each pair
is asked twice, A shown first and then B shown first; A (or B) wins only when both orders name it, every
other combination (disagreement, a `tie` answer, an answer naming neither) is a tie. The prompt is a
template in `configs/judges/` (`template=` picks another file).

Requests run on a bounded thread pool (`concurrency`); each has a timeout, and connection errors,
timeouts, broken answers, 408/409/429 and 5xx are retried with exponential backoff (`backoff_s * 2**attempt`).
A pair whose request still fails is excluded (`request_failed`), never counted as a tie; 401, 403 and
404 (a wrong key, URL or model name) stop the run at once. Every request's latency (the answered
attempt) and attempts are kept in the verdict's detail and summarised by `summary`.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from align.config import ConfigError
from align.eval.judges.base import Verdict, check_lengths, excluded, prompt_for_judge
from align.types import Prompt, PromptText

PLACEHOLDERS = ("prompt", "response_1", "response_2")
RETRIABLE_STATUS = (408, 409, 429, 500, 502, 503, 504)
FATAL_STATUS = (401, 403, 404)
_VERDICT = re.compile(r"(?:verdict|answer is)\s*[:=\-]?\s*[*\"'`\[(]*\s*(?:response\s*)?(1|2|tie)\b", re.IGNORECASE)


def default_template() -> Path:
    from align.data.splits import checkout_root

    return checkout_root() / "configs" / "judges" / "pairwise.yaml"


def load_template(path: str | Path | None = None) -> dict[str, str]:
    """`{"system": ..., "user": ...}` from a YAML template; the user part must hold every placeholder."""
    path = Path(path) if path else default_template()
    if not path.is_file():
        raise ConfigError(f"judge_options.template: file not found: {path}")
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or not isinstance(loaded.get("user"), str):
        raise ConfigError(f"{path}: expected a mapping with a `user` text (and optionally `system`)")
    missing = [name for name in PLACEHOLDERS if "{" + name + "}" not in loaded["user"]]
    if missing:
        raise ConfigError(f"{path}: field `user` lacks the placeholders {', '.join('{' + m + '}' for m in missing)}")
    system = loaded.get("system")
    if system is not None and not isinstance(system, str):
        raise ConfigError(f"{path}: field `system`: expected text")
    return {"system": system or "", "user": loaded["user"]}


def fill(template: str, values: dict[str, str]) -> str:
    """Replace `{prompt}`, `{response_1}`, `{response_2}` in one pass (text inside a value stays as it is)."""
    return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)], template)


def parse_answer(text: str) -> str | None:
    """`1`, `2` or `tie` from the judge's answer: its last `Verdict: ...` (or `answer is ...`, which small models
    write), else an answer that is only one of them; None when it names none."""
    matches = _VERDICT.findall(text or "")
    if matches:
        return matches[-1].lower()
    bare = (text or "").strip().strip(".*\"'` ").lower()
    return bare if bare in ("1", "2", "tie") else None


class EndpointError(RuntimeError):
    """The endpoint refused the judge's requests in a way no retry fixes (a wrong key, URL or model)."""


class LLMJudge:
    """See the module docstring. `base_url` ends before `/chat/completions` (e.g. `http://127.0.0.1:8000/v1`);
    the API key is read from the environment variable named `api_key_env` (none when empty)."""

    name = "llm"

    def __init__(self, base_url: str, model: str, api_key_env: str = "", template: str | None = None,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, concurrency: int = 4,
                 max_tokens: int = 256, temperature: float = 0.0):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"judge_options.base_url: expected an http(s) URL, got {base_url!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or concurrency < 1 or max_tokens < 1:
            raise ConfigError("judge_options: timeout_s, concurrency and max_tokens must be positive, retries and "
                             "backoff_s non-negative")
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ConfigError(f"judge_options.api_key_env: the environment variable {api_key_env} is not set")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.template = model, load_template(template)
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.concurrency, self.max_tokens, self.temperature = concurrency, max_tokens, temperature

    def messages(self, prompt: PromptText, first: str, second: str) -> list[dict[str, str]]:
        user = fill(self.template["user"], {"prompt": prompt_for_judge(prompt), "response_1": first,
                                            "response_2": second})
        system = [{"role": "system", "content": self.template["system"]}] if self.template["system"] else []
        return [*system, {"role": "user", "content": user}]

    def ask(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """One chat request with retries: `{"answer", "latency_s", "attempts"}` or `{"error", "attempts"}`."""
        import requests

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        error = ""
        for attempt in range(1, self.retries + 2):
            started = time.perf_counter()
            try:
                response = requests.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.RequestException as failure:  # connection refused or reset, timeout, broken body
                error = f"{type(failure).__name__}: {failure}"
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        return {"error": f"unreadable answer: {response.text[:300]}", "attempts": attempt}
                    return {"answer": answer or "", "latency_s": time.perf_counter() - started, "attempts": attempt}
                error = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code in FATAL_STATUS:
                    raise EndpointError(f"llm judge: {self.url} answered {error}")
                if response.status_code not in RETRIABLE_STATUS:
                    return {"error": error, "attempts": attempt}
            if attempt <= self.retries:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        return {"error": error, "attempts": self.retries + 1}

    def judge(self, prompts: list[Prompt], completions_a: list[str], completions_b: list[str]) -> list[Verdict]:
        check_lengths(prompts, completions_a, completions_b)
        conversations = []  # per pair: A shown first, then B shown first
        for prompt, a, b in zip(prompts, completions_a, completions_b):
            conversations += [self.messages(prompt.prompt, a, b), self.messages(prompt.prompt, b, a)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            replies = list(pool.map(self.ask, conversations))
        return [self.decide(replies[2 * i], replies[2 * i + 1]) for i in range(len(prompts))]

    @staticmethod
    def decide(a_first: dict[str, Any], b_first: dict[str, Any]) -> Verdict:
        """The verdict from the two orders' replies (see the module docstring)."""
        attempts = [a_first["attempts"], b_first["attempts"]]
        if "error" in a_first or "error" in b_first:
            return excluded("request_failed", errors=[a_first.get("error"), b_first.get("error")], attempts=attempts)
        choices = [parse_answer(a_first["answer"]), parse_answer(b_first["answer"])]
        # map each order's choice back to a side: in the first order response 1 is A, in the second it is B
        sides = [{"1": "a", "2": "b"}.get(choices[0] or "", "tie"), {"1": "b", "2": "a"}.get(choices[1] or "", "tie")]
        winner = sides[0] if sides[0] == sides[1] else "tie"
        return Verdict(winner, {"choices": choices, "sides": sides, "answers": [a_first["answer"], b_first["answer"]],
                                "latency_s": [a_first["latency_s"], b_first["latency_s"]], "attempts": attempts})

    @staticmethod
    def summary(verdicts: list[Verdict]) -> dict[str, float]:
        """Requests, retries and latency over every request; unparsed answers; how often the two orders
        disagreed; the share of decisive answers that chose the response shown first (0.5: no position bias)."""
        latencies = sorted(t for v in verdicts for t in v.detail.get("latency_s", []))
        attempts = [a for v in verdicts for a in v.detail.get("attempts", [])]
        choices = [c for v in verdicts for c in v.detail.get("choices", [])]
        decisive = [c for c in choices if c in ("1", "2")]
        answered = [v for v in verdicts if "sides" in v.detail]
        out: dict[str, float] = {"llm_requests": sum(attempts), "llm_retries": sum(attempts) - len(attempts),
                                 "llm_unparsed_answers": sum(c is None for c in choices),
                                 "llm_order_disagreements": sum(v.detail["sides"][0] != v.detail["sides"][1]
                                                                for v in answered)}
        if decisive:
            out["llm_first_position_rate"] = sum(c == "1" for c in decisive) / len(decisive)
        if latencies:
            def quantile(q: float) -> float:
                return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]

            out.update(llm_latency_mean_s=sum(latencies) / len(latencies), llm_latency_p50_s=quantile(0.5),
                       llm_latency_p95_s=quantile(0.95), llm_latency_max_s=latencies[-1])
        return out
