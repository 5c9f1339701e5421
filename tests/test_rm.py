"""`align rm` end to end on a tiny random model: CLI smoke runs, resume equivalence, multi-head."""
import json
import random

import pytest
import torch

from align.cli import main
from align.config import ConfigError, load_config
from align.rm import train as rm

WORDS = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "music", "paper", "forest"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """A learnable toy task: the chosen answer is polite, the rejected one rude."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = []
    for i in range(96):
        topic = " ".join(rng.sample(WORDS, 3))
        rows.append({"id": f"p{i}", "prompt": f"Tell me about {topic}.",
                     "chosen": f"Thank you for asking, happy to help with {topic}.",
                     "rejected": f"No. Go away, {topic} is boring.",
                     "aspect": "politeness" if i % 2 else None})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config_for(pairs_file, output_dir, *extra):
    overrides = [f"data={pairs_file}", f"output_dir={output_dir}", "model=tiny-bert", "batch_size=8",
                 "max_length=64", "learning_rate=2e-3", "max_steps=8", "save_steps=3", "log_steps=1",
                 "eval_fraction=0.25", "progress=false", "report=false", "seed=3", *extra]
    return load_config(rm.Config, None, overrides)


def test_cli_smoke_run_writes_every_output(pairs_file, tmp_path):
    out = tmp_path / "run"
    code = main(["rm", f"data={pairs_file}", f"output_dir={out}", "model=tiny-bert", "max_steps=4",
                 "batch_size=8", "max_length=64", "progress=false", "save_steps=2", "log_steps=1"])
    assert code == 0
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.md", "training.png", "model"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("eval_accuracy", "eval_loss", "train_pairs", "skipped_pairs", "train_seconds",
                "pairs_per_second", "tokens_per_second"):
        assert key in summary, key
    assert summary["steps"] == 4 and summary["train_pairs"] + summary["eval_pairs"] == 96
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_cli_config_error_exits_before_work(tmp_path, capsys):
    code = main(["rm", "learning_rate=-1", f"output_dir={tmp_path / 'never'}"])
    assert code == 2
    assert "learning_rate: expected a positive number" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_training_learns_a_separable_task(pairs_file, tmp_path):
    summary = rm.train_reward_model(config_for(pairs_file, tmp_path / "learn", "max_steps=24"))
    assert summary["eval_accuracy"] > 0.9


@pytest.mark.parametrize("head_init", ["random", "probe"])
def test_killed_run_resumes_to_the_same_result(pairs_file, tmp_path, monkeypatch, head_init):
    reference = rm.train_reward_model(config_for(pairs_file, tmp_path / "straight", f"head_init={head_init}"))

    crashed_dir = tmp_path / "crashed"
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the step-3 checkpoint, before the next one
            raise KeyboardInterrupt("killed")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        rm.train_reward_model(config_for(pairs_file, crashed_dir, f"head_init={head_init}"))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert not (crashed_dir / "summary.json").exists()

    # a probed run resumes with the checkpoint's heads (probing again would move them off the trained ones)
    resumed = rm.train_reward_model(config_for(pairs_file, crashed_dir, "resume=true", f"head_init={head_init}"))
    for key in ("eval_accuracy", "eval_loss", "eval_reward_gap"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-5), key
    logged = [json.loads(line) for line in (crashed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == list(range(1, 9))  # each step logged exactly once


def test_two_heads_train_on_their_own_pairs(pairs_file, tmp_path):
    summary = rm.train_reward_model(config_for(pairs_file, tmp_path / "heads", "heads=[overall,politeness]"))
    assert "eval_overall_accuracy" in summary and "eval_politeness_accuracy" in summary
    from align.models import RewardModel

    model = RewardModel.from_pretrained(tmp_path / "heads" / "model")
    assert model.head_names == ["overall", "politeness"]


def test_denoising_needs_strengths(pairs_file, tmp_path):
    with pytest.raises(ValueError, match="needs preference strengths"):
        rm.train_reward_model(config_for(pairs_file, tmp_path / "flip", "loss.type=flip"))


def train_frozen_tiny_bert(tmp_path, *overrides: str):
    """A few steps of tiny-bert at a high learning rate with `overrides` (the freeze options); returns the
    overrides used, the parameters before and the trained model."""
    from align.models import RewardModel, load_reward_model

    rows = [{"prompt": f"Say {i}.", "chosen": f"Thank you, {i}.", "rejected": f"No, {i}."} for i in range(32)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = [f"data={data}", "model=tiny-bert", "batch_size=8", "max_length=32", "learning_rate=1e-2",
            "max_steps=3", "save_steps=0", "eval_fraction=0.25", "progress=false", "report=false", *overrides]
    summary = rm.train_reward_model(load_config(rm.Config, None, [*keys, f"output_dir={tmp_path / 'run'}"]))
    before = dict(load_reward_model("tiny-bert").model.named_parameters())
    return keys, before, RewardModel.from_pretrained(summary["model_dir"]).model


def test_frozen_word_embeddings_stay_put(tmp_path):
    _, before, after = train_frozen_tiny_bert(tmp_path, "freeze_word_embeddings=true")
    assert torch.equal(before["bert.embeddings.word_embeddings.weight"], after.get_input_embeddings().weight)
    moved = [name for name, p in after.named_parameters() if "word_embeddings" not in name
             and name in before and not torch.equal(p, before[name])]
    assert moved  # the rest of the encoder trained


def test_frozen_bottom_layers_stay_put_and_the_layers_above_train(tmp_path):
    from align.models.loading import transformer_blocks

    keys, before, after = train_frozen_tiny_bert(tmp_path, "freeze_layers=1")
    assert len(transformer_blocks(after)) == 2
    changed = {name for name, p in after.named_parameters() if name in before and not torch.equal(p, before[name])}
    assert not {n for n in changed if ".embeddings." in n or ".layer.0." in n}, changed
    assert {n for n in changed if ".layer.1." in n}, changed  # the top layer trained
    with pytest.raises(ValueError, match="freeze_layers"):
        rm.train_reward_model(load_config(rm.Config, None, [*keys[:-1], "freeze_layers=2",
                                                            f"output_dir={tmp_path / 'bad'}"]))


def test_lora_targets_that_match_no_layer_are_a_config_error_naming_the_layers(pairs_file, tmp_path):
    # the LLaMA-style default names no BERT layer; peft alone fails with a generic error deep in its wrapping
    with pytest.raises(ConfigError, match=r"lora.target_modules: .*named \['classifier', 'dense', 'key', 'query'"):
        rm.train_reward_model(config_for(pairs_file, tmp_path / "lora", "lora.enabled=true"))
    summary = rm.train_reward_model(config_for(pairs_file, tmp_path / "ok", "lora.enabled=true", "max_steps=2",
                                               "lora.target_modules=[attention.self.query,value]"))  # dotted suffix
    assert summary["steps"] == 2
