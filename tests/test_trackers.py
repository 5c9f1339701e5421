"""`report_to`: every trainer's logged steps reach accelerate's tracker beside metrics.jsonl (TensorBoard read
back from the event files the run wrote); a tracker that is not installed fails before any work, naming the key."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from align.cli import main
from align.config import ConfigError, load_config
from align.ppo import Config as PPOConfig
from align.ppo import train_ppo
from align.types import Prompt, RewardOutput


def count_e(prompts, completions, **meta):
    return [RewardOutput(reward=float(c.count("e"))) for c in completions]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "lamp", "garden"]
    rows = [{"prompt": f"Tell me about {' '.join(rng.sample(words, 2))}.", "chosen": "Happy to help, here it is.",
             "rejected": "No. Go away."} for _ in range(40)]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sft") / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Repeat word {i}.", "response": "tea tea"}) + "\n"
                            for i in range(16)))
    return str(path)


def scalars(run: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the TensorBoard event files under `run`: {tag: {step: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict[int, float]] = {}
    files = sorted(run.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {run}"
    for path in files:
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            found.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
    return found


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_tracker_matches_metrics(run: Path, keys: list[str]) -> None:
    tracked = scalars(run / "tensorboard")
    rows = logged(run)
    assert rows
    for key in keys:
        expected = {row["step"]: row[key] for row in rows if isinstance(row.get(key), (int, float))}
        assert expected, key
        assert set(tracked[key]) == set(expected), key
        for step, value in expected.items():
            assert tracked[key][step] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, step)


def test_ppo_sft_and_rm_runs_write_their_steps_to_tensorboard(tmp_path, pairs_file, sft_file):
    common = ["progress=false", "log_steps=1", "save_steps=0", "report_to=tensorboard"]
    ppo = tmp_path / "ppo"
    config = load_config(PPOConfig, None, ["model=tiny-llama", "domain_reward=true", "rollout_batch_size=2",
                                           "samples_per_prompt=2", "advantage=grpo", "batch_size=4",
                                           "max_new_tokens=4", "max_steps=2", f"output_dir={ppo}", "report=false",
                                           *common])
    train_ppo(config, prompts=[Prompt(prompt=f"Say something {i}.") for i in range(4)], reward_fn=count_e)
    assert_tracker_matches_metrics(ppo, ["reward", "kl", "policy_loss", "generation_seconds"])
    sft = tmp_path / "sft"
    assert main(["sft", "model=tiny-llama", f"data={sft_file}", "batch_size=4", "max_steps=3",
                 f"output_dir={sft}", *common]) == 0
    assert_tracker_matches_metrics(sft, ["loss"])
    rm = tmp_path / "rm"
    assert main(["rm", "model=tiny-bert", f"data={pairs_file}", "batch_size=8", "max_length=32", "max_steps=3",
                 f"output_dir={rm}", "report=false", *common]) == 0
    assert_tracker_matches_metrics(rm, ["loss", "accuracy"])
    # the resolved config is stored as the run's hyperparameters
    assert list((rm / "tensorboard").rglob("hparams.yml"))


def test_strength_members_each_write_their_own_tensorboard_run(tmp_path, pairs_file):
    out = tmp_path / "strength"
    assert main(["strength", "model=tiny-bert", f"data={pairs_file}", "members=2", "max_length=32", "epochs=1",
                 "batch_size=8", "eval_fraction=0.2", "slice_accuracy=false", "report=false", "progress=false",
                 "log_steps=1", "report_to=tensorboard", f"output_dir={out}"]) == 0
    member_runs = sorted(p.parent for p in out.rglob("tensorboard"))
    assert len(member_runs) == 2
    for run in member_runs:
        assert_tracker_matches_metrics(run, ["loss"])


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_fails_before_any_work_naming_the_key(tracker, monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=f"report_to: {tracker} is not installed"):
        load_config(PPOConfig, None, ["domain_reward=true", f"report_to={tracker}"])
    # a config built in Python (no validate()) fails when the trainer starts, before any model is loaded
    config = PPOConfig(model="tiny-llama", domain_reward=True, output_dir=str(tmp_path / "run"), report_to=tracker)
    with pytest.raises(ConfigError, match="report_to"):
        train_ppo(config, prompts=[], reward_fn=lambda prompts, completions, **meta: [])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_report_to_none_writes_no_tracker_files(tmp_path, sft_file):
    run = tmp_path / "sft"
    assert main(["sft", "model=tiny-llama", f"data={sft_file}", "batch_size=4", "max_steps=2", "log_steps=1",
                 "save_steps=0", "progress=false", f"output_dir={run}"]) == 0
    assert logged(run) and not (run / "tensorboard").exists()
