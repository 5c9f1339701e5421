"""`align ppo advantage=grpo|rloo|reinforce++`: group sampling, no critic, learning a toy reward, the KL's two
places, resume, and two processes reproducing one."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from test_distributed import HERE, TOLERANCE, final_weights, launch, logged, summary

import align.ppo.step as step_module
from align.config import ConfigError, load_config
from align.ppo import Config, train_ppo
from align.ppo.step import estimate_advantages
from align.types import Prompt, RewardOutput

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = [Prompt(prompt=f"Say something, number {i}.", id=str(i)) for i in range(32)]


def count_e(prompts, completions, **meta):
    return [RewardOutput(reward=float(c.count("e"))) for c in completions]


def config_for(tmp_path, advantage, name="run", **overrides) -> Config:
    values = {"model": "tiny-llama", "output_dir": str(tmp_path / name), "domain_reward": True, "advantage": advantage,
              "rollout_batch_size": 4, "samples_per_prompt": 4, "batch_size": 4, "max_new_tokens": 8,
              "learning_rate": 3e-3, "kl_coef": 0.01, "max_steps": 12, "save_steps": 0, "progress": False,
              "report": False}
    values.update(overrides)
    return Config(**values)


def metrics(config: Config) -> list[dict]:
    with open(f"{config.output_dir}/metrics.jsonl") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("advantage", ["grpo", "rloo", "reinforce++"])
def test_critic_free_estimators_learn_a_toy_reward_without_a_critic(tmp_path, advantage):
    config = config_for(tmp_path, advantage, save_steps=6, eval_prompts=4)
    summary = train_ppo(config, prompts=PROMPTS[:24], reward_fn=count_e, held_out=PROMPTS[24:28])
    rewards = [m["reward"] for m in metrics(config)]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 1.0, rewards  # ~1 e per completion at the start
    assert summary["critic_init"] == "none" and summary["advantage"] == advantage
    assert summary["samples"] == 12 * 16  # 4 prompts x 4 completions per step
    assert summary["eval_before_prompts"] == 4  # greedy evaluation: one completion per prompt
    assert all("value_loss" not in m and "explained_variance" not in m for m in metrics(config))
    for step in (6, 12):  # nothing of a critic is checkpointed
        checkpoint = tmp_path / "run" / "checkpoints" / f"step-{step}"
        assert (checkpoint / "policy").is_dir() and not (checkpoint / "critic").exists()
    assert 0 < summary["generation_share"] < 1


def test_bf16_minibatches_see_the_ratio_of_one_before_any_update(tmp_path):
    # minibatches of 2 of the 16 rows: some hold two samples of one prompt, some two prompts; the old log-probs were
    # computed on all 16 rows. With no update (lr 1e-30 moves no fp32 weight) every ratio must be exactly 1 in bf16,
    # i.e. every pass computes a row's log-probs the same way whatever else is in its batch.
    config = config_for(tmp_path, "rloo", batch_size=2, max_steps=1, learning_rate=1e-30, precision="bf16")
    train_ppo(config, prompts=PROMPTS[:8], reward_fn=count_e)
    logged_step = metrics(config)[0]
    assert logged_step["approx_kl"] == 0.0 and logged_step["policy_clipfrac"] == 0.0, logged_step


def test_a_single_update_pass_reuses_the_evaluation_forward_and_trains_the_same(tmp_path, monkeypatch):
    # one epoch of one minibatch of exactly the rollout's rows: the update's forward would repeat step 3's, so step 3
    # keeps its graph; the run must match one that recomputes (fp32, same seed) step for step
    def one_pass(name):
        return config_for(tmp_path, "rloo", name, batch_size=16, ppo_epochs=1, max_steps=3, precision="fp32")

    config = one_pass("reused")
    forwards = []
    original = step_module.response_logprobs
    monkeypatch.setattr(step_module, "response_logprobs", lambda *a, **k: forwards.append(1) or original(*a, **k))
    train_ppo(config, prompts=PROMPTS[:8], reward_fn=count_e)
    reused_forwards, forwards[:] = len(forwards), []
    monkeypatch.setattr(step_module, "single_update_pass", lambda *args: False)
    recomputed = one_pass("recomputed")
    train_ppo(recomputed, prompts=PROMPTS[:8], reward_fn=count_e)
    assert (reused_forwards, len(forwards)) == (3 * 2, 3 * 3)  # policy + reference per step, + the update's
    for key in ("reward", "kl", "policy_loss", "entropy"):
        assert [m[key] for m in metrics(config)] == pytest.approx([m[key] for m in metrics(recomputed)], abs=1e-5), key
    assert all(m["approx_kl"] == 0.0 for m in metrics(config))  # the old log-probs are the update's own, detached
    # the recomputing pass sees the rows shuffled: rounding differs, and Adam's normalisation magnifies it a little
    reused, again = final_weights(tmp_path / "reused"), final_weights(tmp_path / "recomputed")
    assert max((reused[name] - again[name]).abs().max().item() for name in reused) < 1e-4


def test_each_prompt_is_sampled_k_times_as_one_contiguous_group(tmp_path):
    seen: list[list[str]] = []

    def record(prompts, completions, **meta):
        seen.append([p.id for p in prompts])
        return count_e(prompts, completions)

    train_ppo(config_for(tmp_path, "grpo", max_steps=2, samples_per_prompt=3), prompts=PROMPTS, reward_fn=record)
    for ids in seen:
        assert len(ids) == 12
        groups = [ids[i:i + 3] for i in range(0, 12, 3)]
        assert all(len(set(group)) == 1 for group in groups) and len({g[0] for g in groups}) == 4


def test_a_dropped_member_is_left_out_of_its_group_and_counted(tmp_path):
    def drop_first_of_each_group(prompts, completions, **meta):
        return [RewardOutput(reward=None if i % 4 == 0 else float(c.count("e"))) for i, c in enumerate(completions)]

    config = config_for(tmp_path, "grpo", max_steps=2)
    summary = train_ppo(config, prompts=PROMPTS, reward_fn=drop_first_of_each_group)
    assert summary["dropped_no_reward"] == 8 and summary["samples"] == 24
    assert [m["dropped"] for m in metrics(config)] == [4, 4]


def test_kl_in_the_reward_or_in_the_loss():
    # rloo, two completions of one prompt scoring 1 and 0; the first has KL 0.5 + 0.5 to the reference
    score, kept = torch.tensor([1.0, 0.0]), torch.tensor([True, True])
    kl, mask = torch.tensor([[0.5, 0.5], [0.0, 0.0]]), torch.ones(2, 2)
    in_reward = Config(domain_reward=True, advantage="rloo", samples_per_prompt=2, kl_penalty="reward")
    advantages, returns = estimate_advantages(in_reward, None, score, kept, kl, 1.0, None, mask)
    assert returns is None and advantages.tolist() == [[0.0, 0.0], [0.0, 0.0]]  # 1 - 1.0 * (0.5 + 0.5) = 0
    in_loss = Config(domain_reward=True, advantage="rloo", samples_per_prompt=2, kl_penalty="loss")
    advantages, _ = estimate_advantages(in_loss, None, score, kept, kl, 1.0, None, mask)
    assert advantages.tolist() == [[1.0, 1.0], [-1.0, -1.0]]  # the task reward alone
    assert Config(domain_reward=True, advantage="grpo", samples_per_prompt=2).kl_in_loss  # auto: the paper's
    assert not Config(domain_reward=True, advantage="reinforce++").kl_in_loss


def test_grpo_logs_its_kl_loss_and_resumes_like_an_uninterrupted_run(tmp_path):
    whole = config_for(tmp_path, "grpo", "whole", max_steps=4, save_steps=2, samples_per_prompt=2)
    train_ppo(whole, prompts=PROMPTS, reward_fn=count_e)
    train_ppo(config_for(tmp_path, "grpo", "split", max_steps=2, samples_per_prompt=2), prompts=PROMPTS,
              reward_fn=count_e)
    resumed = config_for(tmp_path, "grpo", "split", max_steps=4, resume=True, samples_per_prompt=2)
    train_ppo(resumed, prompts=PROMPTS, reward_fn=count_e)
    a, b = metrics(whole), metrics(resumed)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        for key in ("reward", "kl", "kl_loss", "policy_loss", "advantage_abs"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)
    assert any(m["kl_loss"] > 0 for m in a[1:])


def test_config_errors_name_the_key():
    base = ["domain_reward=true"]
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        load_config(Config, None, [*base, "advantage=grpo"])
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        load_config(Config, None, [*base, "advantage=rloo", "samples_per_prompt=1"])
    with pytest.raises(ConfigError, match="critic_warmup_steps"):
        load_config(Config, None, [*base, "advantage=reinforce++", "critic_warmup_steps=2"])
    with pytest.raises(ConfigError, match="critic_model"):
        load_config(Config, None, [*base, "advantage=reinforce++", "critic_model=policy"])
    with pytest.raises(ConfigError, match="advantage"):
        load_config(Config, None, [*base, "advantage=ppo"])
    # a minibatch may hold every sample of a step: rollout_batch_size x samples_per_prompt
    config = load_config(Config, None, [*base, "advantage=grpo", "rollout_batch_size=2", "samples_per_prompt=4",
                                        "batch_size=8"])
    assert config.rollout_samples == 8
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(Config, None, [*base, "advantage=grpo", "rollout_batch_size=2", "samples_per_prompt=2",
                                   "batch_size=8"])


@pytest.mark.parametrize("advantage", ["grpo", "reinforce++"])
def test_two_processes_match_one_with_groups_and_dropped_members(tmp_path, advantage):
    # 4 prompts x 2 completions in one process, 2 + 2 prompts in two; one minibatch of the whole rollout. GRPO's
    # group statistics must see whole groups (dropped members left out), REINFORCE++'s normalisation every process
    launch([str(HERE / "ppo_group_run.py"), str(tmp_path / "one"), "4", "4", advantage], 1)
    launch([str(HERE / "ppo_group_run.py"), str(tmp_path / "two"), "2", "2", advantage], 2)
    for key in ("reward", "kl"):
        assert logged(tmp_path / "two", key) == pytest.approx(logged(tmp_path / "one", key), abs=TOLERANCE), key
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert max((one[name] - two[name]).abs().max().item() for name in one) < TOLERANCE
    # 3 steps x 8 samples; prompts 1 and 6 (each drawn once per epoch of 16) lose their first member
    dropped = summary(tmp_path / "one")["dropped_no_reward"]
    assert dropped == summary(tmp_path / "two")["dropped_no_reward"] and dropped > 0
    assert Counter(logged(tmp_path / "one", "dropped")) == Counter(logged(tmp_path / "two", "dropped"))


def test_two_processes_match_one_when_the_update_reuses_the_evaluation_forward(tmp_path):
    # one epoch of one micro-batch per step on every process: under DDP the update's backward runs through the graph
    # of step 3's forward, which ran outside the accumulation loop; the gradients must still be averaged as for one
    launch([str(HERE / "ppo_group_run.py"), str(tmp_path / "one"), "4", "8", "grpo", "single-pass"], 1)
    launch([str(HERE / "ppo_group_run.py"), str(tmp_path / "two"), "2", "4", "grpo", "single-pass"], 2)
    for key in ("reward", "kl"):
        assert logged(tmp_path / "two", key) == pytest.approx(logged(tmp_path / "one", key), abs=TOLERANCE), key
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert max((one[name] - two[name]).abs().max().item() for name in one) < TOLERANCE
