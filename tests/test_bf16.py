"""bf16 forced on every machine: a bf16-only failure fails here whether or not this CPU computes bf16 natively
(where it does not, PyTorch emulates it slowly, so every case is tiny). Also: one process runs a sequence of
precisions (the crash of a native-bf16 machine), weights load in the dtype their role needs, LoRA reward
models and gradient checkpointing."""
from __future__ import annotations

import json
import random

import pytest
import torch

from align.config import load_config
from align.ppo import Config as PPOConfig
from align.ppo import train_ppo
from align.rm import train as rm
from align.sft import train as sft
from align.types import Prompt, RewardOutput


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    rng = random.Random(1)
    words = ["tea", "river", "stone", "cloud", "lamp", "garden", "window", "music"]
    rows = []
    for i in range(48):
        topic = " ".join(rng.sample(words, 2))
        rows.append({"id": f"p{i}", "prompt": f"Tell me about {topic}.",
                     "chosen": f"Thank you for asking about {topic}, happy to help.",
                     "rejected": f"No. Go away, {topic} is boring."})
    path = tmp_path_factory.mktemp("bf16") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def rm_config(pairs_file, output_dir, *extra) -> rm.Config:
    return load_config(rm.Config, None, [
        f"data={pairs_file}", f"output_dir={output_dir}", "model=tiny-bert", "batch_size=8", "max_length=48",
        "learning_rate=2e-3", "max_steps=12", "save_steps=0", "log_steps=1", "eval_fraction=0.25", "progress=false",
        "report=false", "seed=2", *extra])


def test_one_process_trains_in_fp32_then_bf16_then_fp32(pairs_file, tmp_path):
    """A notebook (or the demo, or this test suite) trains reward models of different precisions in turn."""
    runs = [rm.train_reward_model(rm_config(pairs_file, tmp_path / name, f"precision={precision}"))
            for name, precision in (("a", "fp32"), ("b", "bf16"), ("c", "fp32"))]
    assert [r["precision"] for r in runs] == ["fp32", "bf16", "fp32"]
    assert runs[0]["eval_loss"] == pytest.approx(runs[2]["eval_loss"], abs=1e-6)  # the bf16 run left nothing behind
    assert runs[1]["eval_accuracy"] > 0.9  # and it learned


def test_lora_reward_model_in_bf16_with_gradient_checkpointing(pairs_file, tmp_path):
    from transformers import AutoModelForSequenceClassification

    config = rm_config(pairs_file, tmp_path / "lora", "precision=bf16", "gradient_checkpointing=true",
                       "lora.enabled=true", "lora.target_modules=[query,value]", "lora.r=4", "learning_rate=1e-2")
    trainer_dtypes = {}

    from align.rm.train import build_reward_model
    from align.training import Trainer

    model = build_reward_model(config, Trainer(config, output_dir=tmp_path / "probe"))
    for name, parameter in model.named_parameters():
        trainer_dtypes.setdefault("adapter" if "lora_" in name else "trained" if parameter.requires_grad else "frozen",
                                  set()).add(parameter.dtype)
    assert trainer_dtypes["frozen"] == {torch.bfloat16}  # the base under the adapters, in the compute dtype
    assert trainer_dtypes["adapter"] == {torch.float32}  # what trains keeps fp32 master weights
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # set on its layers

    summary = rm.train_reward_model(config)
    assert summary["eval_accuracy"] > 0.9
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lora" / "model")  # merged: plain checkpoint
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()


def test_sft_in_bf16_with_lora_and_gradient_checkpointing(tmp_path):
    rows = [{"prompt": f"Repeat the word number {i}.", "response": "tea " * 3} for i in range(16)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = sft.Config(model="tiny-llama", data=str(data), output_dir=str(tmp_path / "sft"), batch_size=4,
                        learning_rate=1e-2, max_steps=8, warmup_ratio=0.0, lr_schedule="constant", save_steps=4,
                        log_steps=1, progress=False, precision="bf16", gradient_checkpointing=True)
    config.lora.enabled, config.lora.r = True, 4
    summary = sft.train_sft(config)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert summary["precision"] == "bf16" and losses[-1] < losses[0]


def count_e(prompts, completions, **meta):
    return [RewardOutput(reward=float(c.count("e"))) for c in completions]


@pytest.mark.parametrize("lora", [False, True])
def test_ppo_in_bf16(tmp_path, lora):
    config = PPOConfig(model="tiny-llama", output_dir=str(tmp_path / "ppo"), domain_reward=True, rollout_batch_size=4,
                       batch_size=2, max_new_tokens=4, learning_rate=3e-3, critic_learning_rate=1e-3, max_steps=2,
                       save_steps=1, progress=False, report=False, precision="bf16", gradient_checkpointing=True)
    config.lora.enabled = lora
    prompts = [Prompt(prompt=f"Say something, number {i}.") for i in range(8)]
    summary = train_ppo(config, prompts=prompts, reward_fn=count_e)
    assert summary["precision"] == "bf16" and summary["steps"] == 2 and not summary["stopped_early"]
    # resumes from its bf16 checkpoint
    config.max_steps, config.resume = 3, True
    assert train_ppo(config, prompts=prompts, reward_fn=count_e)["steps"] == 3


def test_ppo_holds_frozen_models_in_bf16_and_trained_ones_in_fp32(tmp_path):
    from align.ppo.models import load_models
    from align.training import Trainer

    config = PPOConfig(model="tiny-llama", output_dir=str(tmp_path / "ppo"), domain_reward=True, precision="bf16")
    models = load_models(config, Trainer(config))
    assert {p.dtype for p in models.reference.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.policy.parameters()} == {torch.float32}
    assert {p.dtype for p in models.critic.parameters()} == {torch.float32}
    config.precision = "fp32"
    assert {p.dtype for p in load_models(config, Trainer(config)).reference.parameters()} == {torch.float32}


def test_strength_in_bf16(pairs_file, tmp_path):
    from align.cli import main

    code = main(["strength", f"data={pairs_file}", "model=tiny-bert", "max_length=48", "learning_rate=2e-3",
                 "epochs=1", "batch_size=8", "members=2", "precision=bf16", "slice_accuracy=false", "report=false",
                 f"output_dir={tmp_path / 'strength'}", "progress=false"])
    assert code == 0
    assert len((tmp_path / "strength" / "annotated.jsonl").read_text().splitlines()) == 43  # 48 minus 10% held out


def test_translation_reward_model_scores_where_the_trainer_places_it(tmp_path):
    from align.models import load_reward_model
    from align.registry import get_domain
    from align.types import Placeable

    load_reward_model("tiny-bert", num_heads=2, head_names=["overall", "faithfulness"]).save_pretrained(tmp_path / "rm")
    domain = get_domain("translation", reward_model=str(tmp_path / "rm"))
    assert isinstance(domain, Placeable)
    domain.place(torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in domain.reward_model.parameters()} == {torch.bfloat16}
    heads = domain.head_rewards(["Translate into English: 你好"], ["Hello"])
    assert set(heads[0]) == {"overall", "faithfulness"}


def test_bf16_sampling_casts_each_policy_weight_once_not_once_per_token(tmp_path):
    """The trained policy's weights are fp32 and autocast computes in bf16: a rollout keeps one bf16 copy of each
    weight for all its tokens (recasting at every token halved the sampling speed of SmolLM2-135M)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from align.ppo.models import load_models
    from align.ppo.step import rollout
    from align.training import Trainer

    class WeightCasts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and args[0].dtype == torch.float32 and args[0].dim() == 2 \
                    and kwargs.get("dtype") == torch.bfloat16:  # 2-D fp32 -> bf16: a weight (activations are 3-D)
                WeightCasts.count += 1
            return func(*args, **kwargs)

    config = PPOConfig(model="tiny-llama", output_dir=str(tmp_path / "ppo"), domain_reward=True, precision="bf16",
                       max_new_tokens=8, samples_per_prompt=2, temperature=1.0)
    trainer = Trainer(config)
    models = load_models(config, trainer)
    trainer.prepare("policy", models.policy, 1)  # as `align ppo` does: accelerate's autocast on each forward
    weights = sum(1 for p in models.policy.parameters() if p.dim() == 2)
    with WeightCasts():
        generations = rollout(models, config, [Prompt(prompt="Say something.")], trainer)
    assert sum(len(g.completion_ids) for g in generations) > 2  # several tokens were sampled
    assert 0 < WeightCasts.count <= weights
