"""The frozen-encoder translation RM: Bradley-Terry heads on alignment features, saved and loaded by the domain."""
from __future__ import annotations

import numpy as np
import pytest

from align.types import PreferencePair
from domains.translation.embedding_rm import (
    FEATURES,
    EmbeddingRewardModel,
    SentenceEncoder,
    fit_bradley_terry,
    is_embedding_rm,
    pair_features,
    rows_by_head,
    source_script_share,
    train_embedding_rm,
)


def test_bradley_terry_fit_hand_computed():
    # symmetric evidence: no preference, w = 0
    assert np.allclose(fit_bradley_terry(np.array([[1.0], [-1.0]]), l2=1e-3), 0.0, atol=1e-6)
    # d = [2] three times, [-2] once: the unregularised optimum has sigma(2w) = 3/4, w = ln(3)/2
    w = fit_bradley_terry(np.array([[2.0], [2.0], [2.0], [-2.0]]), l2=0.0)
    assert w[0] == pytest.approx(np.log(3) / 2, abs=1e-4)
    # weights count a pair several times
    weighted = fit_bradley_terry(np.array([[2.0], [-2.0]]), l2=0.0, weights=np.array([3.0, 1.0]))
    assert weighted[0] == pytest.approx(np.log(3) / 2, abs=1e-4)
    # L2 shrinks towards 0
    assert 0 < fit_bradley_terry(np.array([[2.0], [2.0], [2.0], [-2.0]]), l2=1.0)[0] < w[0]


def _states(rows):
    tokens = np.array(rows, dtype=np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    vector = tokens.mean(0)
    return tokens.astype(np.float16), vector / np.linalg.norm(vector)


def test_alignment_features_see_an_omission():
    source = _states([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    full = pair_features(source, _states([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "abc", "xyz")
    omitted = pair_features(source, _states([[1, 0, 0], [0, 1, 0]]), "abc", "xy")
    names = dict(zip(FEATURES, range(len(FEATURES))))
    assert full[names["coverage"]] == pytest.approx(1.0) and full[names["precision"]] == pytest.approx(1.0)
    assert omitted[names["coverage"]] == pytest.approx(2 / 3, abs=1e-3)  # one source token has no match
    assert omitted[names["precision"]] == pytest.approx(1.0)  # nothing added
    assert omitted[names["log_length_ratio"]] == pytest.approx(np.log(2 / 3))
    assert len(pair_features(source, source, "a", "a", reference=source, pooled=True)) == len(FEATURES) + 4 + 9


def test_source_script_share_names_untranslated_words():
    assert source_script_share("Moscow denies the report.", "莫斯科否认该报道。") == 0.0
    assert source_script_share("Moscow denies the report.", "莫斯科否认 the report。") == pytest.approx(2 / 7)
    assert source_script_share("莫斯科否认该报道。", "Moscow denies the 报道") == pytest.approx(2 / 5)
    # mostly in the source's script: the language guard's business, and a same-script pair says nothing
    assert source_script_share("Moscow denies the report.", "Moscow denies the report.") == 0.0
    assert source_script_share("", "anything") == 0.0


def test_a_model_saved_before_a_feature_existed_scores_without_it(trained, tmp_path):
    import json

    model, _, rows = trained
    old = tmp_path / "old-rm"
    model.save(old)
    meta = json.loads((old / "embedding_rm.json").read_text())
    meta["features"] = [f for f in meta["features"] if f != "source_script_share"]
    (old / "embedding_rm.json").write_text(json.dumps(meta))
    keep = [FEATURES.index(f) for f in meta["features"]]
    arrays = np.load(old / "weights.npz")
    np.savez(old / "weights.npz", weights=arrays["weights"][:, keep], mean=arrays["mean"][keep],
             std=arrays["std"][keep])
    loaded = EmbeddingRewardModel.load(old)
    assert loaded.base_features == meta["features"]
    assert loaded.score([rows[0][0]], [rows[0][1]]).shape == (1, 2)


def test_rows_by_head_routes_aspects_and_needs_references():
    pairs = [PreferencePair(prompt="p", chosen="good", rejected="bad", aspect=a, margin=2.0,
                            extra={"source_text": s}) for a, s in [("overall", "甲"), ("elegance", "乙"), ("x", "丙")]]
    rows = rows_by_head(pairs, ["overall", "elegance"])
    assert [r[0] for r in rows["overall"]] == ["甲", "丙"] and [r[0] for r in rows["elegance"]] == ["乙"]
    with_reference = rows_by_head(pairs, ["overall", "elegance"], references={"甲": "ref"})
    assert with_reference == {"overall": [("甲", "good", "bad", "ref", 2.0)]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny-bert encoder and an RM fitted on a toy task: the chosen translation repeats the source's words."""
    words = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "music"]
    rows = [(f"{a} {b} {c}", f"{a} {b} {c}", f"{a}", None, 5.0)
            for a, b, c in zip(words, words[1:] + words[:1], words[2:] + words[:2])]
    model = train_embedding_rm({"overall": rows, "faithfulness": rows}, backbone="tiny-bert",
                               encoder=SentenceEncoder("tiny-bert"))
    directory = tmp_path_factory.mktemp("rm") / "embedding-rm"
    model.save(directory)
    return model, directory, rows


def test_fitted_model_prefers_chosen_and_round_trips(trained):
    model, directory, rows = trained
    scores = model.score([r[0] for r in rows] * 2, [r[1] for r in rows] + [r[2] for r in rows])
    assert scores.shape == (2 * len(rows), 2)
    assert (scores[: len(rows), 0] > scores[len(rows):, 0]).mean() >= 0.75
    assert is_embedding_rm(directory) and not is_embedding_rm(directory.parent)
    loaded = EmbeddingRewardModel.load(directory)
    assert loaded.head_names == ["overall", "faithfulness"] and loaded.backbone == "tiny-bert"
    assert np.allclose(loaded.score([rows[0][0]], [rows[0][1]]), model.score([rows[0][0]], [rows[0][1]]), atol=1e-5)


def test_domain_scores_with_an_embedding_rm_on_its_device(trained):
    import torch

    from domains.translation.domain import TranslationDomain
    from domains.translation.parallel import make_prompt

    _, directory, rows = trained
    domain = TranslationDomain(reward_model=str(directory))
    domain.place(torch.device("cpu"), torch.float32)
    heads = domain.head_rewards([make_prompt(rows[0][0], "zh", "en")], [rows[0][1]])
    assert set(heads[0]) == {"overall", "faithfulness"}
    assert domain.reward_model.encoder._model.device.type == "cpu"
    assert domain.scoring_model()[0] == "tiny-bert"  # what runs on the device (align plan sizes it)
    with pytest.raises(ValueError, match="reference"):
        EmbeddingRewardModel(["overall"], np.zeros((1, 14)), np.zeros(14), np.ones(14), "tiny-bert",
                             use_reference=True).score(["a"], ["b"], [None])


def test_users_en_zh_preference_file_fits_and_scores(tmp_path):
    """The documented path for users' own en→zh preferences: a JSONL file -> fit_rm -> the domain's reward."""
    import json

    from domains.translation.domain import TranslationDomain
    from domains.translation.fit_rm import fit

    rows = [{"source": f"The {w} costs {n} dollars.", "chosen": f"这个{c}要{n}美元。", "rejected": f"这个{c}。",
             "reference": f"这个{c}要{n}美元。", "src_lang": "en", "tgt_lang": "zh",
             "aspect": "faithfulness" if n % 2 else "overall"}
            for n, (w, c) in enumerate([("apple", "苹果"), ("lamp", "灯"), ("book", "书"), ("chair", "椅子")] * 10)]
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    domain = TranslationDomain(data=str(data), direction="en-zh", test_fraction=0.25)
    summary = fit(domain, tmp_path / "rm", backbone="tiny-bert", use_reference=True)
    assert summary["train_pairs_overall"] > 0 and summary["train_pairs_faithfulness"] > 0
    scored = TranslationDomain(direction="en-zh", reward_model=str(tmp_path / "rm"))
    prompts = [p for p in TranslationDomain(data=str(data), direction="en-zh").preferences("test")][:2]
    from domains.translation.parallel import make_prompt

    asked = [make_prompt(p.extra["source_text"], "en", "zh", reference=p.extra["reference"]) for p in prompts]
    outputs = scored.reward(asked, [p.chosen for p in prompts])
    assert all("head_overall" in o.parts and not o.parts["guards_failed"] for o in outputs)
