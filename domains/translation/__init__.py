"""The `translation` domain: MQM preference pairs per aspect (faithfulness / expressiveness /
elegance), parallel-text prompts, sacrebleu (and optional COMET) metrics, guards against reward
hacking, and the evaluation (tie-calibrated accuracy, robustness to corrupted translations).
"""
from domains.translation.domain import TranslationDomain


def demo_stage(output_dir, **options):
    """`make demo` stage: train a small multi-head RM on MQM pairs, evaluate it, write the report."""
    from domains.translation.demo import demo_stage as run_stage

    return run_stage(output_dir, **options)


__all__ = ["TranslationDomain", "demo_stage"]
