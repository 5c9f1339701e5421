"""Several processes, proved on the CPU: two processes (torchrun, gloo) with per-device batch B/2 reproduce
one process with batch B, for `align rm`, `align sft`, `align ppo` and `align strength`.

Tolerance: the runs compute the same sums in another order (one process adds B examples, two add B/2 each
and all-reduce) and pad batches to other lengths, so float32 results differ by rounding: measured ~1e-6
after a few steps here. 1e-4 leaves room for other CPUs' kernels, and still catches every real difference:
a pair counted twice or skipped, a step too many or a gradient averaged wrongly changes these figures by
1e-2 or more.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.models import resolve_model_path
from align.training import BatchPlan

HERE = Path(__file__).parent / "distributed"
TOLERANCE = 1e-4


def launch(args: list[str], processes: int, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python ARGS` in one process, or under torchrun in `processes` CPU processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, *args] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def align(command: str, *keys: str, processes: int = 1) -> None:
    launch(["-m", "align.cli", command, *keys, "progress=false"], processes)


def logged(run: Path, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    """A learnable toy task with responses of varied length (so batches pad differently)."""
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "music", "paper", "forest"]
    rows = []
    for i in range(100):
        topic = " ".join(rng.sample(words, 3))
        rows.append({"id": f"p{i}", "prompt": f"Tell me about {topic}.",
                     "chosen": f"Thank you for asking, happy to help with {topic}." + " indeed" * (i % 7),
                     "rejected": f"No. Go away, {topic} is boring." + " really" * (i % 5)})
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_batch_plan_gives_every_example_once_per_epoch_and_the_same_global_batches():
    lengths = [random.Random(i).randint(1, 50) for i in range(37)]
    one = BatchPlan(lengths, batch_size=8, seed=5)
    shares = [BatchPlan(lengths, batch_size=4, seed=5, rank=r, world_size=2) for r in (0, 1)]
    assert len(one) == len(shares[0]) == 5  # ceil(37 / 8) global batches either way
    for epoch in (0, 1):
        global_batches = one.batcher.batches(epoch)
        assert shares[0].batcher.batches(epoch) == global_batches
        seen = [i for batch in global_batches for plan in shares for i in plan.local(batch)]
        assert sorted(seen) == list(range(37))  # each example exactly once, on exactly one process


RM_KEYS = ["model=tiny-bert", "max_length=64", "learning_rate=2e-3", "epochs=2", "log_steps=1",
           "eval_fraction=0.2", "report=false", "seed=3", "dropout=0.0", "precision=fp32"]


def test_rm_two_processes_match_one_and_resume(pairs_file, tmp_path):
    # dropout 0: the runs must compute the same function (dropout masks come from per-process RNG streams)
    align("rm", f"data={pairs_file}", *RM_KEYS, "batch_size=8", "save_steps=0", f"output_dir={tmp_path / 'one'}")
    align("rm", f"data={pairs_file}", *RM_KEYS, "batch_size=4", "save_steps=7", f"output_dir={tmp_path / 'two'}",
          processes=2)
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert one["steps"] == two["steps"] == 20  # 80 pairs, global batch 8, 2 epochs: no process trains extra epochs
    assert one["train_pairs"] == two["train_pairs"] == 80
    assert logged(tmp_path / "two", "loss") == pytest.approx(logged(tmp_path / "one", "loss"), abs=TOLERANCE)
    assert logged(tmp_path / "two", "accuracy") == pytest.approx(logged(tmp_path / "one", "accuracy"), abs=TOLERANCE)
    for key in ("eval_accuracy", "eval_loss", "eval_reward_gap"):
        assert two[key] == pytest.approx(one[key], rel=TOLERANCE, abs=TOLERANCE), key

    # killed after its step-7 checkpoint: both processes resume it (each its own RNG) and end the same
    checkpoint = tmp_path / "two" / "checkpoints" / "step-14"
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
    killed = tmp_path / "killed"
    shutil.copytree(checkpoint, killed / "checkpoints" / "step-14")
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(line for line in lines if json.loads(line)["step"] <= 14) + "\n")
    align("rm", f"data={pairs_file}", *RM_KEYS, "batch_size=4", "save_steps=7", f"output_dir={killed}",
          "resume=true", processes=2)
    assert logged(killed, "loss") == pytest.approx(logged(tmp_path / "two", "loss"), abs=1e-6)
    assert summary(killed)["eval_loss"] == pytest.approx(two["eval_loss"], abs=1e-6)


def test_rm_probe_start_is_the_same_with_two_processes(pairs_file, tmp_path):
    # each process encodes its share of the pairs; the gathered features give every process the same probe
    align("rm", f"data={pairs_file}", *RM_KEYS, "head_init=probe", "batch_size=8", "save_steps=0",
          f"output_dir={tmp_path / 'one'}")
    align("rm", f"data={pairs_file}", *RM_KEYS, "head_init=probe", "batch_size=4", "save_steps=0",
          f"output_dir={tmp_path / 'two'}", processes=2)
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert two["head_probe_overall_train_accuracy"] == one["head_probe_overall_train_accuracy"]
    assert logged(tmp_path / "two", "loss") == pytest.approx(logged(tmp_path / "one", "loss"), abs=TOLERANCE)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=TOLERANCE, abs=TOLERANCE)


def test_sft_two_processes_match_one(tmp_path):
    rows = [{"prompt": f"Repeat the word number {i}.", "response": "tea " * (1 + i % 4)} for i in range(30)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = ["model=tiny-llama", f"data={data}", "learning_rate=3e-3", "max_steps=6", "warmup_ratio=0.0",
            "lr_schedule=constant", "eval_fraction=0.2", "save_steps=0", "log_steps=1", "precision=fp32"]
    align("sft", *keys, "batch_size=4", f"output_dir={tmp_path / 'one'}")
    align("sft", *keys, "batch_size=2", f"output_dir={tmp_path / 'two'}", processes=2)
    assert logged(tmp_path / "two", "loss") == pytest.approx(logged(tmp_path / "one", "loss"), abs=TOLERANCE)
    assert summary(tmp_path / "two")["eval_loss"] == pytest.approx(summary(tmp_path / "one")["eval_loss"],
                                                                   abs=TOLERANCE)
    assert summary(tmp_path / "two")["steps"] == summary(tmp_path / "one")["steps"] == 6


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors" if (run / "model").is_dir() else run / "model.safetensors")


def test_ppo_two_processes_match_one(tmp_path):
    # rollout 4 in one process, 2 + 2 in two; one minibatch of the whole rollout (batch × grad_accum), so the
    # minibatch shuffle cannot differ between the runs
    launch([str(HERE / "ppo_run.py"), str(tmp_path / "one"), "4", "2"], 1)
    launch([str(HERE / "ppo_run.py"), str(tmp_path / "two"), "2", "1"], 2)
    for key in ("reward", "kl", "reward_normalized"):
        assert logged(tmp_path / "two", key) == pytest.approx(logged(tmp_path / "one", key), abs=TOLERANCE), key
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert max((one[name] - two[name]).abs().max().item() for name in one) < TOLERANCE
    initial = final_weights(Path(resolve_model_path("tiny-llama")))
    assert max((one[name] - initial[name]).abs().max().item() for name in one) > 1e-3  # the policy did learn
    assert summary(tmp_path / "two")["samples"] == summary(tmp_path / "one")["samples"] == 12


def test_ppo_finishes_when_one_process_drops_samples(tmp_path):
    launch([str(HERE / "ppo_run.py"), str(tmp_path / "drop"), "2", "1", "drop"], 2)
    result = summary(tmp_path / "drop")
    assert result["steps"] == 3 and not result["stopped_early"]
    assert result["dropped_no_reward"] == 3       # process 1 dropped one sample per step, and it is said
    assert result["samples"] == 3 * 4 - 3         # scored samples over both processes
    assert logged(tmp_path / "drop", "dropped") == [1, 1, 1]


def test_strength_two_processes_match_one(pairs_file, tmp_path):
    keys = [f"data={pairs_file}", "model=tiny-bert", "max_length=64", "learning_rate=2e-3", "epochs=1",
            "eval_fraction=0.2", "members=2", "dropout=0.0", "precision=fp32", "slice_accuracy=false", "report=false"]
    align("strength", *keys, "batch_size=8", f"output_dir={tmp_path / 'one'}")
    align("strength", *keys, "batch_size=4", f"output_dir={tmp_path / 'two'}", processes=2)
    strengths = [[json.loads(line)["mean_preference_difference"]
                  for line in (tmp_path / name / "annotated.jsonl").read_text().splitlines()] for name in ("one", "two")]
    assert len(strengths[0]) == 80
    assert strengths[1] == pytest.approx(strengths[0], abs=TOLERANCE)
    assert summary(tmp_path / "two")["ensemble_eval_accuracy"] == summary(tmp_path / "one")["ensemble_eval_accuracy"]


@pytest.mark.parametrize("method", ["simcse", "swav"])
def test_contrastive_negatives_are_gathered_across_processes(tmp_path, method):
    from align.rm.contrastive.term import ContrastiveConfig, ContrastiveTerm

    launch([str(HERE / "contrastive_gather.py"), str(tmp_path), method], 2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # the same term in one process over all 8 pairs, in the order the gather concatenates them
    torch.manual_seed(0)
    views = torch.randn(2, 16, 6)
    term = ContrastiveTerm(ContrastiveConfig(method=method, target="difference"), 6)
    full_a, full_b = views[0].clone().requires_grad_(), views[1].clone().requires_grad_()
    loss = term(full_a, full_b)  # the loss is invariant to the order the gather puts the items in
    loss.backward()
    for rank in ranks:
        assert rank["loss"] == pytest.approx(loss.item(), rel=1e-5)  # every process computes the global loss
    for rank in ranks:  # each process's own rows get exactly their part of the global gradient
        assert torch.tensor(rank["grad_a"]) == pytest.approx(full_a.grad[rank["rows"]], abs=1e-6)
        assert torch.tensor(rank["grad_b"]) == pytest.approx(full_b.grad[rank["rows"]], abs=1e-6)
    if method == "swav":  # the prototypes: summed over processes, the one gradient (each process holds 1/N)
        summed = sum(torch.tensor(rank["grad_prototypes"]) for rank in ranks)
        assert summed == pytest.approx(term.prototypes.grad, abs=1e-6)
