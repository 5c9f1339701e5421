"""TranslationDomain on a tiny data directory: resolution, splits, prompts, reward, `align eval`."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from align.data import data_dirs
from align.data import splits as data_locations
from align.registry import get_domain
from align.types import Prompt
from domains.translation import TranslationDomain
from domains.translation.mqm import COLUMNS
from domains.translation.reward import soft_floor

SYSTEMS = {  # system -> (category, severity) of its single error, or none
    "ref": ("No-error", "No-error"), "good": ("No-error", "No-error"), "minor": ("Fluency/Grammar", "Minor"),
    "bad": ("Accuracy/Mistranslation", "Major"), "awkward": ("Style/Awkward", "Major")}
SOURCES = ["我们看到了{}颗星星。", "光从{}个方向来。", "他{}岁了。"]
TARGETS = {"ref": "We saw {} stars.", "good": "We could see {} stars.", "minor": "We seen {} stars.",
           "bad": "We saw {} moons.", "awkward": "Stars, {} of them, by us were seen."}


def make_data_dir(root: Path) -> Path:
    rows = ["\t".join(COLUMNS)]
    seg = 0
    for doc in range(4):
        for number in range(3):
            seg += 1
            value = 10 * doc + number + 2
            source = SOURCES[number].format(value)
            for system, (category, severity) in SYSTEMS.items():
                target = TARGETS[system].format(value)
                rows.append("\t".join([system, f"talk.{doc}", str(doc), str(seg), "r1", source, target, category,
                                       severity]))
    (root / "mqm-ted-zhen").mkdir(parents=True)
    with gzip.open(root / "mqm-ted-zhen" / "mqm_ted_zhen.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    alma = root / "alma-zhen"
    alma.mkdir()
    with gzip.open(alma / "train.zh-en.zh.gz", "wt", encoding="utf-8") as f:
        f.write("我爱你\n谢谢\n\n")
    with gzip.open(alma / "train.zh-en.en.gz", "wt", encoding="utf-8") as f:
        f.write("I love you\nThank you\n\n")
    for name in ("valid.zh-en", "test.zh-en", "test.en-zh"):
        with gzip.open(alma / f"{name}.json.gz", "wt", encoding="utf-8") as f:
            json.dump([{"translation": {"zh": "早上好", "en": "Good morning"}}], f, ensure_ascii=False)
    return root


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return make_data_dir(tmp_path / "translation")


def test_data_resolution_order_and_clear_error(tmp_path, data_dir, monkeypatch):
    assert TranslationDomain(data_dir=str(data_dir)).resolve_data_dir() == data_dir
    monkeypatch.setenv("ALIGN_DATA_DIR", str(data_dir.parent))
    assert TranslationDomain().resolve_data_dir() == data_dir
    monkeypatch.delenv("ALIGN_DATA_DIR")
    monkeypatch.setattr(data_locations, "checkout_root", lambda: tmp_path / "nowhere" / "main")
    with pytest.raises(FileNotFoundError, match="translation data not found; looked in .*nowhere"):
        TranslationDomain().preferences("train")


def test_registered_under_its_name(data_dir):
    domain = get_domain("translation", data_dir=str(data_dir), min_gap=2.0)
    assert isinstance(domain, TranslationDomain) and domain.min_gap == 2.0


def test_preferences_split_by_document(data_dir):
    domain = TranslationDomain(data_dir=str(data_dir), test_docs=["talk.3"])
    train, test = domain.preferences("train"), domain.preferences("test")
    assert {p.extra["doc"] for p in train} == {"talk.0", "talk.1", "talk.2"}
    assert {p.extra["doc"] for p in test} == {"talk.3"}
    assert not {p.extra["source_text"] for p in train} & {p.extra["source_text"] for p in test}
    assert {p.aspect for p in train} == {"overall", "faithfulness", "expressiveness", "elegance"}
    pair = next(p for p in train if p.aspect == "faithfulness")
    assert pair.rejected.endswith("moons.") and pair.margin == 5.0
    assert pair.prompt.startswith("Translate this from Chinese to English:\nChinese: ")
    # per segment: overall pairs: ref/good (0) vs minor (-1), bad (-5), awkward (-5) and minor vs bad/awkward = 8
    assert sum(p.aspect == "overall" for p in test) == 3 * 8
    capped = TranslationDomain(data_dir=str(data_dir), test_docs=["talk.3"], max_pairs=5, max_eval_pairs=3)
    assert len(capped.preferences("train")) == 5 and len(capped.preferences("test")) == 3
    assert TranslationDomain(data_dir=str(data_dir), aspects=["faithfulness"]).preferences("train")[0].aspect == \
        "faithfulness"


def test_skip_counts_are_counted_once(tmp_path):
    rows = [("A", "train", "1", "谢谢。", "Thanks.", "No-error", "No-error"),
            ("B", "train", "1", "谢谢。", "Thank.", "Fluency/Grammar", "Major"),
            ("A", "train", "2", "你好。", "Hello.", "No-error", "No-error"),
            ("B", "train", "2", "你好。", "Hello.", "Style/Awkward", "Major"),  # same text, other score
            ("A", "test", "3", "谢谢。", "Thanks!", "No-error", "No-error"),
            ("B", "test", "3", "谢谢。", "Thank.", "Fluency/Grammar", "Major")]
    (tmp_path / "mqm-ted-zhen").mkdir()
    with gzip.open(tmp_path / "mqm-ted-zhen" / "mqm_ted_zhen.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for system, doc, seg, source, target, category, severity in rows:
            f.write(f"{system}\t{doc}\t0\t{seg}\tr1\t{source}\t{target}\t{category}\t{severity}\n")
    domain = TranslationDomain(data_dir=str(tmp_path), test_docs=["test"])
    assert domain.preferences("train") == []
    expected = {"train_translations_of_test_sources": 2, "train_identical_translations": 2}  # overall + elegance
    assert dict(domain.skipped) == expected
    domain.preferences("train")
    assert dict(domain.skipped) == expected  # reading the split again does not count twice
    assert len(domain.preferences("test")) == 2  # overall and expressiveness


def test_other_directions_have_no_mqm_pairs(data_dir):
    with pytest.raises(ValueError, match="the MQM annotations are zh-en"):
        TranslationDomain(data_dir=str(data_dir), direction="en-zh").preferences("train")


def test_prompts_both_directions(data_dir):
    zh_en = TranslationDomain(data_dir=str(data_dir)).prompts("train")
    assert [p.reference for p in zh_en] == ["I love you", "Thank you"]
    assert zh_en[0].prompt == "Translate this from Chinese to English:\nChinese: 我爱你\nEnglish:"
    assert zh_en[0].meta == {"source": "我爱你", "src_lang": "zh", "tgt_lang": "en", "style": "completion",
                             "stop": ["\n"]}
    en_zh = TranslationDomain(data_dir=str(data_dir), direction="en-zh")
    assert en_zh.prompts("train")[1].prompt == "Translate this from English to Chinese:\nEnglish: Thank you\nChinese:"
    assert en_zh.prompts("test")[0].reference == "早上好"
    assert en_zh.sft_examples("valid") == [{"prompt": "Translate this from English to Chinese:\nEnglish: Good morning"
                                            "\nChinese:", "response": "早上好"}]


def test_direction_both_alternates_the_two_directions(data_dir):
    both = TranslationDomain(data_dir=str(data_dir), direction="both").prompts("train")
    assert [(p.meta["src_lang"], p.reference) for p in both] == [
        ("zh", "I love you"), ("en", "我爱你"), ("zh", "Thank you"), ("en", "谢谢")]
    assert [p.id for p in both[:2]] == ["train:zh-en:0", "train:en-zh:0"]
    # the reward reads each prompt's own languages: a Chinese answer to an en->zh prompt passes the language guard
    domain = TranslationDomain(data_dir=str(data_dir), direction="both", reward={"metric_weights": {"chrf": 1.0}})
    good, copied = domain.reward([both[1], both[1]], ["我爱你", "I love you"])
    assert good.parts["metric_chrf"] == pytest.approx(100.0) and not good.parts.get("guards_failed")
    assert "language" in copied.parts["guards_failed"]


def test_reward_without_a_model_is_guards_and_metrics(data_dir):
    domain = TranslationDomain(data_dir=str(data_dir), reward={"metric_weights": {"chrf": 1.0}})
    prompt = domain.prompts("test")[0]
    good, copied = domain.reward([prompt, prompt], ["Good morning", "早上好"])
    assert good.reward == pytest.approx(1.0) and good.parts["metric_chrf"] == pytest.approx(100.0)
    assert copied.reward < 0 and "language" in copied.parts["guards_failed"]
    with pytest.raises(Exception, match="reward.bogus"):
        TranslationDomain(reward={"bogus": 1})


def test_user_preference_file_replaces_mqm(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"source": f"句子{i}", "chosen": f"Sentence {i}", "rejected": "x", "aspect": "elegance"} for i in range(40)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    domain = TranslationDomain(data=str(path), test_fraction=0.25)
    train, test = domain.preferences("train"), domain.preferences("test")
    assert len(train) + len(test) == 40 and train and test
    assert not {p.extra["source_text"] for p in train} & {p.extra["source_text"] for p in test}


def test_align_eval_without_a_reward_model(data_dir, tmp_path):
    from align.eval.evaluate import Config, run

    config = Config(model=str(tmp_path / "not-a-dir"), domain="translation", output_dir=str(tmp_path / "eval"),
                    domain_options={"data_dir": str(data_dir), "test_docs": ["talk.2", "talk.3"]})
    summary = run(config)
    assert summary["sources"] == 6 and summary["translations"] == 6 * 4  # `ref` is the reference, not compared
    for aspect in ("overall", "faithfulness", "expressiveness", "elegance"):
        assert 0.0 <= summary[f"chrf_{aspect}_acc_eq"] <= 1.0
        assert 0.0 <= summary[f"all_ties_{aspect}_acc_eq"] <= 1.0
    # humans: good 0, minor -1, bad -5, awkward -5 -> 1 tie (bad/awkward) of 6 pairs per source
    assert summary["all_ties_overall_acc_eq"] == pytest.approx(1 / 6)
    assert summary["robustness_cases"] > 0 and 0.0 <= summary["robustness_share"] <= 1.0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "acc_eq" in report and "all ties (baseline)" in report and "Robustness" in report


def test_prompt_objects_without_meta_are_parsed(data_dir):
    domain = TranslationDomain(data_dir=str(data_dir))
    prompt = Prompt(prompt="Translate this from Chinese to English:\nChinese: 他12岁了。\nEnglish:")
    [out] = domain.reward([prompt], ["He is 13."])
    assert out.parts["guard_numbers"] is False


def test_reward_and_eval_with_a_multi_head_reward_model(data_dir, tmp_path):
    """An (untrained) tiny 4-head RM saved like `align rm` saves it: heads are scored, normalised on
    calibration translations, combined, and evaluated per aspect."""
    from align.eval.evaluate import Config, run
    from align.models import load_reward_model

    heads = ["overall", "faithfulness", "expressiveness", "elegance"]
    model_dir = tmp_path / "rm"
    load_reward_model("tiny-bert", num_heads=4, head_names=heads).save_pretrained(model_dir)
    domain = TranslationDomain(data_dir=str(data_dir), reward_model=str(model_dir), test_docs=["talk.3"],
                               reward={"calibration_size": 16})
    prompt = domain.prompts("test")[0]
    outputs = domain.reward([prompt, prompt], ["Good morning", "Good morning!"])
    assert {f"head_{h}" for h in heads} <= set(outputs[0].parts)
    stats = domain.head_stats()
    assert set(stats.mean) == set(heads) and all(s > 0 for s in stats.std.values())
    floor = domain.reward_config.guard_reward + 1  # every guard passed: the score, floored
    assert outputs[0].reward == pytest.approx(soft_floor(outputs[0].parts["score"], floor))
    summary = run(Config(model=str(model_dir), domain="translation", output_dir=str(tmp_path / "eval"),
                         domain_options={"data_dir": str(data_dir), "test_docs": ["talk.3"],
                                         "reward": {"calibration_size": 16}}))
    for aspect in ("overall", "faithfulness", "expressiveness", "elegance"):
        assert 0.0 <= summary[f"rm_{aspect}_acc_eq"] <= 1.0
        assert 0.0 <= summary[f"rm_combined_{aspect}_strict_accuracy"] <= 1.0
    assert 0.0 <= summary["robustness_rm_only_share"] <= 1.0
    assert "| overall | rm |" in (tmp_path / "eval" / "report.md").read_text()


def test_reward_model_conditioned_on_the_reference(data_dir, tmp_path):
    """rm_reference: pairs show the reference before the answer and never include the reference system;
    the reward reads each prompt's reference (a prompt without one is an error, not a silent fallback)."""
    from align.models import load_reward_model

    domain = TranslationDomain(data_dir=str(data_dir), test_docs=["talk.3"], rm_reference=True,
                               aspects=["overall"], reward={"calibration_size": 8})
    pairs = domain.preferences("train")
    assert pairs and all("ref" not in (p.extra["chosen_system"], p.extra["rejected_system"]) for p in pairs)
    for pair in pairs:
        number = "".join(c for c in pair.extra["source_text"] if c.isdigit())
        assert pair.prompt.splitlines()[-2:] == [f"Reference English: We saw {number} stars.", "English:"]
    plain = TranslationDomain(data_dir=str(data_dir), test_docs=["talk.3"], aspects=["overall"])
    assert len(plain.preferences("train")) > len(pairs)  # pairs with the reference system are gone

    model_dir = tmp_path / "rm"
    load_reward_model("tiny-bert").save_pretrained(model_dir)
    domain.reward_model_path = str(model_dir)
    seen = []
    score = domain.head_rewards
    domain.head_rewards = lambda prompts, completions: seen.extend(domain.rm_prompt(
        p.meta["source"], p.reference) for p in prompts) or score(prompts, completions)
    prompt = domain.prompts("test")[0]
    [out] = domain.reward([prompt], ["Good morning"])
    assert "head_overall" in out.parts and seen[-1].splitlines()[-2] == "Reference English: Good morning"
    with pytest.raises(ValueError, match="rm_reference=true.*has none"):
        score([Prompt(prompt=prompt.prompt, meta=prompt.meta)], ["Good morning"])


def test_configs_load():
    from align.config import load_config
    from align.ppo.config import Config as PPOConfig
    from align.rm.train import Config as RMConfig

    root = Path(__file__).resolve().parents[1] / "configs" / "translation"
    rm = load_config(RMConfig, str(root / "rm_minilm.yaml"), [])
    assert rm.domain == "translation" and rm.heads == ["overall", "faithfulness", "expressiveness", "elegance"]
    assert load_config(RMConfig, str(root / "rm_llama7b.yaml"), []).model == "meta-llama/Llama-2-7b-hf"
    ppo = load_config(PPOConfig, str(root / "ppo_llama7b_lora.yaml"), [])
    assert ppo.lora.enabled and ppo.domain_reward
    # the domain options of the PPO config build a domain (the reward config is validated there)
    options = {k: v for k, v in ppo.domain_options.items() if k != "reward_model"}
    assert TranslationDomain(**options).reward_config.metric_weights == {"chrf": 1.0}


@pytest.mark.slow
def test_demo_stage_on_the_real_data(tmp_path):
    """The `make demo` stage end to end (tiny backbone, a few steps) on the shared MQM data."""
    if not (data_dirs("translation")[-1] / "mqm-ted-zhen").is_dir():
        pytest.skip(reason="real MQM data not found in ../shared/data/translation")
    from domains.translation.demo import demo_stage

    summary = demo_stage(TranslationDomain(), tmp_path, backbone="tiny-bert", policy="tiny-llama", train_pairs=32,
                         eval_sources=4, policy_sentences=2, progress=False)
    assert summary["sources"] == 4 and summary["rm_train_pairs"] == 32
    assert 0.0 <= summary["rm_overall_acc_eq"] <= 1.0 and summary["robustness_cases"] > 0
    assert "policy_zh_en_chrf" in summary and "policy_en_zh_mean_reward" in summary
    assert (tmp_path / "report.md").exists() and (tmp_path / "rm" / "embedding_rm.json").is_file()
    # the overview's row: a verdict with the RM's figure, and the strict-accuracy plot the report shows
    assert summary["verdict"].startswith("tiny-bert RM picks the better of two translations in "
                                         f"{summary['rm_overall_strict_accuracy_gap5']:.2f}")
    assert Path(summary["plot"]).is_file() and "strict_accuracy.png" in (tmp_path / "report.md").read_text()
