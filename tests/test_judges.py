"""Judges: win / tie / lose figures on hand-counted verdicts, and each judge's position swap and ties
(rm, execution through the real sandbox, metric), plus the human round trip."""
from __future__ import annotations

import csv
import json

import pytest

from align.config import ConfigError
from align.data import DataError
from align.eval.judges import (
    HumanJudge,
    LabelsPending,
    Verdict,
    excluded,
    make_judge,
    verdict_from_scores,
    win_tie_lose,
)
from align.eval.stats import mcnemar_exact, sign_test, wilson_interval
from align.types import Prompt

MIRROR = {"a": "b", "b": "a", "tie": "tie"}


def winners(verdicts):
    return [v.winner for v in verdicts]


# --------------------------------------------------------------------------- statistics


def test_sign_test_on_hand_computed_values():
    assert sign_test(6, 2) == pytest.approx(2 * (1 + 8 + 28) / 256)   # 2 * P(X <= 2), X ~ Bin(8, 1/2)
    assert sign_test(2, 6) == sign_test(6, 2)
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    assert mcnemar_exact(6, 1) == sign_test(6, 1) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        sign_test(-1, 2)


def test_win_tie_lose_counts_rates_intervals_and_leaves_excluded_pairs_out():
    verdicts = [Verdict("a")] * 6 + [Verdict("tie")] * 2 + [Verdict("b")] * 2 + [excluded("no_reward")] * 3
    summary = win_tie_lose(verdicts)
    assert (summary["wins"], summary["ties"], summary["losses"], summary["n"]) == (6, 2, 2, 10)
    assert (summary["win_rate"], summary["tie_rate"], summary["lose_rate"]) == (0.6, 0.2, 0.2)
    assert (summary["win_rate_ci95_low"], summary["win_rate_ci95_high"]) == wilson_interval(6, 10)
    assert (summary["lose_rate_ci95_low"], summary["lose_rate_ci95_high"]) == wilson_interval(2, 10)
    assert summary["sign_test_p"] == pytest.approx(2 * (1 + 8 + 28) / 256)
    assert summary["excluded"] == 3 and summary["excluded_no_reward"] == 3


def test_win_tie_lose_of_nothing_judged():
    summary = win_tie_lose([excluded("unlabelled")])
    assert summary["n"] == 0 and summary["win_rate"] == 0.0 and summary["sign_test_p"] == 1.0
    assert summary["win_rate_ci95_low"] == 0.0 and summary["win_rate_ci95_high"] == 1.0


def test_scores_decide_with_a_tie_band():
    assert verdict_from_scores(1.0, 0.5).winner == "a"
    assert verdict_from_scores(0.5, 1.0).winner == "b"
    assert verdict_from_scores(0.7, 0.7).winner == "tie"
    assert verdict_from_scores(1.0, 0.5, tie_band=0.5).winner == "tie"      # |difference| <= band
    assert verdict_from_scores(1.0, 0.4, tie_band=0.5).winner == "a"
    with pytest.raises(ValueError):
        Verdict("draw")


def test_make_judge_names_unknown_kinds_and_options():
    with pytest.raises(ConfigError, match="expected one of rm, execution, metric, llm, human"):
        make_judge("gpt")
    with pytest.raises(ConfigError, match="tiebreak unknown to the rm judge"):
        make_judge("rm", model="x", tiebreak=1)
    with pytest.raises(ConfigError, match="judge_options.model"):
        make_judge("rm")


# --------------------------------------------------------------------------- rm


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    from align.models import load_reward_model

    path = tmp_path_factory.mktemp("rm") / "model"
    load_reward_model("tiny-bert").save_pretrained(path)
    return path


PROMPTS = [Prompt(prompt="How do I make tea?", id="p0"),
           Prompt(prompt=[{"role": "user", "content": "What is the capital of France?"}], id="p1"),
           Prompt(prompt="Say something kind.", id="p2")]
SIDE_A = ["Boil water and steep the leaves.", "Paris.", "You are doing great."]
SIDE_B = ["I don't know.", "The capital of France is Paris, known for the Eiffel Tower.", "No."]


def test_rm_judge_follows_the_scores_and_mirrors_under_a_position_swap(rm_dir):
    judge = make_judge("rm", model=str(rm_dir))
    forward = judge.judge(PROMPTS, SIDE_A, SIDE_B)
    backward = judge.judge(PROMPTS, SIDE_B, SIDE_A)
    scores_a, scores_b = judge.scores(PROMPTS, SIDE_A), judge.scores(PROMPTS, SIDE_B)
    assert winners(forward) == ["a" if x > y else "b" for x, y in zip(scores_a, scores_b)]
    assert winners(backward) == [MIRROR[w] for w in winners(forward)]
    assert [v.detail["score_a"] for v in forward] == pytest.approx(scores_a, abs=1e-5)


def test_rm_judge_ties_identical_completions_and_everything_inside_the_band(rm_dir):
    assert winners(make_judge("rm", model=str(rm_dir)).judge(PROMPTS, SIDE_A, SIDE_A)) == ["tie"] * 3
    assert winners(make_judge("rm", model=str(rm_dir), tie_band=1e6).judge(PROMPTS, SIDE_A, SIDE_B)) == ["tie"] * 3
    with pytest.raises(ConfigError, match="head"):
        make_judge("rm", model=str(rm_dir), head="harmless")


# --------------------------------------------------------------------------- execution (code, real sandbox)


@pytest.fixture(scope="module")
def code_prompts():
    from align.registry import get_domain

    domain = get_domain("code", tasks="easy", wall_s=5.0)
    return domain, list(domain.prompts("test"))[:2]


def fenced(code: str) -> str:
    return f"```python\n{code}```"


def test_execution_judge_pass_beats_fail_both_ways_and_equal_outcomes_tie(code_prompts):
    domain, prompts = code_prompts
    passing = [fenced(p.reference) for p in prompts]
    failing = [fenced(p.meta["code_prompt"] + "    return None\n") for p in prompts]
    judge = make_judge("execution", domain=domain)
    mixed_a, mixed_b = [passing[0], failing[1]], [failing[0], passing[1]]
    forward = judge.judge(prompts, mixed_a, mixed_b)
    assert winners(forward) == ["a", "b"]
    assert forward[0].detail["status_a"] == "passed" and forward[0].detail["status_b"] != "passed"
    assert winners(judge.judge(prompts, mixed_b, mixed_a)) == ["b", "a"]
    assert winners(judge.judge(prompts, passing, passing)) == ["tie", "tie"]
    syntax_error = [fenced("def broken(:\n"), fenced("def broken(:\n")]
    assert winners(judge.judge(prompts, failing, syntax_error)) == ["tie", "tie"]  # neither passes


def test_execution_judge_refuses_a_domain_without_test_statuses():
    with pytest.raises(ValueError, match="no `status`"):
        make_judge("execution", domain="translation").judge([Prompt(prompt="x", reference="y")], ["a"], ["b"])


# --------------------------------------------------------------------------- metric (translation)


def translation_prompt(source: str, reference: str | None) -> Prompt:
    return Prompt(prompt=f"Translate this from Chinese to English:\nChinese: {source}\nEnglish:", reference=reference,
                  meta={"source": source, "src_lang": "zh", "tgt_lang": "en"})


def test_metric_judge_prefers_the_translation_closer_to_the_reference_both_ways():
    prompts = [translation_prompt("今天天气很好。", "The weather is nice today."),
               translation_prompt("我喜欢猫。", "I like cats.")]
    good, bad = ["The weather is nice today.", "I like cats."], ["Tomorrow it rains hard.", "Dogs bark loudly."]
    judge = make_judge("metric", metric="chrf")
    assert winners(judge.judge(prompts, good, bad)) == ["a", "a"]
    assert winners(judge.judge(prompts, bad, good)) == ["b", "b"]
    assert winners(judge.judge(prompts, good, good)) == ["tie", "tie"]
    assert winners(make_judge("metric", metric="bleu", tie_band=100.0).judge(prompts, good, bad)) == ["tie", "tie"]
    verdict = judge.judge(prompts, good, bad)[0]
    assert verdict.detail["score_a"] == pytest.approx(100.0) and verdict.detail["metric"] == "chrf"


def test_metric_judge_excludes_prompts_without_a_reference_and_needs_a_reference_domain():
    prompts = [translation_prompt("我喜欢猫。", None)]
    verdicts = make_judge("metric").judge(prompts, ["I like cats."], ["x"])
    assert verdicts[0].excluded == "no_reference" and win_tie_lose(verdicts)["n"] == 0
    with pytest.raises(TypeError, match="reference_metric"):
        make_judge("metric", domain="hh")
    with pytest.raises(ValueError, match="chrf or bleu"):
        make_judge("metric", metric="meteor").judge(prompts, ["a"], ["b"])


# --------------------------------------------------------------------------- human


def annotate(export_dir, prefer: str, path_name="labelled.csv", blank: set[int] = frozenset()):
    """Play the annotator: label the response containing `prefer` as better (tie when both or neither do)."""
    with open(export_dir / "pairs.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows):
        first, second = prefer in row["response_1"], prefer in row["response_2"]
        row["label"] = "" if number in blank else ("tie" if first == second else ("1" if first else "2"))
    with open(export_dir / path_name, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return export_dir / path_name, rows


HUMAN_PROMPTS = [Prompt(prompt=f"Question {i}?", id=f"q{i}") for i in range(12)]
HUMAN_A = [f"answer {i} GOOD" if i % 3 else f"answer {i}" for i in range(12)]   # A wins 8, ties 4
HUMAN_B = [f"reply {i}" for i in range(12)]


def test_human_round_trip_blinds_shuffles_and_maps_labels_back(tmp_path):
    export_dir = tmp_path / "human"
    with pytest.raises(LabelsPending, match="12 blinded pairs"):
        HumanJudge(export_dir=export_dir, seed=3).judge(HUMAN_PROMPTS, HUMAN_A, HUMAN_B)
    labels, rows = annotate(export_dir, "GOOD")
    assert list(rows[0]) == ["id", "prompt", "response_1", "response_2", "label"]        # no side, no policy name
    shown_index = [int(r["prompt"].split()[1].rstrip("?")) for r in rows]
    assert shown_index != sorted(shown_index)                                            # rows are shuffled
    a_first = [r["response_1"].startswith("answer") for r in rows]
    assert any(a_first) and not all(a_first)                                             # so are the positions
    jsonl = [json.loads(line) for line in (export_dir / "pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in jsonl] == [r["id"] for r in rows] and all(r["label"] == "" for r in jsonl)

    verdicts = HumanJudge(export_dir=export_dir, labels=str(labels)).judge(HUMAN_PROMPTS, HUMAN_A, HUMAN_B)
    assert winners(verdicts) == ["a" if "GOOD" in a else "tie" for a in HUMAN_A]
    summary = win_tie_lose(verdicts)
    assert (summary["wins"], summary["ties"], summary["losses"]) == (8, 4, 0)


def test_human_labels_in_jsonl_blank_rows_excluded_and_swapped_sides(tmp_path):
    export_dir = tmp_path / "human"
    with pytest.raises(LabelsPending):
        HumanJudge(export_dir=export_dir).judge(HUMAN_PROMPTS, HUMAN_B, HUMAN_A)      # A and B exchanged
    _, rows = annotate(export_dir, "GOOD", blank={0, 1})
    labels = export_dir / "labelled.jsonl"
    labels.write_text("".join(json.dumps({"id": r["id"], "label": r["label"]}) + "\n" for r in rows))
    verdicts = HumanJudge(export_dir=export_dir, labels=str(labels)).judge(HUMAN_PROMPTS, HUMAN_B, HUMAN_A)
    summary = win_tie_lose(verdicts)
    assert summary["excluded_unlabelled"] == 2 and summary["n"] == 10 and summary["wins"] == 0
    judged = [v for v in verdicts if v.excluded is None]
    assert all(v.winner == "b" for v in judged if v.detail["label"] != "tie")


def test_human_import_names_file_line_and_field_of_bad_labels(tmp_path):
    export_dir = tmp_path / "human"
    with pytest.raises(LabelsPending):
        HumanJudge(export_dir=export_dir).judge(HUMAN_PROMPTS, HUMAN_A, HUMAN_B)
    labels, rows = annotate(export_dir, "GOOD")
    rows[4]["label"] = "A"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    judge = HumanJudge(export_dir=export_dir, labels=str(labels))
    with pytest.raises(DataError, match=r"labelled.csv:6: field `label`: expected 1, 2 or tie"):
        judge.judge(HUMAN_PROMPTS, HUMAN_A, HUMAN_B)
    (export_dir / "dup.jsonl").write_text('{"id": "pair-0001", "label": "1"}\n{"id": "pair-0001", "label": "2"}\n')
    with pytest.raises(DataError, match=r"dup.jsonl:2: field `id`: pair-0001 is labelled twice"):
        HumanJudge(export_dir=export_dir, labels=str(export_dir / "dup.jsonl")).judge(HUMAN_PROMPTS, HUMAN_A, HUMAN_B)
    (export_dir / "unknown.jsonl").write_text('{"id": "pair-9999", "label": "1"}\n')
    with pytest.raises(DataError, match="not a pair of this export"):
        HumanJudge(export_dir=export_dir, labels=str(export_dir / "unknown.jsonl")).judge(HUMAN_PROMPTS, HUMAN_A,
                                                                                         HUMAN_B)


def test_human_labels_apply_only_to_the_completions_they_were_given_for(tmp_path):
    export_dir = tmp_path / "human"
    with pytest.raises(LabelsPending):
        HumanJudge(export_dir=export_dir).judge(HUMAN_PROMPTS, HUMAN_A, HUMAN_B)
    labels, _ = annotate(export_dir, "GOOD")
    changed = list(HUMAN_B)
    changed[5] = "a different reply"
    with pytest.raises(ConfigError, match="exported for another prompt or other completions"):
        HumanJudge(export_dir=export_dir, labels=str(labels)).judge(HUMAN_PROMPTS, HUMAN_A, changed)
