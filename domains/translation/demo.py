"""The translation stage of `make demo`: a reward model that reads Chinese, and a policy that translates.

1. Reward model: the frozen multilingual-e5-small encoder (`me5-small`) with Bradley-Terry heads (overall,
   faithfulness, expressiveness, elegance) fitted on a sample of the MQM training documents (`embedding_rm.py`);
   evaluated on a sample of the test document: strict accuracy (also at a gap of one major error) and acc_eq
   next to chrF, "the longer translation wins" and all ties, and the robustness of the gated reward.
2. Policy: the embedded translation policy (`gemma3-270m`) translates a few ALMA test sentences in both
   directions (zh→en, en→zh) greedily; the gated reward (RM heads, chrF against the reference, guards) scores them.
"""
from __future__ import annotations

import time
from pathlib import Path

from align.report import pyplot, save_figure, summary_table, write_report
from align.training.rundir import RunDir
from domains.translation.embedding_rm import SentenceEncoder, rows_by_head, train_embedding_rm
from domains.translation.evaluate import ASPECTS, evaluate_translation, report_markdown
from domains.translation.metrics import corpus_scores

HEADS = ["overall", "faithfulness", "expressiveness", "elegance"]
DEMO_L2 = 1.0  # the regularisation chosen on a training document (bench/translation_embedding_rm.py)


def translate_and_score(domain_type, options: dict, model_dir: str, policy: str, sentences: int) -> dict:
    """`policy` translates the first `sentences` ALMA test sentences in each direction; chrF and the reward."""
    import torch

    from align.generation import format_prompt, generate
    from align.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(policy, padding_side="left")
    model = load_causal_lm(policy, dtype=torch.float32).eval()
    summary: dict = {}
    for direction in ("zh-en", "en-zh"):
        domain = domain_type(direction=direction, reward_model=model_dir, reward={"metric_weights": {"chrf": 1.0}},
                             **options)
        prompts = domain.prompts("test")[:sentences]
        outputs = generate(model, tokenizer, [format_prompt(tokenizer, p.prompt, chat=False) for p in prompts],
                           max_new_tokens=64, batch_size=len(prompts),
                           prompt_stops=[list(p.meta.get("stop") or []) for p in prompts])
        texts = [o.text.strip() for o in outputs]
        rewards = domain.reward(prompts, texts)
        key = direction.replace("-", "_")
        summary[f"policy_{key}_chrf"] = corpus_scores(texts, [p.reference for p in prompts], domain.tgt_lang)["chrf"]
        summary[f"policy_{key}_mean_reward"] = sum(r.reward for r in rewards) / len(rewards)
        summary[f"policy_{key}_guard_failures"] = sum(bool(r.parts["guards_failed"]) for r in rewards)
        summary[f"policy_{key}_example"] = f"{prompts[0].meta['source']} -> {texts[0]}"
    return summary


def plot_strict_accuracy(summary: dict, path: Path) -> Path:
    """Bars: strict accuracy on clear MQM pairs (gap >= 5) per aspect, the RM beside chrF and longer-wins."""
    scorers = [("rm", "reward model"), ("chrf", "chrF"), ("length", "longer wins")]
    aspects = [a for a in ASPECTS if f"rm_{a}_strict_accuracy_gap5" in summary]
    figure, axis = pyplot().subplots(figsize=(6.4, 3.4))
    width = 0.8 / len(scorers)
    for i, (key, label) in enumerate(scorers):
        axis.bar([j + i * width for j in range(len(aspects))],
                 [summary.get(f"{key}_{a}_strict_accuracy_gap5") or 0 for a in aspects], width, label=label)
    axis.axhline(0.5, color="black", linestyle="--", linewidth=1)
    axis.set_xticks([j + width for j in range(len(aspects))],
                    [f"{a}\n({summary.get(f'{a}_strict_pairs_gap5', 0)} pairs)" for a in aspects])
    axis.set_ylabel("strict accuracy, gap >= 5")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def demo_stage(domain, output_dir, backbone: str = "me5-small", policy: str | None = "gemma3-270m",
               train_pairs: int = 240, eval_sources: int = 12, policy_sentences: int = 4, progress: bool = True) -> dict:
    """Fit and evaluate a small translation RM of `domain` (a TranslationDomain: its data) under `output_dir`,
    then let `policy` (None: skip) translate a few sentences; returns the flat summary."""
    output_dir = Path(output_dir)
    options = {"data_dir": domain.data_dir} if domain.data_dir else {}
    start = time.perf_counter()
    source = type(domain)(max_pairs=train_pairs, **options)
    encoder = SentenceEncoder(backbone)
    model = train_embedding_rm(rows_by_head(source.preferences("train"), HEADS), backbone=backbone, l2=DEMO_L2,
                               encoder=encoder)
    model.save(output_dir / "rm")
    fit_seconds = time.perf_counter() - start

    evaluated = type(domain)(reward_model=str(output_dir / "rm"), reward={"calibration_size": 64}, **options)
    evaluated._reward_model = model  # the fitted model, its encoder cache warm
    summary, _ = evaluate_translation(evaluated, str(output_dir / "rm"), limit_sources=eval_sources)
    summary.update({"rm_backbone": backbone, "rm_train_pairs": sum(len(v) for v in rows_by_head(
        source.preferences("train"), HEADS).values()), "rm_fit_seconds": fit_seconds})
    if policy:
        summary["policy"] = policy
        summary.update(translate_and_score(type(domain), options, str(output_dir / "rm"), policy, policy_sentences))
    summary["verdict"] = (
        f"{backbone} RM picks the better of two translations in {summary['rm_overall_strict_accuracy_gap5']:.2f} of "
        f"{summary['overall_strict_pairs_gap5']} clear MQM pairs (gap >= 5; chrF {summary['chrf_overall_strict_accuracy_gap5']:.2f}, "
        f"longer-wins {summary['length_overall_strict_accuracy_gap5']:.2f}); guards catch "
        f"{summary['robustness_share']:.0%} of {summary['robustness_cases']} broken outputs"
        + (f"; {policy} chrF zh->en {summary['policy_zh_en_chrf']:.1f}, en->zh {summary['policy_en_zh_chrf']:.1f}"
           if policy else ""))
    summary["plot"] = str(plot_strict_accuracy(summary, output_dir / "strict_accuracy.png"))
    run = RunDir(output_dir)
    text = report_markdown(summary, ["chrf", "length", "rm", "rm_combined"])
    policy_text = ("" if not policy else "\n".join(
        f"- {d}: chrF {summary[f'policy_{d}_chrf']:.1f}, mean reward {summary[f'policy_{d}_mean_reward']:.2f}, "
        f"guards failed {summary[f'policy_{d}_guard_failures']}/{policy_sentences}; "
        f"`{summary[f'policy_{d}_example']}`" for d in ("zh_en", "en_zh")))
    write_report(run, "Translation reward model and policy (demo)",
                 [("What ran", (f"A {backbone} reward model (frozen encoder, Bradley-Terry heads {', '.join(HEADS)}) "
                                f"fitted on {summary['rm_train_pairs']} MQM pairs; evaluated on {summary['sources']} "
                                f"test sources. Policy: {policy or 'none'}."), None),
                  ("Agreement with MQM and robustness", text, Path(summary["plot"])),
                  ("The policy translating (greedy, ALMA test)", policy_text, None),
                  ("Summary", summary_table(summary), None)])
    run.write_summary(summary)
    print("translation demo: " + ", ".join(f"{aspect} acc_eq rm {summary[f'rm_{aspect}_acc_eq']:.3f} / chrF "
                                           f"{summary[f'chrf_{aspect}_acc_eq']:.3f}" for aspect in ASPECTS[:1])
          + f"; robustness {summary['robustness_share']:.1%}"
          + (f"; {policy} chrF zh→en {summary['policy_zh_en_chrf']:.1f}, en→zh {summary['policy_en_zh_chrf']:.1f}"
             if policy else "") + f"; report in {output_dir / 'report.md'}")
    return summary
