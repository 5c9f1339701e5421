"""`align serve` in a real subprocess on 127.0.0.1: the OpenAI routes, OpenRLHF's remote-RM call, the domain
reward, refusals of bad input (each a 4xx with the reason, the server still serving afterwards) and the
graceful shutdown."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from align.config import ConfigError, load_config
from align.serve.launch import ServerProcess
from align.serve.server import Config

TRANSLATION_PROMPT = "Translate this from Chinese to English:\nChinese: 今天天气很好。\nEnglish:"
REFERENCE = "The weather is nice today."


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    from align.models import load_reward_model

    path = tmp_path_factory.mktemp("rm") / "model"
    load_reward_model("tiny-bert", num_heads=2, head_names=["helpful", "harmless"]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(rm_dir):
    process = ServerProcess(["model=tiny-llama", "served_model_name=tiny", f"reward_model={rm_dir}",
                             "reward_head=harmless", "domain=translation",
                             "domain_options.reward.metric_weights.chrf=1.0", "max_body_bytes=65536",
                             "max_items=8", "max_n=4", "max_tokens=64", "default_max_tokens=8",
                             "max_text_chars=2000", "max_prompt_tokens=256"])
    with process:
        yield process


def post(server, route, body=None, data=None, **kwargs):
    return requests.post(server.url + route, json=body, data=data, timeout=120, **kwargs)


def assert_alive(server):
    assert server.alive()
    answer = post(server, "/v1/completions", {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert answer.status_code == 200, answer.text


# --------------------------------------------------------------------------- the OpenAI routes


def test_chat_completion_has_the_openai_shape_and_honours_n_and_max_tokens(server):
    answer = post(server, "/v1/chat/completions",
                  {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                   "max_tokens": 5, "temperature": 0.8, "top_p": 0.9, "n": 3, "seed": 1})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    messages = [c["message"] for c in body["choices"]]
    assert all(m["role"] == "assistant" and isinstance(m["content"], str) for m in messages)
    assert all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 3 * 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["prompt_tokens"] > 0


def test_greedy_completions_repeat_and_the_default_max_tokens_applies(server):
    request = {"prompt": ["Hello there", "The cat"], "temperature": 0}
    first, second = post(server, "/v1/completions", request).json(), post(server, "/v1/completions", request).json()
    assert first["object"] == "text_completion" and len(first["choices"]) == 2
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in second["choices"]]
    assert first["usage"]["completion_tokens"] <= 2 * 8  # default_max_tokens=8


def test_stop_strings_end_the_completion(server):
    greedy = post(server, "/v1/completions", {"prompt": "Hello there", "max_tokens": 30, "temperature": 0}).json()
    text = greedy["choices"][0]["text"]
    stop = text[len(text) // 2: len(text) // 2 + 2] if len(text.strip()) > 4 else None
    if not stop or not stop.strip():
        pytest.skip(reason=f"the greedy completion {text!r} has no stop string to cut at")
    stopped = post(server, "/v1/completions", {"prompt": "Hello there", "max_tokens": 30, "temperature": 0,
                                               "stop": [stop]}).json()["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stop not in stopped["text"] and text.startswith(stopped["text"])


def test_models_and_health(server):
    assert requests.get(server.url + "/v1/models", timeout=10).json()["data"][0]["id"] == "tiny"
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["policy"] == "tiny" and health["domain"] == "translation"


# --------------------------------------------------------------------------- rewards


def test_get_reward_answers_openrlhf_remote_rm_client_as_it_calls(server, rm_dir):
    """The payload and checks of OpenRLHF's SingleTurnAgentExecutor._fetch_rewards_via_http (query, prompts,
    labels; raise_for_status; reads `rewards`, else `scores`; `extra_logs` values become tensors)."""
    from align.models import RewardModel, score_texts

    queries = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>", "Human: a\n\nAssistant: b"]
    payload = {"query": queries, "prompts": ["<|im_start|>user\nHi<|im_end|>\n", "Human: a"], "labels": [None, "x"]}
    answer = requests.post(server.url + "/get_reward", json=payload, headers={"Content-Type": "application/json"},
                           timeout=180)
    answer.raise_for_status()
    body = answer.json()
    assert set(body) >= {"rewards", "scores", "extra_logs"} and len(body["rewards"]) == len(queries)
    expected = score_texts(RewardModel.from_pretrained(rm_dir), queries)
    assert body["rewards"] == pytest.approx(expected[:, 1].tolist(), abs=1e-4)  # reward_head=harmless
    assert body["extra_logs"]["reward_helpful"] == pytest.approx(expected[:, 0].tolist(), abs=1e-4)


def test_domain_reward_by_prompt_text_prefers_the_reference(server):
    answer = post(server, "/reward", {"prompts": [TRANSLATION_PROMPT] * 3, "references": [REFERENCE] * 3,
                                      "completions": [REFERENCE, "Cats sleep on the sofa.", ""]})
    assert answer.status_code == 200, answer.text
    rewards, parts = answer.json()["rewards"], answer.json()["parts"]
    assert rewards[0] == pytest.approx(1.0) and rewards[0] > rewards[1] > rewards[2]
    assert parts[0]["metric_chrf"] == pytest.approx(100.0) and parts[2]["guards_failed"] == ["empty"]


def test_domain_reward_by_prompt_id_uses_the_domains_own_prompt(server):
    from align.registry import get_domain

    try:
        prompt = get_domain("translation").prompts("test")[0]
    except FileNotFoundError as error:
        pytest.skip(reason=f"translation data absent: {error}")
    answer = post(server, "/reward", {"prompt_ids": [prompt.id, prompt.id], "completions": [prompt.reference, "x"]})
    assert answer.status_code == 200, answer.text
    rewards, parts = answer.json()["rewards"], answer.json()["parts"]
    assert parts[0]["metric_chrf"] == pytest.approx(100.0) and rewards[0] > rewards[1]


# --------------------------------------------------------------------------- bad input


BAD_REQUESTS = [
    ("/v1/chat/completions", b'{"messages": [', 400, "malformed JSON"),
    ("/v1/chat/completions", b"[1, 2]", 400, "expected a JSON object"),
    ("/v1/chat/completions", b"\xff\xfe\x00garbage", 400, "malformed JSON"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 7}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 65}, 400, "limit of 64"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 5}, 400, "limit of 4"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "stream"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}, 404, "not served"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 2001}]}, 400, "limit of 2000"),
    ("/v1/completions", {"prompt": ["a"] * 3, "n": 3}, 400, "3 prompts x n=3"),
    ("/v1/completions", {"prompt": [1, 2]}, 400, "prompt"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {"prompt": "hello " * 300}, 400, "tokens, over this server's limit of 256"),
    ("/get_reward", {"query": "one text"}, 400, "query"),
    ("/get_reward", {"query": []}, 400, "query"),
    ("/get_reward", {"query": ["a"] * 9}, 400, "limit of 8"),
    ("/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, 400, "prompts"),
    ("/reward", {"completions": ["x"]}, 400, "prompt_ids / prompts"),
    ("/reward", {"completions": ["x"], "prompt_ids": ["no-such-prompt"]}, 400, "no-such-prompt"),
    ("/reward", {"completions": ["x", "y"], "prompts": [TRANSLATION_PROMPT]}, 400, "as many"),
    ("/nowhere", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("route, body, status, reason", BAD_REQUESTS)
def test_bad_input_gets_a_4xx_naming_the_reason_and_the_server_survives(server, route, body, status, reason):
    if isinstance(body, bytes):
        answer = post(server, route, data=body, headers={"Content-Type": "application/json"})
    else:
        answer = post(server, route, body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert reason in error["message"] and error["type"] == "invalid_request_error"
    assert_alive(server)


def test_a_body_over_the_limit_gets_413_declared_or_streamed(server):
    big = json.dumps({"query": ["x" * 70_000]}).encode()
    answer = post(server, "/get_reward", data=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "65536 bytes" in answer.json()["error"]["message"]
    chunked = post(server, "/get_reward", data=(big[i:i + 8192] for i in range(0, len(big), 8192)))  # no length
    assert chunked.status_code == 413
    assert_alive(server)


def test_a_client_that_hangs_up_mid_body_leaves_the_server_serving(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 5000\r\n\r\n{\"query\": [\"abc")
    assert_alive(server)


# --------------------------------------------------------------------------- config and shutdown


@pytest.mark.parametrize("overrides, key", [([], "nothing to serve"), (["model=x", "port=70000"], "port"),
                                            (["model=x", "max_tokens=8", "default_max_tokens=16"], "default_max")])
def test_config_refuses_what_cannot_be_served(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(Config, None, overrides)


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0():
    server = ServerProcess(["model=tiny-llama", "max_tokens=512"]).start()
    try:
        result = {}

        def slow_request():
            # 8 prompts x n=8 x 512 greedy tokens: ~2 s of generation, so the SIGTERM below lands while it runs
            # (one prompt of 200 tokens took 0.08 s and sometimes finished before the signal was handled)
            result["answer"] = post(server, "/v1/completions", {"prompt": ["Hello there"] * 8, "n": 8,
                                                                "max_tokens": 512, "temperature": 0})

        client = threading.Thread(target=slow_request)
        client.start()
        while "generating: 8 prompts" not in server.log():  # the request is computing
            assert client.is_alive(), result
            time.sleep(0.05)
        code = server.stop()
        client.join(60)
    finally:
        server.stop()
    log = server.log()
    assert code == 0 and "align serve: stopped" in log
    assert result["answer"].status_code == 200
    assert result["answer"].json()["usage"]["completion_tokens"] > 0
    # the request was answered after the shutdown began
    assert log.index("Shutting down") < log.index('"POST /v1/completions HTTP/1.1" 200')
