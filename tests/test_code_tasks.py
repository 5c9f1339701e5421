"""Code tasks: easy set, HumanEval loader, check splitting, generic JSONL errors, pass@k, CCCS."""
import json

import pytest

from domains.code.cccs import CCCSSchedule, Curriculum, choose_cut, split_points, stage_prompt
from domains.code.easy import easy_tasks, split_easy
from domains.code.passk import mean_pass_at_k, pass_at_k
from domains.code.tasks import CodeTask, TaskError, call_source, load_humaneval, load_jsonl_tasks, split_check


def test_easy_set_is_deterministic_and_canonical_solutions_pass_in_process():
    first, second = easy_tasks(seed=3), easy_tasks(seed=3)
    assert [t.task_id for t in first] == [t.task_id for t in second]
    assert [t.tests for t in first] == [t.tests for t in second]
    assert easy_tasks(seed=4)[0].tests != first[0].tests or easy_tasks(seed=4)[0].task_id != first[0].task_id
    assert 200 <= len(first) <= 500 and len({t.task_id for t in first}) == len(first)
    train, held_out = split_easy(first)
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    assert len(held_out) == round(0.2 * len(first))
    task = next(t for t in first if t.task_id == "easy/add_three")
    assert task.canonical_solution == "    return x + 3\n"
    assert all(test["expected"] == eval(test["call"].replace("add_three", "3 + "), {}) for test in task.tests)


def test_humaneval_loader_splits_check_into_asserts():
    tasks = load_humaneval()
    assert len(tasks) == 164
    first = tasks[0]
    assert first.task_id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert len(first.tests) == 7 and all("assert" in t and "candidate = has_close_elements" in t["assert"]
                                         for t in first.tests)


def test_split_check_keeps_loops_whole_and_skips_assert_true():
    with_loop = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == x\n"
    assert split_check(with_loop, "f") == [{"assert": with_loop + "\ncheck(f)\n"}]
    asserts = "def check(candidate):\n    assert candidate(1) == 1\n    assert True, 'noise'\n    assert candidate(2) == 2\n"
    tests = split_check(asserts, "f")
    assert len(tests) == 2 and tests[1]["assert"].endswith("assert candidate(2) == 2\n")


def test_call_source_round_trips_tuples_and_infinities():
    assert call_source("f", [[1, 2], (3,), float("inf"), "a"]) == "f([1, 2], (3, ), float('inf'), 'a')"


def test_generic_jsonl_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "tasks.jsonl"
    good = {"task_id": "t/0", "prompt": "def f(x):\n", "entry_point": "f", "canonical_solution": "    return x\n",
            "tests": [{"call": "f(1)", "expected": 1}, {"args": [2], "expected": 2}, {"assert": "assert f(3) == 3"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"task_id": "t/1", "prompt": "x", "tests": []}) + "\n")
    with pytest.raises(TaskError, match=r"tasks.jsonl:2: field `entry_point` is missing"):
        load_jsonl_tasks(path)
    path.write_text(json.dumps(good) + "\n")
    (task,) = load_jsonl_tasks(path)
    assert task.tests[1] == {"call": "f(2)", "expected": 2, "atol": 0.0}
    bad_test = dict(good, tests=[{"nothing": 1}])
    path.write_text(json.dumps(bad_test) + "\n")
    with pytest.raises(TaskError, match=r"tasks.jsonl:1: field `tests\[0\]`"):
        load_jsonl_tasks(path)


def test_pass_at_k_matches_hand_computed_values():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 5) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # 1 - C(8,5)/C(10,5) = 1 - 56/252
    assert pass_at_k(10, 2, 5) == pytest.approx(1 - 56 / 252)
    assert pass_at_k(4, 2, 3) == 1.0  # any 3 of 4 include a pass
    assert mean_pass_at_k([(5, 1), (5, 0)], [1]) == {1: pytest.approx(0.1)}
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)


SOLUTION_TASK = CodeTask(
    task_id="t", entry_point="f", tests=[], prompt="def f(xs):\n    \"\"\"Doc.\"\"\"\n",
    canonical_solution=("    total = 0\n"          # 0
                        "    count = 0\n"          # 1
                        "    for x in xs:\n"       # 2 branch
                        "        total += x\n"     # 3
                        "    if total > 10:\n"     # 4 branch
                        "        total = 10\n"     # 5
                        "    count = len(xs)\n"    # 6
                        "    return total\n"))     # 7


def test_cccs_split_points_prefer_branches():
    points = split_points(SOLUTION_TASK)
    assert [(p.line, p.kind) for p in points] == [(1, "statement"), (2, "branch"), (3, "statement"),
                                                  (4, "branch"), (5, "statement"), (6, "statement"),
                                                  (7, "statement")]
    assert choose_cut(SOLUTION_TASK, 0.75) == 4   # 0.75 * 8 = 6 -> the latest branch at or before line 6
    assert choose_cut(SOLUTION_TASK, 0.3) == 2
    assert choose_cut(SOLUTION_TASK, 0.2) == 0    # no branch at or before line 1.6 -> full generation
    assert choose_cut(SOLUTION_TASK, 0.0) == 0
    prompt, prefix = stage_prompt(SOLUTION_TASK, 0.75)
    assert prefix.endswith("        total += x\n") and prompt == SOLUTION_TASK.prompt + prefix
    no_branch = CodeTask("u", "def g(a):\n", "g", [], "    b = a + 1\n    c = b * 2\n    return c\n")
    assert choose_cut(no_branch, 0.7) == 2  # statement points when there is no branch


def test_cccs_schedule_advances_on_pass_rate_and_logs():
    curriculum = Curriculum(CCCSSchedule(fractions=[0.75, 0.5, 0.0], threshold=0.5, window=4))
    assert curriculum.fraction == 0.75
    assert not curriculum.record([True, False, False])       # window not full yet
    assert not curriculum.record([False])                    # 1/4 < 0.5
    assert curriculum.record([True, True])                   # last 4: F, F, T, T -> 0.5
    assert curriculum.stage == 1 and curriculum.fraction == 0.5
    assert curriculum.record([True] * 4) and curriculum.finished and curriculum.fraction == 0.0
    assert not curriculum.record([True] * 4)                 # stays at full generation
    assert [e["stage"] for e in curriculum.events] == [0, 1, 2]
    assert curriculum.events[1] == {"stage": 1, "fraction": 0.5, "at_sample": 6, "pass_rate": 0.5}
    state = curriculum.state_dict()
    restored = Curriculum(CCCSSchedule(fractions=[0.75, 0.5, 0.0], threshold=0.5, window=4))
    restored.load_state_dict(state)
    assert restored.log()["cccs_stage"] == 2
    with pytest.raises(ValueError, match="non-increasing"):
        CCCSSchedule(fractions=[0.2, 0.5]).validate()


def test_easy_tiers_keep_a_tier_without_moving_the_split():
    from domains.code.domain import CodeDomain

    every = CodeDomain(tasks="easy")
    two_step = CodeDomain(tasks="easy", tiers=["two-step"])
    for split in ("train", "test"):
        kept = [t.task_id for t in every.tasks(split) if t.meta["tier"] == "two-step"]
        assert [t.task_id for t in two_step.tasks(split)] == kept and 0 < len(kept) < len(every.tasks(split))
    with pytest.raises(ValueError, match="tiers"):
        CodeDomain(tasks="humaneval", tiers=["two-step"])
    with pytest.raises(ValueError, match="tiers"):
        CodeDomain(tasks="easy", tiers=["three-step"])
