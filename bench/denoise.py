"""Does strength-aware denoising work? Preference strength finds flipped pairs; denoised RMs recover accuracy.

Two kinds of data, fixed train/held-out splits, several seeds (seed = initialisation, data order
and which training pairs are flipped), a MiniLM RM trained by `align.rm.strength.ensemble.fit_reward_model`
(the `align rm` loss and optimiser, without run-directory I/O):

1. controlled: chosen = a human English sentence (ALMA zh-en, English side), rejected = a corrupted
   copy (span shuffled, clause dropped, truncated, or another sentence spliced in). A known random
   25% of the training pairs is flipped.
2. hh: the hh-rlhf harmless-base pairs (real, noisy human labels), with 25% injected flips and without.

Per run: ROC-AUC of −(mean strength) for finding the flipped pairs, for in-sample, out-of-fold and
cheap-ensemble strengths; Spearman of cheap vs in-sample strengths and the cheap ensemble's training
time as a ratio of the full ensemble's; held-out accuracy of RMs trained on the noisy set with every
loss (strengths: in-sample, the reference's estimator) and on the clean set. `bt` is ensemble member 0,
which trains with exactly the `bt` config and seed.

    python bench/denoise.py [--train-pairs 1000] [--eval-pairs 500] [--members 4] [--seeds 0 1 2]

The recorded runs (bench/results/denoise_{controlled,hh,hh_none}.json) each ran as one process per dataset and
condition with `--top-layers 2 --learning-rate 3e-4 --epochs 2`; `make bench` runs a small controlled one.
Prints one line of figures and writes bench/results/denoise.json (rewritten after every run, so an interrupted
benchmark keeps what it measured; its provenance and headline rows are added at the end), plus the strength
report of hh without injected flips in bench/results/denoise_hh_strength/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from align.eval.stats import roc_auc
from align.rm.strength.controlled import controlled_pairs, english_sentences_file, inject_flips
from bench.provenance import Run, headline

SHARED = ROOT.parent / "shared" / "data"
HH = SHARED / "hh-rlhf" / "harmless-base" / "pairs.jsonl.gz"
METHODS = ("flip", "soft_label", "margin", "flip+margin", "soft_label+margin", "discard")
ESTIMATORS = ("in_sample", "out_of_fold", "cheap")


# --------------------------------------------------------------------------- top-layer training on cached states


def cached_backbone_factory(model_name: str, datasets, top_layers: int, batch_size: int = 32):
    """`model_factory` for `fit_reward_model`: a MiniLM RM whose lower layers are frozen and replaced by
    a lookup of their cached output, so only the top `top_layers` layers, the pooler and the head train.

    Every RM of this benchmark starts from the same pretrained encoder and sees the same token
    sequences, so the frozen layers' output is computed once instead of in each of ~40 trainings
    (on this shared 2-core CPU a full fine-tuning of each was out of reach). Only encoder (BERT-like)
    backbones are supported.
    """
    import torch
    from torch import nn

    from align.models import load_reward_model

    reference = load_reward_model(model_name)
    encoder = reference.model.base_model
    frozen = len(encoder.encoder.layer) - top_layers
    pad = reference.tokenizer.pad_token_id
    cache: dict[tuple[int, ...], torch.Tensor] = {}
    sequences = list(dict.fromkeys(tuple(ids) for data in datasets for e in data.encoded
                                   for ids in (e.chosen_ids, e.rejected_ids)))
    sequences.sort(key=len)
    reference.eval()
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, sequence in enumerate(chunk):
                ids[row, :len(sequence)] = torch.tensor(sequence)
                mask[row, :len(sequence)] = 1
            hidden = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[frozen]
            for row, sequence in enumerate(chunk):
                cache[sequence] = hidden[row, :len(sequence)].clone()
    hidden_size = encoder.config.hidden_size

    class CachedLowerLayers(nn.Module):
        """Stands in for the embeddings: returns the frozen layers' cached output for each row."""

        def forward(self, input_ids=None, **_):
            rows = []
            for row in input_ids.tolist():
                while row and row[-1] == pad:  # right padding; real sequences end with [SEP], never pad
                    row.pop()
                rows.append(cache[tuple(row)])
            out = torch.zeros(len(rows), input_ids.shape[1], hidden_size)
            for i, states in enumerate(rows):
                out[i, :len(states)] = states
            return out

    def factory(head_names):
        model = load_reward_model(model_name, num_heads=len(head_names), head_names=head_names)
        base = model.model.base_model
        base.embeddings = CachedLowerLayers()
        base.encoder.layer = base.encoder.layer[frozen:]
        return model

    return factory


# --------------------------------------------------------------------------- helpers


def tokenize(pairs, tokenizer, config):
    from align.data import encode_pair
    from align.rm.data import RMData

    return RMData(list(pairs), [encode_pair(tokenizer, p, config.max_length) for p in pairs], ["overall"],
                  tokenizer.pad_token_id)


def accuracy_of(model, held_out, config) -> float:
    from align.rm.evaluate import evaluate

    return evaluate(model, held_out, config.eval_batch_size)["eval_accuracy"]


def train_with_loss(config, pairs, strength, method, seed, held_out, tokenizer, factory=None) -> float:
    """Held-out accuracy of an RM trained on `pairs` with loss `method` and the given strengths."""
    import torch

    from align.rm.denoise import LossConfig, plan_denoising
    from align.rm.strength.ensemble import fit_reward_model
    from align.rm.train import batch_loss

    data = tokenize(pairs, tokenizer, config)
    if method != "bt":
        data.apply_plan(plan_denoising(LossConfig(type=method), strength, torch.full((len(pairs),), float("nan"))))
    def loss_fn(model, batch, step):
        return batch_loss(model, batch, step, method)

    fitted = fit_reward_model(config, data, seed, Path(config.output_dir) / "fits" / method, loss_fn, desc=method,
                              model_factory=factory)
    return accuracy_of(fitted.model, held_out, config)


# --------------------------------------------------------------------------- one run


def run_condition(config, train_pairs, held_out, tokenizer, seed: int, args, flip_rate: float,
                  estimators=ESTIMATORS, clean_pairs=None, factory=None, result=None, save=lambda: None) -> dict:
    """Strengths, flip-detection AUC and every method's held-out accuracy for one (data, seed, noise).
    Fills `result` step by step and calls `save()` after each step (partial results survive a stop)."""
    from align.rm.strength.annotate import member_loss
    from align.rm.strength.ensemble import run_ensemble, spearman

    pairs, flipped = inject_flips(train_pairs, flip_rate, seed) if flip_rate else (train_pairs, None)
    data = tokenize(pairs, tokenizer, config)
    result = {} if result is None else result
    result.update({"seed": seed, "flip_rate": flip_rate, "train_pairs": len(pairs), "eval_pairs": len(held_out)})
    scores = {}
    for name in estimators:
        started = time.perf_counter()
        scores[name] = run_ensemble(config, data, held_out, name, args.members, member_loss, args.folds, seed,
                                    factory)
        result[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
        result[f"{name}_negative_fraction"] = (scores[name].mean < 0).float().mean().item()
        result[f"{name}_mean_std"] = scores[name].std.mean().item()
        if flipped:
            result[f"{name}_flip_auc"] = roc_auc(flipped, [-float(s) for s in scores[name].mean])
        result.update({f"{name}_{k}": v for k, v in scores[name].eval_accuracy().items()})
        save()
    if "cheap" in scores:
        result["cheap_spearman_with_in_sample"] = spearman(scores["cheap"].mean, scores["in_sample"].mean)
        result["cheap_train_time_ratio"] = scores["cheap"].train_seconds / scores["in_sample"].train_seconds
    if "out_of_fold" in scores:
        result["out_of_fold_spearman_with_in_sample"] = spearman(scores["out_of_fold"].mean,
                                                                 scores["in_sample"].mean)
    in_sample = scores["in_sample"]
    member_seed = seed * 1000  # member 0 of the in-sample ensemble is exactly the `bt` run
    result["acc_bt"] = ((in_sample.eval_chosen[0] - in_sample.eval_rejected[0]) > 0).float().mean().item()
    for method in METHODS:
        result[f"acc_{method}"] = train_with_loss(config, pairs, in_sample.mean, method, member_seed, held_out,
                                                  tokenizer, factory)
        save()
    if clean_pairs is not None:
        result["acc_clean"] = train_with_loss(config, clean_pairs, None, "bt", member_seed, held_out, tokenizer,
                                              factory)
    result["_scores"] = in_sample  # for the report; dropped before writing JSON
    result["_data"] = data
    return result


def aggregate(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if not k.startswith("_") and isinstance(runs[0][k], (int, float))]
    summary = {}
    for key in keys:
        values = [r[key] for r in runs if key in r]
        summary[key] = {"mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    accuracies = {k: v["mean"] for k, v in summary.items() if k.startswith("acc_") and k not in ("acc_clean",)}
    best = max((k for k in accuracies if k != "acc_bt"), key=accuracies.get, default=None)
    if best:
        summary["best_method"] = best.removeprefix("acc_")
        if "acc_clean" in summary:
            cost = summary["acc_clean"]["mean"] - accuracies["acc_bt"]
            summary["recovered_share"] = (accuracies[best] - accuracies["acc_bt"]) / cost if cost > 0 else None
    return summary


def write_merged(out: Path, results: dict) -> None:
    """Write `results`, keeping the other datasets' entries of an existing file (one process per
    dataset can share the file)."""
    merged = {"config": {}, "runs": {}, "summary": {}}
    if out.exists():
        try:
            merged = json.loads(out.read_text())
        except json.JSONDecodeError:
            pass
    for section in ("config", "runs", "summary"):
        merged.setdefault(section, {}).update(results[section])
    merged["seconds"] = {**(merged.get("seconds") if isinstance(merged.get("seconds"), dict) else {}),
                         **{name: results["seconds"] for name in results["config"]}}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(out)


def headlines(summaries: dict) -> list[dict]:
    """Flip-detection AUC of the in-sample strengths, and the best denoising loss against plain Bradley-Terry."""
    rows = []
    for key, summary in summaries.items():
        if "in_sample_flip_auc" in summary:
            rows.append(headline(f"denoise {key}: flip-detection ROC-AUC, in-sample strength",
                                 summary["in_sample_flip_auc"]["mean"], "chance", 0.5, "AUC"))
        best = summary.get("best_method")
        if best and "acc_bt" in summary:
            rows.append(headline(f"denoise {key}: held-out accuracy, best loss ({best})", summary[f"acc_{best}"]["mean"],
                                 "bt (Bradley-Terry) on the same pairs", summary["acc_bt"]["mean"], "accuracy"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["controlled", "hh"], choices=["controlled", "hh"])
    parser.add_argument("--train-pairs", type=int, default=1000)
    parser.add_argument("--eval-pairs", type=int, default=500)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flip-rate", type=float, default=0.25)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sequence, controlled data")
    parser.add_argument("--hh-max-length", type=int, default=128, help="tokens per sequence, hh (end kept)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"],
                        help="fp32 (see bench/results/precision.json for bf16 on this CPU)")
    parser.add_argument("--top-layers", type=int, default=0,
                        help="train only the top N encoder layers on cached lower-layer states (0: all layers)")
    parser.add_argument("--hh-conditions", nargs="+", default=["noisy", "none"], choices=["noisy", "none"])
    parser.add_argument("--no-report", action="store_true", help="skip the hh strength report (slice RMs)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "denoise.json"))
    args = parser.parse_args()
    provenance = Run(__file__)
    missing = [str(p) for p in (HH,) if not p.exists()]
    try:
        english_sentences_file()
    except FileNotFoundError as error:
        missing.append(str(error))
    if missing:
        print(f"denoise: skipped, data not found: {', '.join(missing)}")
        return 0

    from align.data import load_preferences, split_train_eval
    from align.models import load_tokenizer
    from align.rm.strength.report import write_strength_report
    from align.rm.train import Config
    from align.training.rundir import RunDir

    config = Config(model=args.model, max_length=args.max_length, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, epochs=args.epochs, precision=args.precision,
                    eval_batch_size=64, progress=True, report=False,
                    output_dir=str(ROOT / "runs" / "bench-denoise"))  # members' and fits' run directories
    tokenizer = load_tokenizer(args.model)
    splits = {}
    if "controlled" in args.datasets:
        pairs = controlled_pairs(args.train_pairs + args.eval_pairs)
        splits["controlled"] = pairs[: args.train_pairs], pairs[args.train_pairs:]
    if "hh" in args.datasets:
        train, held = split_train_eval(load_preferences(str(HH)).pairs, 0.3, seed=0)
        splits["hh"] = train[: args.train_pairs], held[: args.eval_pairs]

    results: dict = {"config": {name: {k: v for k, v in vars(args).items() if k != "out"} for name in splits},
                     "runs": {}, "summary": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    held_outs, factories, configs = {}, {}, {}
    for name, (train_pairs, eval_pairs) in splits.items():
        configs[name] = dataclasses.replace(config, max_length=args.hh_max_length if name == "hh" else args.max_length)
        held_outs[name] = tokenize(eval_pairs, tokenizer, configs[name])
        if args.top_layers:
            factories[name] = cached_backbone_factory(args.model, [tokenize(train_pairs, tokenizer, configs[name]),
                                                                   held_outs[name]], args.top_layers)
    for seed in args.seeds:  # seed-major: an interrupted run still has every dataset for the first seeds
        for name, (train_pairs, eval_pairs) in splits.items():
            held_out, factory, config = held_outs[name], factories.get(name), configs[name]
            conditions = ([("noisy", args.flip_rate, ESTIMATORS, train_pairs)] if name == "controlled" else
                          [c for c in [("noisy", args.flip_rate, ESTIMATORS, None), ("none", 0.0, ("in_sample",), None)]
                           if c[0] in args.hh_conditions])
            for condition, rate, estimators, clean in conditions:
                print(f"denoise: {name} {condition} seed {seed} ({time.perf_counter() - started:.0f} s so far)",
                      flush=True)
                key = f"{name}/{condition}"
                run: dict = {}
                results["runs"].setdefault(key, []).append(run)

                def save(key=key, run=run):
                    results["runs"][key][-1] = {k: v for k, v in run.items() if not k.startswith("_")}
                    results["summary"][key] = aggregate(results["runs"][key])
                    results["seconds"] = round(time.perf_counter() - started, 1)
                    write_merged(out, results)

                run_condition(config, train_pairs, held_out, tokenizer, seed, args, rate, estimators, clean,
                              factory, run, save)
                if name == "hh" and condition == "none" and seed == args.seeds[0] and not args.no_report:
                    report_dir = RunDir(out.parent / "denoise_hh_strength")
                    _, slices = write_strength_report(report_dir, config, run["_data"], held_out, run["_scores"],
                                                      {}, True, {"data": "hh harmless-base", "seed": seed,
                                                                 "members": args.members}, factory)
                    run.update(slices)
                save()
    if "hh/none" in results["summary"] and "hh/noisy" in results["summary"]:
        # hh has no separate clean set: training on the un-noised pairs is its clean reference
        clean = results["summary"]["hh/none"]["acc_bt"]
        results["summary"]["hh/noisy"]["acc_clean"] = clean
        results["summary"]["hh/noisy"] = {**aggregate(results["runs"]["hh/noisy"]), "acc_clean": clean}
        noisy = results["summary"]["hh/noisy"]
        best = noisy.get("best_method")
        cost = clean["mean"] - noisy["acc_bt"]["mean"]
        noisy["recovered_share"] = ((noisy[f"acc_{best}"]["mean"] - noisy["acc_bt"]["mean"]) / cost
                                    if best and cost > 0 else None)
        write_merged(out, results)
    line = []
    for key, summary in results["summary"].items():
        figures = [f"{m}={summary[f'acc_{m}']['mean']:.3f}" for m in ("bt", *METHODS, "clean")
                   if f"acc_{m}" in summary]
        aucs = [f"auc_{e}={summary[f'{e}_flip_auc']['mean']:.3f}" for e in ESTIMATORS if f"{e}_flip_auc" in summary]
        line.append(f"[{key}] " + " ".join(aucs + figures))
    provenance.write(out, json.loads(out.read_text()), headlines(results["summary"]))
    print("denoise: " + " | ".join(line) + f" | {results['seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
