"""Code rewards through the real sandbox: canonical solutions, each failure kind, schemes, FGO, domain."""
import json
from typing import ClassVar

import pytest

from align.types import Prompt, RewardOutput
from domains.code import CodeDomain, task_prompt
from domains.code.easy import easy_tasks
from domains.code.extract import extract_program
from domains.code.pairs import rank_pairs
from domains.code.rewards import RewardSettings, code_rewards, scheme_reward, score
from domains.code.tasks import load_humaneval

FAST = {"wall_s": 5.0, "per_test_wall_s": 1.0}


def _prompt(program_prompt="def f(x):\n", tests=None, style="completion"):
    tests = tests or [{"call": "f(1)", "expected": 2}, {"call": "f(2)", "expected": 3}, {"call": "f(-1)", "expected": 0}]
    return Prompt(prompt=program_prompt, id="t/f", meta={"entry_point": "f", "tests": tests,
                                                         "code_prompt": program_prompt, "continuation": None,
                                                         "style": style})


def test_every_canonical_solution_passes_and_scores_plus_one():
    tasks = load_humaneval() + easy_tasks()
    prompts = [task_prompt(t, "completion") for t in tasks]
    outputs = code_rewards(prompts, [t.canonical_solution for t in tasks], RewardSettings(wall_s=20.0))
    failures = [(t.task_id, o.parts["status"], o.parts.get("error_type")) for t, o in zip(tasks, outputs)
                if o.reward != 1.0]
    assert failures == []
    assert all(o.parts["tests_passed"] == o.parts["tests_total"] > 0 for o in outputs)


def test_cccs_chat_prompts_open_the_answer_with_the_prefix_and_the_rest_passes():
    tasks = load_humaneval()[:20]
    prompts = [task_prompt(t, "chat", 0.75) for t in tasks]
    for task, prompt in zip(tasks, prompts):
        prefix = prompt.meta["cccs_prefix"]
        assert prompt.meta["assistant_prefix"] == "```python\n" + task.prompt + prefix
        assert prefix + prompt.reference == task.canonical_solution
    assert sum(bool(p.meta["cccs_prefix"]) for p in prompts) >= 10   # most solutions have a branch to cut at
    outputs = code_rewards(prompts, [p.reference + "```\nDone." for p in prompts], RewardSettings(wall_s=20.0))
    assert [o.reward for o in outputs] == [1.0] * len(tasks)


@pytest.mark.parametrize("scheme, expected", [
    ("stepcoder", {"pass": 1.0, "wrong": -0.3, "partial": -0.3, "runtime": -0.6, "timeout": -0.6,
                   "syntax": -1.0, "load": -1.0, "prose": -1.0}),
    ("rltf", {"pass": 1.0, "wrong": -0.3, "partial": -0.3 + 1.3 * 2 / 3, "runtime": -0.6, "timeout": -0.6,
              "syntax": -1.0, "load": -1.0, "prose": -1.0}),
    ("pass_rate", {"pass": 1.0, "wrong": 0.0, "partial": 2 / 3, "runtime": 0.0, "timeout": 0.0,
                   "syntax": 0.0, "load": 0.0, "prose": 0.0}),
])
def test_hand_written_programs_get_their_reward(scheme, expected):
    completions = {
        "pass": "    return x + 1\n",
        "wrong": "    return x * 100\n",
        "partial": "    return x + 1 if x > 0 else 5\n",
        "runtime": "    return x // 0\n",
        "timeout": "    while True:\n        pass\n",
        "syntax": "    return (x +\n",
        "load": "    return x + 1\nraise RuntimeError('at import')\n",
        "prose": "I am not able to write this function.",
    }
    names = list(completions)
    # `load` needs top-level code that runs at import: give it as a fenced full program instead
    texts = [completions[n] if n != "load" else
             "```python\ndef f(x):\n    return x + 1\nimport no_such_module_here\n```" for n in names]
    outputs = code_rewards([_prompt() for _ in names], texts, RewardSettings(scheme=scheme, **FAST))
    got = {n: o.reward for n, o in zip(names, outputs)}
    assert got == pytest.approx(expected)
    statuses = {n: o.parts["status"] for n, o in zip(names, outputs)}
    assert statuses["runtime"] == "runtime_error" and statuses["timeout"] == "timeout"
    assert statuses["syntax"] == "compile_error" and statuses["prose"] == "no_code"
    assert outputs[names.index("runtime")].parts["error_type"] == "ZeroDivisionError"
    assert outputs[names.index("load")].parts["compile_error_kind"] == "load"


def test_load_error_can_count_as_runtime_error():
    text = "```python\nimport no_such_module_here\ndef f(x):\n    return x + 1\n```"
    (output,) = code_rewards([_prompt()], [text], RewardSettings(load_error_as="runtime", **FAST))
    assert output.reward == -0.6 and output.parts["status"] == "runtime_error"


def test_dropped_imports_and_wrong_name_still_run():
    prompt = _prompt("from typing import List\n\n\ndef f(xs: List[int]) -> int:\n",
                     [{"call": "f([1, 2])", "expected": 3}], style="chat")
    text = "Sure:\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```\nIt sums."
    (output,) = code_rewards([prompt], [text], RewardSettings(**FAST))
    assert output.reward == 1.0 and output.parts["renamed_from"] == "total"


def test_error_line_is_mapped_into_the_completion():
    text = "Here:\n```python\ndef f(x):\n    y = 1\n    return x // 0\n```"
    (output,) = code_rewards([_prompt()], [text], RewardSettings(**FAST))
    assert output.parts["status"] == "runtime_error"
    assert text.splitlines()[output.parts["completion_error_line"] - 1] == "    return x // 0"


class _FakeResult:
    status, compile_error_kind, tests, executed_lines, wall_s, stderr = "sandbox_error", None, [], None, 0.0, ""
    error: ClassVar[dict] = {"type": "SandboxError", "message": "bwrap failed", "line": None}


def test_sandbox_error_gives_no_reward_never_a_penalty():
    prompt = _prompt()
    extraction = extract_program("    return x + 1\n", prompt.meta["code_prompt"], "f")
    output = score(prompt, "    return x + 1\n", extraction, _FakeResult(), RewardSettings())
    assert output.reward is None and output.parts["status"] == "sandbox_error"
    assert scheme_reward("rltf", "sandbox_error", 0, 3) is None


def test_fgo_mask_from_the_sandbox_trace_masks_the_untaken_branch():
    prompt = _prompt(tests=[{"call": "f(5)", "expected": 5}])
    completion = "    if x < 0:\n        return -x\n    return x\n"
    lines = completion.splitlines(keepends=True)
    offsets, position = [], 0
    for line in lines:  # one token per line, plus an EOS with an empty span
        offsets.append((position, position + len(line)))
        position += len(line)
    offsets.append((position, position))
    (output,) = code_rewards([prompt], [completion], RewardSettings(**FAST), completion_offsets=[offsets])
    assert output.reward == 1.0
    assert output.token_mask == [1, 0, 1, 1]
    (broken,) = code_rewards([prompt], ["    return (\n"], RewardSettings(**FAST),
                             completion_offsets=[[(0, 10), (10, 13)]])
    assert broken.token_mask == [1, 1]   # a compile error trains on the whole completion


def test_domain_prompts_reward_and_curriculum():
    domain = CodeDomain(tasks="easy", prompt_style="completion", cccs=True, cccs_fractions=[0.5, 0.0],
                        cccs_window=2, cccs_threshold=1.0, wall_s=5.0)
    train = list(domain.prompts("train"))
    assert len(train) == len(domain.tasks("train")) and train[0].meta["cccs_fraction"] == 0.5
    canonical = {t.task_id: t.canonical_solution for t in domain.tasks("train")}
    # one-line easy solutions have no cut point: the "prefix" is empty and the reference is the whole body
    outputs = domain.reward(train[:2], [canonical[p.id] for p in train[:2]])
    assert [o.reward for o in outputs] == [1.0, 1.0]
    assert domain.curriculum.stage == 0  # scoring alone (evaluation, shims) never moves the curriculum
    domain.observe(train[:2], outputs)   # the trainer shows it the training batch of every process
    assert domain.curriculum.stage == 1 and domain.curriculum.events[-1]["pass_rate"] == 1.0
    assert domain.log()["cccs_stage"] == 1
    restored = CodeDomain(tasks="easy", prompt_style="completion", cccs=True, cccs_fractions=[0.5, 0.0],
                          cccs_window=2, cccs_threshold=1.0)
    restored.load_state_dict(domain.state_dict())  # what a PPO checkpoint keeps
    assert restored.curriculum.stage == 1
    assert next(iter(domain.prompts("train"))).meta["cccs_fraction"] == 0.0
    with pytest.raises(ValueError, match="python -m domains.code.pairs"):
        domain.preferences("train")


def test_execution_labelled_pairs_prefer_passing_then_higher_reward():
    prompt = _prompt()
    outs = [RewardOutput(1.0, {"status": "passed"}), RewardOutput(-0.3, {"status": "failed"}),
            RewardOutput(-1.0, {"status": "compile_error"}), RewardOutput(None, {"status": "sandbox_error"}),
            RewardOutput(-0.3, {"status": "failed"})]
    texts = ["good", "wrong", "broken", "lost", "wrong too"]
    pairs = rank_pairs(prompt, texts, outs, max_pairs=10)
    assert (pairs[0].chosen, pairs[0].rejected) == ("good", "broken")   # pass over fail, largest gap first
    assert all(p.chosen != "lost" and p.rejected != "lost" for p in pairs)
    assert ("wrong", "wrong too") not in {(p.chosen, p.rejected) for p in pairs}   # equal rewards: no pair
    assert {(p.chosen, p.rejected) for p in pairs} >= {("good", "wrong"), ("wrong", "broken")}
    assert pairs[0].margin == pytest.approx(2.0) and pairs[0].extra["pass_over_fail"]


def test_pairs_file_round_trips_through_the_preference_loader(tmp_path):
    from domains.code.pairs import write_pairs

    pairs = rank_pairs(_prompt(), ["a", "b"], [RewardOutput(1.0, {"status": "passed"}),
                                               RewardOutput(-0.6, {"status": "runtime_error"})])
    path = tmp_path / "pairs.jsonl"
    write_pairs(pairs, path)
    domain = CodeDomain(tasks="easy", pairs=str(path), eval_pairs=str(path))
    (loaded,) = domain.preferences("test")
    assert (loaded.chosen, loaded.rejected, loaded.margin) == ("a", "b", pytest.approx(1.6))
    assert json.loads(path.read_text())["rejected_status"] == "runtime_error"


def test_an_expected_output_that_depends_on_string_hash_order_is_dropped(tmp_path, monkeypatch):
    """compute_expected runs the canonical solution twice under two string-hash seeds: a tuple built from a set
    of strings comes out in another order, so that call is dropped (a flaky expectation otherwise)."""
    from domains.code.tasks import CodeTask, compute_expected

    monkeypatch.setenv("ALIGN_CACHE_DIR", str(tmp_path))
    words = [f"word{i}" for i in range(24)]
    task = CodeTask(task_id="t/sets", prompt="def f(ordered):\n", entry_point="f",
                    canonical_solution=f"    words = set({words!r})\n"
                                       "    return tuple(sorted(words)) if ordered else tuple(words)\n",
                    tests=[{"call": "f(True)", "atol": 0.0, "pending": True},
                           {"call": "f(False)", "atol": 0.0, "pending": True}])
    counts = compute_expected([task], {"t/sets": ["f(True)", "f(False)"]}, progress=False)
    assert counts["dropped_unstable"] == 1
    assert task.tests == [{"call": "f(True)", "expected": tuple(sorted(words)), "atol": 0.0}]
