"""`align eval domain=code`: sample n completions per task, run them, report pass@k and statuses.

    align eval domain=code model=smollm2-135m options.num_samples=5 options.k=[1,5]

Options (`options.*`): `num_samples` (n, default 1), `k` (list, each <= n; default [1]),
`temperature` (default 0 when n == 1, else 0.8), `top_p` (0.95), `max_new_tokens` (256 chat, 192
completion), `batch_size` (8). Domain options choose the tasks (`domain_options.tasks=humaneval`).
Writes report.md, status_counts.png and samples.jsonl into the run directory; returns flat keys
`pass@<k>`, `status_<status>`, `tasks`, `num_samples`, `reward_mean`, `generation_s`, `execution_s`.
"""
from __future__ import annotations

import json
import time
from typing import Any

from align.report import pyplot, save_figure
from align.types import Prompt
from domains.code.passk import mean_pass_at_k
from domains.code.rewards import STATUSES, status_counts


def _formatted(tokenizer, prompt: Prompt) -> str:
    from align.generation import format_prompt

    text = format_prompt(tokenizer, prompt.prompt, chat=prompt.meta.get("style") != "completion")
    return text + prompt.meta.get("assistant_prefix", "")


def sample(model, tokenizer, prompts: list[Prompt], *, num_samples: int = 1, temperature: float = 0.0,
           top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 8, seed: int | None = 0,
           progress: bool = True) -> list[list[Any]]:
    """`num_samples` Generations per prompt (grouped by stop strings, since a batch shares them)."""
    from align.generation import generate

    results: list[list[Any]] = [[] for _ in prompts]
    groups: dict[tuple, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(tuple(prompt.meta.get("stop") or ()), []).append(index)
    for stop, indices in groups.items():
        texts = [_formatted(tokenizer, prompts[i]) for i in indices]
        generations = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_p=top_p, stop=list(stop) or None, num_return_sequences=num_samples,
                               batch_size=batch_size, seed=seed, progress=progress)
        for position, index in enumerate(indices):
            results[index] = generations[position * num_samples:(position + 1) * num_samples]
    return results


def plot_status(counts: dict[str, int], path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [s for s in STATUSES if counts.get(s)] or list(STATUSES)
    ax.bar(names, [counts.get(s, 0) for s in names], color="#4878a8")
    ax.set_ylabel("completions")
    ax.set_title("execution status")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    save_figure(fig, path)


def evaluate_code(domain, config, run_dir) -> dict:
    from align.models import load_causal_lm, load_tokenizer

    options = dict(config.options or {})
    num_samples = int(options.get("num_samples", 1))
    ks = options.get("k", [1])
    ks = [int(k) for k in (ks if isinstance(ks, (list, tuple)) else [ks])]
    if num_samples < 1 or any(not 1 <= k <= num_samples for k in ks):
        raise ValueError(f"options.k: every k must be between 1 and options.num_samples={num_samples}, got {ks}")
    temperature = float(options.get("temperature", 0.0 if num_samples == 1 else 0.8))
    prompts = domain.prompts(config.split if domain.task_source == "easy" else "all")
    prompts = list(prompts)[: config.limit] if config.limit > 0 else list(prompts)
    default_tokens = 192 if domain.prompt_style == "completion" else 256
    tokenizer = load_tokenizer(config.model, padding_side="left")
    model = load_causal_lm(config.model)
    start = time.perf_counter()
    samples = sample(model, tokenizer, prompts, num_samples=num_samples, temperature=temperature,
                     top_p=float(options.get("top_p", 0.95 if temperature > 0 else 1.0)),
                     max_new_tokens=int(options.get("max_new_tokens", default_tokens)),
                     batch_size=int(options.get("batch_size", 8)), seed=config.seed)
    generation_s = time.perf_counter() - start
    flat_prompts = [p for p, group in zip(prompts, samples) for _ in group]
    flat_texts = [g.text for group in samples for g in group]
    start = time.perf_counter()
    domain.settings.progress = True
    outputs = domain.reward(flat_prompts, flat_texts)
    execution_s = time.perf_counter() - start
    per_task: list[tuple[int, int]] = []
    rows = []
    for index, prompt in enumerate(prompts):
        task_outputs = outputs[index * num_samples:(index + 1) * num_samples]
        valid = [o for o in task_outputs if o.reward is not None]
        passed = sum(1 for o in valid if o.parts["status"] == "passed")
        if len(valid) >= max(ks):
            per_task.append((len(valid), passed))
        rows.append({"task_id": prompt.id, "passed": passed, "n": len(valid)})
    scores = mean_pass_at_k(per_task, ks)
    counts = status_counts(outputs)
    rewards = [o.reward for o in outputs if o.reward is not None]
    summary: dict[str, Any] = {f"pass@{k}": scores[k] for k in ks}
    summary.update({f"status_{s}": c for s, c in counts.items()})
    summary.update(tasks=len(prompts), tasks_scored=len(per_task), num_samples=num_samples, temperature=temperature,
                   model=config.model, task_set=domain.task_source, prompt_style=domain.prompt_style,
                   reward_scheme=domain.settings.scheme, reward_mean=sum(rewards) / len(rewards) if rewards else None,
                   generation_s=round(generation_s, 2), execution_s=round(execution_s, 2))
    with open(run_dir.path / "samples.jsonl", "w") as handle:
        for prompt, text, output in zip(flat_prompts, flat_texts, outputs):
            handle.write(json.dumps({"task_id": prompt.id, "completion": text, "reward": output.reward,
                                     "parts": output.parts}, default=str) + "\n")
    plot_status(counts, run_dir.path / "status_counts.png")
    write_report(run_dir.path / "report.md", summary, ks, counts, rows)
    return summary


def write_report(path, summary: dict, ks: list[int], counts: dict[str, int], rows: list[dict]) -> None:
    lines = [f"# Code evaluation: {summary['model']} on {summary['task_set']}", "",
             (f"{summary['tasks']} tasks, n = {summary['num_samples']} samples each "
             f"(temperature {summary['temperature']}), {summary['prompt_style']} prompts, "
             f"reward `{summary['reward_scheme']}`."), "",
             "| metric | value |", "|---|---|"]
    lines += [f"| pass@{k} (unbiased estimator) | {summary[f'pass@{k}']:.4f} |" for k in ks]
    lines += [f"| mean reward | {summary['reward_mean'] if summary['reward_mean'] is None else round(summary['reward_mean'], 4)} |",
              f"| generation wall time (s) | {summary['generation_s']} |",
              f"| execution wall time (s) | {summary['execution_s']} |", "",
              "## Execution status of every completion", "", "![status counts](status_counts.png)", "",
              "| status | completions |", "|---|---|"]
    lines += [f"| {status} | {count} |" for status, count in counts.items()]
    solved = [r["task_id"] for r in rows if r["passed"]]
    lines += ["", f"## Tasks with at least one passing sample ({len(solved)})", "",
              ", ".join(solved) if solved else "none", "",
              "Samples with their rewards and execution details: `samples.jsonl`."]
    path.write_text("\n".join(lines) + "\n")
