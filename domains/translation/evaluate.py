"""`align eval domain=translation`: how well a reward model (or a metric) agrees with MQM experts,
next to the all-ties and chrF baselines, and whether the reward resists gaming.

Scorers: `rm` (each aspect scored by its own head, else the overall head), `rm_combined` (the
reward's weighted head sum, no guards), `chrf` and `bleu` against the human reference `ref`.
The reference system is left out of the compared translations (a metric cannot score its own
reference fairly). Options (`options.*`): `metrics` (default [chrf]), `robustness` (true),
`min_gap` (the domain's), `limit_sources` (-1).
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from domains.translation import mqm
from domains.translation.agreement import all_ties_baseline, strict_pairwise_accuracy, tie_calibrated_accuracy
from domains.translation.metrics import SENTENCE_METRICS
from domains.translation.mqm import REFERENCE_SYSTEM
from domains.translation.parallel import make_prompt
from domains.translation.reward import combine_heads
from domains.translation.robustness import corrupt, preference_shares

ASPECTS = ("overall",) + mqm.ASPECTS


def test_groups(domain, split: str = "test", limit_sources: int = -1
                ) -> tuple[list[list[mqm.SegmentScore]], list[str], int]:
    """(translations per source without the reference system, the reference texts, sources left out
    for lack of a reference)."""
    groups, references, without_reference = [], [], 0
    for group in mqm.group_by_source(domain.split_scores(split)).values():
        reference = [s for s in group if s.system == REFERENCE_SYSTEM]
        items = [s for s in group if s.system != REFERENCE_SYSTEM]
        if not reference:
            without_reference += 1
            continue
        if len(items) >= 2:
            groups.append(items)
            references.append(reference[0].target)
    if limit_sources > 0:
        groups, references = groups[:limit_sources], references[:limit_sources]
    return groups, references, without_reference


def human(item: mqm.SegmentScore, aspect: str) -> float:
    return item.score if aspect == "overall" else item.aspect_scores[aspect]


def score_items(domain, groups, references, metrics: list[str], use_rm: bool
                ) -> dict[str, dict[str, list[list[float]]]]:
    """scores[scorer][aspect] = per group, one score per translation."""
    scores: dict[str, dict[str, list[list[float]]]] = {}
    for metric in metrics:
        values = [[SENTENCE_METRICS[metric](s.target, ref, domain.tgt_lang) for s in group]
                  for group, ref in zip(groups, references)]
        if metric == "ter":  # an error rate: lower is better
            values = [[-v for v in row] for row in values]
        scores[metric] = {aspect: values for aspect in ASPECTS}
    if use_rm:
        flat = [(s, ref) for group, ref in zip(groups, references) for s in group]
        prompts = [make_prompt(s.source, domain.src_lang, domain.tgt_lang, reference=ref) for s, ref in flat]
        heads = domain.head_rewards(prompts, [s.target for s, _ in flat])
        stats = domain.head_stats()
        combined = [combine_heads(h, domain.reward_config, stats)[0] for h in heads]

        def regroup(values: list[float]) -> list[list[float]]:
            out, start = [], 0
            for group in groups:
                out.append(values[start:start + len(group)])
                start += len(group)
            return out

        names = list(heads[0]) if heads else []
        scores["rm"] = {a: regroup([h[a if a in names else ("overall" if "overall" in names else names[0])]
                                    for h in heads]) for a in ASPECTS}
        scores["rm_combined"] = {a: regroup(combined) for a in ASPECTS}
    return scores


def agreement_table(groups, scores, min_gap: float) -> dict[str, float]:
    summary: dict[str, float] = {}
    identical = [[sum(t.target == s.target for t in group) > 1 for s in group] for group in groups]
    for aspect in ASPECTS:
        human_scores = [[human(s, aspect) for s in group] for group in groups]
        summary[f"all_ties_{aspect}_acc_eq"] = all_ties_baseline([(h, h) for h in human_scores])
        for scorer, by_aspect in scores.items():
            paired = list(zip(human_scores, by_aspect[aspect]))
            acc_eq, epsilon = tie_calibrated_accuracy(paired)
            strict, pairs = strict_pairwise_accuracy(paired, min_gap, skip=identical)
            summary[f"{scorer}_{aspect}_acc_eq"] = acc_eq
            summary[f"{scorer}_{aspect}_epsilon"] = epsilon
            summary[f"{scorer}_{aspect}_strict_accuracy"] = strict
            summary[f"{aspect}_strict_pairs"] = pairs
    return summary


def robustness(domain, groups, references, use_rm: bool) -> tuple[dict[str, float], list]:
    """Original (best human score) vs each corruption under the domain reward; also the chrF-only and
    RM-only (no guards) shares for comparison."""
    originals = [max(group, key=lambda s: (s.score, s.system)) for group in groups]
    cases, corrupted = [], []
    for index, original in enumerate(originals):
        unrelated = originals[(index + len(originals) // 2) % len(originals)].target
        for name, text in corrupt(original.target, original.source, unrelated, domain.tgt_lang).items():
            corrupted.append((index, name, text))
        cases.append(make_prompt(original.source, domain.src_lang, domain.tgt_lang, reference=references[index]))
    summary: dict[str, float] = {}
    prompts = cases + [cases[i] for i, _, _ in corrupted]
    completions = [o.target for o in originals] + [text for _, _, text in corrupted]
    outputs = domain.reward(prompts, completions)
    rewards = [o.reward for o in outputs]
    summary.update(preference_shares(rewards[: len(cases)],
                                     [(i, n, r) for (i, n, _), r in zip(corrupted, rewards[len(cases):])]))
    peers = {"chrf": [SENTENCE_METRICS["chrf"](c, p.reference, domain.tgt_lang)
                      for p, c in zip(prompts, completions)]}
    if use_rm:
        peers["rm_only"] = [o.parts["score"] for o in outputs]
    for peer, values in peers.items():
        shares = preference_shares(values[: len(cases)],
                                   [(i, n, v) for (i, n, _), v in zip(corrupted, values[len(cases):])])
        summary.update({k.replace("robustness_", f"robustness_{peer}_"): v for k, v in shares.items()
                        if k != "robustness_cases"})
    examples = [(name, originals[i].target, text, outputs[len(cases) + k].parts.get("guards_failed"))
                for k, (i, name, text) in enumerate(corrupted)]
    return summary, examples


def evaluate_translation(domain, model_dir: str | None, split: str = "test",
                         metrics: list[str] | tuple[str, ...] = ("chrf",), min_gap: float | None = None,
                         run_robustness: bool = True, limit_sources: int = -1) -> tuple[dict, list]:
    """Flat summary (acc_eq, strict accuracy, baselines, robustness) and robustness examples."""
    if model_dir:
        domain.reward_model_path = model_dir
    use_rm = domain.reward_model_path is not None
    groups, references, without_reference = test_groups(domain, split, limit_sources)
    if not groups:
        raise ValueError(f"no {split} sources with a `{REFERENCE_SYSTEM}` translation and two systems to compare")
    with tqdm(total=2 + run_robustness, desc="translation eval", leave=False) as progress:
        scores = score_items(domain, groups, references, list(dict.fromkeys(["chrf", *metrics])), use_rm)
        progress.update(1)
        summary = {"sources": len(groups), "translations": sum(len(g) for g in groups),
                   "sources_without_reference": without_reference, "reward_model": model_dir or ""}
        summary.update(agreement_table(groups, scores, domain.min_gap if min_gap is None else min_gap))
        progress.update(1)
        examples = []
        if run_robustness:
            shares, examples = robustness(domain, groups, references, use_rm)
            summary.update(shares)
            progress.update(1)
    return summary, examples


def report_markdown(summary: dict, scorers: list[str]) -> str:
    lines = [("Segment-level agreement with MQM experts on the test documents (pairs of translations of the same "
              "source; `acc_eq` is tie-calibrated and grouped by source, WMT 2023 style; strict accuracy counts "
              "metric ties as wrong)."), "",
             "| aspect | scorer | strict accuracy | acc_eq | epsilon |", "|---|---|---|---|---|"]
    for aspect in ASPECTS:
        lines.append(f"| {aspect} | all ties (baseline) | | {summary[f'all_ties_{aspect}_acc_eq']:.3f} | |")
        for scorer in scorers:
            lines.append(f"| {aspect} | {scorer} | {summary[f'{scorer}_{aspect}_strict_accuracy']:.3f} | "
                         f"{summary[f'{scorer}_{aspect}_acc_eq']:.3f} | {summary[f'{scorer}_{aspect}_epsilon']:.4g} |")
    if "robustness_share" in summary:
        lines += ["", (f"Robustness: the reward prefers the original translation in {summary['robustness_share']:.1%} "
                       f"of {summary['robustness_cases']} corrupted cases (goal ≥ 95%)."),
                  "", "| corruption | reward | chrF | RM alone |", "|---|---|---|---|"]
        names = sorted(k[len("robustness_chrf_"):] for k in summary if k.startswith("robustness_chrf_")
                       and k != "robustness_chrf_share")
        for name in names:
            rm_only = summary.get(f"robustness_rm_only_{name}")
            lines.append(f"| {name} | {summary[f'robustness_{name}']:.3f} | {summary[f'robustness_chrf_{name}']:.3f} | "
                         + (f"{rm_only:.3f} |" if rm_only is not None else "– |"))
    return "\n".join(lines)


def evaluate_domain(domain, config, run_dir) -> dict:
    """`align eval domain=translation model=RM_DIR`: writes report.md into the run directory."""
    from align.report import summary_table, write_report

    options = dict(config.options or {})
    model_dir = config.model if config.model and Path(config.model).is_dir() else None
    metrics = list(options.get("metrics", ["chrf"]))
    summary, examples = evaluate_translation(
        domain, model_dir, split=config.split, metrics=metrics, min_gap=options.get("min_gap"),
        run_robustness=bool(options.get("robustness", True)),
        limit_sources=int(options.get("limit_sources", config.limit if config.limit > 0 else -1)))
    scorers = [m for m in dict.fromkeys(["chrf", *metrics])] + (["rm", "rm_combined"] if model_dir else [])
    text = report_markdown(summary, scorers)
    if not model_dir:
        text = (f"No reward model directory given (`model={config.model}` is not a directory): metrics only.\n\n"
                + text)
    sample = "\n".join(f"- **{name}**: `{corrupted[:120]}` (guards failed: {failed})"
                       for name, _, corrupted, failed in examples[:: max(1, len(examples) // 12)][:12])
    write_report(run_dir, "Translation reward evaluation",
                 [("Agreement with MQM", text, None), ("Corrupted examples", sample, None),
                  ("Summary", summary_table(summary), None)])
    print(f"align eval (translation): {summary['sources']} sources; "
          + ", ".join(f"{s} acc_eq {summary[f'{s}_overall_acc_eq']:.3f}" for s in scorers)
          + f"; all-ties {summary['all_ties_overall_acc_eq']:.3f}"
          + (f"; robustness {summary['robustness_share']:.1%}" if "robustness_share" in summary else ""))
    return summary
