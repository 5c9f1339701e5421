"""RM training throughput in bf16 against fp32, on this machine's CPU (or GPU), with its bf16 flags recorded.

Same invocation, same MiniLM backbone, same hh-rlhf harmless-base pairs, same token ids, batch size,
schedule and seed; only `precision` differs. The fp32 run is the peer: the figure is bf16 pairs/s over fp32
pairs/s, with each run's held-out accuracy beside it (bf16 should not cost accuracy). Whether bf16 is fast
depends on the CPU: natively computed with AVX512-BF16 or AMX, emulated (slowly) without them.

    .venv/bin/python bench/precision.py [--train 400 --eval 200]     -> bench/results/precision.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import Run, cpu, headline

HH_PAIRS = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "pairs.jsonl.gz"


def train(precision: str, train_file: Path, eval_file: Path, args, output_dir: Path) -> dict:
    from align.config import load_config
    from align.rm import train as rm

    config = load_config(rm.Config, None, [
        "model=minilm", f"data={train_file}", f"eval_data={eval_file}", f"output_dir={output_dir}",
        f"batch_size={args.batch_size}", f"max_length={args.max_length}", "epochs=1", "learning_rate=5e-5",
        "save_steps=0", "log_steps=50", "report=false", "progress=false", f"seed={args.seed}",
        f"precision={precision}"])
    summary = rm.train_reward_model(config)
    return {key: summary[key] for key in ("precision", "train_pairs", "steps", "train_seconds", "pairs_per_second",
                                          "eval_accuracy", "eval_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each precision")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "precision.json"))
    args = parser.parse_args()
    run = Run(__file__)

    import torch

    from align.data import load_preferences

    pairs = load_preferences(str(HH_PAIRS)).pairs[: args.train + args.eval]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, part in (("train", pairs[: args.train]), ("eval", pairs[args.train:])):
            with (tmp / f"{name}.jsonl").open("w") as handle:
                for pair in part:
                    handle.write(json.dumps({"id": pair.id, "prompt": pair.prompt, "chosen": pair.chosen,
                                             "rejected": pair.rejected}) + "\n")
        # alternate the two precisions so a busy neighbour slows both alike; the median run of each counts
        trials: dict[str, list[dict]] = {"fp32": [], "bf16": []}
        for repeat in range(args.repeats):
            for precision in ("fp32", "bf16"):
                trials[precision].append(train(precision, tmp / "train.jsonl", tmp / "eval.jsonl", args,
                                               tmp / f"{precision}-{repeat}"))
    runs = {precision: sorted(found, key=lambda r: r["pairs_per_second"])[len(found) // 2]
            for precision, found in trials.items()}
    result = {"ratio": runs["bf16"]["pairs_per_second"] / runs["fp32"]["pairs_per_second"],
              "pairs_per_second_all_runs": {p: [round(r["pairs_per_second"], 3) for r in found]
                                            for p, found in trials.items()},
              "fp32": runs["fp32"], "bf16": runs["bf16"], "threads": torch.get_num_threads(), "settings": vars(args)}
    machine = cpu()  # as the provenance records it; the headline names it
    native = machine["bf16"].split()[0]  # native / emulated
    run.write(args.out, result, [headline(
        f"RM training pairs/s, bf16 over fp32 on {machine['model']} (bf16 {native}; "
        "median of alternating runs)", runs["bf16"]["pairs_per_second"], "fp32", runs["fp32"]["pairs_per_second"],
        "pairs/s")])
    print(f"bf16 {runs['bf16']['pairs_per_second']:.2f} vs fp32 {runs['fp32']['pairs_per_second']:.2f} pairs/s: "
          f"x{result['ratio']:.2f} on {machine['model']} ({', '.join(machine['flags'])}); held-out accuracy "
          f"{runs['bf16']['eval_accuracy']:.3f} vs {runs['fp32']['eval_accuracy']:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
