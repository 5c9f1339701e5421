"""SFT step time on a large-vocabulary policy: the loss's response-only projection and frozen word embeddings
against the full projection with every weight trained, in the same invocation.

Same model (Gemma 3 270M: a 262k vocabulary, 168M of its 268M parameters in the embedding matrix that is also
the output projection), same ALMA examples in both directions, batches, seed and precision; the variants differ
only in what is computed:
- `full`: logits at every position, embeddings trained (what `align sft` did before `logits_to_keep`);
- `response`: logits only where the loss reads them, embeddings trained;
- `response+frozen`: that, with `freeze_word_embeddings=true` (no gradient for the 262k x 640 matrix).
Variants alternate over `--repeats` rounds so a busy neighbour slows all alike; the median seconds per step
counts, and the first step of each run (allocation, warm-up) is left out. The loss of the first step is the
same in all three (they differ in cost, not in what is computed at the labelled positions).

    .venv/bin/python bench/sft_step.py [--steps 6 --repeats 2]      -> bench/results/sft_step.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import Run, headline

VARIANTS = {"full": ([], False), "response": ([], True), "response+frozen": (["freeze_word_embeddings=true"], True)}


def run_variant(name: str, args, output_dir: Path) -> dict:
    from align.config import load_config
    from align.sft import train as sft

    overrides, response_only = VARIANTS[name]
    config = load_config(sft.Config, None, [
        f"model={args.model}", "domain=translation", "domain_options.direction=both", "prompt_format=plain",
        f"max_examples={args.steps * args.batch_size}", "eval_fraction=0", f"batch_size={args.batch_size}",
        "max_length=160", f"max_steps={args.steps}", "learning_rate=5e-5", "warmup_ratio=0", "save_steps=0",
        "log_steps=1", "progress=false", f"precision={args.precision}", f"output_dir={output_dir}", *overrides])
    original = sft.keep_logits
    if not response_only:
        sft.keep_logits = lambda model, keep: {}  # the model projects every position; the loss slices
    try:
        sft.train_sft(config)
    finally:
        sft.keep_logits = original
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    step_seconds = [b["time"] - a["time"] for a, b in itertools.pairwise(rows)]  # from the end of step 1 onwards
    return {"seconds_per_step": statistics.median(step_seconds), "first_loss": rows[0]["loss"],
            "steps": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sft_step.json"))
    args = parser.parse_args()
    run = Run(__file__)
    trials: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in VARIANTS:
                trials[name].append(run_variant(name, args, Path(tmp) / f"{name}-{repeat}"))
                print(f"{name}: {trials[name][-1]}", flush=True)
    median = {name: statistics.median(r["seconds_per_step"] for r in found) for name, found in trials.items()}
    result = {"seconds_per_step": median, "all_runs": trials, "settings": vars(args),
              "speedup_response": median["full"] / median["response"],
              "speedup_response_frozen": median["full"] / median["response+frozen"]}
    run.write(args.out, result, [
        headline(f"SFT steps/s on {args.model}, response-only logits over full logits", 1 / median["response"],
                 "full projection", 1 / median["full"], "steps/s"),
        headline(f"SFT steps/s on {args.model}, response-only logits and frozen embeddings over full logits",
                 1 / median["response+frozen"], "full projection", 1 / median["full"], "steps/s")])
    print(f"s/step: full {median['full']:.2f}, response-only {median['response']:.2f} "
          f"(x{result['speedup_response']:.2f}), + frozen embeddings {median['response+frozen']:.2f} "
          f"(x{result['speedup_response_frozen']:.2f}) -> {args.out}")


if __name__ == "__main__":
    main()
