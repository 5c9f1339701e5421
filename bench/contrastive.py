"""Contrastive RM terms on hh-rlhf: plain RM vs SimCSE / SwAV on pair / difference features.

Every variant trains a MiniLM RM on the same train pairs with the same budget and dropout
(0.05, the contrastive views' rate, so only the loss differs), for several seeds, and is
measured on the same held-out pairs: preference accuracy, feature separability (linear-probe
accuracy and mean cosine of chosen vs rejected features) and training time as a ratio against
the plain RM of the same seed. Runs go to a pool of worker processes (one torch thread each) in
seed-major order, so each seed's five variants train at the same time under the same load.

    python bench/contrastive.py [--train-pairs 192] [--eval-pairs 100] [--seeds 0 1 2] [--workers 5]

fp32 by default: bf16 is computed natively only on CPUs with AVX512-BF16/AMX and emulated (much slower)
elsewhere; bench/results/precision.json has the measured ratio on the CPU it names.

Prints one line of figures and writes bench/results/contrastive.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import Run, headline

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "pairs.jsonl.gz"
VARIANTS = {"plain": [], "simcse-pair": ["contrastive.method=simcse", "contrastive.target=pair"],
            "simcse-diff": ["contrastive.method=simcse", "contrastive.target=difference"],
            "swav-pair": ["contrastive.method=swav", "contrastive.target=pair"],
            "swav-diff": ["contrastive.method=swav", "contrastive.target=difference"]}
FIGURES = ("eval_accuracy", "eval_probe_accuracy", "eval_feature_cosine", "eval_feature_distance")


def write_pairs(pairs, path: Path) -> Path:
    """The split as JSONL rows `align rm` reads back unchanged (prompt, chosen, rejected, id)."""
    with path.open("w") as handle:
        for pair in pairs:
            prompt = pair.prompt if isinstance(pair.prompt, str) else [dict(m) for m in pair.prompt]
            handle.write(json.dumps({"id": pair.id, "prompt": prompt, "chosen": pair.chosen,
                                     "rejected": pair.rejected}) + "\n")
    return path


def run_one(seed: int, variant: str, args: argparse.Namespace, train_file: Path, eval_file: Path,
            work: Path) -> None:
    """Train and evaluate one (seed, variant) RM into `work/<variant>-seed<seed>`."""
    import torch

    from align.config import load_config
    from align.rm.train import Config, train_reward_model

    torch.set_num_threads(args.threads)
    overrides = [f"model={args.model}", f"data={train_file}", f"eval_data={eval_file}", f"seed={seed}",
                 f"max_length={args.max_length}", f"batch_size={args.batch_size}", f"epochs={args.epochs}",
                 f"learning_rate={args.learning_rate}", f"precision={args.precision}", "save_steps=0",
                 "report=false", "progress=false", "log_steps=4", f"output_dir={work / f'{variant}-seed{seed}'}"]
    overrides += VARIANTS[variant] or ["dropout=0.05"]
    config = load_config(Config, None, overrides)
    started = time.perf_counter()
    summary = train_reward_model(config)
    print(json.dumps({"variant": variant, "seed": seed, **{k: summary.get(k) for k in FIGURES},
                      "train_seconds": summary["train_seconds"], "wall_seconds": time.perf_counter() - started}),
          file=sys.stderr, flush=True)


def run_all(args: argparse.Namespace, train_file: Path, eval_file: Path, work: Path) -> None:
    """Every (seed, variant) run, seed-major, in a pool of worker processes."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, seed, variant, args, train_file, eval_file, work)
                   for seed in args.seeds for variant in args.variants]
        for future in tqdm(as_completed(futures), total=len(futures), desc="contrastive bench"):
            future.result()


def collect_runs(work_dirs: list[Path], seeds: list[int], variants: list[str]) -> list[dict]:
    """Figures of every finished run (`<variant>-seed<k>/summary.json`) in `work_dirs`."""
    import yaml

    from align.rm.contrastive.term import ContrastiveConfig

    runs = []
    for seed in seeds:
        for variant in variants:
            found = [d / f"{variant}-seed{seed}" for d in work_dirs
                     if (d / f"{variant}-seed{seed}" / "summary.json").exists()]
            if not found:
                raise SystemExit(f"contrastive: no finished run {variant}-seed{seed} in "
                                 f"{', '.join(map(str, work_dirs))}")
            summary = json.loads((found[0] / "summary.json").read_text())
            config = yaml.safe_load((found[0] / "config.yaml").read_text())
            runs.append({"variant": variant, "seed": seed, **{k: summary.get(k) for k in FIGURES},
                         "train_seconds": summary["train_seconds"], "steps": summary["steps"],
                         "train_pairs": summary["train_pairs"], "eval_pairs": summary["eval_pairs"],
                         "contrastive": asdict(ContrastiveConfig(**config["contrastive"]).resolved())})
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-pairs", type=int, default=192)
    parser.add_argument("--eval-pairs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=5, help="runs trained in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=None, help="directory for the runs (default: a new temp dir)")
    parser.add_argument("--collect", nargs="+", type=Path, default=None, metavar="WORK_DIR",
                        help="train nothing: build the table from finished runs in these work directories "
                             "(parts of one benchmark trained by separate processes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "contrastive.json")
    args = parser.parse_args()
    provenance = Run(__file__)
    if "plain" not in args.variants:
        parser.error("--variants must include plain (the cost ratios are measured against it)")
    if not DATA.exists():
        print(f"contrastive: skipped, {DATA} not found")
        return 0

    from align.data import load_preferences, split_train_eval

    loaded = load_preferences(str(DATA))
    # one split for every variant and seed: the seeds vary initialisation, data order and dropout only
    train_pairs, eval_pairs = split_train_eval(loaded.pairs, 0.25, seed=0)
    train_pairs, eval_pairs = train_pairs[: args.train_pairs], eval_pairs[: args.eval_pairs]
    if args.collect:
        work_dirs = args.collect
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench-contrastive-"))
        work.mkdir(parents=True, exist_ok=True)
        run_all(args, write_pairs(train_pairs, work / "train.jsonl"), write_pairs(eval_pairs, work / "eval.jsonl"),
                work)
        work_dirs = [work]
    runs = collect_runs(work_dirs, args.seeds, args.variants)
    if {r["train_pairs"] for r in runs} != {len(train_pairs)} or {r["eval_pairs"] for r in runs} != {len(eval_pairs)}:
        raise SystemExit("contrastive: the collected runs used other train/eval sizes than these arguments")

    plain_seconds = {r["seed"]: r["train_seconds"] for r in runs if r["variant"] == "plain"}
    table = {}
    for variant in args.variants:
        mine = [r for r in runs if r["variant"] == variant]
        row = {}
        for key in FIGURES:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([r[key] for r in mine])
        row["cost_ratio_mean"], row["cost_ratio_std"] = mean_std(
            [r["train_seconds"] / plain_seconds[r["seed"]] for r in mine])
        table[variant] = row
    for row in table.values():
        row["accuracy_delta_vs_plain"] = row["eval_accuracy_mean"] - table["plain"]["eval_accuracy_mean"]

    result = {"benchmark": "contrastive", "data": str(DATA.relative_to(ROOT.parent)),
              "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "seeds": args.seeds,
              "model": args.model, "max_length": args.max_length, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "epochs": args.epochs, "dropout": 0.05,
              "precision": args.precision, "threads_per_worker": args.threads,
              "skipped_rows": dict(loaded.skipped), "variants": table, "runs": runs}
    provenance.write(args.out, result, [
        headline(f"contrastive {name}: held-out accuracy, mean of {len(args.seeds)} seeds ({len(eval_pairs)} pairs)",
                 row["eval_accuracy_mean"], "plain RM, same seeds, pairs and budget",
                 table["plain"]["eval_accuracy_mean"], "accuracy",
                 note=f"training time x{row['cost_ratio_mean']:.2f} of plain")
        for name, row in table.items() if name != "plain"])
    print("contrastive: " + " | ".join(
        f"{name} acc {row['eval_accuracy_mean']:.3f}±{row['eval_accuracy_std']:.3f} "
        f"probe {row['eval_probe_accuracy_mean']:.3f} cos {row['eval_feature_cosine_mean']:.3f} "
        f"cost {row['cost_ratio_mean']:.2f}x" for name, row in table.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
