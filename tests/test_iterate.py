"""`align iterate` on tiny models: two rounds end to end (samples, MetaRM update, PPO round, judged evaluation),
and a run killed inside round 1's MetaRM stage and again inside round 2's PPO stage resumes to the figures of
the uninterrupted run. Config errors name the key."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from align.config import ConfigError, load_config
from align.iterate import Config, rounds, run
from align.training import Trainer


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iterate")
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "music", "paper", "forest"]
    pairs = []
    for i in range(32):
        topic = " ".join(rng.sample(words, 2))
        pairs.append({"id": f"p{i}", "prompt": f"Tell me about {topic}.", "chosen": f"Happy to help with {topic}.",
                      "rejected": f"No, {topic} is boring."})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    prompts = [{"id": f"q{i}", "prompt": f"Say something about {' '.join(rng.sample(words, 2))}."} for i in range(10)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    return root


def keys(files: Path, output_dir: Path, *extra: str) -> list[str]:
    return [f"output_dir={output_dir}", "rounds=2", "policy=tiny-llama", "reward_model_backbone=tiny-bert",
            f"data={files / 'pairs.jsonl'}", f"prompts={files / 'prompts.jsonl'}",
            f"eval_prompts_data={files / 'prompts.jsonl'}", "max_prompts=6", "eval_prompts=4", "samples_per_prompt=3",
            "max_new_tokens=8", "precision=fp32", "progress=false", "judges=[rm]", "judge_options.rm.tie_band=0.0",
            "rm.max_length=64", "rm.batch_size=8", "rm.shifted_batch_size=2", "rm.learning_rate=1e-3",
            "rm.meta_learning_rate=0.1", "rm.report=false", "rm.save_steps=2", "rm.eval_fraction=0.25",
            "rm.dropout=0.0", "ppo.rollout_batch_size=4", "ppo.batch_size=2", "ppo.max_steps=2", "ppo.save_steps=1",
            "ppo.ppo_epochs=1", "ppo.learning_rate=1e-3", "ppo.report=false", *extra]


def figures(output_dir: Path) -> list[dict]:
    """Every round's numbers (paths and timings left out: they differ between runs by design)."""
    state = json.loads((output_dir / rounds.STATE_FILE).read_text())
    return [{k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for key, record in sorted(state["stages"].items()) if key.endswith("/evaluate")]


def test_two_rounds_then_a_run_killed_twice_resumes_to_the_same_figures(files, tmp_path, monkeypatch):
    summary = run(load_config(Config, None, keys(files, tmp_path / "whole")))
    assert summary["rounds_finished"] == 2 and summary["rm_update"] == "metarm"
    whole = figures(tmp_path / "whole")
    assert [r["round"] for r in whole] == [0, 1, 2]
    for report in whole[1:]:
        assert report["ppo_steps"] == 2 and report["samples_groups"] == 6
        assert report["judge_rm_vs_round0_n"] == report["judge_rm_vs_previous_n"] == 4
        assert report["judge_rm_vs_round0_wins"] + report["judge_rm_vs_round0_ties"] \
            + report["judge_rm_vs_round0_losses"] == 4
        for key in ("reward", "kl", "eval_reward", "rm_eval_accuracy", "samples_difference",
                    "samples_score_spread", "samples_difference_before"):
            assert math.isfinite(report[key]), key
        assert report["samples_difference"] != report["samples_difference_before"]  # the RM was updated
    run_dir = tmp_path / "whole"
    rows = [json.loads(line) for line in (run_dir / "round-1" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["completions"]) == 3 and r["round"] == 1 for r in rows)
    assert (run_dir / "round-2" / "ppo" / "model" / "config.json").exists()
    assert "rm vs round0" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["round2_judge_rm_vs_previous_n"] == 4

    # killed inside round 1's MetaRM (after its step-2 checkpoint), then inside round 2's PPO (after step 1)
    killed = tmp_path / "killed"
    real_save = Trainer.save_checkpoint
    kills = {"round-1/rm": True, "round-2/ppo": True}

    def save_then_die(self, state):
        path = real_save(self, state)
        stage = "/".join(self.run.path.parts[-2:])
        if kills.get(stage):
            kills[stage] = False
            raise KeyboardInterrupt(f"killed in {stage} at step {state.step}")
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt, match="round-1/rm at step 2"):
        run(load_config(Config, None, keys(files, killed)))
    state = json.loads((killed / rounds.STATE_FILE).read_text())
    assert sorted(state["stages"]) == ["round-0/evaluate", "round-0/rm", "round-1/sample"]
    with pytest.raises(KeyboardInterrupt, match="round-2/ppo at step 1"):
        run(load_config(Config, None, keys(files, killed, "resume=true")))
    assert "round-1/evaluate" in json.loads((killed / rounds.STATE_FILE).read_text())["stages"]
    resumed = run(load_config(Config, None, keys(files, killed, "resume=true")))
    assert resumed["rounds_finished"] == 2
    for got, expected in zip(figures(killed), whole, strict=True):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], abs=1e-6), (got["round"], key)


def test_config_errors_name_the_key(files, tmp_path):
    with pytest.raises(ConfigError, match=r"ppo\.model: set by iterate"):
        load_config(Config, None, keys(files, tmp_path, "ppo.model=tiny-llama"))
    with pytest.raises(ConfigError, match=r"ppo\.max_new_tokens: set it once at the top level"):
        load_config(Config, None, keys(files, tmp_path, "ppo.max_new_tokens=4"))
    with pytest.raises(ConfigError, match=r"ppo\.clip_rang: unknown key"):
        load_config(Config, None, keys(files, tmp_path, "ppo.clip_rang=0.1"))
    with pytest.raises(ConfigError, match=r"rm\.meta_learning_rate: expected a non-negative"):
        load_config(Config, None, keys(files, tmp_path, "rm.meta_learning_rate=-1"))
    with pytest.raises(ConfigError, match=r"initial_rm\.eval_fraction: every RM of the run"):
        load_config(Config, None, keys(files, tmp_path, "initial_rm.eval_fraction=0.5"))
    with pytest.raises(ConfigError, match=r"judge_options\.llm: options for a judge not in"):
        load_config(Config, None, keys(files, tmp_path, "judge_options.llm.base_url=http://127.0.0.1:1/v1"))


def test_the_ablation_keeps_the_reward_model(files, tmp_path):
    config = load_config(Config, None, keys(files, tmp_path, "rm_update=none"))
    assert rounds.update_reward_model(config, tmp_path, "runs/some-rm", "samples.jsonl") == {
        "reward_model": "runs/some-rm", "updated": "none"}
