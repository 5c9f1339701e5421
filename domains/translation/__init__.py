"""The `translation` domain: MQM preference pairs per aspect (faithfulness / expressiveness /
elegance), parallel-text prompts, sacrebleu (and optional COMET) metrics, guards against reward
hacking, and the evaluation (tie-calibrated accuracy, robustness to corrupted translations).

Modules: `domain` (the adapter), `mqm` (MQM annotations -> pairs), `parallel` (parallel text -> prompts;
users' preference files), `reward` (heads, metrics and guards combined), `guards`, `metrics`, `comet`,
`agreement` (accuracy against MQM), `robustness` (corrupted translations), `evaluate` (`align eval`),
`demo` (the `align demo` stage), `shims` (the reward for TRL / OpenRLHF / verl).
"""
from domains.translation.domain import TranslationDomain

__all__ = ["TranslationDomain"]
