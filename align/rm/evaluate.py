"""Scoring preference pairs with a reward model: rewards per pair, accuracy, loss and reward gap."""
from __future__ import annotations

import torch

from align import losses
from align.rm.data import RMData, rewards_for_heads
from align.training import Trainer


def length_batches(data: RMData, batch_size: int) -> list[list[int]]:
    """Every pair once, in batches of similar length (less padding)."""
    order = sorted(range(len(data)), key=data.length)
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def score_pairs(model, data: RMData, batch_size: int, trainer: Trainer | None = None, all_heads: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards for every pair in `data`, in order: each pair's own head ([N] each), or
    with `all_heads` every head ([N, heads] each). With a `trainer`, each process scores its share."""
    was_training = model.training
    model.eval()
    device = trainer.device if trainer else next(model.parameters()).device

    def score(batches: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        scored = []
        for indices in batches:
            batch = data.collate(indices, device=device)
            rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).rewards.float()
            chosen, rejected = (rewards.chunk(2) if all_heads else rewards_for_heads(rewards, batch["head_index"]))
            scored.append((chosen.cpu(), rejected.cpu()))
        return scored

    batches = length_batches(data, batch_size)
    results = trainer.map_shards(batches, score) if trainer else score(batches)
    model.train(was_training)
    columns = results[0][0].reshape(len(batches[0]), -1).shape[1] if results else 1
    chosen_all, rejected_all = torch.zeros(len(data), columns), torch.zeros(len(data), columns)
    for indices, (chosen, rejected) in zip(batches, results):
        chosen_all[indices] = chosen.reshape(len(indices), -1)
        rejected_all[indices] = rejected.reshape(len(indices), -1)
    if not all_heads:
        return chosen_all[:, 0], rejected_all[:, 0]
    return chosen_all, rejected_all


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, prefix: str = "eval_") -> dict[str, float]:
    """Pairwise accuracy (ties count half), mean BT loss and mean reward gap."""
    if chosen.numel() == 0:
        return {}
    delta = chosen - rejected
    accuracy = ((delta > 0).float() + 0.5 * (delta == 0).float()).mean().item()
    return {f"{prefix}accuracy": accuracy,
            f"{prefix}loss": losses.bradley_terry_loss(chosen, rejected).mean().item(),
            f"{prefix}reward_gap": delta.mean().item()}


def evaluate(model, data: RMData, batch_size: int, trainer: Trainer | None = None) -> dict[str, float]:
    chosen, rejected = score_pairs(model, data, batch_size, trainer)
    metrics = preference_metrics(chosen, rejected)
    if len(data.head_names) > 1:
        for head, name in enumerate(data.head_names):
            mask = data.head_index == head
            if mask.any():
                metrics[f"eval_{name}_accuracy"] = preference_metrics(chosen[mask], rejected[mask],
                                                                      prefix=f"eval_{name}_")[f"eval_{name}_accuracy"]
    return metrics
