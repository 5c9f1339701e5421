"""Checkpoints people can share: every `align rm` / `align sft` / `align ppo` model gets a model card, and
`align export --merge` turns LoRA adapters into a plain transformers model that computes what the adapters did."""
from __future__ import annotations

import json
import random

import pytest
import torch
import yaml

from align.cli import main
from align.models.card import model_card
from align.training.lora import LoraOptions

TINY_LORA = LoraOptions(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"])


pytestmark = pytest.mark.usefixtures("one_thread")


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def lora_sft_run(tmp_path_factory):
    from align.sft.train import Config, train_sft

    root = tmp_path_factory.mktemp("sft")
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Repeat the word number {i}.", "response": "tea " * 3}) + "\n"
                            for i in range(16)))
    # a high learning rate so the adapters move the logits visibly
    config = Config(model="tiny-llama", data=str(data), output_dir=str(root / "run"), max_steps=3, batch_size=4,
                    learning_rate=5e-2, max_length=32, progress=False, lora=TINY_LORA)
    train_sft(config)
    return root / "run"


def test_sft_card_names_the_metrics_and_merged_export_matches_the_adapters(lora_sft_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.models import load_causal_lm

    card = (lora_sft_run / "model" / "README.md").read_text()
    summary = json.loads((lora_sft_run / "summary.json").read_text())
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert {"align", "sft", "lora"} <= set(meta["tags"])
    for key in ("eval_loss", "eval_perplexity", "steps", "train_seconds"):
        assert f"| `{key}` | " in card, key
    assert f"| `eval_loss` | {summary['eval_loss']:.6g} |" in card
    assert "align export <run directory> --merge" in card and "learning_rate: 0.05" in card

    assert main(["export", str(lora_sft_run), "--merge", "--output", str(tmp_path / "merged")]) == 0
    merged_dir = tmp_path / "merged"
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "README.md").is_file()
    assert front_matter((merged_dir / "README.md").read_text())["library_name"] == "transformers"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    adapters = PeftModel.from_pretrained(load_causal_lm("tiny-llama"), str(lora_sft_run / "model")).eval()
    base = load_causal_lm("tiny-llama").eval()
    ids = AutoTokenizer.from_pretrained(merged_dir)(["Repeat the word number 3. tea tea"], return_tensors="pt")
    with torch.no_grad():
        expected, got, plain = (m(**ids).logits for m in (adapters, merged, base))
    assert (expected - plain).abs().max() > 1e-3  # the adapters changed the model ...
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # ... and the merged model computes the same

    assert main(["export", str(lora_sft_run)]) == 0  # unmerged: the adapters as they are, with the card
    assert (lora_sft_run / "export" / "adapter_model.safetensors").is_file()
    assert "Exported by `align export`" in (lora_sft_run / "export" / "README.md").read_text()
    assert main(["export", str(lora_sft_run)]) == 2  # never overwritten


def test_rm_card_names_heads_and_metrics_and_its_lora_adapters_merge_to_the_saved_model(tmp_path):
    from align.models import RewardModel, score_texts
    from align.rm import train as rm

    rng = random.Random(0)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Tell me about {rng.choice(['tea', 'rain'])} {i}.",
                                        "chosen": "Happy to help.", "rejected": "No."}) + "\n" for i in range(24)))
    config = rm.Config(model="tiny-bert", data=str(data), output_dir=str(tmp_path / "rm"), max_steps=2, batch_size=8,
                       max_length=48, learning_rate=1e-2, heads=["overall", "safety"], progress=False, report=False,
                       precision="fp32",  # the LoRA base then loads in fp32, as the export merges it
                       lora=LoraOptions(enabled=True, r=4, alpha=8, target_modules=["query", "value"]))
    summary = rm.train_reward_model(config)
    card = (tmp_path / "rm" / "model" / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "reward-model" in meta["tags"] and "`overall`, `safety`" in card
    assert f"| `eval_accuracy` | {summary['eval_accuracy']:.6g} |" in card and "AutoModelForSequenceClassification" in card

    assert main(["export", str(tmp_path / "rm" / "adapter"), "--merge"]) == 0
    texts = ["Tell me about tea. Happy to help.", "Tell me about rain. No."]
    saved = score_texts(RewardModel.from_pretrained(tmp_path / "rm" / "model"), texts)
    merged = score_texts(RewardModel.from_pretrained(tmp_path / "rm" / "merged"), texts)
    torch.testing.assert_close(merged, saved, atol=1e-5, rtol=1e-5)


def test_ppo_lora_policy_gets_a_card_and_merges(tmp_path):
    from transformers import AutoModelForCausalLM

    from align.ppo import Config, train_ppo
    from align.types import Prompt, RewardOutput

    def count_e(prompts, completions, **meta):
        return [RewardOutput(reward=float(c.count("e"))) for c in completions]

    config = Config(model="tiny-llama", output_dir=str(tmp_path / "ppo"), domain_reward=True, rollout_batch_size=4,
                    batch_size=4, max_new_tokens=4, max_steps=1, save_steps=0, progress=False, report=False,
                    lora=TINY_LORA)
    summary = train_ppo(config, prompts=[Prompt(prompt=f"Say {i}.") for i in range(8)], reward_fn=count_e)
    card = (tmp_path / "ppo" / "model" / "README.md").read_text()
    assert {"ppo", "rlhf", "lora"} <= set(front_matter(card)["tags"])
    assert f"| `final_reward` | {summary['final_reward']:.6g} |" in card
    assert main(["export", str(tmp_path / "ppo"), "--merge"]) == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ppo" / "merged").config.model_type == "llama"


def test_card_front_matter_names_the_upstream_base_model_and_datasets(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    config = {"model": "smollm2-135m", "domain": "hh", "domain_options": {"subset": "all"}, "lora": {"enabled": False}}
    summary = {"datasets": "Anthropic/hh-rlhf", "hh_subsets_used": "harmless-base", "eval_loss": 1.25, "steps": 3}
    card = model_card(config, summary, "sft", tmp_path)
    meta = front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["datasets"] == ["Anthropic/hh-rlhf"]
    assert "hh" in meta["tags"] and "- `hh_subsets_used`: harmless-base" in card and "| `steps` | 3 |" in card
    local = model_card({"model": str(tmp_path)}, {}, "ppo", tmp_path)
    assert "base_model" not in front_matter(local)  # a local path is no hub id
    with pytest.raises(ValueError, match="unknown command 'dpo'"):
        model_card(config, summary, "dpo", tmp_path)


def test_export_errors_name_the_problem(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: tiny-llama\n")
    assert main(["export", str(tmp_path / "run"), "--merge"]) == 2
    assert "has no model/" in capsys.readouterr().err
