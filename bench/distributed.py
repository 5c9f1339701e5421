"""One process with batch B against two processes (torchrun, gloo, CPU) with per-device batch B/2.

For `align rm`, `align sft`, `align ppo` and `align strength` on tiny models: the same commands and keys
as tests/test_distributed.py, which asserts the figures agree within 1e-4; this script prints and records
how far apart they actually are (max absolute difference of every logged loss, final metrics and, for PPO,
the final weights), and the wall time of each side.

    .venv/bin/python bench/distributed.py        -> bench/results/distributed.json
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import Run, headline

PPO_SCRIPT = ROOT / "tests" / "distributed" / "ppo_run.py"


def launch(args: list[str], processes: int) -> float:
    """Run `python ARGS` (under torchrun for 2 processes); returns wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, *args] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def logged(run: Path, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def max_difference(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise ValueError(f"different lengths: {len(a)} vs {len(b)}")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def pairs_file(directory: Path) -> Path:
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "music", "paper", "forest"]
    rows = []
    for i in range(100):
        topic = " ".join(rng.sample(words, 3))
        rows.append({"id": f"p{i}", "prompt": f"Tell me about {topic}.",
                     "chosen": f"Thank you for asking, happy to help with {topic}." + " indeed" * (i % 7),
                     "rejected": f"No. Go away, {topic} is boring." + " really" * (i % 5)})
    path = directory / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def compare(name: str, one: Path, two: Path, curves: list[str], finals: list[str], seconds: tuple[float, float]
            ) -> dict:
    result = {f"{name}_{key}_max_abs_diff": max_difference(logged(one, key), logged(two, key)) for key in curves}
    result.update({f"{name}_{key}_abs_diff": abs(summary(one)[key] - summary(two)[key]) for key in finals})
    result.update({f"{name}_steps": [summary(one)["steps"], summary(two)["steps"]] if "steps" in summary(one) else None,
                   f"{name}_seconds_one_process": round(seconds[0], 1),
                   f"{name}_seconds_two_processes": round(seconds[1], 1)})
    return result


def main() -> None:
    provenance = Run(__file__)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = pairs_file(tmp)
        rm_keys = [f"data={data}", "model=tiny-bert", "max_length=64", "learning_rate=2e-3", "epochs=2",
                   "log_steps=1", "eval_fraction=0.2", "report=false", "seed=3", "dropout=0.0", "precision=fp32",
                   "save_steps=0", "progress=false"]
        seconds = (launch(["-m", "align.cli", "rm", *rm_keys, "batch_size=8", f"output_dir={tmp / 'rm1'}"], 1),
                   launch(["-m", "align.cli", "rm", *rm_keys, "batch_size=4", f"output_dir={tmp / 'rm2'}"], 2))
        result.update(compare("rm", tmp / "rm1", tmp / "rm2", ["loss", "accuracy"],
                              ["eval_loss", "eval_accuracy", "eval_reward_gap"], seconds))

        rows = tmp / "rows.jsonl"
        rows.write_text("".join(json.dumps({"prompt": f"Repeat the word number {i}.", "response": "tea " * (1 + i % 4)})
                                + "\n" for i in range(30)))
        sft_keys = ["model=tiny-llama", f"data={rows}", "learning_rate=3e-3", "max_steps=6", "warmup_ratio=0.0",
                    "lr_schedule=constant", "eval_fraction=0.2", "save_steps=0", "log_steps=1", "precision=fp32",
                    "progress=false"]
        seconds = (launch(["-m", "align.cli", "sft", *sft_keys, "batch_size=4", f"output_dir={tmp / 'sft1'}"], 1),
                   launch(["-m", "align.cli", "sft", *sft_keys, "batch_size=2", f"output_dir={tmp / 'sft2'}"], 2))
        result.update(compare("sft", tmp / "sft1", tmp / "sft2", ["loss"], ["eval_loss"], seconds))

        seconds = (launch([str(PPO_SCRIPT), str(tmp / "ppo1"), "4", "2"], 1),
                   launch([str(PPO_SCRIPT), str(tmp / "ppo2"), "2", "1"], 2))
        result.update(compare("ppo", tmp / "ppo1", tmp / "ppo2", ["reward", "kl", "reward_normalized"], [], seconds))
        from safetensors.torch import load_file

        one, two = (load_file(tmp / run / "model" / "model.safetensors") for run in ("ppo1", "ppo2"))
        result["ppo_final_weights_max_abs_diff"] = max((one[k] - two[k]).abs().max().item() for k in one)

        strength_keys = [f"data={data}", "model=tiny-bert", "max_length=64", "learning_rate=2e-3", "epochs=1",
                         "eval_fraction=0.2", "members=2", "dropout=0.0", "precision=fp32", "slice_accuracy=false",
                         "report=false", "progress=false"]
        seconds = (launch(["-m", "align.cli", "strength", *strength_keys, "batch_size=8", f"output_dir={tmp / 'st1'}"], 1),
                   launch(["-m", "align.cli", "strength", *strength_keys, "batch_size=4", f"output_dir={tmp / 'st2'}"],
                          2))
        strengths = [[json.loads(line)["mean_preference_difference"]
                      for line in (tmp / run / "annotated.jsonl").read_text().splitlines()] for run in ("st1", "st2")]
        result["strength_mean_strength_max_abs_diff"] = max_difference(*strengths)
        result["strength_seconds_one_process"], result["strength_seconds_two_processes"] = (round(s, 1) for s in seconds)
    out = ROOT / "bench" / "results" / "distributed.json"
    worst = max(v for k, v in result.items() if k.endswith("diff"))
    provenance.write(out, result, [
        headline(f"{key.removesuffix('_max_abs_diff').replace('_', ' ')}: largest |difference|, 2 processes vs 1",
                 value, "1 process, same global batch", None, "absolute")
        for key, value in result.items() if key.endswith("_max_abs_diff")])
    print(f"1 vs 2 processes: largest difference {worst:.2e} over rm, sft, ppo, strength (figures in {out})")


if __name__ == "__main__":
    main()
