"""The code domain: compiler-feedback rewards from sandboxed execution (StepCoder / RLTF), the
CCCS curriculum, FGO masks, execution-labelled preference pairs and pass@k evaluation.

Modules: `tasks` (task sets and loaders), `easy` (the generated easy set), `extract` (completion ->
program), `rewards` (schemes), `fgo`, `cccs`, `pairs`, `passk`, `evaluate` (`align eval`),
`shims` (TRL / OpenRLHF / verl), `demo` (`make demo` stage).
"""
from domains.code.demo import demo_stage
from domains.code.domain import CodeDomain, task_prompt

__all__ = ["CodeDomain", "demo_stage", "task_prompt"]
