"""`align eval judge=...` end to end through the command line: completion files or generated policies,
summary.json with the win / tie / lose keys, verdicts.jsonl, report.md with its plot, the human judge's two
runs, and the config errors."""
from __future__ import annotations

import csv
import json

import pytest

from align import cli
from align.config import ConfigError, load_config
from align.eval.evaluate import Config

PROMPTS = [{"id": f"q{i}", "prompt": f"Question number {i}?"} for i in range(6)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from align.models import load_reward_model

    root = tmp_path_factory.mktemp("judged")
    load_reward_model("tiny-bert").save_pretrained(root / "rm")
    return {"root": root, "rm": str(root / "rm"), "prompts": write_jsonl(root / "prompts.jsonl", PROMPTS),
            # A by id in shuffled order, B by position: both reading paths
            "a": write_jsonl(root / "a.jsonl", [{"id": p["id"], "completion": f"A says {i}"}
                                                for i, p in reversed(list(enumerate(PROMPTS)))]),
            "b": write_jsonl(root / "b.jsonl", [{"completion": f"B says {i}" if i % 2 else f"A says {i}"}
                                                for i in range(len(PROMPTS))])}


def read(path):
    return json.loads(path.read_text())


def test_rm_judge_on_completion_files_writes_summary_verdicts_and_report(files, tmp_path):
    out = tmp_path / "rm"
    code = cli.main(["eval", "judge=rm", f"judge_options.model={files['rm']}", f"data={files['prompts']}",
                     f"completions_a={files['a']}", f"completions_b={files['b']}", f"output_dir={out}"])
    assert code == 0
    summary = read(out / "summary.json")
    assert summary["judge"] == "rm" and summary["prompts"] == 6 and summary["n"] == 6
    assert summary["wins"] + summary["ties"] + summary["losses"] == 6
    assert summary["ties"] >= 3                                  # the even prompts have identical completions
    for key in ("win_rate", "tie_rate", "lose_rate", "win_rate_ci95_low", "lose_rate_ci95_high", "sign_test_p"):
        assert key in summary
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [v["id"] for v in verdicts] == [p["id"] for p in PROMPTS]
    assert all(v["winner"] == "tie" for v in verdicts[::2])
    report = (out / "report.md").read_text()
    assert "win_tie_lose.png" in report and (out / "win_tie_lose.png").stat().st_size > 0
    assert "sign test" in report


def test_policies_are_generated_written_and_judged(files, tmp_path):
    out = tmp_path / "gen"
    code = cli.main(["eval", "judge=rm", f"judge_options.model={files['rm']}", f"data={files['prompts']}",
                     "policy_a=tiny-llama", "policy_b=tiny-llama", "max_new_tokens=4", f"output_dir={out}"])
    assert code == 0
    a = [json.loads(line) for line in (out / "completions_a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (out / "completions_b.jsonl").read_text().splitlines()]
    assert [r["id"] for r in a] == [p["id"] for p in PROMPTS] and a == b     # greedy: the same policy twice
    summary = read(out / "summary.json")
    assert summary["ties"] == 6 and summary["sign_test_p"] == 1.0 and summary["policy_a"] == "tiny-llama"


def test_human_judge_exports_then_reads_the_labels(files, tmp_path):
    out = tmp_path / "human"
    common = ["eval", "judge=human", f"data={files['prompts']}", f"completions_a={files['a']}",
              f"completions_b={files['b']}", f"output_dir={out}"]
    assert cli.main(common) == 0
    first = read(out / "summary.json")
    assert first["status"] == "awaiting_labels" and (out / "human" / "pairs.csv").is_file()
    with open(out / "human" / "pairs.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # the annotator prefers B's wording; identical responses tie
        one, two = row["response_1"], row["response_2"]
        row["label"] = "tie" if one == two else ("1" if one.startswith("B") else "2")
    labelled = out / "labelled.csv"
    with open(labelled, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli.main([*common, f"judge_options.labels={labelled}"]) == 0
    summary = read(out / "summary.json")
    assert (summary["wins"], summary["ties"], summary["losses"]) == (0, 3, 3)


def test_a_completions_file_that_misses_a_prompt_is_an_error(files, tmp_path):
    short = write_jsonl(tmp_path / "short.jsonl", [{"id": "q0", "completion": "x"}])
    with pytest.raises(ValueError, match="no completion for 5 prompts"):
        cli.main(["eval", "judge=rm", f"judge_options.model={files['rm']}", f"data={files['prompts']}",
                  f"completions_a={short}", f"completions_b={files['b']}", f"output_dir={tmp_path / 'x'}"])


@pytest.mark.parametrize("overrides, message", [
    (["judge=rm"], "policy_a / completions_a: give exactly one"),
    (["judge=rm", "policy_a=x", "completions_a=a.jsonl", "policy_b=y"], "policy_a / completions_a"),
    (["policy_a=tiny-llama"], "policy_a: only with a judge"),
    (["judge=oracle", "policy_a=x", "policy_b=y"], "judge: expected one of"),
    (["judge=rm", "policy_a=x", "completions_b=missing.jsonl"], "completions_b: file not found"),
])
def test_judge_keys_are_checked_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, None, overrides)
