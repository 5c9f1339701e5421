"""The code reward called the way TRL, OpenRLHF and verl call a reward (frameworks not installed)."""
import json

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
    assert score["score"] == 1.0 and score["status"] == "passed"
    batch = compute_score(["code", "code"], [GOOD, BAD], [task_label(TASK), json.loads(task_label(TASK))], [{}, {}])
    assert [s["score"] for s in batch] == [1.0, -0.3] and batch[1]["pass_ratio"] == 0.0
