"""The code reward called the way TRL, OpenRLHF and verl call a reward, without the frameworks (their own
dispatch code calls the shims in tests/test_shims_frameworks.py)."""
import json

import pytest
import torch

from domains.code.easy import easy_tasks
from domains.code.shims import compute_score, reward_func, task_label, trl_reward_func

TASK = next(t for t in easy_tasks() if t.task_id == "easy/add_three")
GOOD = "```python\ndef add_three(x: int) -> int:\n    return x + 3\n```"
BAD = "```python\ndef add_three(x: int) -> int:\n    return x + 4\n```"


def test_trl_reward_funcs_shape_plain_and_conversational():
    reward = trl_reward_func()
    assert reward.__name__ == "code_stepcoder"
    # GRPOTrainer passes prompts, completions, completion_ids, trainer_state and every dataset column
    rewards = reward(prompts=["p1", "p2"], completions=[GOOD, BAD], completion_ids=[[1], [2]],
                     trainer_state=None, label=[task_label(TASK)] * 2)
    assert rewards == [1.0, -0.3]
    conversational = reward(prompts=[[{"role": "user", "content": "p"}]],
                            completions=[[{"role": "assistant", "content": GOOD}]], task_id=["easy/add_three"])
    assert conversational == [1.0]


def test_openrlhf_reward_func_signature():
    prompts = ["<|user|>write add_three", "<|user|>write add_three"]
    queries = [prompts[0] + GOOD, prompts[1] + "no code here"]
    result = reward_func(queries, prompts, [task_label(TASK), "easy/add_three"])
    assert torch.equal(result["rewards"], torch.tensor([1.0, -1.0]))
    assert torch.equal(result["scores"], torch.tensor([1.0, 0.0]))
    assert result["extra_logs"]["sandbox_errors"].item() == 0


def test_verl_compute_score_single_and_batched():
    score = compute_score("code", GOOD, task_label(TASK), extra_info={"index": 0})
    assert score["score"] == 1.0 and score["status"] == "passed" and score["dropped"] is False
    # verl's single-sample managers: singular keywords
    keywords = compute_score(data_source="code", solution_str=BAD, ground_truth="easy/add_three", extra_info={})
    assert keywords["score"] == -0.3 and keywords["pass_ratio"] == 0.0
    # verl's batch manager: plural keywords, a list back (the old signature raised TypeError here)
    batch = compute_score(data_sources=["code", "code"], solution_strs=[GOOD, BAD],
                          ground_truths=[task_label(TASK), json.loads(task_label(TASK))], extra_infos=[{}, {}])
    assert [s["score"] for s in batch] == [1.0, -0.3] and batch[1]["pass_ratio"] == 0.0
    positional = compute_score(["code", "code"], [GOOD, BAD], [task_label(TASK)] * 2, [{}, {}])
    assert [s["score"] for s in positional] == [1.0, -0.3]
    assert compute_score(solution_strs=[GOOD], ground_truths=["easy/add_three"], scheme="pass_rate")[0]["score"] == 1.0


def test_verl_compute_score_rejects_what_it_cannot_read():
    with pytest.raises(TypeError, match="not both"):
        compute_score(solution_str=GOOD, solution_strs=[GOOD], ground_truth="easy/add_three")
    with pytest.raises(TypeError, match="missing solution_str"):
        compute_score(data_source="code", ground_truth="easy/add_three")
    with pytest.raises(ValueError, match="ground_truths has 1 entries for 2 solutions"):
        compute_score(solution_strs=[GOOD, BAD], ground_truths=["easy/add_three"])
