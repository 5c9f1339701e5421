"""`align eval`: score a model on a domain's evaluation.

With a domain that is `Evaluable` (code: pass@k; translation: acc_eq and robustness) its `evaluate`
runs. Otherwise a saved reward model is scored on a preference file:
pairwise accuracy, mean margin and a histogram of reward gaps. With `judge=` two policies (or two
completion files) are compared instead: win / tie / lose (align/eval/compare.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import ConfigError, check_path, doc
from align.data import encode_pair, load_preferences
from align.models import RewardModel
from align.registry import get_domain
from align.report import plot_histogram, summary_table, write_report
from align.rm.data import RMData
from align.rm.evaluate import preference_metrics, score_pairs
from align.training.rundir import RunDir
from align.types import Evaluable, PreferencePair


@dataclass
class Config:
    """`align eval`."""

    model: str = doc("The model to evaluate: a saved reward model directory for preference accuracy, or a policy "
                     "(embedded name, hub id, path) for generation-based evaluations.", "smollm2-135m")
    data: str | None = doc("Evaluation data; empty: the domain's test split.", None)
    domain: str = doc("Domain whose evaluation runs (`hh`, `translation`, `code`).", "hh")
    domain_options: dict = doc("Keyword options for the domain adapter.", {})
    output_dir: str = doc("Directory for summary.json and the report.", "runs/eval")
    split: str = doc("Domain split to evaluate on when `data` is empty.", "test")
    batch_size: int = doc("Examples per batch.", 16)
    max_length: int = doc("Maximum tokens per scored sequence (older context is cut first).", 512)
    limit: int = doc("Evaluate at most this many examples (-1: all).", -1)
    seed: int = doc("Random seed for sampling.", 0)
    strict: bool = doc("Fail on the first bad data row instead of skipping it.", False)
    options: dict = doc("Domain-specific evaluation options, e.g. `options.k=[1,5]` `options.num_samples=10`.", {})
    judge: str | None = doc("Compare two policies instead: `rm`, `execution`, `metric`, `llm` or `human` gives win / "
                            "tie / lose of A against B on the prompts of `data` or of the domain's `split`, with 95% "
                            "intervals and a sign test (align/eval/compare.py).", None)
    judge_options: dict = doc("Options of the judge (align/eval/judges): `judge_options.model=RM_DIR` and `tie_band` "
                              "(rm); `metric`, `tie_band` (metric); `base_url`, `model`, `api_key_env` (llm); "
                              "`labels=FILE` once annotated (human).", {})
    policy_a: str | None = doc("Policy A (embedded name, hub id or path) whose completions are generated and judged.",
                               None)
    policy_b: str | None = doc("Policy B, the baseline A is compared with.", None)
    completions_a: str | None = doc("Completions of A instead of `policy_a`: JSONL rows `{id, completion}` (matched "
                                    "to the prompts by id, or by order without ids), as a judged run writes them.",
                                    None)
    completions_b: str | None = doc("Completions of B instead of `policy_b`.", None)
    max_new_tokens: int = doc("Tokens generated per completion of `policy_a` / `policy_b`.", 128)
    temperature: float = doc("Sampling temperature of `policy_a` / `policy_b` (0: greedy).", 0.0)
    prompt_format: Literal["chat", "completion"] = doc("How `policy_a` / `policy_b` read the prompts: the tokenizer's "
                                                       "chat template, or the text as it is.", "chat")

    def validate(self) -> None:
        if self.batch_size <= 0 or self.max_length <= 0:
            raise ConfigError("batch_size and max_length: expected positive integers")
        check_path("data", self.data)
        self.validate_judge()

    def validate_judge(self) -> None:
        sides = {side: (getattr(self, f"policy_{side}"), getattr(self, f"completions_{side}")) for side in "ab"}
        if not self.judge:
            given = [f"{kind}_{side}" for side, (policy, path) in sides.items()
                     for kind, value in (("policy", policy), ("completions", path)) if value]
            if given or self.judge_options:
                raise ConfigError(f"{(given or ['judge_options'])[0]}: only with a judge (judge=rm|execution|metric|"
                                  "llm|human)")
            return
        from align.eval.judges import JUDGES

        if self.judge not in JUDGES:
            raise ConfigError(f"judge: expected one of {', '.join(JUDGES)}, got {self.judge!r}")
        for side, (policy, path) in sides.items():
            if bool(policy) == bool(path):
                raise ConfigError(f"policy_{side} / completions_{side}: give exactly one for side {side.upper()}")
            check_path(f"completions_{side}", path)
        if self.max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens: expected a positive integer, got {self.max_new_tokens!r}")


@torch.no_grad()
def evaluate_reward_model(reward_model, pairs: list[PreferencePair], batch_size: int = 16,
                          max_length: int = 512) -> dict:
    """Accuracy, mean margin and per-pair reward differences of `reward_model` (first head unless a
    pair's aspect names another) on `pairs`."""
    tokenizer = reward_model.tokenizer
    encoded = [encode_pair(tokenizer, pair, max_length) for pair in pairs]
    data = RMData(pairs, encoded, list(reward_model.head_names), tokenizer.pad_token_id)
    chosen, rejected = score_pairs(reward_model, data, batch_size)
    metrics = preference_metrics(chosen, rejected, prefix="")
    return {"accuracy": metrics.get("accuracy"), "mean_margin": metrics.get("reward_gap"),
            "loss": metrics.get("loss"), "pairs": len(pairs), "differences": (chosen - rejected).tolist()}


def _preference_pairs(config: Config) -> tuple[list[PreferencePair], dict[str, int]]:
    if config.data:
        loaded = load_preferences(config.data, strict=config.strict, limit=config.limit)
        return loaded.pairs, {f"skipped_{k}": v for k, v in loaded.skipped.items()}
    pairs = list(get_domain(config.domain, **config.domain_options).preferences(config.split))
    return (pairs[: config.limit] if config.limit > 0 else pairs), {}


def run(config: Config) -> dict:
    if config.judge:
        from align.eval.compare import compare

        return compare(config)
    run_dir = RunDir(config.output_dir)
    run_dir.save_config(config)
    if not config.data:
        domain = get_domain(config.domain, **config.domain_options)
        if isinstance(domain, Evaluable):
            summary = domain.evaluate(config, run_dir)
            run_dir.write_summary(summary)
            print(f"align eval: summary in {run_dir.summary_path}; report in {run_dir.path / 'report.md'}")
            return summary

    reward_model = RewardModel.from_pretrained(config.model)
    pairs, skipped = _preference_pairs(config)
    if not pairs:
        raise ValueError(f"align eval: no preference pairs to evaluate in {config.data or config.domain!r}")
    result = evaluate_reward_model(reward_model, pairs, config.batch_size, config.max_length)
    differences = result.pop("differences")
    summary = {**result, **skipped, "skipped_pairs": sum(skipped.values())}
    histogram = plot_histogram(differences, run_dir.path / "reward_gaps.png", "r(chosen) − r(rejected)", "reward gap")
    text = f"{sum(d > 0 for d in differences)} of {len(differences)} pairs ranked correctly."
    report = write_report(run_dir, f"Reward model evaluation: {config.model}",
                          [("Reward gaps", text, histogram), ("Summary", summary_table(summary), None)])
    run_dir.write_summary(summary)
    print(f"align eval: accuracy {summary['accuracy']:.3f} on {summary['pairs']} pairs; report in {report}")
    return summary
