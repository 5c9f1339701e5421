"""RM training throughput and accuracy: our `align rm` trainer against TRL's RewardTrainer.

Same invocation, same machine, same MiniLM backbone, same hh-rlhf pairs, same batch size,
learning rate, schedule and epoch. Both trainers get exactly the same token ids: our data layer
truncates each pair from the left at `max_length` (keeping the responses), and TRL receives
those ids pre-tokenized, so neither drops a pair. TRL's own pipeline would instead filter out
every pair longer than `max_length`; how many that would be is counted and printed.
Both final models are scored by the same code on the same held-out pairs.

    make bench-rm        # or: PYTHONPATH=.bench-site .venv/bin/python bench/rm_throughput.py [--train 1500]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HH_PAIRS = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "pairs.jsonl.gz"


def write_jsonl(pairs, path: Path) -> None:
    with path.open("w") as handle:
        for pair in pairs:
            row = asdict(pair)
            row.pop("extra", None)
            handle.write(json.dumps(row) + "\n")


def run_ours(train_file: Path, eval_file: Path, args, output_dir: Path) -> dict:
    from align.config import load_config
    from align.rm import train as rm

    config = load_config(rm.Config, None, [
        "model=minilm", f"data={train_file}", f"eval_data={eval_file}", f"output_dir={output_dir}",
        f"batch_size={args.batch_size}", f"max_length={args.max_length}", "epochs=1",
        f"learning_rate={args.learning_rate}", "lr_schedule=linear", "warmup_ratio=0.05", "save_steps=0",
        "log_steps=50", "report=false", f"seed={args.seed}", f"precision={args.precision}"])
    summary = rm.train_reward_model(config)
    return {"pairs": summary["train_pairs"], "train_seconds": summary["train_seconds"],
            "pairs_per_second": summary["pairs_per_second"], "model_dir": summary["model_dir"]}


def run_trl(train_pairs, tokenizer, args, output_dir: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from align.data import encode_pair
    from align.models import resolve_model_path
    from align.training.precision import mixed_precision

    rows = []
    for pair in train_pairs:
        encoded = encode_pair(tokenizer, pair, args.max_length)
        rows.append({"chosen_ids": encoded.chosen_ids, "rejected_ids": encoded.rejected_ids})
    dataset = Dataset.from_list(rows)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm"), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    trl_config = RewardConfig(
        output_dir=str(output_dir), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
        learning_rate=args.learning_rate, lr_scheduler_type="linear", logging_steps=50,
        warmup_steps=int(0.05 * math.ceil(len(dataset) / args.batch_size)),  # as our warmup_ratio=0.05
        save_strategy="no", report_to=[], use_cpu=True, bf16=mixed_precision(args.precision) == "bf16", seed=args.seed,
        max_length=args.max_length, disable_dropout=False, dataloader_num_workers=0)
    trainer = RewardTrainer(model=model, args=trl_config, train_dataset=dataset, processing_class=tokenizer)
    started = time.perf_counter()
    result = trainer.train()
    seconds = result.metrics.get("train_runtime", time.perf_counter() - started)
    trainer.model.save_pretrained(output_dir / "model")
    tokenizer.save_pretrained(output_dir / "model")
    return {"pairs": len(dataset), "train_seconds": seconds, "pairs_per_second": len(dataset) / seconds,
            "model": trainer.model}


def trl_filter_count(pairs, tokenizer, max_length: int) -> int:
    """Pairs TRL's own pipeline would drop: prompt+response (plus EOS) longer than max_length tokens."""
    from align.data import render_prompt, response_separator

    dropped = 0
    for pair in pairs:
        prompt = render_prompt(pair.prompt)
        lengths = [len(tokenizer(prompt + response_separator(prompt) + response)["input_ids"]) + 1
                   for response in (pair.chosen, pair.rejected)]
        dropped += max(lengths) > max_length
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1500, help="training pairs (the rest are held out)")
    parser.add_argument("--eval", type=int, default=-1, help="held-out pairs to score (-1: all the rest)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "rm_throughput.json"))
    args = parser.parse_args()
    if not HH_PAIRS.exists():
        sys.exit(f"bench/rm_throughput.py: needs {HH_PAIRS} (see ../shared/data/README.md)")

    from transformers.utils import logging as hf_logging

    from align.data import load_preferences, split_train_eval
    from align.eval.evaluate import evaluate_reward_model
    from align.models import RewardModel, load_tokenizer

    hf_logging.set_verbosity_error()
    pairs = load_preferences(str(HH_PAIRS)).pairs
    train_pairs, eval_pairs = split_train_eval(pairs, 1 - args.train / len(pairs), args.seed)
    if args.eval > 0:
        eval_pairs = eval_pairs[: args.eval]
    tokenizer = load_tokenizer("minilm")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jsonl(train_pairs, tmp / "train.jsonl")
        write_jsonl(eval_pairs, tmp / "eval.jsonl")
        trl = run_trl(train_pairs, tokenizer, args, tmp / "trl")
        ours = run_ours(tmp / "train.jsonl", tmp / "eval.jsonl", args, tmp / "ours")
        ours_model = RewardModel.from_pretrained(ours["model_dir"])
        trl_model = RewardModel.from_pretrained(tmp / "trl" / "model") if (tmp / "trl" / "model").exists() else None
        ours_accuracy = evaluate_reward_model(ours_model, eval_pairs, 32, args.max_length)["accuracy"]
        trl_accuracy = evaluate_reward_model(trl_model, eval_pairs, 32, args.max_length)["accuracy"]
    result = {
        "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "batch_size": args.batch_size,
        "max_length": args.max_length, "precision": args.precision,
        "ours_pairs_per_second": ours["pairs_per_second"], "trl_pairs_per_second": trl["pairs_per_second"],
        "speed_ratio": ours["pairs_per_second"] / trl["pairs_per_second"],
        "ours_eval_accuracy": ours_accuracy, "trl_eval_accuracy": trl_accuracy,
        "ours_train_seconds": ours["train_seconds"], "trl_train_seconds": trl["train_seconds"],
        "trl_own_pipeline_would_drop_pairs": trl_filter_count(train_pairs, tokenizer, args.max_length),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"rm_throughput: ours {result['ours_pairs_per_second']:.2f} pairs/s, TRL {result['trl_pairs_per_second']:.2f} "
          f"pairs/s, ratio {result['speed_ratio']:.2f}; eval accuracy ours {ours_accuracy:.3f} vs TRL "
          f"{trl_accuracy:.3f} on {len(eval_pairs)} pairs; TRL's filter would drop "
          f"{result['trl_own_pipeline_would_drop_pairs']} of {len(train_pairs)} pairs -> {args.output}")


if __name__ == "__main__":
    main()
