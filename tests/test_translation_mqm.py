"""MQM parsing and scoring, preference pairs, the document split, users' preference files."""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from domains.translation import mqm
from domains.translation.parallel import (
    TranslationDataError,
    format_prompt,
    load_user_preferences,
    parse_prompt,
)

HEADER = "\t".join(mqm.COLUMNS)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "translation" / "mqm-ted-zhen"


def row(system, seg, target, category, severity, doc="talk.1", rater="r1", source="我们<v>看到</v>光。"):
    return f"{system}\t{doc}\t1\t{seg}\t{rater}\t{source}\t{target}\t{category}\t{severity}"


def write_tsv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def handwritten(tmp_path) -> Path:
    return write_tsv(tmp_path / "mqm.tsv", [
        # A: one Major accuracy error (5) and one Minor punctuation error (0.1) -> -5.1
        row("A", "1", "We <v>saw</v> light.", "Accuracy/Mistranslation", "Major"),
        row("A", "1", "We saw light<v>.</v>", "Fluency/Punctuation", "Minor"),
        # B: perfect -> 0
        row("B", "1", "We see light.", "No-error", "No-error"),
        # C: Minor style (1) + Minor grammar (1) -> -2 (elegance -1, expressiveness -1)
        row("C", "1", "We <v>are seeing</v> the light.", "Style/Awkward", "Minor"),
        row("C", "1", "We are seeing <v>the</v> light.", "Fluency/Grammar", "Minor"),
        # D: non-translation (25)
        row("D", "1", "<v>我们看到光。</v>", "Non-translation", "Major"),
        # E: two raters (-5 and -1) -> mean -3; Source error counts in overall only
        row("E", "1", "We <v>watch</v> light.", "Terminology/Inappropriate for context", "Major", rater="r1"),
        row("E", "1", "We watch light<v>.</v>", "Source error", "Minor", rater="r2"),
        # another document
        row("A", "2", "Thanks.", "No-error", "No-error", doc="talk.2", source="谢谢。"),
        row("B", "2", "<v>Thank</v>.", "Fluency/Grammar", "Major", doc="talk.2", source="谢谢。"),
    ])


def by_system(scores, seg="1"):
    return {s.system: s for s in scores if s.seg_id == seg}


def test_weights_and_aspects_of_handwritten_rows(handwritten):
    scores, skipped = mqm.load_mqm(handwritten)
    assert skipped == Counter()
    got = by_system(scores)
    assert got["A"].score == pytest.approx(-5.1)
    assert got["A"].aspect_scores == pytest.approx({"faithfulness": -5.0, "expressiveness": -0.1, "elegance": 0.0})
    assert got["B"].score == 0.0 and got["B"].aspect_scores == {"faithfulness": 0.0, "expressiveness": 0.0,
                                                                 "elegance": 0.0}
    assert got["C"].score == -2.0
    assert got["C"].aspect_scores == {"faithfulness": 0.0, "expressiveness": -1.0, "elegance": -1.0}
    assert got["D"].score == -25.0 and got["D"].aspect_scores["faithfulness"] == -25.0
    assert got["E"].raters == 2
    assert got["E"].score == -3.0  # (5 + 1) / 2 raters
    assert got["E"].aspect_scores["faithfulness"] == -2.5  # the source error is in no aspect


def test_span_markers_are_stripped(handwritten):
    scores, _ = mqm.load_mqm(handwritten)
    got = by_system(scores)
    assert got["A"].target == "We saw light."
    assert got["A"].source == "我们看到光。"
    assert all("<v>" not in s.target and "</v>" not in s.source for s in scores)


def test_bad_rows_are_counted_or_raise_with_line_and_field(tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", [row("A", "1", "ok", "No-error", "No-error"),
                                            row("B", "1", "x", "Accuracy/Omission", "Critical")])
    scores, skipped = mqm.load_mqm(path)
    assert len(scores) == 1 and skipped == Counter({"bad_severity": 1})
    with pytest.raises(mqm.MQMError, match=r"bad.tsv:3: field 'severity'"):
        mqm.load_mqm(path, strict=True)
    short = tmp_path / "short.tsv"
    short.write_text(HEADER + "\nA\tdoc\t1\n")
    with pytest.raises(mqm.MQMError, match=r"short.tsv:2: expected 9 tab-separated fields, got 3"):
        mqm.load_mqm(short)
    wrong_header = tmp_path / "header.tsv"
    wrong_header.write_text("system\tdoc\n")
    with pytest.raises(mqm.MQMError, match="header.tsv:1: expected the header"):
        mqm.load_mqm(wrong_header)


def test_pairs_have_aspect_margin_and_gap(handwritten):
    scores, _ = mqm.load_mqm(handwritten)
    pairs = mqm.build_pairs([s for s in scores if s.seg_id == "1"], lambda src: f"P:{src}", min_gap=1.0)
    found = {(p.extra["chosen_system"], p.extra["rejected_system"], p.aspect): p.margin for p in pairs}
    # overall: B(0) > C(-2) > E(-3) > A(-5.1) > D(-25); every gap >= 1
    assert found[("B", "A", "overall")] == pytest.approx(5.1)
    assert found[("C", "E", "overall")] == 1.0
    assert sum(a == "overall" for *_, a in found) == 10  # all C(5,2) system pairs
    # faithfulness: A -5, B 0, C 0, D -25, E -2.5; B and C tie -> no pair between them
    assert ("B", "C", "faithfulness") not in found and ("C", "B", "faithfulness") not in found
    assert found[("E", "A", "faithfulness")] == 2.5
    # expressiveness: A -0.1 vs B 0 is below the gap
    assert ("B", "A", "expressiveness") not in found
    assert found[("B", "C", "expressiveness")] == 1.0
    pair = next(p for p in pairs if p.extra["chosen_system"] == "B" and p.extra["rejected_system"] == "A"
                and p.aspect == "overall")
    assert pair.prompt == "P:我们看到光。" and pair.chosen == "We see light." and pair.rejected == "We saw light."
    # a larger gap keeps fewer pairs
    assert len(mqm.build_pairs(scores, str, min_gap=3.0)) < len(mqm.build_pairs(scores, str, min_gap=1.0))


def test_identical_translations_make_no_pair(tmp_path):
    path = write_tsv(tmp_path / "same.tsv", [row("A", "1", "Same.", "No-error", "No-error"),
                                             row("B", "1", "<v>Same</v>.", "Style/Awkward", "Major")])
    scores, _ = mqm.load_mqm(path)
    counts = Counter()
    assert mqm.build_pairs(scores, str, counts=counts) == []
    # the overall gap (5) and the elegance gap (5) qualify; both pairs are dropped and counted
    assert counts["identical_translations"] == 2


def test_document_split_keeps_documents_whole():
    scores = [mqm.SegmentScore(system, f"doc{d}", f"{d}-{s}", f"src{d}-{s}", "t", 0.0, {})
              for d in range(5) for s in range(d + 2) for system in ("A", "B")]
    train, test = mqm.split_documents(scores, test_fraction=0.2, seed=0)
    assert train and test and not train & test and train | test == {f"doc{d}" for d in range(5)}
    train_sources = {s.source for s in scores if s.doc in train}
    test_sources = {s.source for s in scores if s.doc in test}
    assert not train_sources & test_sources
    assert mqm.split_documents(scores, 0.2, seed=0) == (train, test)  # reproducible
    assert mqm.split_documents(scores, test_docs=["doc3"])[1] == {"doc3"}
    with pytest.raises(ValueError, match="unknown documents"):
        mqm.split_documents(scores, test_docs=["nope"])


def test_prompt_format_round_trip():
    prompt = format_prompt(" 我爱你 ", "zh", "en")
    assert prompt == "Translate this from Chinese to English:\nChinese: 我爱你\nEnglish:"
    assert parse_prompt(prompt) == ("我爱你", "zh", "en")
    assert parse_prompt(format_prompt("I love you", "en", "zh")) == ("I love you", "en", "zh")
    assert parse_prompt("Human: hi\n\nAssistant:") is None


def test_user_preference_file(tmp_path):
    path = tmp_path / "prefs.jsonl.gz"
    rows = [{"source": "我爱你", "chosen": "I love you", "rejected": "I like you", "aspect": "faithfulness",
             "margin": 2},
            {"source": "谢谢", "chosen": "Thanks", "rejected": "Thank"},
            {"source": "x", "chosen": "", "rejected": "y"},
            {"source": "x", "chosen": "a", "rejected": "b", "aspect": "beauty"}]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{not json\n")
    pairs, skipped = load_user_preferences(path)
    assert [p.aspect for p in pairs] == ["faithfulness", "overall"]
    assert pairs[0].margin == 2.0 and pairs[1].margin is None
    assert pairs[0].prompt == format_prompt("我爱你", "zh", "en")
    assert skipped == Counter({"bad_field": 2, "bad_json": 1})
    with pytest.raises(TranslationDataError, match=r"prefs.jsonl.gz:3: field 'chosen'"):
        load_user_preferences(path, strict=True)


@pytest.mark.slow
def test_real_mqm_scores_match_the_dataset_averages():
    """Our scoring reproduces the dataset's own avg_seg_scores.tsv for every rated translation."""
    if not (SHARED / "mqm_ted_zhen.tsv.gz").exists():
        pytest.skip(reason=f"real MQM data not found in {SHARED}")
    scores, skipped = mqm.load_mqm(SHARED / "mqm_ted_zhen.tsv.gz")
    assert not skipped
    expected = {}
    for line in (SHARED / "mqm_ted_zhen.avg_seg_scores.tsv").read_text().splitlines()[1:]:
        system, rest = line.split("\t")
        value, seg = rest.split(" ")
        expected[({"ref-A": "ref", "ref-B": "refB"}.get(system, system), seg)] = value
    assert len(scores) == 7935
    for score in scores:
        assert float(expected[(score.system, score.seg_id)]) == pytest.approx(score.score, abs=1e-9)
