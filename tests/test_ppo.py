"""`align ppo` end to end on `tiny-llama`: learning a programmatic reward, resume, stopping, masks, LoRA."""
from __future__ import annotations

import json
import math

import pytest
import torch

from align.config import ConfigError, load_config
from align.ppo import Config, train_ppo
from align.ppo.report import write_ppo_report
from align.training.lora import LoraOptions
from align.training.rundir import RunDir
from align.types import Prompt, RewardOutput

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = [Prompt(prompt=f"Say something, number {i}.") for i in range(32)]


def count_e(prompts, completions, **meta):
    """The known-optimum task: reward = how many times the letter e appears in the completion."""
    return [RewardOutput(reward=float(c.count("e")), parts={"length": len(c)}) for c in completions]


def tiny_config(tmp_path, name="run", **overrides) -> Config:
    values = {"model": "tiny-llama", "output_dir": str(tmp_path / name), "domain_reward": True, "rollout_batch_size": 8,
                  "batch_size": 4, "max_new_tokens": 6, "learning_rate": 3e-3, "critic_learning_rate": 1e-3, "kl_coef": 0.01,
                  "max_steps": 3, "save_steps": 0, "progress": False, "report": False}
    values.update(overrides)
    return Config(**values)


def metrics(config: Config) -> list[dict]:
    with open(f"{config.output_dir}/metrics.jsonl") as handle:
        return [json.loads(line) for line in handle]


def test_tiny_policy_learns_a_programmatic_reward(tmp_path):
    config = tiny_config(tmp_path, rollout_batch_size=16, max_new_tokens=8, max_steps=15, eval_prompts=8)
    summary = train_ppo(config, prompts=PROMPTS[:24], reward_fn=count_e, held_out=PROMPTS[24:])
    rewards = [m["reward"] for m in metrics(config)]
    assert len(rewards) == 15
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.5, rewards  # from ~0.8 e's per completion to 2+ within 15 steps
    assert summary["steps"] == 15 and not summary["stopped_early"]
    assert all(math.isfinite(m["kl"]) and m["kl"] < 50 for m in metrics(config))
    for key in ("kl", "entropy", "policy_clipfrac", "value_loss", "explained_variance", "response_length",
                "reward_domain", "reward_domain_length", "approx_kl", "policy_loss"):
        assert key in metrics(config)[-1], key
    assert summary["eval_before_prompts"] == 8 and "eval_after_reward" in summary
    from align.models import load_causal_lm

    trained = load_causal_lm(summary["model_dir"])
    assert trained.config.vocab_size > 0


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    whole = tiny_config(tmp_path, "whole", max_steps=4, save_steps=2)
    train_ppo(whole, prompts=PROMPTS, reward_fn=count_e)
    first_half = tiny_config(tmp_path, "split", max_steps=2)
    train_ppo(first_half, prompts=PROMPTS, reward_fn=count_e)
    resumed = tiny_config(tmp_path, "split", max_steps=4, resume=True)
    summary = train_ppo(resumed, prompts=PROMPTS, reward_fn=count_e)
    assert summary["steps"] == 4
    a, b = metrics(whole), metrics(resumed)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        for key in ("reward", "kl", "policy_loss", "value_loss", "reward_normalized", "response_length"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)


def test_kl_ceiling_stops_the_run_with_a_message(tmp_path, capsys):
    config = tiny_config(tmp_path, learning_rate=0.05, kl_ceiling=1e-6, max_steps=4)
    summary = train_ppo(config, prompts=PROMPTS, reward_fn=count_e)
    assert summary["stopped_early"] and "kl_ceiling" in summary["stop_reason"]
    assert summary["steps"] < 4 and summary["model_dir"] is None
    assert "stopped at step" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_early"] is True


def test_samples_without_reward_are_dropped_and_counted(tmp_path):
    def every_other(prompts, completions, **meta):
        return [RewardOutput(reward=None if i % 2 else 1.0) for i in range(len(completions))]

    summary = train_ppo(tiny_config(tmp_path, max_steps=2, report=True), prompts=PROMPTS, reward_fn=every_other)
    assert summary["dropped_no_reward"] == 8 and summary["samples"] == 8
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "reward.png").exists()
    assert [m["dropped"] for m in metrics(tiny_config(tmp_path))] == [4, 4]


def test_fgo_token_mask_of_zeros_leaves_the_policy_unchanged(tmp_path):
    seen_offsets = []

    def nothing_counts(prompts, completions, completion_offsets, **meta):
        seen_offsets.extend(completion_offsets)
        return [RewardOutput(reward=float(c.count("e")), token_mask=[0] * len(o))
                for c, o in zip(completions, completion_offsets)]

    config = tiny_config(tmp_path, max_steps=2)
    summary = train_ppo(config, prompts=PROMPTS, reward_fn=nothing_counts)
    from align.models import load_causal_lm

    before, after = load_causal_lm("tiny-llama"), load_causal_lm(summary["model_dir"])
    for (name, p), q in zip(before.named_parameters(), after.parameters()):
        assert torch.equal(p, q), name
    assert all(m["fgo_token_share"] == 0.0 and m["policy_loss"] == 0.0 for m in metrics(config))
    # the reward saw one character span per completion token
    assert seen_offsets and all(isinstance(span, tuple) and len(span) == 2 for spans in seen_offsets for span in spans)


def test_lora_policy_uses_itself_without_adapters_as_reference(tmp_path):
    config = tiny_config(tmp_path, max_steps=3, critic_warmup_steps=1, lora=LoraOptions(enabled=True, r=4, alpha=8))
    summary = train_ppo(config, prompts=PROMPTS, reward_fn=count_e)
    logged = metrics(config)
    # fresh adapters (B = 0) leave the policy equal to the reference; the first step only trains the critic
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6) and "policy_loss" not in logged[0]
    assert logged[1]["kl"] == pytest.approx(0.0, abs=1e-6) and "policy_loss" in logged[1]
    assert logged[2]["kl"] != 0.0
    assert (tmp_path / "run" / "model" / "adapter_model.safetensors").exists()
    assert summary["steps"] == 3


def test_reward_model_with_another_tokenizer_and_critic_choice(tmp_path):
    from align.models import load_reward_model

    bert_rm = load_reward_model("tiny-bert")
    bert_rm.save_pretrained(tmp_path / "bert_rm")
    config = tiny_config(tmp_path, max_steps=1, domain_reward=False, reward_model=str(tmp_path / "bert_rm"))
    summary = train_ppo(config, prompts=PROMPTS)
    assert summary["critic_init"] == "policy"  # the BERT RM cannot read the policy's tokens
    assert "reward_rm" in metrics(config)[0]

    llama_rm = load_reward_model("tiny-llama")
    llama_rm.save_pretrained(tmp_path / "llama_rm")
    config = tiny_config(tmp_path, "rm_critic", max_steps=1, reward_model=str(tmp_path / "llama_rm"),
                         reward_model_weight=0.5)
    summary = train_ppo(config, prompts=PROMPTS, reward_fn=count_e)
    assert summary["critic_init"] == "reward_model"
    row = metrics(config)[0]
    assert row["reward"] == pytest.approx(0.5 * row["reward_rm"] + row["reward_domain"], abs=1e-5)


def test_ptx_loss_is_mixed_into_the_policy_update(tmp_path):
    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text("".join(json.dumps({"prompt": f"Tell me about tea {i}.", "response": "Tea is a drink."}) + "\n"
                           for i in range(6)))
    config = tiny_config(tmp_path, max_steps=1, ptx_data=str(ptx), ptx_coef=0.5, ptx_batch_size=2)
    train_ppo(config, prompts=PROMPTS, reward_fn=count_e)
    row = metrics(config)[0]
    assert math.isfinite(row["ptx_loss"]) and row["ptx_loss"] > 0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="reward_model"):
        load_config(Config, None, ["model=tiny-llama"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(Config, None, ["domain_reward=true", "rollout_batch_size=4", "batch_size=8"])
    with pytest.raises(ConfigError, match="kl_estimator"):
        load_config(Config, None, ["domain_reward=true", "kl_estimator=k2"])


def test_held_out_evaluation_can_sample_several_completions_per_prompt(tmp_path):
    """eval_samples completions per held-out prompt at eval_temperature, one line each, grouped by prompt id."""
    held_out = [Prompt(prompt=f"Held out {i}.", id=f"h{i}") for i in range(3)]
    config = tiny_config(tmp_path, max_steps=1, eval_prompts=3, eval_samples=4, eval_temperature=1.0)
    summary = train_ppo(config, prompts=PROMPTS[:8], reward_fn=count_e, held_out=held_out)
    lines = [json.loads(line) for line in (tmp_path / "run" / "eval_before.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in lines] == [(f"h{i}", s) for i in range(3) for s in range(4)]
    assert len({r["completion"] for r in lines}) > 3  # sampled, not the same greedy answer four times
    assert summary["eval_before_prompts"] == 3 and summary["eval_before_reward"] == pytest.approx(
        sum(r["reward"] for r in lines) / len(lines))
    assert "eval_before_sample" not in summary  # the sample index is bookkeeping, not a reward part
    report = write_ppo_report(RunDir(tmp_path / "run"), summary).read_text()
    assert "## Held-out prompts, 4 sampled per prompt at T=1" in report
    with pytest.raises(ConfigError, match="eval_samples"):
        tiny_config(tmp_path, eval_samples=2).validate()


def test_held_out_samples_before_and_after_share_their_random_numbers(tmp_path):
    """Common random numbers: a policy that did not move (learning rate 1e-30) writes the very same sampled
    completions before and after training, although training itself sampled in between."""
    held_out = [Prompt(prompt=f"Held out {i}.", id=f"h{i}") for i in range(3)]
    config = tiny_config(tmp_path, max_steps=2, eval_prompts=3, eval_samples=4, eval_temperature=1.0,
                         learning_rate=1e-30)
    train_ppo(config, prompts=PROMPTS[:8], reward_fn=count_e, held_out=held_out)
    before, after = ([json.loads(line)["completion"] for line in (tmp_path / "run" / name).read_text().splitlines()]
                     for name in ("eval_before.jsonl", "eval_after.jsonl"))
    assert len(set(before)) > 3 and before == after


def test_frozen_word_embeddings_stay_as_loaded_while_the_policy_trains(tmp_path):
    from align.models import load_causal_lm

    train_ppo(tiny_config(tmp_path, max_steps=2, freeze_word_embeddings=True), prompts=PROMPTS, reward_fn=count_e)
    base, tuned = load_causal_lm("tiny-llama"), load_causal_lm(str(tmp_path / "run" / "model"))
    assert torch.equal(tuned.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_keep_checkpoints_bounds_what_a_run_leaves_on_disk(tmp_path):
    config = tiny_config(tmp_path, max_steps=3, save_steps=1, keep_checkpoints=1)
    train_ppo(config, prompts=PROMPTS, reward_fn=count_e)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-3"]
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        tiny_config(tmp_path, keep_checkpoints=0).validate()
