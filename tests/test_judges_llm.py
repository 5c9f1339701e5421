"""The `llm` judge: both orders, position bias, retries, timeouts and fatal answers against a scripted
OpenAI-compatible endpoint on 127.0.0.1; then against a real `align serve` (tiny-llama here, SmolLM2 in the
slow tier)."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from align.config import ConfigError
from align.eval.judges import EndpointError, LLMJudge, make_judge, win_tie_lose
from align.eval.judges.llm import fill, load_template, parse_answer
from align.serve.launch import ServerProcess
from align.types import Prompt


class ScriptedEndpoint:
    """A chat endpoint whose answer is `decide(response_1, response_2)`; `failures` first requests get that
    status; `delay_s` before answering. Records every request and the most requests in flight at once."""

    def __init__(self, decide=lambda first, second: "Verdict: 1", failures=0, failure_status=503, delay_s=0.0):
        self.decide, self.failures, self.failure_status, self.delay_s = decide, failures, failure_status, delay_s
        self.requests, self.headers = [], []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append(body)
                    endpoint.headers.append(dict(self.headers))
                    failing = len(endpoint.requests) <= endpoint.failures
                    endpoint.in_flight += 1
                    endpoint.most_in_flight = max(endpoint.most_in_flight, endpoint.in_flight)
                try:
                    time.sleep(endpoint.delay_s)
                    if failing:
                        self.reply(endpoint.failure_status, {"error": {"message": "scripted failure"}})
                        return
                    user = body["messages"][-1]["content"]
                    first, second = re.search(r"\[Response 1\]\n(.*)\n\n\[Response 2\]\n(.*)\n\nWhich", user,
                                              re.DOTALL).groups()
                    self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                          "content": endpoint.decide(first, second)},
                                                  "finish_reason": "stop"}]})
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def reply(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the judge timed out and left
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def shown(self):
        """(response 1, response 2) of every request, in arrival order."""
        out = []
        for body in self.requests:
            user = body["messages"][-1]["content"]
            out.append(re.search(r"\[Response 1\]\n(.*)\n\n\[Response 2\]\n(.*)\n\nWhich", user, re.DOTALL).groups())
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint_factory():
    endpoints = []

    def make(**kwargs):
        endpoints.append(ScriptedEndpoint(**kwargs))
        return endpoints[-1]

    yield make
    for endpoint in endpoints:
        endpoint.close()


def prefers(word):
    def decide(first, second):
        if (word in first) == (word in second):
            return "They are equally good.\nVerdict: tie"
        return f"The better one mentions {word}.\nVerdict: {1 if word in first else 2}"
    return decide


PROMPTS = [Prompt(prompt=f"Question {i}?", id=str(i)) for i in range(4)]
A = ["GOOD answer 0", "plain answer 1", "GOOD answer 2", "plain answer 3"]
B = ["plain reply 0", "GOOD reply 1", "GOOD reply 2", "plain reply 3"]


def judge_for(endpoint, **options):
    return make_judge("llm", base_url=endpoint.url, model="scripted", backoff_s=0.01, **options)


def test_each_pair_is_asked_in_both_orders_and_a_consistent_judge_decides(endpoint_factory):
    endpoint = endpoint_factory(decide=prefers("GOOD"))
    verdicts = judge_for(endpoint, concurrency=1).judge(PROMPTS, A, B)
    assert [v.winner for v in verdicts] == ["a", "b", "tie", "tie"]
    assert endpoint.shown() == [pair for a, b in zip(A, B) for pair in ((a, b), (b, a))]
    assert all(r["model"] == "scripted" and r["temperature"] == 0.0 for r in endpoint.requests)
    swapped = judge_for(endpoint).judge(PROMPTS, B, A)
    assert [v.winner for v in swapped] == ["b", "a", "tie", "tie"]


def test_a_judge_that_always_picks_the_first_response_only_ties(endpoint_factory):
    endpoint = endpoint_factory(decide=lambda first, second: "Response 1 is better. Verdict: 1")
    judge = judge_for(endpoint)
    verdicts = judge.judge(PROMPTS, A, B)
    assert [v.winner for v in verdicts] == ["tie"] * 4
    summary = judge.summary(verdicts)
    assert summary["llm_first_position_rate"] == 1.0 and summary["llm_order_disagreements"] == 4
    assert summary["llm_requests"] == 8 and summary["llm_retries"] == 0


def test_unreadable_answers_are_counted_and_decide_nothing(endpoint_factory):
    endpoint = endpoint_factory(decide=lambda first, second: "I cannot decide, both have merit.")
    judge = judge_for(endpoint)
    verdicts = judge.judge(PROMPTS, A, B)
    assert [v.winner for v in verdicts] == ["tie"] * 4 and win_tie_lose(verdicts)["excluded"] == 0
    assert judge.summary(verdicts)["llm_unparsed_answers"] == 8


def test_retries_with_backoff_after_server_errors_and_latency_is_kept(endpoint_factory):
    endpoint = endpoint_factory(decide=prefers("GOOD"), failures=2, failure_status=503)
    judge = judge_for(endpoint, concurrency=1, retries=3)
    verdicts = judge.judge(PROMPTS, A, B)
    assert [v.winner for v in verdicts] == ["a", "b", "tie", "tie"]
    assert verdicts[0].detail["attempts"] == [3, 1]
    summary = judge.summary(verdicts)
    assert summary["llm_requests"] == 10 and summary["llm_retries"] == 2
    assert all(len(v.detail["latency_s"]) == 2 and min(v.detail["latency_s"]) > 0 for v in verdicts)
    assert 0 < summary["llm_latency_p50_s"] <= summary["llm_latency_p95_s"] <= summary["llm_latency_max_s"]


def test_a_pair_whose_requests_keep_failing_is_excluded_not_tied(endpoint_factory):
    endpoint = endpoint_factory(decide=prefers("GOOD"), delay_s=1.0)
    verdicts = judge_for(endpoint, timeout_s=0.1, retries=1).judge(PROMPTS[:1], A[:1], B[:1])
    assert verdicts[0].excluded == "request_failed" and verdicts[0].detail["attempts"] == [2, 2]
    assert "Timeout" in verdicts[0].detail["errors"][0]
    rejected = endpoint_factory(failures=100, failure_status=400)
    verdicts = judge_for(rejected, retries=3).judge(PROMPTS[:1], A[:1], B[:1])
    assert verdicts[0].excluded == "request_failed" and verdicts[0].detail["attempts"] == [1, 1]  # no retry on 400


def test_a_wrong_key_url_or_model_stops_the_run(endpoint_factory):
    endpoint = endpoint_factory(failures=100, failure_status=401)
    with pytest.raises(EndpointError, match="HTTP 401"):
        judge_for(endpoint).judge(PROMPTS, A, B)


def test_concurrency_is_bounded(endpoint_factory):
    endpoint = endpoint_factory(decide=prefers("GOOD"), delay_s=0.05)
    judge_for(endpoint, concurrency=2).judge(PROMPTS, A, B)
    assert len(endpoint.requests) == 8 and endpoint.most_in_flight <= 2


def test_the_api_key_comes_from_the_named_environment_variable(endpoint_factory, monkeypatch):
    endpoint = endpoint_factory(decide=prefers("GOOD"))
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test")
    judge_for(endpoint, api_key_env="JUDGE_TEST_KEY").judge(PROMPTS[:1], A[:1], B[:1])
    assert {h.get("Authorization") for h in endpoint.headers} == {"Bearer sk-test"}
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(ConfigError, match="JUDGE_TEST_KEY is not set"):
        judge_for(endpoint, api_key_env="JUDGE_TEST_KEY")


def test_template_placeholders_are_filled_once_and_checked(tmp_path):
    assert fill("{prompt} | {response_1} | {response_2}", {"prompt": "say {response_2}", "response_1": "x",
                                                           "response_2": "y"}) == "say {response_2} | x | y"
    template = load_template()
    assert template["system"] and all("{" + k + "}" in template["user"] for k in ("prompt", "response_1", "response_2"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("user: 'Compare {response_1} with {response_2}'\n")
    with pytest.raises(ConfigError, match=r"lacks the placeholders \{prompt\}"):
        load_template(broken)


@pytest.mark.parametrize("answer, expected", [
    ("Verdict: 1", "1"), ("verdict: TIE", "tie"), ("**Verdict:** 2", "2"), ("Verdict: [Response 2]", "2"),
    ("First I thought Verdict: 1 but on reflection\nVerdict: 2", "2"), ("2", "2"), (" tie. ", "tie"),
    ("The answer is 1.", "1"), ("Response 1 is better", None), ("Verdict: 12", None), ("", None),
])
def test_parse_answer(answer, expected):
    assert parse_answer(answer) == expected


# --------------------------------------------------------------------------- against a real `align serve`


def judge_against_served(model: str, prompts, side_a, side_b, max_tokens: int):
    with ServerProcess([f"model={model}", "served_model_name=judge", "max_tokens=256"]) as server:
        judge = LLMJudge(base_url=server.url + "/v1", model="judge", max_tokens=max_tokens, concurrency=2,
                         timeout_s=300)
        verdicts = judge.judge(prompts, side_a, side_b)
        served = server.log().count("generating: 1 prompts x n=1")
    return judge, verdicts, served


def test_llm_judge_against_align_serve_tiny_llama():
    judge, verdicts, served = judge_against_served("tiny-llama", PROMPTS[:3], A[:3], B[:3], max_tokens=8)
    assert served == 6                                   # every pair asked twice, each answered by the server
    assert win_tie_lose(verdicts)["excluded"] == 0 and win_tie_lose(verdicts)["n"] == 3
    assert all(len(v.detail["answers"]) == 2 and min(v.detail["latency_s"]) > 0 for v in verdicts)
    assert judge.summary(verdicts)["llm_requests"] == 6


@pytest.mark.slow
def test_llm_judge_against_align_serve_smollm2():
    prompts = [Prompt(prompt="What is the capital of France?"), Prompt(prompt="How many legs does a spider have?")]
    good = ["The capital of France is Paris.", "A spider has eight legs."]
    bad = ["I like turtles.", "Spiders are a kind of fish with two legs."]
    judge, verdicts, served = judge_against_served("smollm2-135m", prompts, good, bad, max_tokens=48)
    assert served == 4 and win_tie_lose(verdicts)["excluded"] == 0
    summary = judge.summary(verdicts)
    print("SmolLM2 as judge:", [v.winner for v in verdicts], [v.detail["answers"] for v in verdicts], summary)
    assert summary["llm_requests"] == 4 and summary["llm_latency_max_s"] > 0
