"""`align demo`: the embedded default, end to end, offline on a CPU.

Stages, each writing its own run directory under `output_dir`:
- `rm`: a MiniLM reward model on hh-rlhf harmless-base pairs (left truncation, counted skips);
- every stage an installed domain offers (`align.types.HasDemo`): `translation` (a multi-head RM on MQM
  pairs, metrics, guards, robustness), `code` (SmolLM2 on easy and HumanEval CCCS tasks, sandboxed
  compiler-feedback rewards, pass@1) and `ppo` (PPO-max on SmolLM2 with the code reward, pass@1 on
  held-out tasks before and after), from the code domain.
A stage that cannot run here (its data is missing) is reported as skipped with the reason.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from align.config import doc, load_config
from align.registry import available_domains, get_domain
from align.rm import train as rm
from align.types import HasDemo


@dataclass
class Config:
    """`align demo`."""

    output_dir: str = doc("Directory for every stage's run directory and the overview.", "runs/demo")
    stages: list[str] = doc("Stages to run, in order: `rm` and any domain names that offer a demo.",
                            ["rm", "translation", "code", "ppo"])
    rm_pairs: int = doc("hh pairs for the reward-model stage (the rest are held out).", 600)
    rm_max_length: int = doc("Token budget per sequence in the reward-model stage.", 192)
    seed: int = doc("Random seed of every stage.", 0)


def rm_stage(config: Config, output_dir: Path) -> dict:
    """A MiniLM reward model on hh-rlhf pairs: train, evaluate on held-out pairs, report."""
    rm_config = load_config(rm.Config, None, [
        "model=minilm", "domain=hh", f"output_dir={output_dir}", f"max_examples={config.rm_pairs}",
        f"max_length={config.rm_max_length}", "batch_size=8", "epochs=1", "learning_rate=3e-5",
        "save_steps=50", "log_steps=5", f"seed={config.seed}"])
    return rm.run(rm_config)


def domain_stage(stage: str):
    """The demo stage called `stage` of the installed domain that offers it."""
    for name in available_domains():
        domain = get_domain(name)
        if isinstance(domain, HasDemo) and stage in domain.demo_stages():
            return domain.demo_stages()[stage]
    offered = [s for n in available_domains() if isinstance(d := get_domain(n), HasDemo) for s in d.demo_stages()]
    raise LookupError(f"unknown stage {stage!r}; known: rm, {', '.join(offered) or 'no domain stages'}")


def _stage_report(summary: dict, stage_dir: Path) -> str:
    """Where a person should look: the stage's report.md, else its JSON result."""
    candidates = [summary.get("report"), summary.get("ppo_report"), stage_dir / "report.md",
                  *sorted(stage_dir.glob("*demo.json"))]
    return next((str(c) for c in candidates if c and Path(c).exists()), str(stage_dir))


def run(config: Config) -> dict:
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    overview: dict[str, dict] = {}
    for stage in config.stages:
        started = time.perf_counter()
        stage_dir = root / stage
        print(f"\n=== align demo: stage {stage} -> {stage_dir}")
        try:
            summary = rm_stage(config, stage_dir) if stage == "rm" else domain_stage(stage)(stage_dir)
        except (FileNotFoundError, LookupError) as error:
            print(f"align demo: stage {stage} skipped: {error}")
            overview[stage] = {"status": "skipped", "reason": str(error)}
            continue
        overview[stage] = {"status": "done", "seconds": round(time.perf_counter() - started, 1),
                           "report": _stage_report(summary, stage_dir),
                           **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}
    (root / "overview.json").write_text(json.dumps(overview, indent=2) + "\n")
    print("\n=== align demo: done")
    for stage, result in overview.items():
        where = result.get("report") if result["status"] == "done" else result["reason"]
        print(f"  {stage:<12} {result['status']:<8} {where}")
    print(f"overview: {root / 'overview.json'}")
    return overview
