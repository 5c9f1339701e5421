"""`align sft`: loss on response tokens only, truncation, packing, a short run that learns, resume."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from align.models import load_causal_lm, load_tokenizer
from align.sft.data import IGNORE, Example, collate, encode_example, pack
from align.sft.train import Config, response_loss, train_sft
from align.types import Prompt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-llama")


def test_labels_cover_the_response_and_eos_only(tokenizer):
    prompt = Prompt(prompt="What is the capital of France?")
    example, cut = encode_example(tokenizer, prompt, "Paris.", max_length=256, chat=True)
    prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": prompt.prompt}], tokenize=False,
                                                add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer("Paris.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert not cut
    assert example.input_ids == prompt_ids + response_ids
    assert example.labels == [IGNORE] * len(prompt_ids) + response_ids


def test_plain_format_puts_a_space_after_the_prompt_and_truncates_the_prompt_first(tokenizer):
    example, _ = encode_example(tokenizer, Prompt(prompt="Human: hi\n\nAssistant:"), "hello", 256, chat=False)
    labelled = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(labelled[:-1]) == " hello" and labelled[-1] == tokenizer.eos_token_id
    response_len = len(labelled)
    short, cut = encode_example(tokenizer, Prompt(prompt="word " * 50 + "Assistant:"), "hello", response_len + 3, chat=False)
    assert cut and len(short.input_ids) == response_len + 3
    assert [t for t in short.labels if t != IGNORE] == labelled  # the response survives whole


class FixedLogits(torch.nn.Module):
    """A stand-in causal LM returning fixed logits; with `keep`, its forward takes `logits_to_keep` like
    transformers' models (a 1-D tensor selects positions)."""

    def __init__(self, logits, keep: bool):
        super().__init__()
        self.logits, self.kept = logits, []
        if keep:
            self.forward = self.forward_keep

    def forward(self, input_ids, attention_mask, use_cache):
        return SimpleNamespace(logits=self.logits)

    def forward_keep(self, input_ids, attention_mask, use_cache, logits_to_keep=0):
        self.kept.append(logits_to_keep.tolist())
        return SimpleNamespace(logits=self.logits[:, logits_to_keep])


@pytest.mark.parametrize("keep", [True, False])
def test_response_loss_ignores_prompt_and_padding_tokens(keep):
    # vocabulary 3; row 0: tokens [0, 1, 2] with label only on position 2 (predicted from position 1)
    logits = torch.zeros(2, 3, 3)
    logits[0, 1] = torch.tensor([0.0, 0.0, 2.0])       # predicts token 2 with p = e^2 / (e^2 + 2)
    logits[1, 0] = torch.tensor([5.0, -9.0, 9.0])      # prompt position of row 1: must not count
    labels = torch.tensor([[IGNORE, IGNORE, 2], [IGNORE, IGNORE, IGNORE]])
    model = FixedLogits(logits, keep)
    loss, count = response_loss(model, {"input_ids": labels.clamp(min=0), "attention_mask": labels * 0 + 1,
                                        "labels": labels})
    expected = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 2))
    assert count == 1 and loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert model.kept == ([[1]] if keep else [])  # only the position whose next token is labelled is projected


def test_response_loss_matches_the_full_projection_on_a_real_model():
    torch.manual_seed(0)
    model = load_causal_lm("tiny-llama").eval()
    input_ids = torch.randint(3, 200, (3, 9))
    labels = torch.full_like(input_ids, IGNORE)
    labels[0, 4:], labels[1, 6:8], labels[2, 2:5] = input_ids[0, 4:], input_ids[1, 6:8], input_ids[2, 2:5]
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    with torch.no_grad():
        loss, count = response_loss(model, batch)
        logits = model(input_ids=input_ids).logits[:, :-1]
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    assert count == 10 and loss.item() == pytest.approx(full.item(), rel=1e-5)


def test_collate_and_packing_keep_labels_aligned():
    a, b = Example([1, 2, 3], [IGNORE, 2, 3]), Example([4, 5], [IGNORE, 5])
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 2, 3], [IGNORE, 5, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    packed = pack([a, b, a], max_length=4)
    assert [e.input_ids for e in packed] == [[1, 2, 3, 4], [5, 1, 2, 3]]
    assert [e.labels for e in packed] == [[IGNORE, 2, 3, IGNORE], [5, IGNORE, 2, 3]]


def write_rows(path, n=24):
    rows = [{"prompt": f"Repeat the word number {i}.", "response": "tea " * 3} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def sft_config(tmp_path, name="sft", **overrides) -> Config:
    values = {"model": "tiny-llama", "data": write_rows(tmp_path / "rows.jsonl"), "output_dir": str(tmp_path / name),
                  "batch_size": 4, "learning_rate": 3e-3, "max_steps": 12, "warmup_ratio": 0.0, "lr_schedule": "constant",
                  "eval_fraction": 0.25, "save_steps": 0, "log_steps": 1, "progress": False, "precision": "fp32"}
    values.update(overrides)
    return Config(**values)


def test_a_short_run_learns_the_responses_and_saves_a_model(tmp_path):
    summary = train_sft(sft_config(tmp_path))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < 0.5 * losses[0]
    assert summary["train_examples"] == 18 and summary["eval_examples"] == 6
    assert summary["eval_loss"] < losses[0]
    assert (tmp_path / "sft" / "model" / "config.json").exists()


def test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run(tmp_path):
    whole = train_sft(sft_config(tmp_path, "whole", max_steps=6, save_steps=3))
    # a run killed after its step-3 checkpoint: only the checkpoint and the first 3 metric lines exist
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-3", killed / "checkpoints" / "step-3")
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")
    resumed = train_sft(sft_config(tmp_path, "killed", max_steps=6, save_steps=3, resume=True))
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-5)
    a = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "eval_loss"):
            assert (key in x) == (key in y)
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-5), (x["step"], key)


def test_lora_trains_only_adapters(tmp_path):
    from align.training.lora import LoraOptions

    summary = train_sft(sft_config(tmp_path, max_steps=2, lora=LoraOptions(enabled=True, r=4, alpha=8)))
    assert (tmp_path / "sft" / "model" / "adapter_model.safetensors").exists()
    assert summary["steps"] == 2


def test_frozen_word_embeddings_stay_as_loaded_while_the_layers_train(tmp_path):
    train_sft(sft_config(tmp_path, max_steps=3, freeze_word_embeddings=True))
    base, tuned = load_causal_lm("tiny-llama"), load_causal_lm(str(tmp_path / "sft" / "model"))
    assert torch.equal(tuned.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
