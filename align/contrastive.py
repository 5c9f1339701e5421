"""Contrastive terms for reward-model training (SimCSE, SwAV) and feature-separability measures.

A plain RM tends to give a chosen and a rejected response nearly the same features, so it cannot
say what makes one better. Adding an unsupervised contrastive term spreads them apart
(Wang et al. 2024, "Secrets of RLHF Part II: Reward Modeling", §4):

    L = mean over two dropout views of L_rm  +  β · L_contrastive(view a, view b)

The features are the pooled hidden state that feeds the reward head (`RewardModel.features`).
What is contrasted: `pair` = the responses {f(x,y_c), f(x,y_r)}, or `difference` = the preference
direction {f_c − f_r, f_r − f_c}. The losses themselves are pure functions in `align.losses`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from align import losses
from align.config import ConfigError, doc

# Defaults per (method, target) where the reference gives them (SwAV: Secrets of RLHF Part II §4);
# SimCSE's β = 0.1 is our choice (the reference does not state one), τ = 0.05 is SimCSE's own.
DEFAULT_BETA = {("swav", "pair"): 0.1, ("swav", "difference"): 0.5,
                ("simcse", "pair"): 0.1, ("simcse", "difference"): 0.1}
DEFAULT_PROTOTYPES = {"pair": 50, "difference": 20}
DEFAULT_TEMPERATURE = {"simcse": 0.05, "swav": 0.1}


@dataclass
class ContrastiveConfig:
    """The contrastive term added to the RM loss (`contrastive.*` keys of `align rm`)."""

    method: Literal["none", "simcse", "swav"] = doc("Contrastive term: `none`, `simcse` (instance-level InfoNCE) or "
                                                    "`swav` (cluster-level swapped prediction).", "none")
    target: Literal["pair", "difference"] = doc("What is contrasted: the chosen and rejected features (`pair`) or "
                                                "their differences f_c − f_r and f_r − f_c (`difference`).", "pair")
    beta: float | None = doc("Weight β of the contrastive term; empty: 0.1, or 0.5 for swav+difference.", None)
    temperature: float | None = doc("Softmax temperature τ; empty: 0.05 for simcse, 0.1 for swav.", None)
    dropout: float = doc("Dropout rate inside the model that makes the two views differ.", 0.05)
    num_prototypes: int | None = doc("SwAV prototypes K; empty: 50 for pair, 20 for difference.", None)
    sinkhorn_epsilon: float = doc("SwAV: entropy ε of the Sinkhorn-Knopp codes (smaller = harder codes).", 0.05)
    sinkhorn_iterations: int = doc("SwAV: Sinkhorn-Knopp iterations.", 3)

    def validate(self) -> None:
        for key in ("beta", "temperature", "num_prototypes"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"contrastive.{key}: expected a positive number, got {value!r}")
        if not 0.0 < self.dropout < 1.0:
            raise ConfigError(f"contrastive.dropout: expected a number in (0, 1) (the views need dropout), "
                              f"got {self.dropout!r}")
        if not self.sinkhorn_epsilon > 0:
            raise ConfigError(f"contrastive.sinkhorn_epsilon: expected a positive number, got {self.sinkhorn_epsilon!r}")
        if self.sinkhorn_iterations < 1:
            raise ConfigError(f"contrastive.sinkhorn_iterations: expected at least 1, got {self.sinkhorn_iterations!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def resolved(self) -> ContrastiveConfig:
        """A copy with every empty setting replaced by its default for this method and target."""
        if not self.enabled:
            return self
        return replace(
            self,
            beta=self.beta if self.beta is not None else DEFAULT_BETA[(self.method, self.target)],
            temperature=self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE[self.method],
            num_prototypes=(self.num_prototypes if self.num_prototypes is not None
                            else DEFAULT_PROTOTYPES[self.target]) if self.method == "swav" else None)


# --------------------------------------------------------------------------- the term


class ContrastiveTerm(nn.Module):
    """L_contrastive on the features of two views of a batch; owns SwAV's learnable prototypes."""

    def __init__(self, config: ContrastiveConfig, feature_size: int):
        super().__init__()
        self.config = config.resolved()
        self.beta = self.config.beta
        if self.config.method == "swav":
            self.prototypes = nn.Parameter(torch.randn(self.config.num_prototypes, feature_size) / feature_size ** 0.5)
        else:
            self.register_parameter("prototypes", None)

    def items(self, features: torch.Tensor) -> torch.Tensor:
        """[2B, D] features (chosen rows, then rejected rows) -> the [2B, D] items to contrast."""
        chosen, rejected = features.chunk(2, dim=0)
        if self.config.target == "pair":
            return losses.pair_features(chosen, rejected)
        return losses.difference_features(chosen, rejected)

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor, across=None) -> torch.Tensor:
        """L_contrastive over the items of every process: with `across` (a `Trainer`), each process's items
        are gathered so the negatives (SimCSE) and the Sinkhorn codes (SwAV) span the global batch, as in
        one process. Gradient flows into this process's items only, so summed over processes it is the
        gradient of the one global loss; the prototypes, which every process uses whole, get 1/N of it here."""
        a, b = self.items(features_a), self.items(features_b)
        prototypes = self.prototypes
        if across is not None and across.world_size > 1:
            a, b = across.gather_with_grad(a), across.gather_with_grad(b)
            if prototypes is not None:
                prototypes = scale_gradient(prototypes, 1.0 / across.world_size)
        if self.config.method == "simcse":
            return losses.simcse_loss(a, b, self.config.temperature)
        return losses.swav_loss(a, b, prototypes, self.config.temperature, self.config.sinkhorn_epsilon,
                                self.config.sinkhorn_iterations)


def scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """`tensor` in the forward pass, `factor` × its gradient in the backward pass."""
    return tensor * factor + (tensor * (1.0 - factor)).detach()


TERM_CONFIG_FILE = "contrastive.json"
TERM_WEIGHTS_FILE = "contrastive.pt"


class ContrastiveRewardModel(nn.Module):
    """A reward model together with its contrastive term.

    Wrapping puts the prototypes where the optimizer (`model.parameters()`), `accelerator.prepare`
    and the checkpoints (`save_pretrained` / `from_pretrained`) see them, so a resumed run
    continues with the same prototypes and their optimizer state. The saved directory stays a
    plain RM checkpoint: the term is two extra files that RM loaders ignore.
    """

    def __init__(self, reward_model: nn.Module, term: ContrastiveTerm):
        super().__init__()
        self.reward_model = reward_model
        self.term = term

    def forward(self, *args, **kwargs):
        return self.reward_model(*args, **kwargs)

    @property
    def head_names(self) -> list[str]:
        return self.reward_model.head_names

    def merge_lora(self) -> None:
        self.reward_model.merge_lora()

    def save_pretrained(self, directory, state_dict: dict | None = None) -> None:
        directory = Path(directory)
        if state_dict is not None:
            state_dict = {k.removeprefix("reward_model."): v for k, v in state_dict.items()
                          if k.startswith("reward_model.")}
        self.reward_model.save_pretrained(directory, state_dict=state_dict)
        settings = {key: getattr(self.term.config, key) for key in self.term.config.__dataclass_fields__}
        (directory / TERM_CONFIG_FILE).write_text(json.dumps(
            {**settings, "feature_size": self.term.prototypes.shape[1] if self.term.prototypes is not None else None},
            indent=2))
        torch.save(self.term.state_dict(), directory / TERM_WEIGHTS_FILE)

    def load_weights(self, directory) -> None:
        self.reward_model.load_weights(directory)
        self.term.load_state_dict(torch.load(Path(directory) / TERM_WEIGHTS_FILE, weights_only=True))

    @classmethod
    def from_pretrained(cls, directory) -> ContrastiveRewardModel:
        from align.models import RewardModel

        directory = Path(directory)
        settings = json.loads((directory / TERM_CONFIG_FILE).read_text())
        feature_size = settings.pop("feature_size") or 1
        term = ContrastiveTerm(ContrastiveConfig(**settings), feature_size)
        term.load_state_dict(torch.load(directory / TERM_WEIGHTS_FILE, weights_only=True))
        return cls(RewardModel.from_pretrained(directory), term)


# --------------------------------------------------------------------------- separability


@torch.no_grad()
def eval_features(model, data, batch_size: int, trainer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected features ([N, H] each, float32, CPU) of every pair in `data` (an `RMData`),
    in eval mode (no dropout); with a `trainer`, each process computes its share of the batches."""
    was_training = model.training
    model.eval()
    device = trainer.device if trainer else next(model.parameters()).device

    def features_of(batches: list[list[int]]) -> list[torch.Tensor]:
        out = []
        for indices in batches:
            batch = data.collate(indices, device=device)
            out.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).features.float().cpu())
        return out

    order = sorted(range(len(data)), key=data.length)  # length-grouped batches pad less
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    results = trainer.map_shards(batches, features_of) if trainer else features_of(batches)
    model.train(was_training)
    if not results:
        return torch.zeros(0, 0), torch.zeros(0, 0)
    chosen = torch.zeros(len(data), results[0].shape[1])
    rejected = torch.zeros_like(chosen)
    for indices, features in zip(batches, results):
        chosen[indices], rejected[indices] = features.chunk(2, dim=0)
    return chosen, rejected


def _fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression fitted with L-BFGS; returns (weight, bias)."""
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def linear_probe_accuracy(chosen: torch.Tensor, rejected: torch.Tensor, seed: int = 0, l2: float = 1e-2,
                          steps: int = 100) -> float:
    """Held-out accuracy of a logistic-regression probe telling a chosen from a rejected feature vector.

    Two folds split by pair (both responses of a prompt stay in the same fold), features
    standardised on the training fold, L2-regularised; the mean of the two folds' test
    accuracies. 0.5 = not separable.
    """
    num_pairs = len(chosen)
    if num_pairs < 4:
        return float("nan")
    order = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(seed))
    folds = (order[: num_pairs // 2], order[num_pairs // 2:])
    accuracies = []
    for train_index, test_index in (folds, folds[::-1]):
        x_train = torch.cat([chosen[train_index], rejected[train_index]])
        y_train = torch.cat([torch.ones(len(train_index)), torch.zeros(len(train_index))])
        mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
        weight, bias = _fit_logistic_regression((x_train - mean) / std, y_train, l2, steps)
        x_test = (torch.cat([chosen[test_index], rejected[test_index]]) - mean) / std
        y_test = torch.cat([torch.ones(len(test_index)), torch.zeros(len(test_index))])
        accuracies.append((((x_test @ weight + bias) > 0).float() == y_test).float().mean().item())
    return sum(accuracies) / len(accuracies)


SEPARABILITY_KEYS = ("eval_feature_cosine", "eval_feature_distance", "eval_probe_accuracy")


def feature_separability(chosen: torch.Tensor, rejected: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """How distinct chosen and rejected features are on held-out pairs (summary.json keys).

    `eval_feature_cosine`: mean cos(f(x,y_c), f(x,y_r)) over pairs (1 = identical directions);
    `eval_feature_distance`: mean ‖f_c − f_r‖ relative to the mean feature norm;
    `eval_probe_accuracy`: `linear_probe_accuracy` (0.5 = not separable).
    """
    if len(chosen) == 0:
        return {}
    cosine = nn.functional.cosine_similarity(chosen, rejected, dim=-1).mean().item()
    scale = torch.cat([chosen, rejected]).norm(dim=-1).mean().clamp(min=1e-12)
    distance = ((chosen - rejected).norm(dim=-1).mean() / scale).item()
    return {"eval_feature_cosine": cosine, "eval_feature_distance": distance,
            "eval_probe_accuracy": linear_probe_accuracy(chosen, rejected, seed)}


# --------------------------------------------------------------------------- report


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """Project [N, D] features on their first two principal components -> [N, 2]."""
    centred = features - features.mean(0)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_feature_projection(chosen: torch.Tensor, rejected: torch.Tensor, path: Path, title: str) -> Path:
    """Two panels: PCA of chosen vs rejected features (one PCA fitted on both), and PCA of the
    differences f_c − f_r."""
    from align.report import plt

    points = pca_2d(torch.cat([chosen, rejected])).numpy()
    differences = pca_2d(chosen - rejected).numpy()
    n = len(chosen)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.scatter(points[n:, 0], points[n:, 1], s=8, alpha=0.6, label="rejected", color="#C44E52")
    left.scatter(points[:n, 0], points[:n, 1], s=8, alpha=0.6, label="chosen", color="#4C72B0")
    left.set_title("features (PCA)")
    left.legend()
    right.scatter(differences[:, 0], differences[:, 1], s=8, alpha=0.6, color="#55A868")
    right.set_title("f(chosen) − f(rejected) (PCA)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def append_contrastive_report(run, chosen: torch.Tensor, rejected: torch.Tensor, metrics: dict[str, float],
                              contrastive: ContrastiveConfig) -> Path:
    """Add the feature-separability section (PCA plot, the `SEPARABILITY_KEYS` figures of `metrics`,
    RM and contrastive loss curves) to report.md."""
    from align.report import plot_curves

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
