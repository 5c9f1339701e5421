"""`align iterate`: iterative RLHF. Each round samples k responses per prompt from the current policy, updates
the reward model (MetaRM, vanilla retraining, or not at all), runs a PPO round against it and evaluates.

    config.py       the keys, and the `align rm` / MetaRM / `align ppo` configs built for each round
    rounds.py       the rounds stage by stage, and the state file that lets a killed run resume (start here)
    evaluation.py   greedy completions, reward, RM accuracy, J on the samples, judges' win / tie / lose
    report.py       summary.json and report.md, rewritten as rounds finish
"""
from __future__ import annotations

import os

from align.config import ConfigError
from align.iterate.config import Config
from align.iterate.rounds import run_rounds


def run(config: Config) -> dict:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("align iterate runs in one process; launch its stages' commands (align rm, align ppo) "
                          "under torchrun or accelerate to train them on several processes")
    summary = run_rounds(config)
    last = summary["rounds_finished"]
    print(f"align iterate: {last} round(s) with {config.rm_update} RM updates; final policy in "
          f"{summary['final_policy']}; report in {summary['report']}")
    return summary


__all__ = ["Config", "run", "run_rounds"]
