"""What `align iterate` measures each round: greedy completions of the held-out prompts (kept per round, so
every later round is judged against them), their reward, the RM's accuracy on held-out pairs, how well the RM
tells the round's own samples apart (J and score spread), and the judges' win / tie / lose."""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch

from align.iterate.config import Config, rm_config
from align.rm.shifted import ShiftedGroup, discrimination, encode_groups, overall_head, score_groups
from align.types import Prompt


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prompt_sets(config: Config) -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, held-out prompts): files when given, else the domain's train and test prompts."""
    from align.data import load_prompts
    from align.registry import get_domain

    def load(path: str | None, split: str) -> list[Prompt]:
        if path:
            return load_prompts(path)[0]
        return list(get_domain(config.domain, **config.domain_options).prompts(split))

    train = load(config.prompts, "train")
    train = train[:config.max_prompts] if config.max_prompts > 0 else train
    held_out = load(config.eval_prompts_data, "test")[:config.eval_prompts]
    if not train or not held_out:
        raise ValueError(f"align iterate: {len(train)} training and {len(held_out)} held-out prompts; both are "
                         f"needed (prompts={config.prompts!r}, eval_prompts_data={config.eval_prompts_data!r}, "
                         f"domain={config.domain!r})")
    return train, held_out


# --------------------------------------------------------------------------- completions


def greedy_completions(config: Config, policy_path: str, prompts: list[Prompt]) -> list[str]:
    """The policy's greedy completion of every prompt."""
    from align.generation import generate
    from align.models import load_causal_lm, load_tokenizer
    from align.ppo.data import prompt_text

    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path).to(device())
    generations = generate(policy, tokenizer, [prompt_text(tokenizer, p, config.prompt_format) for p in prompts],
                           max_new_tokens=config.max_new_tokens, temperature=0.0,
                           batch_size=config.generation_batch_size, max_prompt_length=config.max_prompt_length,
                           prompt_stops=[list(p.meta.get("stop") or []) for p in prompts])
    return [g.text for g in generations]


def write_completions(path: Path, prompts: list[Prompt], completions: list[str]) -> None:
    """JSONL rows `{"id", "completion"}`, whole or not at all: the completions file `align eval judge=...`
    reads (`completions_a=` / `completions_b=`), so any other judge can compare two rounds later."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps({"id": p.id, "completion": c}, ensure_ascii=False) + "\n"
                           for p, c in zip(prompts, completions)))
    os.replace(tmp, path)


def read_completions(path: str | Path) -> list[str]:
    return [json.loads(line)["completion"] for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the reward model's figures


def load_rm(path: str):
    from align.models import RewardModel

    model = RewardModel.from_pretrained(path).to(device())
    model.eval()
    return model


def rm_scores(reward_model, prompts: list[Prompt], completions: list[str], max_length: int) -> list[float]:
    """Scores of the completions, rendered as PPO's reward model reads them."""
    from align.models import score_texts
    from align.ppo.rollout import RewardSources

    texts = RewardSources(reward_model=reward_model).rm_texts(prompts, completions)
    head = overall_head(list(reward_model.head_names))
    return score_texts(reward_model, texts, max_length=max_length)[:, head].tolist()


def held_out_accuracy(config: Config, reward_model, path: str) -> dict[str, float]:
    """Accuracy, loss and reward gap of the RM at `path` on the held-out preference pairs (the split every RM
    stage of the run holds out)."""
    from align.rm.data import load_rm_data
    from align.rm.evaluate import preference_metrics, score_pairs

    settings = rm_config(config, config.output_dir, path)
    held_out = load_rm_data(settings).eval
    if not len(held_out):
        return {}
    chosen, rejected = score_pairs(reward_model, held_out, settings.eval_batch_size)
    return {f"rm_{k}": v for k, v in preference_metrics(chosen, rejected, prefix="eval_").items()} | {
        "rm_eval_pairs": len(held_out)}


def sample_discrimination(reward_model, groups: list[ShiftedGroup], max_length: int) -> dict[str, float]:
    """J and the score spread of `reward_model` on a round's samples."""
    encoded = encode_groups(reward_model.tokenizer, groups, max_length)
    return discrimination(score_groups(reward_model, encoded, 8, overall_head(list(reward_model.head_names))))


# --------------------------------------------------------------------------- judges


def build_judges(config: Config, round0_reward_model: str) -> list:
    """One judge per `judges` entry, with its `judge_options`; the `rm` judge scores with the round-0 RM unless
    told otherwise, and judges that need a domain get the run's."""
    from align.eval.judges import JUDGES, make_judge

    judges = []
    for kind in config.judges:
        options = dict(config.judge_options.get(kind, {}))
        parameters = inspect.signature(JUDGES[kind]).parameters if kind in JUDGES else {}
        if kind == "rm":
            options.setdefault("model", round0_reward_model)
        if "domain" in parameters:
            options.setdefault("domain", config.domain)
            options.setdefault("domain_options", config.domain_options)
        judges.append(make_judge(kind, **options))
    return judges


def judged(judges: list, prompts: list[Prompt], current: list[str], baseline: list[str], against: str
           ) -> dict[str, float]:
    """Win / tie / lose of the current completions (A) against a baseline's (B), per judge."""
    from align.eval.judges import win_tie_lose

    figures = {}
    for judge in judges:
        for key, value in win_tie_lose(judge.judge(prompts, current, baseline)).items():
            figures[f"judge_{judge.name}_vs_{against}_{key}"] = value
    return figures
