"""`head_init=probe` (LP-FT): the Bradley-Terry probe fit, and heads set from it on a tiny random RM."""
import pytest
import torch

from align.rm import train as rm
from align.rm.data import load_rm_data
from align.rm.evaluate import score_pairs
from align.rm.fit import build_reward_model
from align.rm.probe import fit_bradley_terry_probe, probe_heads
from align.training import Trainer
from tests.test_rm import config_for, pairs_file  # noqa: F401  (the toy pairs fixture)


def test_probe_recovers_the_direction_that_generated_the_preferences():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(16, generator=generator)
    difference = torch.randn(2000, 16, generator=generator)
    # the preferred side of each pair drawn from the Bradley-Terry model with weights `truth`
    prefers_first = torch.rand(2000, generator=generator) < torch.sigmoid(difference @ truth)
    difference = torch.where(prefers_first.unsqueeze(1), difference, -difference)
    fitted = fit_bradley_terry_probe(difference, l2=1e-4)
    assert torch.nn.functional.cosine_similarity(fitted, truth, dim=0) > 0.98
    shrunk = fit_bradley_terry_probe(difference, l2=1.0)
    assert shrunk.norm() < 0.5 * fitted.norm()  # the penalty shrinks the weights


def test_probed_heads_rank_the_training_pairs_as_the_probe_did(pairs_file, tmp_path):  # noqa: F811
    config = config_for(pairs_file, tmp_path / "probe", "heads=[overall,politeness]", "precision=fp32")
    data = load_rm_data(config).train
    trainer = Trainer(config)
    model = build_reward_model(config, trainer)
    untouched = model.model.classifier.weight.detach().clone()
    stats = probe_heads(model, data, 16, trainer, l2=0.1)
    assert not torch.equal(model.model.classifier.weight, untouched)
    chosen, rejected = score_pairs(model, data, 16, all_heads=True)  # [N, heads] each
    for index, name in enumerate(["overall", "politeness"]):
        rows = data.head_index == index
        head_accuracy = (chosen[rows, index] > rejected[rows, index]).float().mean().item()
        assert head_accuracy == pytest.approx(stats[f"head_probe_{name}_train_accuracy"], abs=1e-6)
        assert head_accuracy > 0.9  # polite over rude: the random backbone's features already separate them
        # the bias centres the head's training rewards on 0
        assert torch.cat([chosen[rows, index], rejected[rows, index]]).mean().abs().item() < 0.1 * (
            chosen[rows, index] - rejected[rows, index]).abs().mean().item()


def test_cli_probe_run_reports_the_probe(pairs_file, tmp_path):  # noqa: F811
    summary = rm.train_reward_model(config_for(pairs_file, tmp_path / "run", "head_init=probe"))
    assert summary["head_probe_overall_train_accuracy"] > 0.9 and summary["head_probe_seconds"] > 0
    plain = rm.train_reward_model(config_for(pairs_file, tmp_path / "plain"))
    assert not any(key.startswith("head_probe_") for key in plain)
