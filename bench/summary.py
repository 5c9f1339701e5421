"""bench/results/summary.md: one table of every benchmark figure, from the results files alone.

Each results JSON written through `bench/provenance.py` carries `headline` rows (figure, ours, peer, peer value,
ratio, goal) and its provenance (date, commit, CPU model and flags, package versions, command, load). This
script copies them into one table, one row per headline, and lists the results files that have no headline
rows yet (written before provenance was kept, or by a script that does not use it), so nothing is silently
left out. It measures nothing.

    python bench/summary.py            # make bench runs it last
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PEER_PACKAGES = ("trl",)


def number(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def goal_cell(row: dict) -> str:
    if row.get("goal") is None:
        return "—"
    verdict = {True: "met", False: "**not met**", None: "no figure"}[row.get("met")]
    return f"≥ {row['goal']:g}: {verdict}"


def packages_cell(packages: dict) -> str:
    names = ("torch", "transformers", "accelerate", *PEER_PACKAGES)
    return ", ".join(f"{name} {packages[name]}" for name in names if name in packages)


def cpu_cell(cpu: dict) -> str:
    return f"{cpu.get('model', '?')}, {cpu.get('cores', '?')} cores ({' '.join(cpu.get('flags', []))}; bf16 " \
           f"{cpu.get('bf16', '?').split(' ')[0]})"


def load_cell(result: dict) -> str:
    start, end = result.get("load_at_start", {}), result.get("load_at_end", {})
    return f"{number(start.get('load_1m'))} → {number(end.get('load_1m'))}"


def render(results: dict[str, dict]) -> str:
    rows, without = [], []
    for name, result in sorted(results.items()):
        if not result.get("headline"):
            without.append(name)
            continue
        for row in result["headline"]:
            rows.append("| " + " | ".join([
                f"[{name}]({name})", row["figure"] + (f" ({row['note']})" if row.get("note") else ""),
                f"{number(row['ours'])} {row['unit']}", row["peer"] or "—",
                f"{number(row['peer_value'])}" if row.get("peer_value") is not None else "—",
                f"**{row['ratio']:.2f}×**" if row.get("ratio") is not None else "—", goal_cell(row),
                result.get("date", "?"), f"`{result.get('commit', '?')}`"
                + (f" +{len(result['uncommitted_files'])} uncommitted" if result.get("uncommitted_files") else ""),
                cpu_cell(result.get("cpu", {})), packages_cell(result.get("packages", {})), load_cell(result),
                f"`{result.get('command', '?')}`"]) + " |")
    lines = [
        "# Benchmark summary",
        "",
        (f"Written by `python bench/summary.py` on {time.strftime('%Y-%m-%d %H:%M')} from the results files beside "
        "it; every figure links to its file, which holds the full figures, the busy processes at start and end, "
        "and the exact command. Ratio: ours over the peer measured in the same invocation (for times, the peer's "
        "over ours), so > 1 means ours is faster or better. Load: the 1-minute load average at start → end "
        "(2 cores: above 2, something else was running)."),
        "",
        ("| results | figure | ours | peer | peer's | ratio | goal | date | commit | CPU (flags) | packages | load "
        "| command |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if without:
        lines += ["", "Results files without headline rows (not in the table; read the file): "
                  + ", ".join(f"[{n}]({n})" for n in without) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    results = {}
    for path in sorted(RESULTS.glob("*.json")):
        try:
            results[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            print(f"bench/summary.py: {path}: not JSON ({error})", file=sys.stderr)
            return 1
    out = RESULTS / "summary.md"
    out.write_text(render(results))
    count = sum(len(r.get("headline") or []) for r in results.values())
    print(f"bench summary: {count} figures from {len(results)} results files -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
