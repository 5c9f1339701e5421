"""align.data and align.training.batches: every loader and row format, counted skips, left truncation, batching, collation."""
import gzip
import json
from pathlib import Path

import pytest
import torch

from align.data import (
    DataError,
    EncodedPair,
    collate_pairs,
    encode_pair,
    load_preferences,
    load_prompts,
    parse_hh_dialogue,
    render_prompt,
    split_train_eval,
)
from align.models import load_tokenizer
from align.training import PairBatcher
from align.types import PreferencePair

NATIVE = [
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "id": "q1", "margin": 2.0,
     "aspect": "faithfulness", "source": "quiz"},
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away."},
]
HH_ROW = {
    "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Which kind?\n\nHuman: Rye.\n\nAssistant: Use a sourdough starter.",
    "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Which kind?\n\nHuman: Rye.\n\nAssistant: Buy it.",
}
HH_HISTORY = [{"role": "user", "content": "How do I bake bread?"}, {"role": "assistant", "content": "Which kind?"},
              {"role": "user", "content": "Rye."}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


# ----------------------------------------------------------------------------- loaders and formats


def test_native_jsonl_rows_keep_fields_and_locations(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", NATIVE)
    data = load_preferences(path)
    first, second = data.pairs
    assert (first.prompt, first.chosen, first.rejected, first.id) == ("Capital of France?", "Paris.", "Lyon.", "q1")
    assert (first.margin, first.aspect, first.strength) == (2.0, "faithfulness", None)
    assert first.source == f"{path}:1" and first.extra == {"source": "quiz"}
    assert second.prompt == [{"role": "user", "content": "Hi"}] and second.source == f"{path}:2"
    assert len(second.id) == 16  # no id given: a content hash, the same on every load
    assert load_preferences(path).pairs[1].id == second.id
    assert sum(data.skipped.values()) == 0 and data.source == path


@pytest.mark.parametrize("wrap", [lambda rows: rows, lambda rows: {"data": rows}])
def test_json_list_and_data_object(tmp_path, wrap):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(wrap(NATIVE)))
    data = load_preferences(str(path))
    assert [p.chosen for p in data.pairs] == ["Paris.", "Hello!"]
    assert data.pairs[1].source == f"{path}:2"


@pytest.mark.parametrize("name", ["pairs.jsonl.gz", "pairs.json.gz"])
def test_gzip_files(tmp_path, name):
    path = tmp_path / name
    text = json.dumps(NATIVE) if ".json." in name else "".join(json.dumps(r) + "\n" for r in NATIVE)
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    assert [p.rejected for p in load_preferences(str(path)).pairs] == ["Lyon.", "Go away."]


def test_saved_dataset_directory_and_split(tmp_path):
    import datasets

    rows = [{"prompt": "p1", "chosen": "good", "rejected": "bad"}, {"prompt": "p2", "chosen": "yes", "rejected": "no"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "plain"))
    assert [p.prompt for p in load_preferences(str(tmp_path / "plain")).pairs] == ["p1", "p2"]
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                                   "test": datasets.Dataset.from_list(rows[1:])})
    splits.save_to_disk(str(tmp_path / "dict"))
    assert [p.prompt for p in load_preferences(str(tmp_path / "dict")).pairs] == ["p1"]  # default split: train
    assert [p.prompt for p in load_preferences(str(tmp_path / "dict"), split="test").pairs] == ["p2"]
    with pytest.raises(DataError, match="no split 'valid'"):
        load_preferences(str(tmp_path / "dict"), split="valid")


def test_raw_hh_rows_split_into_history_and_final_turns(tmp_path):
    pair = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [HH_ROW])).pairs[0]
    assert pair.prompt == HH_HISTORY
    assert (pair.chosen, pair.rejected) == ("Use a sourdough starter.", "Buy it.")


def test_raw_hh_rows_whose_sides_diverge_earlier_keep_the_extra_turns_in_the_response(tmp_path):
    # A few real hh pairs hold further turns on one side: the history is what both share.
    row = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant: Bye!",
           "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
    pair = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [row])).pairs[0]
    assert pair.prompt == [{"role": "user", "content": "Hi"}]
    assert pair.chosen == "Hello.\n\nHuman: Bye\n\nAssistant: Bye!" and pair.rejected == "Go away."


def test_parse_hh_dialogue():
    assert parse_hh_dialogue("\n\nHuman: a\n\nAssistant: b") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert parse_hh_dialogue("Human: x  y\n\nAssistant:") == [
        {"role": "user", "content": "x  y"}, {"role": "assistant", "content": ""}]
    with pytest.raises(ValueError, match="not an hh dialogue"):
        parse_hh_dialogue("hello\n\nHuman: a")


def test_trl_conversational_rows_explicit_and_implicit_prompt(tmp_path):
    user = [{"role": "user", "content": "2+2?"}]
    explicit = {"prompt": user, "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5"}]}
    implicit = {"chosen": user + [{"role": "assistant", "content": "4"}],
                "rejected": user + [{"role": "assistant", "content": "22"}]}
    plain = {"prompt": "2+2?", "chosen": " 4", "rejected": " 5"}
    pairs = load_preferences(write_jsonl(tmp_path / "trl.jsonl", [explicit, implicit, plain])).pairs
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(user, "4", "5"), (user, "4", "22"),
                                                                  ("2+2?", "4", "5")]


def test_annotated_strength_rows(tmp_path):
    row = {**HH_ROW, "mean_preference_difference": 1.25, "std_preference_difference": 0.5,
           "chosen_scores": [1.0, 2.0], "rejected_scores": [0.0, 0.5]}
    pair = load_preferences(write_jsonl(tmp_path / "annotated.jsonl", [row])).pairs[0]
    assert pair.strength == 1.25 and pair.chosen == "Use a sourdough starter."
    assert pair.extra["std_preference_difference"] == 0.5
    assert pair.extra["chosen_scores"] == [1.0, 2.0] and pair.extra["rejected_scores"] == [0.0, 0.5]


def test_strength_rows_of_the_public_release_mix_with_ours(tmp_path):
    """hh-rlhf-strength-cleaned spells the fields with spaces; both spellings give the strength."""
    release = {**HH_ROW, "mean preference difference": -0.75, "std preference difference": 0.25,
               "chosen score list": [0.1], "rejected score list": [0.85]}
    ours = {**HH_ROW, "chosen": HH_ROW["chosen"] + " Feed it daily.", "mean_preference_difference": 0.5}
    pairs = load_preferences(write_jsonl(tmp_path / "mixed.jsonl", [release, ours])).pairs
    assert [p.strength for p in pairs] == [-0.75, 0.5]
    assert pairs[0].extra["std preference difference"] == 0.25


def malformed_file(tmp_path):
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()
    lines = [
        good,                                                                    # 1 ok
        b'{"prompt": "p", "chosen": "a", ',                                      # 2 bad JSON
        json.dumps({"prompt": "p", "chosen": "  ", "rejected": "b"}).encode(),   # 3 empty chosen
        json.dumps({"prompt": "p", "rejected": "b"}).encode(),                   # 4 no chosen
        b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}',                  # 5 bad UTF-8
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}).encode(),  # 6 identical
        b"",                                                                     # 7 blank: not a row
        json.dumps({"chosen": "no dialogue", "rejected": "here"}).encode(),      # 8 no prompt, not hh
        good,                                                                    # 9 ok
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_malformed_rows_are_skipped_and_counted_by_reason(tmp_path):
    data = load_preferences(malformed_file(tmp_path))
    assert [p.source.rsplit(":", 1)[1] for p in data.pairs] == ["1", "9"]
    assert dict(data.skipped) == {"bad_json": 1, "bad_utf8": 1, "missing_field": 2, "empty_response": 1,
                                  "identical_responses": 1}


@pytest.mark.parametrize("first_bad_line, expected", [
    (2, r"pairs\.jsonl:2: bad JSON line"),
    (3, r"pairs\.jsonl:3: field 'chosen': empty response"),
    (4, r"pairs\.jsonl:4: field 'chosen': missing field"),
    (5, r"pairs\.jsonl:5: undecodable bytes"),
    (6, r"pairs\.jsonl:6: field 'rejected': identical chosen and rejected"),
    (8, r"pairs\.jsonl:8: field 'prompt': no 'prompt' field"),
])
def test_strict_mode_names_file_line_and_field(tmp_path, first_bad_line, expected):
    path = Path(malformed_file(tmp_path))
    lines = path.read_bytes().split(b"\n")
    good = lines[0]
    # Keep only the one bad line under test (replace the others with good rows, line numbers unchanged).
    kept = [line if i + 1 in (first_bad_line, 7) else good for i, line in enumerate(lines[:9])]
    path.write_bytes(b"\n".join(kept) + b"\n")
    with pytest.raises(DataError, match=expected):
        load_preferences(str(path), strict=True)


def test_whole_file_errors(tmp_path):
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('[\n{"prompt": "p",\n "chosen": }\n]')
    with pytest.raises(DataError, match=r"broken\.json:3: bad JSON"):
        load_preferences(str(bad_json))
    with pytest.raises(DataError, match="no such file or directory"):
        load_preferences(str(tmp_path / "missing.jsonl"))
    fake_gz = tmp_path / "fake.jsonl.gz"
    fake_gz.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_preferences(str(fake_gz))


def test_limit_stops_after_that_many_pairs(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(5)])
    assert [p.prompt for p in load_preferences(path, limit=2).pairs] == ["p0", "p1"]
    assert len(load_preferences(path, limit=-1).pairs) == 5


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"nobody/no-such-dataset: could not load split 'train' from the Hugging Face"):
        load_preferences("nobody/no-such-dataset")


def test_load_prompts_from_prompt_rows_and_preference_rows(tmp_path):
    rows = [{"prompt": "Translate: chat", "response": "cat", "id": "t1", "lang": "fr"},
            {"prompt": [{"role": "user", "content": "Hi"}], "reference": "Hello"},
            {"prompt": "   "},
            {"response": "orphan"},
            HH_ROW]
    prompts, skipped = load_prompts(write_jsonl(tmp_path / "prompts.jsonl", rows))
    assert [(p.prompt, p.reference) for p in prompts] == [
        ("Translate: chat", "cat"), ([{"role": "user", "content": "Hi"}], "Hello"),
        (HH_HISTORY, "Use a sourdough starter.")]
    assert prompts[0].id == "t1" and prompts[0].meta["lang"] == "fr"
    assert skipped == {"missing_field": 2}
    with pytest.raises(DataError, match=r"prompts\.jsonl:3: field 'prompt': missing or empty prompt"):
        load_prompts(str(tmp_path / "prompts.jsonl"), strict=True)


def test_split_train_eval_is_deterministic_and_complete():
    items = list(range(100))
    train, held_out = split_train_eval(items, 0.2, seed=3)
    assert len(held_out) == 20 and sorted(train + held_out) == items
    assert (train, held_out) == split_train_eval(items, 0.2, seed=3)
    assert held_out != split_train_eval(items, 0.2, seed=4)[1]
    assert split_train_eval(items, 0.0, seed=0) == (items, [])
    with pytest.raises(ValueError, match="eval_fraction"):
        split_train_eval(items, 1.0, seed=0)


# ----------------------------------------------------------------------------- rendering and encoding


def test_render_prompt_without_and_with_a_chat_template(tokenizer):
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    assert render_prompt(messages) == "Human: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"
    assert render_prompt(messages, tokenizer) == render_prompt(messages)  # MiniLM has no chat template
    assert render_prompt("plain text", tokenizer) == "plain text"
    templated = load_tokenizer("minilm")  # a fresh copy to change
    templated.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert render_prompt(messages, templated) == "<user>a\n<assistant>b\n<user>c\n<assistant>"


def test_encode_pair_without_truncation_matches_plain_tokenization(tokenizer):
    pair = PreferencePair(prompt=[{"role": "user", "content": "Hi there"}], chosen="Hello!", rejected="Go away.")
    encoded = encode_pair(tokenizer, pair, max_length=64)
    assert encoded.chosen_ids == tokenizer("Human: Hi there\n\nAssistant: Hello!")["input_ids"]
    assert encoded.rejected_ids == tokenizer("Human: Hi there\n\nAssistant: Go away.")["input_ids"]
    assert not encoded.response_truncated and not encoded.identical_after_truncation


def test_left_truncation_keeps_the_responses_and_special_tokens(tokenizer):
    history = " ".join(f"word{i}" for i in range(200))
    pair = PreferencePair(prompt=history, chosen="the answer is yes", rejected="the answer is no")
    encoded = encode_pair(tokenizer, pair, max_length=16)
    for ids, response in ((encoded.chosen_ids, "the answer is yes"), (encoded.rejected_ids, "the answer is no")):
        assert len(ids) == 16
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.decode(ids[1:-1]).endswith(response)
    assert not encoded.response_truncated and not encoded.identical_after_truncation
    # Right truncation of the same texts would have made the pair identical: the difference is at the end.
    right = [tokenizer(f"{history} {r}", truncation=True, max_length=16)["input_ids"] for r in (pair.chosen, pair.rejected)]
    assert right[0] == right[1]


def test_a_response_longer_than_max_length_is_cut_from_the_left_and_flagged(tokenizer):
    shared_tail = " ".join(["same"] * 40)
    pair = PreferencePair(prompt="question", chosen=f"yes {shared_tail}", rejected=f"no {shared_tail}")
    encoded = encode_pair(tokenizer, pair, max_length=10)
    assert encoded.response_truncated and encoded.identical_after_truncation
    assert encoded.chosen_ids == [tokenizer.cls_token_id] + [tokenizer.convert_tokens_to_ids("same")] * 8 + [
        tokenizer.sep_token_id]
    # Only the prompt was cut: no flag.
    short = PreferencePair(prompt="question " * 30, chosen="yes", rejected="no")
    assert not encode_pair(tokenizer, short, max_length=10).response_truncated


def test_encode_pair_rejects_a_max_length_with_no_room(tokenizer):
    with pytest.raises(ValueError, match="no room"):
        encode_pair(tokenizer, PreferencePair(prompt="p", chosen="a", rejected="b"), max_length=2)


# ----------------------------------------------------------------------------- batching and collation


def test_pair_batcher_is_deterministic_complete_and_length_grouped():
    lengths = list(range(103))
    lengths.reverse()  # distinct lengths: a length-sorted group is a run of consecutive integers
    batcher = PairBatcher(lengths, batch_size=8, seed=1, group_size=20)  # one mega-batch holds everything
    batches = batcher.batches(epoch=0)
    assert batches == PairBatcher(lengths, batch_size=8, seed=1, group_size=20).batches(epoch=0)
    assert batches != batcher.batches(epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(103)) and len(batches) == len(batcher) == 13
    for batch in batches:
        batch_lengths = sorted(lengths[i] for i in batch)
        assert batch_lengths == list(range(batch_lengths[0], batch_lengths[0] + len(batch)))
    assert min(len(b) for b in batches) == 103 % 8  # the remainder batch is kept, not dropped


def test_pair_batcher_small_groups_and_no_shuffle():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    batcher = PairBatcher(lengths, batch_size=2, seed=0, group_size=1)  # mega-batch = one batch
    assert sorted(i for b in batcher.batches(0) for i in b) == list(range(7))
    assert PairBatcher(lengths, batch_size=3, seed=0, shuffle=False).batches(5) == [[0, 1, 2], [3, 4, 5], [6]]


def test_collate_pairs_shapes_padding_and_order():
    encoded = [EncodedPair([1, 2, 3], [1, 4], False, False), EncodedPair([5], [6, 7, 8, 9, 10], True, False)]
    batch = collate_pairs(encoded, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [5, 0, 0, 0, 0], [1, 4, 0, 0, 0], [6, 7, 8, 9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"].dtype == torch.long
    padded = collate_pairs(encoded, pad_token_id=-1, pad_to_multiple_of=4)
    assert padded["input_ids"].shape == (4, 8) and padded["input_ids"][0, -1].item() == -1


def test_json_named_files_holding_json_lines_and_a_lone_object(tmp_path):
    lines = tmp_path / "lines.json"
    lines.write_text("".join(json.dumps(r) + "\n" for r in NATIVE))
    assert [p.chosen for p in load_preferences(str(lines)).pairs] == ["Paris.", "Hello!"]
    assert load_preferences(str(lines)).pairs[1].source == f"{lines}:2"
    single = tmp_path / "single.json"
    single.write_text(json.dumps(NATIVE[0], indent=2))
    assert [p.id for p in load_preferences(str(single)).pairs] == ["q1"]


def test_a_missing_relative_file_is_not_mistaken_for_a_hub_id():
    with pytest.raises(DataError, match=r"data/pairs\.jsonl: no such file or directory"):
        load_preferences("data/pairs.jsonl")


def test_a_chat_template_that_writes_the_bos_token_gets_it_once_and_keeps_it(tokenizer):
    templated = load_tokenizer("minilm")  # a fresh copy to change
    templated.bos_token = "[CLS]"
    templated.chat_template = ("[CLS]{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant:\n{% endif %}")
    history = [{"role": "user", "content": " ".join(f"w{i}" for i in range(100))}]
    encoded = encode_pair(templated, PreferencePair(prompt=history, chosen="good answer", rejected="bad answer"), 12)
    cls = templated.cls_token_id
    assert encoded.chosen_ids[0] == cls and encoded.chosen_ids.count(cls) == 1 and len(encoded.chosen_ids) == 12
    assert templated.decode(encoded.chosen_ids[1:]).endswith("assistant : good answer")
    assert templated.decode(encoded.rejected_ids[1:]).endswith("assistant : bad answer")


def test_left_truncation_with_a_decoder_chat_template_tokenizer():
    tokenizer = load_tokenizer("tiny-llama")  # byte-level BPE, chat template that starts with its BOS
    history = [{"role": "user", "content": "tell me a story " * 40}]
    pair = PreferencePair(prompt=history, chosen="Once upon a time.", rejected="No.")
    encoded = encode_pair(tokenizer, pair, max_length=24)
    for ids, response in ((encoded.chosen_ids, "Once upon a time."), (encoded.rejected_ids, "No.")):
        assert len(ids) == 24 and ids[0] == tokenizer.bos_token_id != ids[1]  # kept, and not doubled
        assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n" + response)
    assert not encoded.response_truncated
