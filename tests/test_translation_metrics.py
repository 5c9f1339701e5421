"""sacrebleu metrics with the right settings per target language, on known strings."""
from __future__ import annotations

import pytest
import sacrebleu

from domains.translation.metrics import (
    corpus_scores,
    sentence_bleu,
    sentence_chrf,
    sentence_scores,
    sentence_ter,
)


def test_chinese_bleu_needs_the_zh_tokenizer():
    hypothesis, reference = "我爱北京天安门", "我爱北京天安门"
    # sacrebleu's default tokenizer sees one token per Chinese sentence: no n-gram beyond 1, BLEU 0
    assert sacrebleu.corpus_bleu([hypothesis], [[reference]]).score == 0.0
    assert corpus_scores([hypothesis], [reference], tgt_lang="zh")["bleu"] == pytest.approx(100.0)
    # a partial match scores between the extremes only with character tokens
    partial = sentence_bleu("我爱北京", "我爱北京天安门", tgt_lang="zh")
    assert 0.0 < partial < 100.0
    assert sentence_bleu("我爱北京", "我爱北京天安门", tgt_lang="en") == 0.0


def test_english_bleu_by_hand():
    # precisions 5/6, 3/5, 2/4, 1/3, same length (BP 1): BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert sentence_bleu("the cat sat on a mat", "the cat sat on the mat") == pytest.approx(expected, rel=1e-6)
    assert sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert sentence_bleu("dogs bark loudly", "the cat sat on the mat") == pytest.approx(0.0, abs=1e-9)


def test_chrf_word_order_by_language():
    assert sentence_chrf("我爱你", "我爱你", tgt_lang="zh") == pytest.approx(100.0)
    assert sentence_chrf("他", "我爱你", tgt_lang="zh") == 0.0
    # Chinese: character n-grams only (word_order 0); English: chrF++ (word_order 2) -> they differ
    chrf_pp = sentence_chrf("the cat sat", "the cat sat down", tgt_lang="en")
    plain = sacrebleu.sentence_chrf("the cat sat", ["the cat sat down"]).score
    assert chrf_pp != pytest.approx(plain)
    assert sentence_chrf("the cat sat", "the cat sat", tgt_lang="en") == pytest.approx(100.0)


def test_ter_by_hand():
    # 3 words missing from a 6-word reference: 3 edits / 6 = 50%
    assert sentence_ter("the cat sat", "the cat sat on the mat") == pytest.approx(50.0)
    # one substitution in 4 Chinese characters: 25%
    assert sentence_ter("我爱北京", "我爱上京", tgt_lang="zh") == pytest.approx(25.0)
    # without character splitting the whole sentence would be one wrong word
    assert sacrebleu.sentence_ter("我爱北京", ["我爱上京"]).score == pytest.approx(100.0)
    assert sentence_ter("a b", "a b") == 0.0


def test_corpus_and_sentence_lists():
    scores = corpus_scores(["the cat sat on the mat", "a dog"], ["the cat sat on the mat", "the dog"])
    assert set(scores) == {"bleu", "chrf", "ter"}
    assert scores["ter"] == pytest.approx(100 * 1 / 8)  # one substitution over 8 reference words
    assert sentence_scores("ter", ["a b", "a"], ["a b", "a b"]) == pytest.approx([0.0, 50.0])
    with pytest.raises(ValueError, match="metric"):
        sentence_scores("meteor", ["a"], ["a"])
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_scores(["a", "b"], ["a"])
