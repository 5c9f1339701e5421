"""The contrastive term with negatives gathered across processes, for tests/test_distributed.py.

    python contrastive_gather.py OUT_DIR METHOD        (under torchrun: each process holds half the pairs)

Every process makes the same 8 pairs of 2-view features (fixed seed), keeps its share (rows rank::world)
and computes the term through the trainer's gather; it writes the loss and the gradients of its own
features and of the prototypes. One process computes everything itself; the test compares.
"""
import json
import sys
from pathlib import Path

import torch

from align.rm.contrastive.term import ContrastiveConfig, ContrastiveTerm
from align.rm.train import Config
from align.training import Trainer

out, method = Path(sys.argv[1]), sys.argv[2]
trainer = Trainer(Config(output_dir=str(out / "run"), precision="fp32", progress=False))
torch.manual_seed(0)
pairs, dim = 8, 6
views = torch.randn(2, 2 * pairs, dim)            # [view, chosen rows then rejected rows, dim]
term = ContrastiveTerm(ContrastiveConfig(method=method, target="difference"), dim)
mine = list(range(trainer.rank, pairs, trainer.world_size))
rows = mine + [pairs + i for i in mine]           # this process's chosen rows, then its rejected rows
a, b = views[0][rows].clone().requires_grad_(), views[1][rows].clone().requires_grad_()
loss = term(a, b, trainer)
# summed over processes the gradients are those of the one global loss (the trainer scales backward by N
# and data parallelism averages; here we undo nothing and report the raw per-process gradients)
loss.backward()
result = {"loss": loss.item(), "rows": rows, "grad_a": a.grad.tolist(), "grad_b": b.grad.tolist(),
          "grad_prototypes": term.prototypes.grad.tolist() if term.prototypes is not None else None}
(out / f"rank{trainer.rank}.json").write_text(json.dumps(result))
