"""align.models: embedded model resolution, tiny models, tokenizers, and the reward model."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from align.models import (
    EMBEDDED_MODELS,
    RewardModel,
    create_tiny_model,
    is_decoder,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    resolve_model_path,
    score_texts,
)
from align.models.embedded import CACHE_MARKER, cached_build

TEXTS = ["hello", "The capital of France is Paris, and it is lovely in spring.", "def add(a, b):\n    return a + b",
         "ok ok"]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Build the tiny models into a private cache, so these tests exercise the build itself."""
    root = tmp_path_factory.mktemp("align-cache")
    previous = os.environ.get("ALIGN_CACHE_DIR")
    os.environ["ALIGN_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("ALIGN_CACHE_DIR")
    else:
        os.environ["ALIGN_CACHE_DIR"] = previous


def batch(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


# --------------------------------------------------------------------------- resolution and caching


def test_embedded_names():
    assert set(EMBEDDED_MODELS) == {"minilm", "me5-small", "smollm2-135m", "gemma3-270m", "tiny-bert", "tiny-llama"}


def test_resolve_local_dir_missing_path_and_hub_id(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path("./models/nope")
    assert resolve_model_path("someone/some-model-that-is-not-cached") == "someone/some-model-that-is-not-cached"


def test_unavailable_hub_id_names_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE=1"):
        load_tokenizer("someone/some-model-that-is-not-cached")


def test_tiny_models_are_deterministic(tmp_path):
    for kind in ("tiny-bert", "tiny-llama"):
        first, second = create_tiny_model(kind, tmp_path / f"{kind}-1"), create_tiny_model(kind, tmp_path / f"{kind}-2")
        a, b = load_file(Path(first) / "model.safetensors"), load_file(Path(second) / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert (Path(first) / "tokenizer.json").read_text() == (Path(second) / "tokenizer.json").read_text()
    with pytest.raises(ValueError, match="tiny-gpt"):
        create_tiny_model("tiny-gpt", tmp_path / "x")


def test_cache_is_built_once_and_atomically(cache_dir):
    path = Path(resolve_model_path("tiny-llama"))
    assert path == cache_dir / "tiny-llama" and (path / CACHE_MARKER).is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("tiny-llama") == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt

    def failing_build(directory):
        (directory / "half-written").write_text("x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed"):
        cached_build("broken", failing_build)
    assert not (cache_dir / "broken").exists()
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no leftover temp dirs

    # a build dir abandoned by a killed process (over an hour old) is swept; an outdated cache is rebuilt
    abandoned = cache_dir / ".other-building-x1"
    abandoned.mkdir()
    os.utime(abandoned, (0, 0))
    (cache_dir / "other").mkdir()
    (cache_dir / "other" / CACHE_MARKER).write_text('{"format": -1}')
    path = cached_build("other", lambda directory: (directory / "weights").write_text("new"))
    assert (Path(path) / "weights").read_text() == "new" and not abandoned.exists()
    assert sorted(p.name for p in cache_dir.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------- tokenizers and LMs


def test_tiny_llama_tokenizer():
    tokenizer = load_tokenizer("tiny-llama")
    specials = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert len(specials) == 3 and None not in specials
    assert tokenizer.padding_side == "right" and tokenizer.model_max_length == 1024
    text = "Grüße, 世界! def f(x):\n\treturn x ** 2"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: nothing is unknown
    assert len(tokenizer("the capital of France")["input_ids"]) < len("the capital of France")  # merges learned
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert load_tokenizer("tiny-llama", padding_side="left").padding_side == "left"


def test_pad_token_and_max_length_are_guaranteed(tmp_path):
    source = load_tokenizer("tiny-llama")
    source.pad_token = None
    source.model_max_length = int(1e30)
    source.save_pretrained(tmp_path)  # a tokenizer alone: no config.json to read a position limit from
    tokenizer = load_tokenizer(str(tmp_path))
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.model_max_length == 2048


def test_is_decoder():
    assert is_decoder("tiny-llama") and not is_decoder("tiny-bert")
    model = load_causal_lm("tiny-llama")
    assert is_decoder(model) and is_decoder(model.config)


def test_load_causal_lm_generates():
    model = load_causal_lm("tiny-llama")
    tokenizer = load_tokenizer("tiny-llama")
    assert model.config.pad_token_id == tokenizer.pad_token_id and model.dtype == torch.float32
    ids = tokenizer("hello", return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 5)
    assert load_causal_lm("tiny-llama", dtype=torch.bfloat16).dtype == torch.bfloat16


# --------------------------------------------------------------------------- reward model


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-llama"])
def test_reward_model_shapes_head_init_and_gradients(kind):
    model = load_reward_model(kind, num_heads=2, head_names=["helpful", "harmless"])
    assert model.head_names == ["helpful", "harmless"] and model.num_heads == 2
    head = model.model.score if kind == "tiny-llama" else model.model.classifier
    assert model.hidden_size == head.in_features == (64 if kind == "tiny-llama" else 32)
    assert head.bias is None or torch.all(head.bias == 0)
    assert 0.5 < head.weight.std().item() * (model.hidden_size + 1) ** 0.5 < 1.5  # std 1/sqrt(H+1)
    input_ids, attention_mask = batch(model.tokenizer, TEXTS)
    out = model(input_ids, attention_mask)
    assert out.rewards.shape == (4, 2) and out.rewards.dtype == torch.float32
    assert out.features.shape == (4, model.hidden_size)
    out.rewards.sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    embeddings = model.model.get_input_embeddings().weight
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert load_reward_model(kind).head_names == ["overall"]
    assert load_reward_model(kind, num_heads=3).head_names == ["head_0", "head_1", "head_2"]
    with pytest.raises(ValueError, match="num_heads=2"):
        load_reward_model(kind, num_heads=2, head_names=["a"])


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-llama"])
def test_features_are_the_head_input_and_padding_does_not_matter(kind):
    model = load_reward_model(kind, num_heads=2).eval()
    head = model.model.score if kind == "tiny-llama" else model.model.classifier
    input_ids, attention_mask = batch(model.tokenizer, TEXTS)  # right padding
    assert (attention_mask == 0).any()
    with torch.no_grad():
        out = model(input_ids, attention_mask)
        torch.testing.assert_close(out.rewards, head(out.features))
        for i, text in enumerate(TEXTS):  # each text alone, no padding at all
            alone = model(*batch(model.tokenizer, [text]))
            torch.testing.assert_close(alone.rewards[0], out.rewards[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone.features[0], out.features[i], atol=1e-5, rtol=1e-5)
        left = load_tokenizer(kind, padding_side="left")
        if kind == "tiny-llama":  # the last-real-token rule holds for left padding too
            torch.testing.assert_close(model(*batch(left, TEXTS)).rewards, out.rewards, atol=1e-5, rtol=1e-5)
        else:  # an encoder pools position 0, which left padding would fill with [PAD]
            with pytest.raises(ValueError, match="right padding"):
                model(*batch(left, TEXTS))


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-llama"])
def test_save_load_round_trip_matches_automodel(kind, tmp_path):
    model = load_reward_model(kind, num_heads=2, head_names=["helpful", "harmless"], dropout=0.0).eval()
    with torch.no_grad():  # make the heads distinguishable from a fresh init
        model.model.get_input_embeddings().weight.mul_(1.5)
    input_ids, attention_mask = batch(model.tokenizer, TEXTS)
    with torch.no_grad():
        expected = model(input_ids, attention_mask).rewards
    model.save_pretrained(tmp_path / "rm")

    metadata = json.loads((tmp_path / "rm" / "align_reward_model.json").read_text())
    pooling = "last_non_pad_token" if kind == "tiny-llama" else "first_token"
    assert metadata["head_names"] == ["helpful", "harmless"] and metadata["pooling"] == pooling
    assert metadata["backbone"] == kind

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    assert plain.config.id2label == {0: "helpful", 1: "harmless"}
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=input_ids, attention_mask=attention_mask).logits, expected)

    restored = RewardModel.from_pretrained(tmp_path / "rm").eval()
    assert restored.head_names == ["helpful", "harmless"]
    with torch.no_grad():
        torch.testing.assert_close(restored(input_ids, attention_mask).rewards, expected)
    # a saved RM loads with its trained heads through load_reward_model too
    again = load_reward_model(str(tmp_path / "rm"), num_heads=2).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids, attention_mask).rewards, expected)
    with pytest.raises(ValueError, match="heads"):
        load_reward_model(str(tmp_path / "rm"), num_heads=1)


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-llama"])
def test_dropout_gives_views_in_train_mode_only(kind):
    model = load_reward_model(kind, dropout=0.3)
    input_ids, attention_mask = batch(model.tokenizer, TEXTS)
    model.train()
    first, second = model(input_ids, attention_mask), model(input_ids, attention_mask)
    assert not torch.allclose(first.features, second.features)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids, attention_mask).features,
                                   model(input_ids, attention_mask).features, rtol=0, atol=0)
    model.set_dropout(0.0)
    model.train()
    torch.testing.assert_close(model(input_ids, attention_mask).features,
                               model(input_ids, attention_mask).features)
    with pytest.raises(ValueError, match="dropout"):
        model.set_dropout(1.0)


def test_score_texts_truncates_from_the_left_and_keeps_order():
    model = load_reward_model("tiny-bert", num_heads=2)
    model.train()
    tokenizer = model.tokenizer
    long_text = " ".join(f"word{i}" for i in range(200)) + " the very end"
    texts = TEXTS + [long_text]
    scores = score_texts(model, texts, batch_size=2, max_length=16)
    assert model.training  # mode restored
    assert scores.shape == (5, 2)
    model.eval()
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            torch.testing.assert_close(scores[i], model(*batch(tokenizer, [text])).rewards[0], atol=1e-5, rtol=1e-5)
        full = tokenizer(long_text)["input_ids"]
        kept = torch.tensor([[full[0], *full[-15:-1], full[-1]]])  # [CLS] + last 14 word pieces + [SEP]
        assert tokenizer.decode(kept[0, -4:-1]) == "the very end"
        torch.testing.assert_close(scores[4], model(kept, torch.ones_like(kept)).rewards[0], atol=1e-5, rtol=1e-5)


def test_minilm_loads_as_reward_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checkpoint has a pooler: only the head is new, and that is silent
        model = load_reward_model("minilm").eval()
    assert model.head_names == ["overall"] and model.hidden_size == 384 and not model.decoder
    checkpoint = load_file(Path(resolve_model_path("minilm")) / "model.safetensors")
    torch.testing.assert_close(model.model.bert.pooler.dense.weight, checkpoint["pooler.dense.weight"])
    scores = score_texts(model, TEXTS)
    assert scores.shape == (4, 1) and torch.isfinite(scores).all() and scores.std() > 0


@pytest.mark.slow
def test_smollm2_converts_and_answers():
    path = Path(resolve_model_path("smollm2-135m"))
    assert (path / "model.safetensors").is_file() and (path / CACHE_MARKER).is_file()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    tokenizer = load_tokenizer("smollm2-135m", padding_side="left")
    assert tokenizer.chat_template and tokenizer.model_max_length == 8192
    model = load_causal_lm("smollm2-135m")
    assert is_decoder(model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    reward_model = load_reward_model("smollm2-135m")
    assert reward_model.model.config.pad_token_id == tokenizer.pad_token_id and reward_model.hidden_size == 576


def test_foreign_classifier_keeps_its_head_and_missing_pooler_is_reported(tmp_path):
    # A sequence-classification checkpoint from elsewhere (no align metadata): its trained head is kept.
    source = load_reward_model("tiny-llama", num_heads=2, head_names=["a", "b"]).eval()
    source.model.save_pretrained(tmp_path / "foreign")
    source.tokenizer.save_pretrained(tmp_path / "foreign")
    input_ids, attention_mask = batch(source.tokenizer, TEXTS)
    with torch.no_grad():
        expected = source(input_ids, attention_mask).rewards
        loaded = load_reward_model(str(tmp_path / "foreign"), num_heads=2).eval()
        torch.testing.assert_close(loaded(input_ids, attention_mask).rewards, expected)
    assert RewardModel.from_pretrained(tmp_path / "foreign").head_names == ["a", "b"]  # from config.id2label

    # A BERT checkpoint saved without a pooler: the pooler starts random, and the user is told.
    from transformers import BertModel

    tiny_bert = resolve_model_path("tiny-bert")
    BertModel.from_pretrained(tiny_bert, add_pooling_layer=False).save_pretrained(tmp_path / "no-pooler")
    load_tokenizer("tiny-bert").save_pretrained(tmp_path / "no-pooler")
    with pytest.warns(UserWarning, match=r"pooler"):
        load_reward_model(str(tmp_path / "no-pooler"))
