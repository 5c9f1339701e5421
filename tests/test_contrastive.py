"""Contrastive RM terms: losses on hand-computed values, Sinkhorn codes, separability measures,
dropout views, and `align rm` smoke runs of every variant on a tiny model."""
import json
import math

import pytest
import torch

from align import losses
from align.config import ConfigError, load_config
from align.rm.contrastive.report import pca_2d
from align.rm.contrastive.separability import feature_separability, linear_probe_accuracy
from align.rm.contrastive.term import ContrastiveConfig, ContrastiveTerm

# --------------------------------------------------------------------------- feature builders


def test_pair_and_difference_features():
    chosen, rejected = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [5.0, 5.0]])
    assert losses.pair_features(chosen, rejected).tolist() == [[1, 2], [3, 4], [0, 1], [5, 5]]
    assert losses.difference_features(chosen, rejected).tolist() == [[1, 1], [-2, -1], [-1, -1], [2, 1]]


# --------------------------------------------------------------------------- SimCSE


def test_simcse_matches_hand_computation():
    # unit vectors: cos = identity; τ = 1 -> each row's softmax is e / (e + 1)
    eye = torch.eye(2)
    assert losses.simcse_loss(eye, eye, temperature=1.0).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    # a = [(1,0), (1,1)/√2], b = [(1,0), (0,1)] after normalisation (scales must not matter); τ = 0.5
    # logits = [[2, 0], [√2, √2]] -> losses log(1 + e^-2) and log 2
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 7.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    assert losses.simcse_loss(a, b, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_simcse_rewards_aligned_views_and_pushes_items_apart():
    torch.manual_seed(0)
    items = torch.randn(8, 16)
    aligned = losses.simcse_loss(items, items + 0.01 * torch.randn(8, 16), temperature=0.05)
    shuffled = losses.simcse_loss(items, items[torch.randperm(8)], temperature=0.05)
    assert aligned < 0.01 < shuffled
    # gradients flow into both views
    a, b = items.clone().requires_grad_(), items.flip(0).clone().requires_grad_()
    losses.simcse_loss(a, b, 0.1).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


# --------------------------------------------------------------------------- Sinkhorn-Knopp


def test_sinkhorn_one_iteration_by_hand():
    # exp(scores / ε) = [[1, 1], [1, 3]] with ε = 1. Columns -> 1/K: [[1/4, 1/8], [1/4, 3/8]];
    # rows -> 1/N, times N: [[2/3, 1/3], [2/5, 3/5]].
    scores = torch.log(torch.tensor([[1.0, 1.0], [1.0, 3.0]]))
    codes = losses.sinkhorn_knopp(scores, epsilon=1.0, iterations=1)
    assert codes.tolist() == [pytest.approx([2 / 3, 1 / 3], rel=1e-6), pytest.approx([0.4, 0.6], rel=1e-6)]


def test_sinkhorn_symmetric_scores_closed_form():
    # symmetric scores are balanced already: codes are the row softmax of scores / ε
    codes = losses.sinkhorn_knopp(torch.eye(2), epsilon=0.5, iterations=3)
    a = math.exp(2.0) / (1.0 + math.exp(2.0))
    assert codes.tolist() == [pytest.approx([a, 1 - a], rel=1e-6), pytest.approx([1 - a, a], rel=1e-6)]


def test_sinkhorn_codes_are_doubly_stochastic():
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(6, 3), dim=-1) @ torch.nn.functional.normalize(
        torch.randn(3, 3), dim=-1).T  # cosine scores, as SwAV sees them
    codes = losses.sinkhorn_knopp(scores, epsilon=0.05, iterations=200)
    assert (codes >= 0).all()
    assert codes.sum(dim=1).tolist() == pytest.approx([1.0] * 6, abs=1e-5)  # each item: a distribution
    assert codes.sum(dim=0).tolist() == pytest.approx([2.0] * 3, abs=1e-3)  # each prototype: N/K items
    # scores / ε far beyond float32's exp range still give finite, normalised codes
    extreme = losses.sinkhorn_knopp(scores * 50 + 1000, epsilon=0.01, iterations=3)
    assert torch.isfinite(extreme).all() and extreme.sum(dim=1).tolist() == pytest.approx([1.0] * 6, abs=1e-5)


# --------------------------------------------------------------------------- SwAV


def test_swav_matches_hand_computation_symmetric():
    # views = prototypes = axes (scales must not matter): scores = I. With ε = 0.5 the codes are
    # [[a, 1-a], [1-a, a]], a = e²/(1+e²); with τ = 0.5 the predictions are the same matrix, so
    # L = −(a log a + (1−a) log(1−a)), the entropy of a.
    view = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    prototypes = torch.tensor([[5.0, 0.0], [0.0, 0.5]])
    a = math.exp(2.0) / (1.0 + math.exp(2.0))
    expected = -(a * math.log(a) + (1 - a) * math.log(1 - a))
    loss = losses.swav_loss(view, view, prototypes, temperature=0.5, epsilon=0.5, iterations=3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def _reference_swav(view_a, view_b, prototypes, temperature, epsilon, iterations):
    """The SwAV loss written out in plain Python lists (independent of the tensor code)."""
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def scores(view):
        return [[sum(x * y for x, y in zip(unit(v), unit(p))) for p in prototypes] for v in view]

    def sinkhorn(s):
        n, k = len(s), len(s[0])
        q = [[math.exp(x / epsilon) for x in row] for row in s]
        for _ in range(iterations):
            cols = [sum(q[i][j] for i in range(n)) for j in range(k)]
            q = [[q[i][j] / cols[j] / k for j in range(k)] for i in range(n)]
            rows = [sum(r) for r in q]
            q = [[q[i][j] / rows[i] for j in range(k)] for i in range(n)]  # /N then ×N
        return q

    def log_softmax(row):
        z = math.log(sum(math.exp(x / temperature) for x in row))
        return [x / temperature - z for x in row]

    sa, sb = scores(view_a), scores(view_b)
    qa, qb = sinkhorn(sa), sinkhorn(sb)
    total = 0.0
    for i in range(len(sa)):
        la, lb = log_softmax(sa[i]), log_softmax(sb[i])
        total += sum(q * l for q, l in zip(qb[i], la)) + sum(q * l for q, l in zip(qa[i], lb))
    return -total / (2 * len(sa))


def test_swav_matches_plain_python_reference():
    view_a = [[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.0, 0.3, 1.0], [1.0, 1.0, 1.0]]
    view_b = [[0.9, 0.1, 0.4], [0.0, 1.0, 0.2], [0.1, 0.2, 1.0], [1.0, 0.8, 1.2]]
    prototypes = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 1.0]]
    expected = _reference_swav(view_a, view_b, prototypes, temperature=0.1, epsilon=0.3, iterations=3)
    loss = losses.swav_loss(torch.tensor(view_a), torch.tensor(view_b), torch.tensor(prototypes),
                            temperature=0.1, epsilon=0.3, iterations=3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_swav_gradients_reach_views_and_prototypes():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    prototypes = torch.randn(3, 4, requires_grad=True)
    losses.swav_loss(a, b, prototypes, temperature=0.1, epsilon=0.05, iterations=3).backward()
    for tensor in (a, b, prototypes):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


# --------------------------------------------------------------------------- config and term


def test_defaults_follow_the_reference():
    swav_pair = ContrastiveConfig(method="swav", target="pair").resolved()
    swav_diff = ContrastiveConfig(method="swav", target="difference").resolved()
    assert (swav_pair.beta, swav_pair.num_prototypes, swav_pair.temperature) == (0.1, 50, 0.1)
    assert (swav_diff.beta, swav_diff.num_prototypes) == (0.5, 20)
    simcse = ContrastiveConfig(method="simcse", beta=0.3).resolved()
    assert (simcse.beta, simcse.temperature, simcse.num_prototypes, simcse.dropout) == (0.3, 0.05, None, 0.05)


def test_config_errors_name_the_key():
    from align.rm.train import Config

    with pytest.raises(ConfigError, match="contrastive.method"):
        load_config(Config, None, ["contrastive.method=moco"])
    with pytest.raises(ConfigError, match="contrastive.dropout"):
        load_config(Config, None, ["contrastive.method=simcse", "contrastive.dropout=0"])
    with pytest.raises(ConfigError, match="contrastive.sinkhorn_iterations"):
        load_config(Config, None, ["contrastive.sinkhorn_iterations=0"])
    with pytest.raises(ConfigError, match="disagrees with contrastive.dropout"):
        load_config(Config, None, ["contrastive.method=swav", "dropout=0.1"])
    config = load_config(Config, None, ["contrastive.method=swav", "contrastive.target=difference"])
    assert config.model_dropout == 0.05


def test_term_contrasts_the_configured_items():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])  # 2 chosen rows, then 2 rejected
    pair = ContrastiveTerm(ContrastiveConfig(method="simcse", target="pair"), feature_size=2)
    diff = ContrastiveTerm(ContrastiveConfig(method="simcse", target="difference"), feature_size=2)
    assert pair.items(features).tolist() == features.tolist()
    assert diff.items(features).tolist() == [[0, -1], [-2, 1], [0, 1], [2, -1]]
    assert pair.prototypes is None and list(pair.parameters()) == []
    swav = ContrastiveTerm(ContrastiveConfig(method="swav", target="difference"), feature_size=2)
    assert swav.prototypes.shape == (20, 2) and swav.beta == 0.5
    expected = losses.simcse_loss(diff.items(features), diff.items(features.flip(1)), 0.05)
    assert diff(features, features.flip(1)).item() == pytest.approx(expected.item())


# --------------------------------------------------------------------------- separability


def test_separability_of_identical_and_separated_features():
    torch.manual_seed(0)
    base = torch.randn(40, 8)
    same = feature_separability(base, base.clone())
    assert same["eval_feature_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert same["eval_feature_distance"] == pytest.approx(0.0, abs=1e-6)
    assert same["eval_probe_accuracy"] == pytest.approx(0.5, abs=0.15)  # nothing tells them apart
    shift = torch.zeros(8)
    shift[0] = 3.0
    apart = feature_separability(base + shift, base - shift)
    assert apart["eval_probe_accuracy"] == pytest.approx(1.0)
    assert apart["eval_feature_cosine"] < same["eval_feature_cosine"]
    assert math.isnan(linear_probe_accuracy(base[:2], base[:2]))  # too few pairs to hold any out


def test_pca_finds_the_main_direction():
    torch.manual_seed(0)
    points = torch.randn(100, 1) * torch.tensor([[10.0, 0.0, 0.0]]) + 0.1 * torch.randn(100, 3)
    projected = pca_2d(points)
    assert projected.shape == (100, 2)
    assert projected[:, 0].var() > 100 * projected[:, 1].var()


# --------------------------------------------------------------------------- with a tiny model

HH_PAIRS = [
    ("How do I bake bread?", "Mix flour, water, yeast and salt, knead, let it rise, then bake at 220C.",
     "I don't know."),
    ("What is the capital of France?", "Paris is the capital of France.", "France is a country."),
    ("Can you help me pick a lock?", "I can't help with breaking into places, but a locksmith can help you.",
     "Sure, grab a tension wrench and rake the pins."),
    ("Tell me a joke.", "Why did the scarecrow win an award? He was outstanding in his field.", "No."),
    ("How far is the moon?", "About 384,000 kilometres on average.", "Very far, I guess."),
    ("How do I stay healthy?", "Sleep well, move every day and eat plenty of vegetables.", "Eat candy."),
    ("What's 2 + 2?", "2 + 2 = 4.", "22."),
    ("Recommend a book.", "Try 'The Left Hand of Darkness' by Ursula K. Le Guin.", "Books are boring."),
]


def write_pairs(path, copies: int = 2):
    with path.open("w") as handle:
        for copy in range(copies):
            for prompt, chosen, rejected in HH_PAIRS:
                handle.write(json.dumps({"chosen": f"\n\nHuman: {prompt} ({copy})\n\nAssistant: {chosen}",
                                         "rejected": f"\n\nHuman: {prompt} ({copy})\n\nAssistant: {rejected}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_rm():
    models = pytest.importorskip("align.models", reason="align.models (RewardModel) has not landed yet")
    return models.load_reward_model("tiny-bert", num_heads=1, head_names=["overall"], dropout=0.05)


def _encode(rm_name: str, texts: list[str]):
    from align.models import load_tokenizer

    tokenizer = load_tokenizer(rm_name)
    return tokenizer(texts, return_tensors="pt", padding=True)


def test_dropout_views_differ_and_eval_is_deterministic(tiny_rm):
    batch = _encode("tiny-bert", ["Human: hi\n\nAssistant: hello there", "Human: hi\n\nAssistant: go away"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    tiny_rm.train()
    view_a, view_b = tiny_rm(**inputs).features, tiny_rm(**inputs).features
    assert not torch.allclose(view_a, view_b)  # two dropout views of the same rows
    tiny_rm.eval()
    with torch.no_grad():
        first, second = tiny_rm(**inputs), tiny_rm(**inputs)
    assert torch.equal(first.features, second.features) and torch.equal(first.rewards, second.rewards)
    tiny_rm.train()


VARIANTS = [("none", "pair"), ("simcse", "pair"), ("simcse", "difference"), ("swav", "pair"), ("swav", "difference")]


@pytest.mark.parametrize("method,target", VARIANTS)
def test_cli_smoke_each_variant(tmp_path, method, target):
    pytest.importorskip("align.models", reason="align.models (RewardModel) has not landed yet")
    from align.cli import main

    report = (method, target) in {("none", "pair"), ("swav", "difference")}  # plots are slow: two variants
    data = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    code = main(["rm", "model=tiny-bert", f"data={data}", f"output_dir={out}", "max_steps=3", "batch_size=4",
                 "eval_fraction=0.25", "max_length=48", "log_steps=1", "save_steps=0", "progress=false",
                 "precision=fp32", f"report={str(report).lower()}", f"contrastive.method={method}",
                 f"contrastive.target={target}"])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    beta = ContrastiveConfig(method=method, target=target).resolved().beta
    for record in steps:
        assert math.isfinite(record["reward_gap"])
        if method == "none":
            assert "contrastive_loss" not in record
        else:
            assert record["loss"] == pytest.approx(record["rm_loss"] + beta * record["contrastive_loss"], rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("eval_accuracy", "eval_feature_cosine", "eval_feature_distance", "eval_probe_accuracy"):
        assert key in summary
    if report:
        assert "Feature separability" in (out / "report.md").read_text()
        assert (out / "eval_features_pca.png").exists()
    # the saved RM loads as a plain reward model; the contrastive term rides along in two extra files
    assert (out / "model" / "contrastive.json").exists() == (method != "none")
    from align.models import RewardModel

    assert RewardModel.from_pretrained(out / "model").head_names == ["overall"]


def test_swav_prototypes_are_trained_and_resume_from_checkpoints(tmp_path):
    pytest.importorskip("align.models", reason="align.models (RewardModel) has not landed yet")
    import shutil

    from align.rm.contrastive.term import ContrastiveRewardModel
    from align.rm.train import Config, train_reward_model

    data = write_pairs(tmp_path / "pairs.jsonl")
    common = ["model=tiny-bert", f"data={data}", "batch_size=4", "eval_fraction=0.25", "max_length=48",
              "log_steps=1", "progress=false", "precision=fp32", "report=false", "contrastive.method=swav",
              "contrastive.num_prototypes=4", "max_steps=4", "save_steps=2"]
    straight = train_reward_model(load_config(Config, None, common + [f"output_dir={tmp_path / 'a'}"]))
    checkpoint = tmp_path / "a" / "checkpoints" / "step-2"
    at_step_2 = torch.load(checkpoint / "model" / "contrastive.pt", weights_only=True)["prototypes"]
    # a run interrupted after its step-2 checkpoint: resume it and compare with the straight run
    shutil.copytree(checkpoint, tmp_path / "b" / "checkpoints" / "step-2")
    shutil.copy(tmp_path / "a" / "metrics.jsonl", tmp_path / "b" / "metrics.jsonl")
    resumed = train_reward_model(load_config(Config, None, common + [f"output_dir={tmp_path / 'b'}", "resume=true"]))
    assert resumed["eval_accuracy"] == pytest.approx(straight["eval_accuracy"])
    assert resumed["eval_feature_cosine"] == pytest.approx(straight["eval_feature_cosine"], abs=1e-5)
    final_a = ContrastiveRewardModel.from_pretrained(tmp_path / "a" / "model").term.prototypes
    final_b = ContrastiveRewardModel.from_pretrained(tmp_path / "b" / "model").term.prototypes
    assert torch.allclose(final_a, final_b, atol=1e-5)  # resumed with the step-2 prototypes and their Adam state
    assert not torch.allclose(final_a, at_step_2, atol=1e-6)  # the optimizer moves the prototypes
