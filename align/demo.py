"""`align demo`: the embedded default, end to end, offline on a CPU, each stage showing its method working.

Stages, each writing its own run directory under `output_dir` and ending with a one-line verdict and the plot to
look at first:
- `rm` and `strength` (`align.rm.demo`): a MiniLM reward model on hh-rlhf pairs; preference strength finding
  known flips in controlled pairs, and what cleaning them does;
- every stage an installed domain offers (`align.types.HasDemo`): `translation` (a reward model that reads
  Chinese, metrics, guards, a policy that translates), `code` (SmolLM2 on code tasks with the sandboxed
  compiler-feedback reward) and `ppo` (the policy trained on that reward, pass@1 on held-out tasks before and
  after with an exact paired test), from the translation and code domains.
A stage that cannot run here (its data is missing) is reported as skipped with the reason. The overview
(`overview.md` with a table of stages, verdicts, times and links; `overview.json`) is rewritten after every
stage, so a stopped demo keeps what it showed.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from align.config import doc
from align.registry import available_domains, get_domain
from align.rm.demo import rm_stage, strength_stage
from align.types import HasDemo


@dataclass
class Config:
    """`align demo`."""

    output_dir: str = doc("Directory for every stage's run directory and the overview.", "runs/demo")
    stages: list[str] = doc("Stages to run, in order: `rm`, `strength` and any stage a domain offers.",
                            ["rm", "strength", "translation", "code", "ppo"])
    seed: int = doc("Random seed of every stage.", 0)


CORE_STAGES = {"rm": rm_stage, "strength": strength_stage}


def domain_stage(stage: str):
    """The demo stage called `stage` of the installed domain that offers it."""
    offered = []
    for name in available_domains():
        domain = get_domain(name)
        if isinstance(domain, HasDemo):
            stages = domain.demo_stages()
            if stage in stages:
                return stages[stage]
            offered += list(stages)
    raise LookupError(f"unknown stage {stage!r}; known: {', '.join([*CORE_STAGES, *offered])}")


def _stage_report(summary: dict, stage_dir: Path) -> str:
    """Where a person should look: the stage's report.md, else its JSON result."""
    candidates = [summary.get("report"), summary.get("ppo_report"), stage_dir / "report.md",
                  *sorted(stage_dir.glob("*demo.json"))]
    return next((str(c) for c in candidates if c and Path(c).exists()), str(stage_dir))


def write_overview(root: Path, overview: dict[str, dict]) -> Path:
    """overview.json and overview.md: one row per stage (status, verdict, seconds, report and plot links)."""
    (root / "overview.json").write_text(json.dumps(overview, indent=2) + "\n")
    lines = ["# align demo", "", "| stage | status | verdict | seconds | report | plot |", "|---|---|---|---|---|---|"]
    def link(path: str | None) -> str:
        return f"[{Path(path).name}]({os.path.relpath(path, root)})" if path and Path(path).exists() else ""

    for stage, result in overview.items():
        verdict = result.get("verdict") or result.get("reason", "")
        lines.append(f"| {stage} | {result['status']} | {verdict} | {result.get('seconds', '')} | "
                     f"{link(result.get('report'))} | {link(result.get('plot'))} |")
    total = sum(r.get("seconds", 0) for r in overview.values())
    lines += ["", f"Total: {total:.0f} s."]
    path = root / "overview.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(config: Config) -> dict:
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    overview: dict[str, dict] = {}
    for stage in config.stages:
        started = time.perf_counter()
        stage_dir = root / stage
        print(f"\n=== align demo: stage {stage} -> {stage_dir}")
        try:
            if stage in CORE_STAGES:
                summary = CORE_STAGES[stage](stage_dir, seed=config.seed)
            else:
                summary = domain_stage(stage)(stage_dir)
        except (FileNotFoundError, LookupError) as error:
            print(f"align demo: stage {stage} skipped: {error}")
            overview[stage] = {"status": "skipped", "reason": str(error)}
            write_overview(root, overview)
            continue
        overview[stage] = {"status": "done", "seconds": round(time.perf_counter() - started, 1),
                           "report": _stage_report(summary, stage_dir),
                           **{k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and k != "report"}}
        print(f"align demo: {stage}: {summary.get('verdict', 'done')}")
        write_overview(root, overview)
    path = write_overview(root, overview)
    print("\n=== align demo: done")
    for stage, result in overview.items():
        print(f"  {stage:<12} {result['status']:<8} {result.get('verdict') or result.get('reason', '')}")
        if result.get("report"):
            print(f"  {'':<12} report:  {result['report']}")
    print(f"overview: {path}")
    return overview
