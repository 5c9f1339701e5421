"""The rounds of `align iterate`, stage by stage, with a state file that makes a killed run resumable.

    round 0     rm         the initial RM: `reward_model`, or `align rm` on the pairs (round-0/rm)
                evaluate   greedy completions of the initial policy on the held-out prompts, RM accuracy
    round r     sample     k completions per training prompt from the policy of round r-1 (round-r/samples.jsonl)
                rm         MetaRM on those samples and the original pairs, vanilla BT, or none (round-r/rm)
                ppo        a PPO round from the previous policy against the round's RM (round-r/ppo)
                evaluate   reward, KL, RM accuracy, J and spread on the samples, judges vs round 0 and round r-1

`iterate_state.json` records every finished stage with what it produced, written atomically after each; with
`resume=true` finished stages are skipped and the stage in progress starts again, the RM and PPO stages from
their own checkpoints. Sampling is seeded by (seed, round, prompt) and evaluation is greedy, so a resumed run
ends with the figures of an uninterrupted one.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from align.iterate import evaluation as ev
from align.iterate.config import Config, metarm_config, ppo_config, rm_config
from align.iterate.report import write_outputs
from align.training.rundir import RunDir, write_json_atomic

STATE_FILE = "iterate_state.json"


class RoundState:
    """Finished stages and their records, on disk after every stage."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.data: dict = {"stages": {}, "seconds": {}}
        if resume and path.exists():
            self.data = json.loads(path.read_text())

    def stage(self, key: str, work: Callable[..., dict], *args) -> dict:
        """The record of stage `key`: read back when it finished before, else `work(*args)`, saved."""
        if key in self.data["stages"]:
            return self.data["stages"][key]
        started = time.perf_counter()
        record = work(*args)
        self.data["stages"][key] = record
        self.data["seconds"][key] = round(time.perf_counter() - started, 3)
        write_json_atomic(self.path, self.data)
        return record

    def reports(self) -> list[dict]:
        return [record for key, record in sorted(self.data["stages"].items(), key=lambda kv: _round_of(kv[0]))
                if key.endswith("/evaluate")]


def _round_of(key: str) -> int:
    return int(key.split("/")[0].removeprefix("round-"))


def run_rounds(config: Config) -> dict:
    run = RunDir(config.output_dir)
    run.save_config(config)
    state = RoundState(run.path / STATE_FILE, config.resume)
    train_prompts, eval_prompts = ev.prompt_sets(config)

    initial = state.stage("round-0/rm", initial_reward_model, config, run.path / "round-0")
    rm0 = initial["reward_model"]
    judges = ev.build_judges(config, rm0)
    state.stage("round-0/evaluate", evaluate_round0, config, run.path / "round-0", rm0, eval_prompts)
    write_outputs(run, config, state.reports(), state.data["seconds"])
    policy, reward_model = config.policy, rm0
    for r in range(1, config.rounds + 1):
        folder = run.path / f"round-{r}"
        samples = state.stage(f"round-{r}/sample", sample_round, config, folder, r, policy, train_prompts)
        updated = state.stage(f"round-{r}/rm", update_reward_model, config, folder, reward_model, samples["samples"])
        trained = state.stage(f"round-{r}/ppo", ppo_round, config, folder, r, policy, updated["reward_model"],
                              train_prompts)
        state.stage(f"round-{r}/evaluate", evaluate_round, config, folder, r, judges, eval_prompts, rm0, reward_model,
                    updated, trained, samples)
        policy, reward_model = trained["policy"], updated["reward_model"]
        write_outputs(run, config, state.reports(), state.data["seconds"])  # partial results as rounds finish
    summary = write_outputs(run, config, state.reports(), state.data["seconds"],
                            final={"final_policy": policy, "final_reward_model": reward_model})
    return summary


# --------------------------------------------------------------------------- stages


def initial_reward_model(config: Config, folder: Path) -> dict:
    if config.reward_model:
        return {"reward_model": config.reward_model, "trained": False}
    from align.rm.train import train_reward_model

    summary = train_reward_model(rm_config(config, str(folder / "rm"), config.reward_model_backbone, initial=True))
    return {"reward_model": summary["model_dir"], "trained": True, "steps": summary["steps"]}


def evaluate_round0(config: Config, folder: Path, rm0: str, eval_prompts) -> dict:
    completions = ev.greedy_completions(config, config.policy, eval_prompts)
    ev.write_completions(folder / "eval_completions.jsonl", eval_prompts, completions)
    reward_model = ev.load_rm(rm0)
    reward = ev.rm_scores(reward_model, eval_prompts, completions, config.max_prompt_length + config.max_new_tokens)
    return {"round": 0, "policy": config.policy, "reward_model": rm0, "eval_reward": _mean(reward),
            "eval_reward_rm0": _mean(reward), **ev.held_out_accuracy(config, reward_model, rm0)}


def sample_round(config: Config, folder: Path, round_index: int, policy_path: str, prompts) -> dict:
    from align.models import load_causal_lm, load_tokenizer
    from align.rm.shifted import sample_shifted_groups, write_shifted_groups

    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path).to(ev.device())
    groups = sample_shifted_groups(policy, tokenizer, prompts, config.samples_per_prompt, seed=config.seed,
                                   round_index=round_index, prompt_format=config.prompt_format,
                                   max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                   top_p=config.top_p, max_prompt_length=config.max_prompt_length)
    path = folder / "samples.jsonl"
    write_shifted_groups(groups, path)
    return {"samples": str(path), "groups": len(groups), "responses": sum(len(g.completions) for g in groups)}


def update_reward_model(config: Config, folder: Path, previous: str, samples: str) -> dict:
    if config.rm_update == "none":
        return {"reward_model": previous, "updated": "none"}
    output_dir = str(folder / "rm")
    if config.rm_update == "metarm":
        from align.rm.metarm import train_metarm

        summary = train_metarm(metarm_config(config, output_dir, previous, samples))
    else:
        from align.rm.train import train_reward_model

        summary = train_reward_model(rm_config(config, output_dir, previous))
    return {"reward_model": summary["model_dir"], "updated": config.rm_update, "steps": summary["steps"]}


def ppo_round(config: Config, folder: Path, round_index: int, policy: str, reward_model: str, prompts) -> dict:
    from align.ppo.train import train_ppo

    summary = train_ppo(ppo_config(config, round_index, str(folder / "ppo"), policy, reward_model), prompts=prompts,
                        held_out=[])
    stopped = bool(summary["stopped_early"])
    return {"policy": policy if stopped else summary["model_dir"], "steps": summary["steps"],
            "reward": summary["final_reward"], "first_reward": summary["first_reward"], "kl": summary["final_kl"],
            "stopped_early": stopped, "stop_reason": summary["stop_reason"]}


def evaluate_round(config: Config, folder: Path, round_index: int, judges: list, eval_prompts, rm0: str,
                   previous_rm: str, updated: dict, trained: dict, samples: dict) -> dict:
    from align.rm.shifted import load_shifted_groups

    root = folder.parent
    completions = ev.greedy_completions(config, trained["policy"], eval_prompts)
    ev.write_completions(folder / "eval_completions.jsonl", eval_prompts, completions)
    length = config.max_prompt_length + config.max_new_tokens
    groups, _ = load_shifted_groups(samples["samples"])
    current_rm, before_rm = ev.load_rm(updated["reward_model"]), ev.load_rm(previous_rm)
    report = {"round": round_index, "policy": trained["policy"], "reward_model": updated["reward_model"],
              "rm_update": config.rm_update, "ppo_steps": trained["steps"], "reward": trained["reward"],
              "first_reward": trained["first_reward"], "kl": trained["kl"], "ppo_stopped_early": trained["stopped_early"],
              "eval_reward": _mean(ev.rm_scores(current_rm, eval_prompts, completions, length)),
              "eval_reward_rm0": _mean(ev.rm_scores(ev.load_rm(rm0), eval_prompts, completions, length)),
              **ev.held_out_accuracy(config, current_rm, updated["reward_model"]),
              "samples_groups": samples["groups"],
              **{f"samples_{k}_before": v for k, v in ev.sample_discrimination(before_rm, groups, length).items()},
              **{f"samples_{k}": v for k, v in ev.sample_discrimination(current_rm, groups, length).items()}}
    round0 = ev.read_completions(root / "round-0" / "eval_completions.jsonl")
    report.update(ev.judged(judges, eval_prompts, completions, round0, "round0"))
    previous = ev.read_completions(root / f"round-{round_index - 1}" / "eval_completions.jsonl")
    report.update(ev.judged(judges, eval_prompts, completions, previous, "previous"))
    return report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
