"""MetaRM: the difference loss J on hand-computed values, the meta step (θ', g, the update applied to the saved θ)
worked out by hand on a linear reward head over fixed features, the shifted-sample files, and the trainer:
it learns, resumes a killed run to the same figures, runs in bf16, and two processes with batch B/2 take the
steps of one process with batch B."""
from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from align import losses
from align.config import ConfigError, TrainConfig, load_config
from align.data import DataError
from align.rm import metarm
from align.rm.shifted import ShiftedGroup, discrimination, load_shifted_groups, sample_shifted_groups
from align.training import Trainer

HERE = Path(__file__).parent


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- J


def test_difference_loss_on_hand_computed_rewards():
    # k = 3, rewards 0, 1, 3: |gaps| 1, 3, 2 -> J = (2/9)(σ(1) + σ(3) + σ(2))
    rewards = torch.tensor([[0.0, 1.0, 3.0]], requires_grad=True)
    j = losses.metarm_difference_loss(rewards)
    assert j.item() == pytest.approx(2 / 9 * (sigmoid(1) + sigmoid(3) + sigmoid(2)), abs=1e-6)
    # dJ/dr_0 = -(2/9)(σ'(1) + σ'(3)) (r_0 is below both); r_1: +σ'(1) - σ'(2); r_2: +σ'(3) + σ'(2)
    d = [sigmoid(x) * (1 - sigmoid(x)) for x in (0, 1, 2, 3)]
    j.sum().backward()
    assert rewards.grad[0].tolist() == pytest.approx([-2 / 9 * (d[1] + d[3]), 2 / 9 * (d[1] - d[2]),
                                                      2 / 9 * (d[3] + d[2])], abs=1e-6)


def test_difference_loss_masks_short_groups_and_is_lowest_for_equal_rewards():
    rewards = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 99.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    j = losses.metarm_difference_loss(rewards, mask)
    assert j[1].item() == pytest.approx(2 / 4 * sigmoid(0))       # k = 2: the padded 99 takes no part
    assert j[2].item() == pytest.approx((3 - 1) / (2 * 3))         # k equal rewards: (k - 1) / (2k)
    assert j[0].item() > j[2].item()
    assert losses.metarm_difference_loss(torch.tensor([[4.0, 0.0]]), torch.tensor([[True, False]])).item() == 0.0


def test_discrimination_reports_mean_j_and_within_group_spread():
    figures = discrimination([[0.0, 2.0], [1.0, 1.0, 1.0]])
    assert figures["difference"] == pytest.approx((2 / 4 * sigmoid(2) + 2 / 6) / 2)
    assert figures["score_spread"] == pytest.approx((1.0 + 0.0) / 2)  # population std of {0, 2} is 1


# --------------------------------------------------------------------------- the meta step, by hand


class LinearHead(torch.nn.Module):
    """r(f) = w · f on fixed features f: the smallest reward model whose meta step can be done by hand."""

    def __init__(self, weight: list[float]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([weight]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features @ self.weight.T).squeeze(-1)


def linear_trainer(tmp_path, alpha: float, grad_accum: int = 1) -> tuple[Trainer, torch.nn.Module]:
    config = TrainConfig(output_dir=str(tmp_path), precision="fp32", learning_rate=alpha, max_grad_norm=0.0,
                         warmup_ratio=0.0, lr_schedule="constant", grad_accum=grad_accum, progress=False)
    trainer = Trainer(config)
    return trainer, trainer.prepare("model", LinearHead([0.5, -0.5]), total_steps=10)


def shares(groups: list[torch.Tensor], pairs: list[tuple[torch.Tensor, torch.Tensor]], seen: list):
    """Micro-batch closures: J of each group of features, BT of each (chosen, rejected) pair; each micro-batch
    its share of the step (1 / the step's count). The pair closures record the weights they run at (θ')."""
    def j_share(features):
        return lambda model: (losses.metarm_difference_loss(model(features).unsqueeze(0)).sum() / len(groups), {})

    def bt_share(chosen, rejected):
        def share(model):
            seen.append(model.weight.detach().clone())
            return losses.bradley_terry_loss(model(chosen), model(rejected)).sum() / len(pairs), {}
        return share

    return [j_share(g) for g in groups], [bt_share(c, r) for c, r in pairs]


def test_meta_step_on_a_linear_head_by_hand(tmp_path):
    """θ = (0.5, −0.5); shifted group s1 = (1, 0), s2 = (0, 1): r = 0.5, −0.5, Δ = 1, k = 2.
    ∇J = (2/k²) σ'(1) sign(Δ) (s1 − s2) = ½ σ(1)(1 − σ(1)) (1, −1) = (0.0983060, −0.0983060).
    η = 0.1: θ' = θ + η∇J = (0.5098306, −0.5098306).
    Pair c = (2, 0) over r = (0, 1): Δ' = θ'·(c − r) = 2·0.5098306 + 0.5098306 = 1.5294918;
    g = ∇L_BT(θ') = −(1 − σ(Δ'))(2, −1) = (−0.3561361, 0.1780681).
    AdamW's first step (bias-corrected m = g, v = g², no decay) moves the SAVED θ by −α g / (|g| + ε):
    θ_new = (0.5 + α, −0.5 − α) up to ε, not θ' − α·sign(g)."""
    alpha, eta = 1e-3, 0.1
    trainer, model = linear_trainer(tmp_path, alpha)
    seen: list[torch.Tensor] = []
    difference, pair = shares([torch.tensor([[1.0, 0.0], [0.0, 1.0]])],
                              [(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]))], seen)
    metarm.meta_gradient(trainer, model, difference, pair, eta)

    d1 = sigmoid(1) * (1 - sigmoid(1))
    theta_prime = [0.5 + eta * 0.5 * d1, -0.5 - eta * 0.5 * d1]
    assert theta_prime == pytest.approx([0.5098306, -0.5098306], abs=1e-7)
    assert seen[0][0].tolist() == pytest.approx(theta_prime, abs=1e-7)            # the pair loss ran at θ'
    delta = 2 * theta_prime[0] - theta_prime[1]
    g = [-(1 - sigmoid(delta)) * 2, (1 - sigmoid(delta))]
    assert g == pytest.approx([-0.3561361, 0.1780681], abs=1e-7)
    assert model.weight.grad[0].tolist() == pytest.approx(g, abs=1e-6)           # g, evaluated at θ'
    assert model.weight.detach()[0].tolist() == pytest.approx([0.5, -0.5], abs=0)  # ... held by the saved θ

    trainer.optimizer_step("model")
    expected = [0.5 - alpha * g[0] / (abs(g[0]) + 1e-8), -0.5 - alpha * g[1] / (abs(g[1]) + 1e-8)]
    assert model.weight.detach()[0].tolist() == pytest.approx(expected, abs=1e-7)  # float32 weights
    assert expected != pytest.approx([t - alpha * (1 if x > 0 else -1) for t, x in zip(theta_prime, g)], abs=1e-4)


def test_meta_step_without_ascent_is_the_plain_pairwise_gradient(tmp_path):
    """η = 0: θ' = θ, so g = ∇L_BT(θ) = −(1 − σ(1.5))(2, −1) (Δ = 2·0.5 + 0.5 = 1.5)."""
    trainer, model = linear_trainer(tmp_path, 1e-3)
    difference, pair = shares([torch.tensor([[1.0, 0.0], [0.0, 1.0]])],
                              [(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]))], [])
    metarm.meta_gradient(trainer, model, difference, pair, 0.0)
    assert model.weight.grad[0].tolist() == pytest.approx([-(1 - sigmoid(1.5)) * 2, 1 - sigmoid(1.5)], abs=1e-6)


def test_meta_step_over_micro_batches_equals_one_batch(tmp_path):
    """Two groups and two pairs in one micro-batch each, or one of each per micro-batch (grad_accum 2): the
    shares add up to the same ∇J, θ' and g."""
    groups = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[2.0, 1.0], [0.0, -1.0], [1.0, 3.0]])]
    pairs = [(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])),
             (torch.tensor([[1.0, -1.0]]), torch.tensor([[3.0, 1.0]]))]
    trainer, whole = linear_trainer(tmp_path / "whole", 1e-3)

    def one_batch(model):  # both groups and both pairs in one forward pass, means over the step
        rewards = torch.stack([model(g) for g in groups])
        return losses.metarm_difference_loss(rewards).mean(), {}

    def one_pair_batch(model):
        chosen, rejected = torch.cat([c for c, _ in pairs]), torch.cat([r for _, r in pairs])
        return losses.bradley_terry_loss(model(chosen), model(rejected)).mean(), {}

    metarm.meta_gradient(trainer, whole, [one_batch], [one_pair_batch], 0.3)
    trainer_split, split = linear_trainer(tmp_path / "split", 1e-3, grad_accum=2)
    difference, pair = shares(groups, pairs, [])
    metarm.meta_gradient(trainer_split, split, difference, pair, 0.3)
    assert split.weight.grad[0].tolist() == pytest.approx(whole.weight.grad[0].tolist(), abs=1e-6)
    no_ascent, plain = linear_trainer(tmp_path / "plain", 1e-3)
    metarm.meta_gradient(no_ascent, plain, [one_batch], [one_pair_batch], 0.0)
    assert plain.weight.grad[0].tolist() != pytest.approx(whole.weight.grad[0].tolist(), abs=1e-3)  # η matters here


# --------------------------------------------------------------------------- shifted samples


def test_shifted_file_groups_flat_rows_and_counts_what_it_skips(tmp_path):
    path = tmp_path / "shifted.jsonl"
    rows = [{"id": "a", "prompt": "Hi", "completions": ["x", "y", " "]},
            {"id": "b", "prompt": "Yo", "completion": "one"}, {"id": "b", "prompt": "Yo", "completion": "two"},
            {"prompt": "Lone", "completions": ["only"]}, {"completions": ["p", "q"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    groups, skipped = load_shifted_groups(str(path))
    assert [(g.id, g.completions) for g in groups] == [("a", ["x", "y"]), ("b", ["one", "two"])]
    assert skipped == {"too_few_completions": 1, "missing_field": 1, "bad_json": 1}
    with pytest.raises(DataError, match=r"shifted.jsonl:5: field 'prompt'"):
        load_shifted_groups(str(path), strict=True)


def test_config_needs_exactly_one_source_of_shifted_samples(tmp_path):
    with pytest.raises(ConfigError, match="shifted_data"):
        load_config(metarm.Config, None, ["model=tiny-bert"])
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        load_config(metarm.Config, None, ["policy=tiny-llama", "samples_per_prompt=1"])


def test_group_sampling_depends_on_the_prompt_not_on_its_batch_or_process():
    from align.models import load_causal_lm, load_tokenizer
    from align.types import Prompt

    policy, tokenizer = load_causal_lm("tiny-llama"), load_tokenizer("tiny-llama", padding_side="left")
    prompts = [Prompt(prompt=f"Tell me about number {i}.", id=f"q{i}") for i in range(3)]
    options = {"seed": 4, "round_index": 1, "max_new_tokens": 6}
    together = sample_shifted_groups(policy, tokenizer, prompts, 3, **options)
    alone = sample_shifted_groups(policy, tokenizer, prompts[2:], 3, **options)
    assert alone[0].completions == together[2].completions and len(together[2].completions) == 3
    assert together[0].round == 1 and together[0].id == "q0"
    other_round = sample_shifted_groups(policy, tokenizer, prompts[2:], 3, **{**options, "round_index": 2})
    assert other_round[0].completions != together[2].completions


# --------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> tuple[str, str]:
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "music", "paper", "forest"]
    pairs = []
    for i in range(60):
        topic = " ".join(rng.sample(words, 3))
        pairs.append({"id": f"p{i}", "prompt": f"Tell me about {topic}.",
                      "chosen": f"Thank you for asking, happy to help with {topic}." + " indeed" * (i % 7),
                      "rejected": f"No. Go away, {topic} is boring." + " really" * (i % 5)})
    groups = [ShiftedGroup(f"Say something about {' '.join(rng.sample(words, 2))}.",
                           [" ".join(rng.sample(words, 1 + j)) for j in range(2 + i % 3)], f"s{i}")
              for i in range(20)]
    root = tmp_path_factory.mktemp("metarm")
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (root / "shifted.jsonl").write_text("".join(json.dumps(g.row()) + "\n" for g in groups))
    return str(root / "pairs.jsonl"), str(root / "shifted.jsonl")


def keys(data_files, output_dir, *extra) -> list[str]:
    pairs, shifted = data_files
    return [f"data={pairs}", f"shifted_data={shifted}", "model=tiny-bert", "max_length=48", "learning_rate=2e-3",
            "meta_learning_rate=0.5", "epochs=2", "eval_fraction=0.2", "log_steps=1", "report=false", "seed=3",
            "dropout=0.0", "progress=false", f"output_dir={output_dir}", *extra]


def logged(run: Path, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_metarm_learns_and_a_killed_run_resumes_to_the_same_result(data_files, tmp_path, monkeypatch):
    config = load_config(metarm.Config, None, keys(data_files, tmp_path / "whole", "batch_size=8",
                                                   "shifted_batch_size=4", "save_steps=5", "precision=fp32"))
    whole = metarm.train_metarm(config)
    assert whole["steps"] == 12 and whole["shifted_groups"] == 20 and whole["eval_accuracy"] > 0.9
    assert whole["shifted_difference_after"] != whole["shifted_difference_before"]
    assert len(logged(tmp_path / "whole", "difference")) == 12

    killed = tmp_path / "killed"
    real_step = metarm.Trainer.optimizer_step
    calls = {"n": 0}

    def dies_after_seven(self, name):
        if calls["n"] == 7:
            raise KeyboardInterrupt  # killed after step 7; the last checkpoint is step 5
        calls["n"] += 1
        return real_step(self, name)

    monkeypatch.setattr(metarm.Trainer, "optimizer_step", dies_after_seven)
    with pytest.raises(KeyboardInterrupt):
        metarm.train_metarm(load_config(metarm.Config, None, keys(data_files, killed, "batch_size=8",
                                                                  "shifted_batch_size=4", "save_steps=5",
                                                                  "precision=fp32")))
    monkeypatch.setattr(metarm.Trainer, "optimizer_step", real_step)
    resumed = metarm.train_metarm(load_config(metarm.Config, None, keys(data_files, killed, "batch_size=8",
                                                                        "shifted_batch_size=4", "save_steps=5",
                                                                        "precision=fp32", "resume=true")))
    assert logged(killed, "loss") == pytest.approx(logged(tmp_path / "whole", "loss"), abs=1e-6)
    assert logged(killed, "difference") == pytest.approx(logged(tmp_path / "whole", "difference"), abs=1e-6)
    for key in ("eval_loss", "shifted_difference_after", "shifted_score_spread_after"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key


def test_metarm_in_bf16(data_files, tmp_path):
    result = metarm.train_metarm(load_config(metarm.Config, None, keys(data_files, tmp_path, "batch_size=8",
                                                                       "max_steps=6", "save_steps=0",
                                                                       "precision=bf16")))
    assert result["precision"] == "bf16" and result["steps"] == 6
    assert math.isfinite(result["shifted_difference_after"]) and math.isfinite(result["eval_loss"])


def test_two_processes_match_one_and_resume(data_files, tmp_path):
    from test_distributed import TOLERANCE, launch

    script = str(HERE / "distributed" / "metarm_run.py")
    launch([script, *keys(data_files, tmp_path / "one", "batch_size=8", "shifted_batch_size=4", "save_steps=0",
                          "precision=fp32")], 1)
    launch([script, *keys(data_files, tmp_path / "two", "batch_size=4", "shifted_batch_size=2", "save_steps=4",
                          "precision=fp32")], 2)
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert one["steps"] == two["steps"] == 12 and two["processes"] == 2
    for key in ("loss", "difference", "accuracy"):
        assert logged(tmp_path / "two", key) == pytest.approx(logged(tmp_path / "one", key), abs=TOLERANCE), key
    for key in ("eval_loss", "eval_reward_gap", "shifted_difference_after", "shifted_score_spread_after"):
        assert two[key] == pytest.approx(one[key], abs=TOLERANCE), key

    killed = tmp_path / "killed"  # killed after its step-8 checkpoint: both processes resume it
    shutil.copytree(tmp_path / "two" / "checkpoints" / "step-8", killed / "checkpoints" / "step-8")
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(line for line in lines if json.loads(line)["step"] <= 8) + "\n")
    launch([script, *keys(data_files, killed, "batch_size=4", "shifted_batch_size=2", "save_steps=4",
                          "precision=fp32", "resume=true")], 2)
    assert logged(killed, "loss") == pytest.approx(logged(tmp_path / "two", "loss"), abs=1e-6)
    assert summary(killed)["eval_loss"] == pytest.approx(two["eval_loss"], abs=1e-6)


def test_align_metarm_on_the_command_line(data_files, tmp_path, capsys):
    """`align metarm key=value ...` runs the trainer above; `--help` lists its own keys (shifted samples, k, η)."""
    from align import cli

    assert cli.main(["metarm", "--help"]) == 0
    listed = capsys.readouterr().out
    assert all(key in listed for key in ("shifted_data", "samples_per_prompt", "meta_learning_rate"))
    assert cli.main(["metarm", *keys(data_files, tmp_path, "batch_size=8", "max_steps=2", "save_steps=0",
                                     "precision=fp32")]) == 0
    assert summary(tmp_path)["steps"] == 2 and "align metarm: " in capsys.readouterr().out
