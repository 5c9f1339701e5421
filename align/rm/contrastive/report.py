"""The feature-separability section of an `align rm` report: PCA of the features, the separability figures,
the RM and contrastive loss curves."""
from __future__ import annotations

from pathlib import Path

import torch

from align.report import plot_curves, pyplot, save_figure
from align.rm.contrastive.separability import SEPARABILITY_KEYS
from align.rm.contrastive.term import ContrastiveConfig


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """Project [N, D] features on their first two principal components -> [N, 2]."""
    centred = features - features.mean(0)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_feature_projection(chosen: torch.Tensor, rejected: torch.Tensor, path: Path, title: str) -> Path:
    """Two panels: PCA of chosen vs rejected features (one PCA fitted on both), and PCA of the
    differences f_c − f_r."""
    points = pca_2d(torch.cat([chosen, rejected])).numpy()
    differences = pca_2d(chosen - rejected).numpy()
    n = len(chosen)
    figure, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4.2))
    left.scatter(points[n:, 0], points[n:, 1], s=8, alpha=0.6, label="rejected", color="#C44E52")
    left.scatter(points[:n, 0], points[:n, 1], s=8, alpha=0.6, label="chosen", color="#4C72B0")
    left.set_title("features (PCA)")
    left.legend()
    right.scatter(differences[:, 0], differences[:, 1], s=8, alpha=0.6, color="#55A868")
    right.set_title("f(chosen) − f(rejected) (PCA)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    return save_figure(figure, path)


def append_contrastive_report(run, chosen: torch.Tensor, rejected: torch.Tensor, metrics: dict[str, float],
                              contrastive: ContrastiveConfig) -> Path:
    """Add the feature-separability section (PCA plot, the `SEPARABILITY_KEYS` figures of `metrics`,
    RM and contrastive loss curves) to report.md."""
    projection = plot_feature_projection(chosen, rejected, run.path / "eval_features_pca.png",
                                         "held-out features, chosen vs rejected")
    settings = contrastive.resolved()
    described = ("no contrastive term" if not settings.enabled else
                 f"{settings.method} on {settings.target} features, β={settings.beta}, τ={settings.temperature}"
                 + (f", K={settings.num_prototypes}" if settings.method == "swav" else ""))
    figures = ", ".join(f"`{key}` = {metrics[key]:.4g}" for key in SEPARABILITY_KEYS if key in metrics)
    lines = ["", "## Feature separability", "",
             f"Training: {described}. Held-out pairs: {figures}.", "",
             f"![Feature separability]({projection.name})", ""]
    curves = plot_curves(run.read_metrics(), ["rm_loss", "contrastive_loss"], run.path / "contrastive_losses.png",
                         "RM and contrastive losses")
    if curves is not None:
        lines += ["## RM and contrastive losses", "", f"![RM and contrastive losses]({curves.name})", ""]
    report = run.path / "report.md"
    with report.open("a") as handle:
        handle.write("\n".join(lines))
    return report
