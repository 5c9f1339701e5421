"""The reward shims called by TRL, verl and OpenRLHF's own reward-call code, at the versions `make bench-env`
installs into .bench-site (TRL 1.16.0, verl 0.9.1, OpenRLHF 0.11.2; each test asserts the version it ran):

- TRL: a real `GRPOTrainer` (tiny LLaMA policy, CPU) and its `_calculate_rewards`, the method that calls every
  `reward_funcs` entry with prompts, completions, completion ids, the trainer state and the dataset's columns.
- verl: the legacy `naive` and `batch` reward managers and the reward loop's `naive` manager (verl 0.9's default)
  run over a rollout batch; the shim files are loaded by verl's `load_extern_object`, as
  `custom_reward_function.path` does. verl itself cannot be imported here (its package imports ray and
  tensordict), so these modules are loaded from the installed files under stand-ins for the packages above them
  (tests/framework_dispatch.py says which names are stubbed: DataProto, ray's event-loop helper, omegaconf).
  `custom_reward_function.reward_kwargs` are passed the way verl merges them: as keyword arguments
  (`functools.partial` stands for verl's `_call_with_kwargs`).
- OpenRLHF: `SingleTurnAgentExecutor(remote_rm_url=<shim file>)`, which loads `reward_func` from the file and
  calls it after a generation (a stand-in vLLM engine returns the completion's tokens), loaded from the
  installed file under a stand-in `openrlhf.utils` package (whose `__init__` needs deepspeed).
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from framework_dispatch import framework_version, openrlhf_reward, verl_batch, verl_modules, verl_rewards

from align.data import render_prompt, response_separator
from align.models import load_reward_model, load_tokenizer, resolve_model_path, score_texts
from domains.code.easy import easy_tasks
from domains.code.shims import task_label
from domains.translation.parallel import format_prompt
from domains.translation.shims import OPTIONS_ENV, translation_label

ROOT = Path(__file__).resolve().parents[1]
CODE_SHIMS = ROOT / "domains" / "code" / "shims.py"
TRANSLATION_SHIMS = ROOT / "domains" / "translation" / "shims.py"
RM_SHIMS = ROOT / "align" / "models" / "shims.py"

TASK = next(t for t in easy_tasks() if t.task_id == "easy/add_three")
GOOD = "```python\ndef add_three(x: int) -> int:\n    return x + 3\n```"
BAD = "```python\ndef add_three(x: int) -> int:\n    return x + 4\n```"
SOURCE = "我今天去了商店买了三个苹果。"
REFERENCE = "I went to the store today and bought three apples."
WRONG_NUMBER = "I went to the store today and bought five apples."
TRANSLATION_OPTIONS = {"reward": {"metric_weights": {"chrf": 1.0}}}
PINNED = {"trl": "1.16.0", "verl": "0.9.1", "openrlhf": "0.11.2"}


@pytest.fixture(scope="module")
def policy_tokenizer():
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    """A saved two-head reward model (tiny BERT, fresh heads): what `align rm` writes in model/."""
    directory = tmp_path_factory.mktemp("rm") / "model"
    torch.manual_seed(0)
    load_reward_model("tiny-bert", num_heads=2, head_names=["helpful", "harmless"]).save_pretrained(directory)
    return directory


def rm_expected(model_dir: Path, prompts: list, completions: list[str], head: int) -> list[float]:
    """The reward as `align` computes it: the prompt rendered as in training, the separator, the completion."""
    from align.models import RewardModel

    model = RewardModel.from_pretrained(model_dir).eval()
    texts = [render_prompt(p, model.tokenizer) + response_separator(render_prompt(p, model.tokenizer)) + c
             for p, c in zip(prompts, completions)]
    return score_texts(model, texts)[:, head].tolist()


# --------------------------------------------------------------------------- TRL


def test_trl_grpo_trainer_calls_the_code_translation_and_rm_shims(tmp_path, monkeypatch, reward_model_dir):
    assert framework_version("trl") == PINNED["trl"]
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from align.models.shims import rm_reward_func
    from domains.code.shims import trl_reward_func as code_reward_func
    from domains.translation.shims import trl_reward_func as translation_reward_func

    rows = [{"prompt": "Write add_three.", "label": task_label(TASK), "translation": translation_label(SOURCE, REFERENCE)},
            {"prompt": format_prompt(SOURCE), "label": "easy/add_three", "translation": REFERENCE},
            {"prompt": format_prompt(SOURCE), "label": "easy/add_three", "translation": REFERENCE}]
    funcs = [code_reward_func(), translation_reward_func(label_column="translation", **TRANSLATION_OPTIONS),
             rm_reward_func(str(reward_model_dir), head="harmless")]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=8, report_to="none", use_cpu=True, save_strategy="no")
    trainer = GRPOTrainer(model=resolve_model_path("tiny-llama"), reward_funcs=funcs, args=args,
                          train_dataset=Dataset.from_list(rows))
    assert trainer.reward_func_names == ["code_stepcoder", "translation", "rm_harmless"]

    prompts, completions = [r["prompt"] for r in rows], [GOOD, REFERENCE, WRONG_NUMBER]
    rewards = trainer._calculate_rewards(rows, prompts, completions, [[1, 2], [3], [4]])
    assert rewards[:, 0].tolist() == [1.0, -1.0, -1.0]  # code: passes; a translation has no code
    # translation: the reference itself (chrF 100, every guard passed); a changed number fails the numbers guard
    assert rewards[1:, 1].tolist() == pytest.approx([1.0, -5.0]) and -5.0 < rewards[0, 1].item() < 1.0
    assert rewards[:, 2].tolist() == pytest.approx(rm_expected(reward_model_dir, prompts, completions, head=1))

    conversational = [[{"role": "user", "content": p}] for p in prompts]
    chat = trainer._calculate_rewards(rows, conversational, [[{"role": "assistant", "content": c}] for c in completions],
                                      [[1, 2], [3], [4]])
    assert chat[:, 0].tolist() == [1.0, -1.0, -1.0] and chat[1:, 1].tolist() == pytest.approx([1.0, -5.0])
    assert chat[:, 2].tolist() == pytest.approx(rm_expected(reward_model_dir, conversational, completions, head=1))


# --------------------------------------------------------------------------- verl

MANAGERS = ["naive", "batch", "loop_naive"]


def test_verl_version():
    assert framework_version("verl") == PINNED["verl"]


@pytest.mark.parametrize("manager", MANAGERS)
def test_verl_managers_call_the_code_shim(manager, policy_tokenizer):
    compute_score = verl_modules().load_extern_object(module_path=str(CODE_SHIMS), object_name="compute_score")
    batch = verl_batch(policy_tokenizer, ["Write add_three."] * 3, [GOOD, BAD, "no code at all"],
                       [task_label(TASK), "easy/add_three", task_label(TASK)], [{"index": i} for i in range(3)])
    rewards, extra = verl_rewards(manager, compute_score, policy_tokenizer, batch)
    assert rewards == pytest.approx([1.0, -0.3, -1.0])
    assert extra["status"] == ["passed", "failed", "no_code"] and extra["dropped"] == [False] * 3


@pytest.mark.parametrize("manager", MANAGERS)
def test_verl_managers_call_the_translation_shim_with_reward_kwargs(manager, policy_tokenizer):
    raw = verl_modules().load_extern_object(module_path=str(TRANSLATION_SHIMS), object_name="compute_score")
    compute_score = functools.partial(raw, **TRANSLATION_OPTIONS)  # custom_reward_function.reward_kwargs
    label = translation_label(SOURCE, REFERENCE)
    batch = verl_batch(policy_tokenizer, [format_prompt(SOURCE)] * 2, [REFERENCE, WRONG_NUMBER], [label, label],
                       [{}, {}])
    rewards, extra = verl_rewards(manager, compute_score, policy_tokenizer, batch)
    assert rewards == pytest.approx([1.0, -5.0])
    assert extra["guards_failed"] == ["", "numbers"]


@pytest.mark.parametrize("manager", MANAGERS)
def test_verl_managers_call_the_reward_model_shim(manager, policy_tokenizer, reward_model_dir):
    raw = verl_modules().load_extern_object(module_path=str(RM_SHIMS), object_name="compute_score")
    compute_score = functools.partial(raw, model_dir=str(reward_model_dir), head="helpful")
    prompts, completions = ["How do I boil an egg?", "Tell me a joke."], ["Put it in boiling water.", "No."]
    batch = verl_batch(policy_tokenizer, prompts, completions, [None, None], [{"prompt": p} for p in prompts])
    rewards, extra = verl_rewards(manager, compute_score, policy_tokenizer, batch)
    assert rewards == pytest.approx(rm_expected(reward_model_dir, prompts, completions, head=0), abs=1e-5)
    assert extra["head"] == ["helpful", "helpful"]
    with pytest.raises(ValueError, match=r"extra_info\.prompt"):
        verl_rewards(manager, compute_score, policy_tokenizer,
                     verl_batch(policy_tokenizer, prompts, completions, [None, None], [{}, {}]))


# --------------------------------------------------------------------------- OpenRLHF


def test_openrlhf_executor_calls_the_code_shim(policy_tokenizer):
    assert framework_version("openrlhf") == PINNED["openrlhf"]
    prompt = "<|user|>Write add_three.<|assistant|>"
    passed = openrlhf_reward(CODE_SHIMS, policy_tokenizer, prompt, GOOD, task_label(TASK))
    failed = openrlhf_reward(CODE_SHIMS, policy_tokenizer, prompt, BAD, "easy/add_three")
    assert passed["reward"].tolist() == [1.0] and passed["scores"].tolist() == [1.0]
    assert failed["reward"].tolist() == pytest.approx([-0.3]) and failed["scores"].tolist() == [0.0]
    assert passed["extra_logs"]["sandbox_errors"].item() == 0


def test_openrlhf_executor_calls_the_translation_shim(policy_tokenizer, monkeypatch):
    import json

    monkeypatch.setenv(OPTIONS_ENV, json.dumps(TRANSLATION_OPTIONS))
    prompt = format_prompt(SOURCE)
    right = openrlhf_reward(TRANSLATION_SHIMS, policy_tokenizer, prompt, " " + REFERENCE, REFERENCE)
    wrong = openrlhf_reward(TRANSLATION_SHIMS, policy_tokenizer, prompt, " " + WRONG_NUMBER, REFERENCE)
    assert right["reward"].tolist() == pytest.approx([1.0]) and right["scores"].tolist() == [1.0]
    assert wrong["reward"].tolist() == [-5.0] and wrong["scores"].tolist() == [0.0]


def test_openrlhf_executor_calls_the_reward_model_shim(policy_tokenizer, reward_model_dir, monkeypatch):
    monkeypatch.setenv("ALIGN_RM_DIR", str(reward_model_dir))
    prompt, response = "How do I boil an egg?", " Put it in boiling water."
    out = openrlhf_reward(RM_SHIMS, policy_tokenizer, prompt, response, None)
    assert out["reward"].tolist() == pytest.approx(rm_expected(reward_model_dir, [prompt], [response], 0), abs=1e-5)
