"""PPO experience layout, token offsets and FGO masks; the demo's statistics (hand-computed)."""
from __future__ import annotations

import pytest
import torch

from align.eval.stats import mcnemar_exact, wilson_interval
from align.generation import Generation
from align.models.value import ValueModel
from align.ppo.losses import logprobs_from_logits
from align.ppo.rollout import (
    collate,
    completion_offsets,
    policy_mask,
    response_logprobs,
    response_values,
    shared_prompt_rows,
)
from domains.code.ppo_demo import compare_pass_rates


@pytest.fixture(scope="module")
def tiny():
    from align.models import load_causal_lm, load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads on a busy shared CPU
    yield load_causal_lm("tiny-llama").eval(), load_tokenizer("tiny-llama", padding_side="left")
    torch.set_num_threads(threads)


def test_collate_aligns_every_response_at_the_same_column():
    batch = collate([[1, 2], [3]], [[4, 5, 6], [7]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 4, 5, 6], [0, 3, 7, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]]
    assert batch.response_ids.tolist() == [[4, 5, 6], [7, 0, 0]]
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.prompt_width == 2


def test_padded_logprobs_and_values_equal_unpadded_ones(tiny):
    model, _ = tiny
    prompts, completions = [[5, 6, 7, 8], [9]], [[10, 11], [12, 13, 14]]
    batch = collate(prompts, completions, pad_id=0)
    with torch.no_grad():
        logprobs = response_logprobs(model, batch)
        critic = ValueModel.from_causal_lm(model)
        torch.nn.init.normal_(critic.head.weight)
        values = response_values(critic, batch)
        for row, (prompt, completion) in enumerate(zip(prompts, completions)):
            ids = torch.tensor([prompt + completion])
            logits = model(ids).logits[:, len(prompt) - 1:-1]
            expected = logprobs_from_logits(logits, torch.tensor([completion]))[0]
            assert torch.allclose(logprobs[row, :len(completion)], expected, atol=1e-5)
            hidden = critic(ids, torch.ones_like(ids))[0, len(prompt) - 1:-1]
            assert torch.allclose(values[row, :len(completion)], hidden, atol=1e-5)


def test_rows_sharing_a_prompt_get_the_logprobs_and_gradients_of_the_full_forward(tiny):
    model, _ = tiny
    # two prompts of different lengths (left padding), 3 samples each, rows shuffled as a minibatch would be
    prompts = [[5, 6, 7, 8]] * 3 + [[9, 10]] * 3
    completions = [[11, 12], [13], [14, 15, 16], [17, 18, 19], [20], [21, 22]]
    order = [4, 0, 5, 2, 1, 3]
    batch = collate([prompts[i] for i in order], [completions[i] for i in order], pad_id=0)
    first, inverse = shared_prompt_rows(model, batch)
    assert len(first) == 2 and inverse.tolist() in ([0, 1, 0, 1, 1, 0], [1, 0, 1, 0, 0, 1])
    model.train()  # gradients as in the update: the shared path and the full forward must give the same ones
    try:
        shared = response_logprobs(model, batch)
        shared_gradients = torch.autograd.grad((shared * batch.response_mask).sum(), list(model.parameters()))
        with torch.no_grad():  # one row at a time: no row shares anything
            for row in range(len(order)):
                alone = batch.select(torch.tensor([row]))
                assert shared_prompt_rows(model, alone) is None
                length = int(alone.response_mask.sum())
                expected = response_logprobs(model, alone)[0, :length]
                assert torch.allclose(shared[row, :length], expected, atol=1e-5)
        full = [response_logprobs(model, batch.select(torch.tensor([row]))) for row in range(len(order))]
        full_gradients = torch.autograd.grad(sum((f * m).sum() for f, m in zip(full, batch.response_mask[:, None])),
                                             list(model.parameters()))
    finally:
        model.eval()
    for got, expected in zip(shared_gradients, full_gradients):
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_completion_offsets_cover_the_text_token_by_token(tiny):
    _, tokenizer = tiny
    ids = tokenizer("def add(a, b):\n    return a + b", add_special_tokens=False)["input_ids"]
    text = tokenizer.decode(ids)
    spans = completion_offsets(tokenizer, Generation(text=text, prompt_ids=[], completion_ids=ids,
                                                     finish_reason="length"))
    assert len(spans) == len(ids) and spans[0][0] == 0 and spans[-1][1] == len(text)
    assert "".join(text[a:b] for a, b in spans) == text
    # a completion cut at a stop string: spans past the cut are empty
    cut = Generation(text=text[:5], prompt_ids=[], completion_ids=ids, finish_reason="stop")
    assert all(b <= 5 for _, b in completion_offsets(tokenizer, cut))


def test_policy_mask_applies_fgo_masks_where_given():
    batch = collate([[1], [2]], [[3, 4, 5], [6, 7]], pad_id=0)
    mask = policy_mask(batch, [[1, 0, 1], None])
    assert mask.tolist() == [[1, 0, 1], [1, 1, 0]]


def test_wilson_interval_and_mcnemar_hand_computed():
    # 8/10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10) = 0.71673, half-width 0.22658
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.49016, 0.94331), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # 6 gained, 1 lost: 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125;  8 vs 0: 2 / 2^8
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact(8, 0) == pytest.approx(2 / 256)
    assert mcnemar_exact(0, 0) == 1.0


def test_compare_pass_rates_pairs_tasks_and_calls_small_changes_noise():
    before = {"a": [True], "b": [False], "c": [False], "d": [True]}
    after = {"a": [True], "b": [True], "c": [False], "d": [True]}
    result = compare_pass_rates(before, after, "x")
    assert result["x_pass_rate_before"] == 0.5 and result["x_pass_rate_after"] == 0.75
    assert result["x_tasks_up"] == 1 and result["x_tasks_down"] == 0 and result["x_sign_test_p"] == 1.0
    assert result["x_verdict"].startswith("no significant change")
    # several samples per task: rates per task, 10 tasks up by a quarter and none down is significant
    many = compare_pass_rates({str(i): [False] * 4 for i in range(20)},
                              {str(i): [True, False, False, False] if i < 10 else [False] * 4 for i in range(20)}, "y")
    assert many["y_verdict"] == "improved" and many["y_sign_test_p"] == pytest.approx(2 / 2 ** 10)
    assert many["y_pass_rate_after"] == pytest.approx(10 * 0.25 / 20)
    assert 0 < many["y_change_ci95_low"] < 0.125 < many["y_change_ci95_high"] <= 0.25
