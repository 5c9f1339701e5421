"""`align eval domain=translation`: how well a reward model (or a metric) agrees with MQM experts,
next to the all-ties and chrF baselines, and whether the reward resists gaming.

Scorers: `rm` (each aspect scored by its own head, else the overall head), `rm_combined` (the
reward's weighted head sum, no guards), `chrf` and `bleu` against the human reference `ref`, and two
reference-free baselines: `length` ("the longer translation wins", in characters) and, on request, `cosine`
(zero-shot multilingual-e5-small cosine of source and translation). Strict accuracy is reported on the
pairs at least `min_gap` apart and on those at least one major error apart (`MAJOR_GAP`, keys `..._gap5`).
The reference system is left out of the compared translations (a metric cannot score its own
reference fairly). Options (`options.*`): `metrics` (default [chrf]), `robustness` (true), `cosine` (false),
`min_gap` (the domain's), `limit_sources` (-1).
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from domains.translation import mqm
from domains.translation.agreement import all_ties_baseline, strict_pairwise_accuracy, tie_calibrated_accuracy
from domains.translation.embedding_rm import EmbeddingRewardModel, SentenceEncoder
from domains.translation.metrics import SENTENCE_METRICS
from domains.translation.mqm import REFERENCE_SYSTEM
from domains.translation.parallel import make_prompt
from domains.translation.reward import combine_heads
from domains.translation.robustness import corrupt, preference_shares

ASPECTS = ("overall",) + mqm.ASPECTS
MAJOR_GAP = 5.0  # MQM weight of one major error


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


def me5_cosines(sources: list[str], targets: list[str], encoder: SentenceEncoder | None = None) -> list[float]:
    """Zero-shot cosine of each (source, translation) under multilingual-e5-small (`query: ` prefix on both,
    mean pooling, as the model card prescribes for symmetric tasks); `encoder` reuses one's cache."""
    encoder = encoder or SentenceEncoder("me5-small")
    texts = list(dict.fromkeys(sources + targets))
    vectors = {t: pooled for t, (_, pooled) in zip(texts, encoder.encode(texts))}
    return [float(vectors[s] @ vectors[t]) for s, t in zip(sources, targets)]


def shared_encoder(domain) -> SentenceEncoder | None:
    """The me5 encoder of the domain's reward model, when it has one (its cache then serves the cosine baseline)."""
    model = domain.reward_model if domain.reward_model_path else None
    if isinstance(model, EmbeddingRewardModel) and model.backbone == "me5-small":
        return model.encoder
    return None


def score_items(domain, groups, references, metrics: list[str], use_rm: bool, cosine: bool = False
                ) -> dict[str, dict[str, list[list[float]]]]:
    """scores[scorer][aspect] = per group, one score per translation."""
    scores: dict[str, dict[str, list[list[float]]]] = {}
    lengths = [[float(len(s.target)) for s in group] for group in groups]
    scores["length"] = {aspect: lengths for aspect in ASPECTS}
    if cosine:
        flat = [s for group in groups for s in group]
        values, rows = me5_cosines([s.source for s in flat], [s.target for s in flat], shared_encoder(domain)), []
        for group in groups:
            rows.append(values[:len(group)])
            values = values[len(group):]
        scores["cosine"] = {aspect: rows for aspect in ASPECTS}
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
            major, major_pairs = strict_pairwise_accuracy(paired, max(min_gap, MAJOR_GAP), skip=identical)
            summary[f"{scorer}_{aspect}_acc_eq"] = acc_eq
            summary[f"{scorer}_{aspect}_epsilon"] = epsilon
            summary[f"{scorer}_{aspect}_strict_accuracy"] = strict
            summary[f"{scorer}_{aspect}_strict_accuracy_gap5"] = major
            summary[f"{aspect}_strict_pairs"] = pairs
            summary[f"{aspect}_strict_pairs_gap5"] = major_pairs
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


def preference_pair_accuracy(domain, model_dir: str | None, split: str = "test", aspect: str = "overall",
                             cosine: bool = False) -> dict[str, float]:
    """Strict accuracy on the domain's MQM preference pairs of `split` and `aspect` (every system, the human
    references included; a tie is wrong), on all of them and on those at least one major error apart
    (`MAJOR_GAP`): the reward model's `aspect` head, "the longer translation wins" (characters) and, on request,
    the zero-shot me5 cosine of source and translation. Keys `pairs_<scorer>_strict_accuracy[_gap5]`."""
    pairs = [p for p in domain.preferences(split) if p.aspect == aspect and p.source == "mqm"]
    if not pairs:
        raise ValueError(f"no {aspect} preference pairs in the {split} split")
    sides = [(p.chosen, p.rejected) for p in pairs]
    scores = {"length": [(float(len(c)), float(len(r))) for c, r in sides]}
    if cosine:
        if model_dir:
            domain.reward_model_path = model_dir
        values = me5_cosines([p.extra["source_text"] for p in pairs] * 2, [c for c, _ in sides] + [r for _, r in sides],
                             shared_encoder(domain))
        scores["cosine"] = list(zip(values[:len(pairs)], values[len(pairs):]))
    if model_dir:
        domain.reward_model_path = model_dir
        references = mqm.reference_translations(domain.segment_scores())
        prompts = [make_prompt(p.extra["source_text"], domain.src_lang, domain.tgt_lang,
                               reference=references.get(p.extra["source_text"])) for p in pairs]
        heads = domain.head_rewards(prompts + prompts, [c for c, _ in sides] + [r for _, r in sides])
        head = aspect if aspect in heads[0] else next(iter(heads[0]))
        scores["rm"] = [(a[head], b[head]) for a, b in zip(heads[:len(pairs)], heads[len(pairs):])]
    major = [p.margin is not None and p.margin >= MAJOR_GAP for p in pairs]
    summary = {"pairs": len(pairs), "pairs_gap5": sum(major)}
    for scorer, values in scores.items():
        right = [chosen > rejected for chosen, rejected in values]
        summary[f"pairs_{scorer}_strict_accuracy"] = sum(right) / len(right)
        summary[f"pairs_{scorer}_strict_accuracy_gap5"] = (sum(r for r, m in zip(right, major) if m) / sum(major)
                                                          if any(major) else float("nan"))
    return summary


def evaluate_translation(domain, model_dir: str | None, split: str = "test",
                         metrics: list[str] | tuple[str, ...] = ("chrf",), min_gap: float | None = None,
                         run_robustness: bool = True, limit_sources: int = -1, cosine: bool = False
                         ) -> tuple[dict, list]:
    """Flat summary (acc_eq, strict accuracy, baselines, robustness) and robustness examples."""
    if model_dir:
        domain.reward_model_path = model_dir
    use_rm = domain.reward_model_path is not None
    groups, references, without_reference = test_groups(domain, split, limit_sources)
    if not groups:
        raise ValueError(f"no {split} sources with a `{REFERENCE_SYSTEM}` translation and two systems to compare")
    with tqdm(total=2 + run_robustness, desc="translation eval", leave=False) as progress:
        scores = score_items(domain, groups, references, list(dict.fromkeys(["chrf", *metrics])), use_rm, cosine)
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
             "| aspect | scorer | strict accuracy | strict, gap ≥ 5 | acc_eq | epsilon |", "|---|---|---|---|---|---|"]
    for aspect in ASPECTS:
        lines.append(f"| {aspect} | all ties (baseline) | | | {summary[f'all_ties_{aspect}_acc_eq']:.3f} | |")
        for scorer in [s for s in scorers if f"{s}_{aspect}_acc_eq" in summary]:
            lines.append(f"| {aspect} | {scorer} | {summary[f'{scorer}_{aspect}_strict_accuracy']:.3f} | "
                         f"{summary[f'{scorer}_{aspect}_strict_accuracy_gap5']:.3f} | "
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
        limit_sources=int(options.get("limit_sources", config.limit if config.limit > 0 else -1)),
        cosine=bool(options.get("cosine", False)))
    scorers = [s for s in [*dict.fromkeys(["chrf", *metrics]), "length", "cosine", "rm", "rm_combined"]
               if f"{s}_overall_acc_eq" in summary]
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
