"""The translation stage of `make demo`: a small multi-head RM on MQM pairs, then its evaluation.

Runs in a few CPU minutes with the embedded MiniLM backbone: trains the four heads (overall,
faithfulness, expressiveness, elegance) on a sample of the MQM training documents with
`align.rm.train.train_reward_model`, then reports acc_eq and strict accuracy next to the all-ties and
chrF baselines, and the robustness share, on a sample of the test documents.
"""
from __future__ import annotations

from pathlib import Path

from align.report import summary_table, write_report
from align.rm.train import Config, train_reward_model
from align.training.rundir import RunDir
from domains.translation.evaluate import ASPECTS, evaluate_translation, report_markdown

HEADS = ["overall", "faithfulness", "expressiveness", "elegance"]


def demo_stage(domain, output_dir, model: str = "minilm", train_pairs: int = 160, eval_pairs: int = 64,
               eval_sources: int = 20, max_steps: int = 10, progress: bool = True) -> dict:
    """Train and evaluate a small translation RM of `domain` (a TranslationDomain: its data) under
    `output_dir`; returns the flat summary."""
    output_dir = Path(output_dir)
    options = {"max_pairs": train_pairs, "max_eval_pairs": eval_pairs, "reward": {"calibration_size": 64}}
    if domain.data_dir:
        options["data_dir"] = domain.data_dir
    config = Config(model=model, domain="translation", heads=list(HEADS), domain_options=options,
                    output_dir=str(output_dir / "rm"), max_steps=max_steps, batch_size=16, learning_rate=5e-5,
                    max_length=192, precision="fp32", save_steps=0, log_steps=5, progress=progress)
    # fp32: bf16 autocast is emulated, ~6x slower, on CPUs without AVX512-BF16/AMX (measured here)
    config.validate()
    rm_summary = train_reward_model(config)

    domain = type(domain)(**{k: v for k, v in options.items() if k in ("data_dir", "reward")})
    summary, _ = evaluate_translation(domain, rm_summary["model_dir"], limit_sources=eval_sources)
    summary.update({f"rm_{k}": v for k, v in rm_summary.items() if isinstance(v, (int, float))})
    run = RunDir(output_dir)
    text = report_markdown(summary, ["chrf", "rm", "rm_combined"])
    write_report(run, "Translation reward model (demo)",
                 [("What ran", (f"A {model} reward model with heads {', '.join(HEADS)}, {rm_summary['steps']} steps "
                                f"on {rm_summary['train_pairs']} MQM pairs; evaluated on {summary['sources']} test "
                                "sources."), None),
                  ("Agreement with MQM and robustness", text, None), ("Summary", summary_table(summary), None)])
    run.write_summary(summary)
    print("translation demo: " + ", ".join(f"{aspect} acc_eq rm {summary[f'rm_{aspect}_acc_eq']:.3f} / chrF "
                                           f"{summary[f'chrf_{aspect}_acc_eq']:.3f}" for aspect in ASPECTS[:1])
          + f"; robustness {summary['robustness_share']:.1%}; report in {output_dir / 'report.md'}")
    return summary
