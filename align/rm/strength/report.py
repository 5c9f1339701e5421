"""The `align strength` report: how strength is distributed and what the pairs at each strength teach.

Figures (as in Wang et al. 2024, "Secrets of RLHF Part II: Reward Modeling", §2): histogram of
mean strength; pairs sorted by mean strength in 20 equal groups with each group's mean of the
mean and of the std (the reference found the std U-shaped); the share of pairs with negative
mean strength; held-out accuracy of a fresh RM trained on each 10% slice by strength, and on the
lowest slice with its labels flipped; and how other estimators (out-of-fold, cheap) differ.
"""
from __future__ import annotations

from pathlib import Path

import torch

from align.report import plot_histogram, pyplot, save_figure, summary_table, write_report
from align.rm.evaluate import evaluate
from align.rm.strength.ensemble import fit_reward_model, remove_checkpoints, spearman, subset
from align.rm.train import batch_loss


def strength_groups(mean: torch.Tensor, std: torch.Tensor, groups: int = 20) -> list[dict[str, float]]:
    """Pairs sorted by mean strength, cut into `groups` equal parts (sizes differ by at most one):
    each group's mean of `mean` and of `std`."""
    order = torch.argsort(mean)
    return [{"group": g, "pairs": len(part), "mean_strength": mean[part].mean().item(),
             "mean_std": std[part].mean().item()}
            for g, part in enumerate(torch.tensor_split(order, groups)) if len(part)]


def strength_slices(mean: torch.Tensor, slices: int = 10) -> list[list[int]]:
    """Pair indices in `slices` equal parts by ascending mean strength."""
    return [part.tolist() for part in torch.tensor_split(torch.argsort(mean), slices)]


def slice_accuracies(rm_config, train, held_out, mean: torch.Tensor, slices: int = 10,
                     model_factory=None) -> dict[str, float]:
    """Held-out accuracy of a fresh RM trained on each strength slice (0 = lowest), and on the lowest
    slice with chosen and rejected swapped. Each trains in `<output_dir>/slices/`."""
    root = Path(rm_config.output_dir) / "slices"

    def accuracy(data, name: str, desc: str, loss_type: str = "bt") -> float:
        def loss_fn(model, batch, step):
            return batch_loss(model, batch, step, loss_type)

        fitted = fit_reward_model(rm_config, data, rm_config.seed, root / name, loss_fn, desc=desc,
                                  model_factory=model_factory)
        result = evaluate(fitted.model, held_out, rm_config.eval_batch_size, fitted.trainer)["eval_accuracy"]
        remove_checkpoints(fitted)
        return result

    results = {}
    parts = strength_slices(mean, slices)
    for k, indices in enumerate(parts):
        results[f"slice_{k}_eval_accuracy"] = accuracy(subset(train, indices), f"slice-{k}", f"slice {k + 1}/{slices}")
    lowest = subset(train, parts[0])
    lowest.flip = torch.ones(len(lowest), dtype=torch.bool)
    results["slice_0_flipped_eval_accuracy"] = accuracy(lowest, "slice-0-flipped", "lowest slice flipped", "flip")
    return results


def compare_estimators(primary, others: dict) -> dict[str, float]:
    """Flat summary keys comparing each other estimator with the primary one."""
    summary = {}
    for name, other in others.items():
        summary[f"{name}_spearman_with_{primary.mode}"] = spearman(other.mean, primary.mean)
        summary[f"{name}_negative_strength_fraction"] = (other.mean < 0).float().mean().item()
        summary[f"{name}_flag_agreement"] = ((other.mean < 0) == (primary.mean < 0)).float().mean().item()
        summary[f"{name}_mean_std"] = other.std.mean().item()
        summary[f"{name}_time_ratio"] = other.train_seconds / max(primary.train_seconds, 1e-9)
        summary.update({f"{name}_{k}": v for k, v in other.eval_accuracy().items()})
    return summary


def plot_groups(groups: list[dict[str, float]], path: Path) -> Path:
    figure, axis = pyplot().subplots(figsize=(6.5, 3.6))
    x = [g["group"] for g in groups]
    axis.plot(x, [g["mean_strength"] for g in groups], marker="o", label="mean of mean strength")
    axis.plot(x, [g["mean_std"] for g in groups], marker="s", label="mean of std")
    axis.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    axis.set_xlabel("group (pairs sorted by mean strength, 20 equal groups)")
    axis.set_xticks(x)
    axis.legend()
    axis.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_slices(results: dict[str, float], path: Path) -> Path:
    keys = sorted((k for k in results if k.startswith("slice_") and k.split("_")[1].isdigit()
                   and not k.endswith("flipped_eval_accuracy")), key=lambda k: int(k.split("_")[1]))
    figure, axis = pyplot().subplots(figsize=(6.0, 3.4))
    axis.bar(range(len(keys)), [results[k] for k in keys], color="#4C72B0", label="slice as labelled")
    if "slice_0_flipped_eval_accuracy" in results:
        axis.bar([-1], [results["slice_0_flipped_eval_accuracy"]], color="#DD8452", label="lowest slice flipped")
    axis.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    axis.set_xlabel("10% slice by mean strength (0 = lowest; -1 = lowest flipped)")
    axis.set_ylabel("held-out accuracy")
    axis.set_ylim(0, 1)
    axis.legend()
    return save_figure(figure, path)


def groups_table(groups: list[dict[str, float]]) -> str:
    rows = ["| group | pairs | mean of mean strength | mean of std |", "|---|---|---|---|"]
    rows += [f"| {g['group']} | {g['pairs']} | {g['mean_strength']:.3f} | {g['mean_std']:.3f} |" for g in groups]
    return "\n".join(rows)


def write_strength_report(run, rm_config, train, held_out, scores, others: dict, with_slices: bool,
                          summary: dict, model_factory=None, main_process: bool = True) -> tuple[Path, dict[str, float]]:
    """Write report.md and its PNGs into the run directory; returns (path, slice accuracies). Every process
    trains its share of the slice RMs; only the main process writes."""
    mean, std = scores.mean, scores.std
    slice_results: dict[str, float] = {}
    if with_slices and len(held_out) and len(train) >= 10:
        slice_results = slice_accuracies(rm_config, train, held_out, mean, model_factory=model_factory)
    if not main_process:
        return run.path / "report.md", slice_results
    histogram = plot_histogram(mean.tolist(), run.path / "strength_histogram.png",
                               f"mean preference difference ({scores.mode}, {scores.chosen.shape[0]} members)",
                               "mean strength")
    groups = strength_groups(mean, std)
    sections = [
        ("Mean strength", (f"{(mean < 0).float().mean().item():.1%} of {len(mean)} pairs have negative mean "
                           "strength (the ensemble prefers the rejected response)."), histogram),
        ("Strength groups", "Pairs sorted by mean strength into 20 equal groups.\n\n" + groups_table(groups),
         plot_groups(groups, run.path / "strength_groups.png")),
    ]
    if slice_results:
        text = ("A fresh RM per 10% slice of the pairs sorted by strength, evaluated on the held-out pairs.\n\n"
                + summary_table(slice_results))
        sections.append(("Slice accuracy", text, plot_slices(slice_results, run.path / "strength_slices.png")))
    elif with_slices:
        sections.append(("Slice accuracy", "Skipped: needs held-out pairs and at least 10 training pairs.", None))
    if others:
        lines = [f"Primary estimator: `{scores.mode}` ({scores.train_seconds:.0f} s of training)."]
        for name, other in others.items():
            lines.append(f"- `{name}`: Spearman with `{scores.mode}` {summary[f'{name}_spearman_with_{scores.mode}']:.3f}, "
                         f"negative share {(other.mean < 0).float().mean().item():.1%}, mean std "
                         f"{other.std.mean().item():.3f} (vs {std.mean().item():.3f}), training time ×"
                         f"{summary[f'{name}_time_ratio']:.2f}")
        sections.append(("Estimators compared", "\n".join(lines), None))
    sections.append(("Summary", summary_table({**summary, **slice_results}), None))
    return write_report(run, "Preference strength", sections), slice_results
