"""RM training throughput and accuracy: our `align rm` trainer against TRL's RewardTrainer, two configurations.

Same invocation, same machine, same MiniLM backbone, same hh-rlhf pairs, same token ids, batch size, learning
rate, schedule, epoch and precision (`--precision auto` is resolved once and given to both). Our data layer
truncates each pair from the left at `max_length` (keeping the responses); TRL receives those ids
pre-tokenized, so neither drops a pair (how many TRL's own pipeline would drop is counted).

Peers, all TRL's RewardTrainer:
- random batches (its default);
- length-grouped batches, its fastest sampler: `train_sampling_strategy="group_by_length"` with a precomputed
  `length` column and `remove_unused_columns=False` under transformers 5 (`group_by_length=True` before).
  transformers sorts mega-batches of min(50, pairs // 32) batches; `align rm` sorts mega-batches of 50, so
  below 1,600 pairs ours pads less for that reason alone;
- our batches: the dataset in exactly the order `align rm` draws it, read sequentially (`"sequential"`), so
  both sides compute the very same padded batches and the ratio is the frameworks' alone.
The headline compares with the fastest of the three.

Timing boundaries, both sides: from the end of optimizer step 1 to the end of the last step (step 1 warms
up), read at each trainer's own step-end point (TRL: `on_step_end`; ours: `Trainer.end_step`), with no
progress bar and no printing on either side, logging every 50 steps on both. Pairs and tokens are counted per
step from the batches each side actually collated (TRL: its collator's output; ours: the batch plan `align
rm` draws from, checked against the real tokens it reports). Recorded per side: padded tokens over real tokens,
and model FLOP utilisation (bench/flops.py) against this machine's matmul peak measured here in fp32 and bf16.
Both final models are scored by the same code on the same held-out pairs.

    make bench-rm        # or: PYTHONPATH=.bench-site .venv/bin/python bench/rm_throughput.py [--train 1500]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HH_PAIRS = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "pairs.jsonl.gz"

from bench.flops import batch_flops, encoder_shapes, matmul_peak, train_flops
from bench.provenance import Run, headline


def write_jsonl(pairs, path: Path) -> None:
    with path.open("w") as handle:
        for pair in pairs:
            row = dataclasses.asdict(pair)
            row.pop("extra", None)
            handle.write(json.dumps(row) + "\n")


def timed_steps(step_ends: list[float], steps: list[tuple[int, int, list[int]]], shapes: dict) -> dict:
    """Figures of steps 2..N: pairs/s, real and padded tokens, model and hardware FLOPs. `steps` holds, per
    optimizer step in order, (rows, padded length, real length of each row); rows are chosen + rejected."""
    seconds = step_ends[-1] - step_ends[0]
    counted = steps[1:len(step_ends)]
    real = sum(sum(lengths) for _, _, lengths in counted)
    padded = sum(rows * length for rows, length, _ in counted)
    model = train_flops(shapes, [n for _, _, lengths in counted for n in lengths])
    hardware = batch_flops(shapes, [(rows, length) for rows, length, _ in counted])
    out = {"steps": len(step_ends), "timed_steps": len(step_ends) - 1, "timed_seconds": round(seconds, 3),
           "pairs_per_second": sum(rows // 2 for rows, _, _ in counted) / seconds, "real_tokens": real,
           "padded_tokens": padded, "padded_over_real": round(padded / real, 4),
           "padding_share": round(1 - real / padded, 4), "model_tflop": round(model / 1e12, 3),
           "hardware_tflop": round(hardware / 1e12, 3)}
    return out


def utilisation(side: dict, peaks: dict) -> dict:
    """Model FLOP/s (real tokens) and hardware FLOP/s (padded batches) of the timed steps over each peak."""
    out = {}
    for name, peak in peaks.items():
        out[f"mfu_vs_{name}_peak"] = round(side["model_tflop"] * 1e12 / side["timed_seconds"] / peak, 4)
        out[f"hardware_utilisation_vs_{name}_peak"] = round(side["hardware_tflop"] * 1e12 / side["timed_seconds"]
                                                            / peak, 4)
    return out


def run_ours(encoded, train_file: Path, eval_file: Path, args, precision: str, output_dir: Path,
             shapes: dict) -> dict:
    from align.config import load_config
    from align.rm import train as rm
    from align.training import trainer as core

    step_ends: list[float] = []
    original = core.Trainer.end_step

    def end_step(self, state, started):
        now = original(self, state, started)
        step_ends.append(time.perf_counter())
        return now

    config = load_config(rm.Config, None, [
        "model=minilm", f"data={train_file}", f"eval_data={eval_file}", f"output_dir={output_dir}",
        f"batch_size={args.batch_size}", f"max_length={args.max_length}", "epochs=1",
        f"learning_rate={args.learning_rate}", "lr_schedule=linear", "warmup_ratio=0.05", "save_steps=0",
        "log_steps=50", "report=false", "progress=false", f"seed={args.seed}", f"precision={precision}"])
    core.Trainer.end_step = end_step
    try:
        summary = rm.train_reward_model(config)
    finally:
        core.Trainer.end_step = original
    # the batches `align rm` drew (one process, grad_accum 1: one batch per step), rebuilt from its batch plan
    lengths = [max(len(e.chosen_ids), len(e.rejected_ids)) for e in encoded]
    batches = ours_batches(encoded, args)
    steps = [(2 * len(b), max(lengths[i] for i in b),
              [len(encoded[i].chosen_ids) for i in b] + [len(encoded[i].rejected_ids) for i in b]) for b in batches]
    real_reported = round(summary["tokens_per_second"] * summary["train_seconds"])
    real_planned = sum(sum(lengths) for _, _, lengths in steps)
    if abs(real_reported - real_planned) > 0.001 * real_reported:
        raise RuntimeError(f"rebuilt batch plan has {real_planned} real tokens, align rm reported {real_reported}: "
                           "the plan no longer matches `align rm`'s batching")
    return {"model_dir": summary["model_dir"], **timed_steps(step_ends, steps, shapes)}


def ours_batches(encoded, args) -> list[list[int]]:
    """The batches `align rm` draws in epoch 0 (one process, grad_accum 1: one batch per optimizer step)."""
    from align.training import BatchPlan

    lengths = [max(len(e.chosen_ids), len(e.rejected_ids)) for e in encoded]
    return BatchPlan(lengths, args.batch_size, args.seed).batcher.batches(0)


def run_trl(encoded, tokenizer, args, precision: str, sampler: str, output_dir: Path,
            shapes: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification as SequenceClassifier
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from align.models import resolve_model_path

    order = range(len(encoded))
    if sampler == "ours":  # our batches in our order; the one short batch last, so that TRL's cuts of 8 match
        batches = ours_batches(encoded, args)
        order = [i for b in sorted(batches, key=lambda b: len(b) < args.batch_size) for i in b]
    rows = [{"chosen_ids": encoded[i].chosen_ids, "rejected_ids": encoded[i].rejected_ids,
             "length": max(len(encoded[i].chosen_ids), len(encoded[i].rejected_ids))} for i in order]
    dataset = Dataset.from_list(rows)
    model = SequenceClassifier.from_pretrained(resolve_model_path("minilm"), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    fields = {f.name for f in dataclasses.fields(RewardConfig)}
    sampling = {}
    if sampler == "grouped":  # transformers' LengthGroupedSampler on the precomputed `length` column
        sampling = ({"train_sampling_strategy": "group_by_length", "length_column_name": "length"}
                    if "train_sampling_strategy" in fields else {"group_by_length": True, "length_column_name": "length"})
    elif sampler == "ours":  # the rows are already in our batch order: read them as they are
        if "train_sampling_strategy" not in fields:
            raise SystemExit("bench/rm_throughput.py: this transformers has no train_sampling_strategy='sequential'")
        sampling = {"train_sampling_strategy": "sequential"}
    trl_config = RewardConfig(
        output_dir=str(output_dir), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
        learning_rate=args.learning_rate, lr_scheduler_type="linear", logging_steps=50,
        warmup_steps=int(0.05 * math.ceil(len(dataset) / args.batch_size)),  # as our warmup_ratio=0.05
        save_strategy="no", report_to=[], use_cpu=True, bf16=precision == "bf16", seed=args.seed,
        max_length=args.max_length, disable_dropout=False, dataloader_num_workers=0, disable_tqdm=True,
        remove_unused_columns=False, **sampling)
    trainer = RewardTrainer(model=model, args=trl_config, train_dataset=dataset, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    step_ends: list[float] = []
    steps: list[tuple[int, int, list[int]]] = []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        mask = batch["attention_mask"]
        steps.append((mask.shape[0], mask.shape[1], mask.sum(dim=1).tolist()))
        return batch

    class StepEnd(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    trainer.data_collator = counting_collator
    trainer.add_callback(StepEnd())
    trainer.train()
    trainer.model.save_pretrained(output_dir / "model")
    tokenizer.save_pretrained(output_dir / "model")
    return {"model_dir": str(output_dir / "model"), "sampler": sampling or {"train_sampling_strategy": "random"},
            **timed_steps(step_ends, steps, shapes)}


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
    parser.add_argument("--skip-random", action="store_true", help="leave out TRL with random batches")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "rm_throughput.json"))
    args = parser.parse_args()
    if not HH_PAIRS.exists():
        sys.exit(f"bench/rm_throughput.py: needs {HH_PAIRS} (see ../shared/data/README.md)")
    run = Run(__file__)

    import torch
    import trl
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from align.data import encode_pair, load_preferences, split_train_eval
    from align.eval.evaluate import evaluate_reward_model
    from align.eval.stats import mcnemar_exact
    from align.models import RewardModel, load_tokenizer, resolve_model_path
    from align.training.precision import mixed_precision

    hf_logging.set_verbosity_error()
    precision = "bf16" if mixed_precision(args.precision) == "bf16" else "fp32"
    pairs = load_preferences(str(HH_PAIRS)).pairs
    train_pairs, eval_pairs = split_train_eval(pairs, 1 - args.train / len(pairs), args.seed)
    if args.eval > 0:
        eval_pairs = eval_pairs[: args.eval]
    tokenizer = load_tokenizer("minilm")
    encoded = [encode_pair(tokenizer, pair, args.max_length) for pair in train_pairs]
    shapes = encoder_shapes(AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm"),
                                                                               num_labels=1))
    # measured before the runs; the matmuls time again after them and the higher figure is the peak
    peaks_before = {name: matmul_peak(name) for name in ("fp32", "bf16")}
    sides: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jsonl(train_pairs, tmp / "train.jsonl")
        write_jsonl(eval_pairs, tmp / "eval.jsonl")
        # ours sits between TRL on our batches and TRL length-grouped; TRL random (the slowest) runs last
        sides["trl_our_batches"] = run_trl(encoded, tokenizer, args, precision, "ours", tmp / "trl_ours", shapes)
        sides["ours"] = run_ours(encoded, tmp / "train.jsonl", tmp / "eval.jsonl", args, precision, tmp / "ours",
                                 shapes)
        sides["trl_grouped"] = run_trl(encoded, tokenizer, args, precision, "grouped", tmp / "trl_grouped", shapes)
        if not args.skip_random:
            sides["trl_random"] = run_trl(encoded, tokenizer, args, precision, "random", tmp / "trl_random", shapes)
        peaks_after = {name: matmul_peak(name) for name in ("fp32", "bf16")}
        correct = {}
        for name, side in sides.items():
            model = RewardModel.from_pretrained(side.pop("model_dir"))
            scored = evaluate_reward_model(model, eval_pairs, 32, args.max_length)
            side["eval_accuracy"] = scored["accuracy"]
            correct[name] = [d > 0 for d in scored["differences"]]
    peaks = {name: max(peaks_before[name], peaks_after[name]) for name in peaks_before}
    for side in sides.values():
        side.update(utilisation(side, peaks))

    trl_best = max((k for k in sides if k.startswith("trl")), key=lambda k: sides[k]["pairs_per_second"])
    label = {"trl_our_batches": "our batches", "trl_grouped": "length-grouped batches", "trl_random": "random batches"}
    peer = f"TRL {trl.__version__} RewardTrainer ({label[trl_best]})"
    # held-out pairs one side gets right and the other wrong, and the exact McNemar test on them
    gained = sum(a and not b for a, b in zip(correct["ours"], correct[trl_best]))
    lost = sum(b and not a for a, b in zip(correct["ours"], correct[trl_best]))
    paired = {"vs": trl_best, "ours_only_correct": gained, "peer_only_correct": lost,
              "mcnemar_exact_p": mcnemar_exact(gained, lost)}
    headlines = [
        headline(f"RM training pairs/s, MiniLM, {len(train_pairs)} hh pairs, {precision}", sides["ours"]["pairs_per_second"],
                 peer + ", TRL's fastest here", sides[trl_best]["pairs_per_second"], "pairs/s", goal=2.0,
                 note=f"padded/real tokens: ours {sides['ours']['padded_over_real']:.2f}, "
                      f"TRL {sides[trl_best]['padded_over_real']:.2f}"),
        headline(f"RM held-out accuracy, {len(eval_pairs)} pairs (goal: no worse)", sides["ours"]["eval_accuracy"],
                 peer, sides[trl_best]["eval_accuracy"], "accuracy", goal=1.0,
                 note=f"pairs only ours gets right {gained}, only TRL {lost}, McNemar p = {paired['mcnemar_exact_p']:.2g}")]
    for name in sides:
        if name.startswith("trl") and name != trl_best:
            headlines.append(headline(f"RM training pairs/s against TRL with {label[name]}", sides["ours"]["pairs_per_second"],
                                      f"TRL {trl.__version__} RewardTrainer ({label[name]})", sides[name]["pairs_per_second"],
                                      "pairs/s", note=f"padded/real tokens: ours {sides['ours']['padded_over_real']:.2f}, "
                                                      f"TRL {sides[name]['padded_over_real']:.2f}"))
    figures = {
        "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "batch_size": args.batch_size,
        "max_length": args.max_length, "precision": precision, "learning_rate": args.learning_rate,
        "matmul_peak_flops": {k: round(v) for k, v in peaks.items()},
        "matmul_peak_flops_before_after": {k: [round(v), round(peaks_after[k])] for k, v in peaks_before.items()},
        "model_shapes": shapes,
        "trl_fastest": trl_best, "held_out_paired": paired, "sides": sides, "torch_threads": torch.get_num_threads(),
        "trl_own_pipeline_would_drop_pairs": trl_filter_count(train_pairs, tokenizer, args.max_length)}
    run.write(args.output, figures, headlines)
    line = "; ".join(f"{k} {s['pairs_per_second']:.2f} pairs/s (pad x{s['padded_over_real']:.2f}, acc "
                     f"{s['eval_accuracy']:.3f}, MFU {s[f'mfu_vs_{precision}_peak']:.1%} of {precision} peak)"
                     for k, s in sides.items())
    print(f"rm_throughput [{len(train_pairs)} pairs, {precision}]: {line}; ours / {trl_best} "
          f"x{headlines[0]['ratio']:.2f} (goal 2) -> {args.output}")


if __name__ == "__main__":
    main()
