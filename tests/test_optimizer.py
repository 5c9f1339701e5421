"""The one optimizer every trainer uses (`align.training.trainer.make_optimizer_and_scheduler`)."""
import torch

from align.models.loading import load_causal_lm
from align.rm.train import Config
from align.training.trainer import make_optimizer_and_scheduler


def test_adamw_is_fused_and_spares_biases_and_norms_from_weight_decay():
    model = load_causal_lm("tiny-llama")
    model.model.embed_tokens.weight.requires_grad_(False)
    optimizer, scheduler = make_optimizer_and_scheduler(model, Config(weight_decay=0.1, warmup_ratio=0.5), 10, 1e-3)
    assert all(group["fused"] for group in optimizer.param_groups)  # one kernel, not a loop over parameters
    decayed, spared = ({id(p) for g in optimizer.param_groups if (g["weight_decay"] > 0) == d for p in g["params"]}
                       for d in (True, False))
    named = dict(model.named_parameters())
    assert decayed == {id(p) for n, p in named.items() if p.requires_grad and p.ndim == 2}
    assert spared == {id(p) for n, p in named.items() if p.requires_grad and (p.ndim < 2 or "norm" in n)}
    assert id(model.model.embed_tokens.weight) not in decayed | spared  # frozen: not in the optimizer
    assert scheduler.get_last_lr()[0] == 0.0  # warm-up starts from 0
    loss = model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss
    loss.backward()
    before = next(p for p in model.parameters() if p.requires_grad).detach().clone()
    optimizer.step()  # at the warm-up's learning rate 0
    scheduler.step()
    optimizer.step()
    assert not torch.equal(before, next(p for p in model.parameters() if p.requires_grad))
