"""The one way data is cut into batches and shared between processes.

Batches are planned globally: a global batch holds `batch_size × processes` examples, and process
`rank` takes every `processes`-th example of it. So N processes with per-device batch B/N see
exactly the examples one process with batch B sees, step for step, and every example once per
epoch. The plan is a pure function of (seed, epoch): a resumed run continues with the same order.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator


class PairBatcher:
    """Length-grouped batches of example indices, a pure function of (seed, epoch).

    Shuffle, cut into mega-batches of `group_size * batch_size`, sort each by length (less padding),
    cut into batches, shuffle the batch order. The last batch may be smaller: no example is dropped.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, shuffle: bool = True, group_size: int = 50):
        if batch_size < 1 or group_size < 1:
            raise ValueError(f"batch_size and group_size must be >= 1 (got {batch_size}, {group_size})")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.shuffle, self.group_size = shuffle, group_size

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        if not self.shuffle:
            return [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(f"{self.seed}:{epoch}")
        rng.shuffle(order)
        mega = self.group_size * self.batch_size
        batches = []
        for start in range(0, len(order), mega):
            group = sorted(order[start: start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches += [group[i: i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        rng.shuffle(batches)
        return batches


class BatchPlan:
    """Global batches of `batch_size × world_size` examples; `local(batch)` is this process's share."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.rank, self.world_size = rank, world_size
        self.batcher = PairBatcher(lengths, batch_size * world_size, seed, shuffle)

    def __len__(self) -> int:
        """Global batches per epoch."""
        return len(self.batcher)

    def local(self, global_batch: list[int]) -> list[int]:
        """This process's examples of a global batch (empty when the batch has fewer examples than processes)."""
        return global_batch[self.rank::self.world_size]

    def stream(self, epoch: int = 0, position: int = 0) -> Iterator[tuple[int, int, list[int]]]:
        """Endless (epoch, position, global batch) from a saved position on."""
        while True:
            batches = self.batcher.batches(epoch)
            for index in range(position, len(batches)):
                yield epoch, index, batches[index]
            epoch, position = epoch + 1, 0


def epoch_stream(num_items: int, seed: int, epoch: int = 0, position: int = 0) -> Iterator[tuple[int, int, int]]:
    """Endless (epoch, position, item) over shuffled epochs of `num_items`: every item once per epoch,
    the order a pure function of (seed, epoch). PPO takes its prompt batches from it."""
    while True:
        order = list(range(num_items))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        for index in range(position, num_items):
            yield epoch, index + 1, order[index]
        epoch, position = epoch + 1, 0
