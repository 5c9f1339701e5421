"""`align eval domain=code` end to end with a tiny random policy; HumanEval+-format loading."""
import gzip
import json
from pathlib import Path

import pytest

from align.eval.evaluate import Config, run
from domains.code.tasks import HUMANEVALPLUS_PATH, MBPPPLUS_PATH, load_humanevalplus, load_mbppplus


def test_align_eval_code_writes_pass_at_k_and_status_report(tmp_path):
    config = Config(model="tiny-llama", domain="code", output_dir=str(tmp_path / "eval"),
                    domain_options={"tasks": "easy", "limit": 3, "prompt_style": "completion", "wall_s": 5.0},
                    options={"num_samples": 2, "k": [1, 2], "max_new_tokens": 8, "temperature": 1.0})
    summary = run(config)
    assert summary["tasks"] == 3 and summary["num_samples"] == 2
    assert 0.0 <= summary["pass@1"] <= summary["pass@2"] <= 1.0
    statuses = sum(v for k, v in summary.items() if k.startswith("status_"))
    assert statuses == 6
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "pass@2 (unbiased estimator)" in report and (tmp_path / "eval" / "status_counts.png").stat().st_size > 0
    assert len((tmp_path / "eval" / "samples.jsonl").read_text().splitlines()) == 6
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["pass@2"] == summary["pass@2"]


def test_eval_rejects_k_above_n(tmp_path):
    config = Config(model="tiny-llama", domain="code", output_dir=str(tmp_path / "eval"),
                    domain_options={"tasks": "easy", "limit": 1}, options={"num_samples": 2, "k": [5]})
    with pytest.raises(ValueError, match="options.k"):
        run(config)


def test_plus_format_expected_outputs_come_from_the_canonical_solution(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_CACHE_DIR", str(tmp_path / "cache"))
    row = {"task_id": "X/0", "prompt": "def halve(x):\n", "entry_point": "halve",
           "canonical_solution": "    return x / 2\n", "base_input": [[3], [4.5]], "plus_input": [[1e9]],
           "atol": 1e-6, "contract": "", "test": ""}
    broken = dict(row, task_id="X/1", canonical_solution="    return 1 / (x - 3)\n")
    path = tmp_path / "plus.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(row) + "\n" + json.dumps(broken) + "\n")
    first, second = load_humanevalplus(path, progress=False)
    assert first.tests == [{"call": "halve(3)", "expected": 1.5, "atol": 1e-6},
                           {"call": "halve(4.5)", "expected": 2.25, "atol": 1e-6},
                           {"call": "halve(1000000000.0)", "expected": 5e8, "atol": 1e-6}]
    assert [t["call"] for t in second.tests] == ["halve(4.5)", "halve(1000000000.0)"]  # x=3 crashed: dropped
    cached = list((tmp_path / "cache" / "code_expected").glob("*.json"))
    assert len(cached) == 2
    again = load_humanevalplus(path, progress=False)   # from the cache: same tests
    assert again[0].tests == first.tests


def test_mbpp_contract_tuples_are_passed_as_tuples(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_CACHE_DIR", str(tmp_path / "cache"))
    row = {"task_id": "Mbpp/1", "prompt": '"""\nWrite a function.\n"""\n', "entry_point": "first",
           "canonical_solution": "\ndef first(tup, n):\n  return tup[:n]\n",
           "contract": '\n  assert isinstance(tup, tuple), "invalid inputs" # $_CONTRACT_$\n',
           "base_input": [[[1, 2, 3], 2]], "plus_input": [], "atol": 0, "assertion": ""}
    path = tmp_path / "MbppPlus.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (task,) = load_mbppplus(path, progress=False)
    assert task.tests == [{"call": "first((1, 2, 3, ), 2)", "expected": (1, 2), "atol": 0.0}]


@pytest.mark.slow
@pytest.mark.skipif(not Path(HUMANEVALPLUS_PATH).exists(), reason="../shared/data/code is not present")
def test_real_humanevalplus_and_mbppplus_canonical_solutions_pass():
    from domains.code.prompts import task_prompt
    from domains.code.rewards import RewardSettings, code_rewards

    for tasks in (load_humanevalplus(max_tests=20), load_mbppplus(MBPPPLUS_PATH, max_tests=20)):
        assert len(tasks) > 100
        prompts = [task_prompt(t, "completion") for t in tasks]
        # correctness, not speed: sum(range(10**8)) (Mbpp/599) or catalan_number(15) (Mbpp/583) outlast the
        # reward's 3 s per test on a loaded 2-core machine
        outputs = code_rewards(prompts, [t.canonical_solution for t in tasks],
                               RewardSettings(wall_s=120.0, per_test_wall_s=30.0))
        assert [t.task_id for t, o in zip(tasks, outputs) if o.reward != 1.0] == []


@pytest.mark.slow
def test_demo_stage_runs_smollm2(tmp_path):
    from domains.code.demo import demo_stage

    summary = demo_stage(tmp_path, num_tasks=2, num_easy=4, progress=False)
    assert summary["code_easy_tasks"] == 4 and summary["code_humaneval_cccs_tasks"] == 2
    assert (tmp_path / "code_demo.json").exists()
    passed = round(summary["code_easy_pass@1"] * 4)
    assert f"{passed}/4 held-out easy tasks" in summary["verdict"] and Path(summary["plot"]).is_file()
