"""The code domain: compiler-feedback rewards from sandboxed execution (StepCoder / RLTF), the
CCCS curriculum, FGO masks, execution-labelled preference pairs and pass@k evaluation.

Modules: `domain` (the adapter), `tasks` (task sets and loaders), `easy` (the generated easy set),
`sources` (every task set by name), `prompts` (tasks as prompts), `extract` (completion -> program),
`rewards` (schemes), `fgo`, `cccs`, `pairs`, `passk`, `evaluate` (`align eval`), `shims` (TRL / OpenRLHF /
verl), `demo` and `ppo_demo` (`align demo` stages).
"""
from domains.code.domain import CodeDomain
from domains.code.prompts import task_prompt

__all__ = ["CodeDomain", "task_prompt"]
