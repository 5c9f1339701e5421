"""How distinct the chosen and rejected features of a reward model are on held-out pairs (summary.json keys)."""
from __future__ import annotations

import torch
from torch import nn


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


@torch.enable_grad()  # also when called under no_grad (the fit differentiates its own loss)
def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
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
        weight, bias = fit_logistic_regression((x_train - mean) / std, y_train, l2, steps)
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
