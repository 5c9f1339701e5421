"""`align plan`: the memory formulas on hand-computed values, parameter counts of models built on the
meta device, the shipped 7B configs against 80 GB GPUs, and the command line's exit codes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.config import ConfigError
from align.plan import Config, main, make_plan
from align.plan import memory as M
from align.plan.accelerate import read_strategy
from align.plan.cli import infer_command
from align.plan.shapes import model_shape

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "configs" / "accelerate"
GIB = 2**30

LLAMA_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
            "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "hidden_act": "silu"}
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        "max_position_embeddings": 128, "tie_word_embeddings": False}


def write_config(directory: Path, values: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(values))
    return directory


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory) -> str:
    return str(write_config(tmp_path_factory.mktemp("llama-7b"), LLAMA_7B))


def plan(config: str, llama7b: str, accelerate: str | None = None, *overrides: str):
    settings = Config(config=str(ROOT / config), model_config=llama7b,
                      accelerate=str(ACCELERATE / accelerate) if accelerate else None)
    return make_plan(settings, list(overrides))


# --------------------------------------------------------------------------- the formulas, by hand


def test_adamw_keeps_two_fp32_moments_and_deepspeed_adds_a_master_copy():
    assert M.adamw_bytes(1_000) == 8_000
    assert M.adamw_bytes(1_000, master_weights=True) == 12_000


def test_lora_adapters_are_r_times_fan_in_plus_fan_out():
    # one LLaMA-7B layer: q, k, v, o (4096 -> 4096), gate and up (4096 -> 11008), down (11008 -> 4096)
    layer = [(4096, 4096)] * 4 + [(4096, 11008)] * 2 + [(11008, 4096)]
    assert M.lora_params(layer, 16) == 4 * 16 * 8192 + 3 * 16 * 15104 == 1_249_280
    assert M.lora_params(layer * 32, 16) == 39_976_960


def test_zero2_shards_gradients_and_optimizer_where_ddp_replicates_everything():
    n, ddp = 1_000_000_000, M.Strategy("ddp", processes=8)
    zero2, zero3 = M.Strategy("deepspeed", processes=8, zero_stage=2), M.Strategy("deepspeed", processes=8, zero_stage=3)
    fsdp = M.Strategy("fsdp", processes=8)
    # DDP: fp32 weights, fp32 gradients, fp32 Adam moments on every GPU, plus the gradient buckets
    assert (M.weight_bytes(n, 0, ddp, True), M.gradient_bytes(n, ddp, True), M.optimizer_bytes(n, ddp, True)) == (
        4 * n, 4 * n, 8 * n)
    assert M.buffer_bytes(n, n, ddp, True, 0, 0) == 4 * n
    # ZeRO-2 (bf16): 2Ψ bf16 weights, 2Ψ/N gradients, (4 + 8)Ψ/N master weights and moments
    assert (M.weight_bytes(n, 0, zero2, True), M.gradient_bytes(n, zero2, True), M.optimizer_bytes(n, zero2, True)) == (
        2 * n, 2 * n // 8, 12 * n // 8)
    assert M.weight_bytes(n, 0, zero3, True) == 2 * n // 8
    assert (M.weight_bytes(n, 0, fsdp, True), M.gradient_bytes(n, fsdp, True), M.optimizer_bytes(n, fsdp, True)) == (
        4 * n // 8, 4 * n // 8, 8 * n // 8)
    # frozen weights are bf16, and whole on every GPU unless the model is prepared under ZeRO-3 / FSDP
    assert M.weight_bytes(0, n, zero3, True, prepared=False) == 2 * n
    assert M.weight_bytes(0, n, zero3, True, prepared=True) == 2 * n // 8


def test_activation_formulas():
    h, i = 4096, 11008
    assert M.swiglu_layer_bytes(h, i) == 24 * h + 8 * i == 186_368  # 45.5·h at the 7B shape
    assert M.swiglu_layer_bytes(h, i, fp32_residual=True) == 186_368 + 10 * h
    assert M.gelu_layer_bytes(h, 4 * h, dropout=True) == 34 * h  # Korthikanti et al. 2022, flash attention
    tokens, layers = 8 * 1024, 32
    assert M.training_activation_bytes(tokens, layers, 100, 2, checkpointing=False) == tokens * 32 * 100
    assert M.training_activation_bytes(tokens, layers, 100, 2, checkpointing=True) == tokens * (32 * 2 + 100)
    assert M.checkpoint_bytes(h) == 2 * h and M.checkpoint_bytes(h, fp32_residual=True) == 4 * h
    assert M.kv_cache_bytes(1, 32, 32, 128) == 524_288  # 0.5 MiB per token for LLaMA-7B in bf16
    assert M.logits_bytes(10, 100) == 10 * 100 * (2 + 8)


def test_sizes_read_as_gib():
    assert M.parse_size("80GB") == M.parse_size("80GiB") == M.parse_size("80") == 80 * GIB
    assert M.parse_size("24576MiB") == 24 * GIB
    with pytest.raises(ValueError):
        M.parse_size("eighty")


# --------------------------------------------------------------------------- models on the meta device


def test_tiny_llama_parameter_count_by_hand(tmp_path):
    source = str(write_config(tmp_path, TINY) / "config.json")
    h, i, v, kv = 64, 128, 100, 2 * 16  # 2 key/value heads of head_dim 64/4
    layer = h * h + h * kv + h * kv + h * h + 3 * h * i + 2 * h  # q, k, v, o, gate/up/down, two RMSNorms
    shape = model_shape(source, "causal_lm")
    assert (shape.layers, shape.layer_params, shape.kv_heads, shape.head_dim) == (2, layer, 2, 16)
    assert shape.params == v * h + 2 * layer + h + h * v == 86_848
    assert model_shape(source, "sequence_classification", 3).params == 86_848 - h * v + 3 * h
    assert model_shape(source, "backbone").params == 86_848 - h * v
    assert M.lora_params(shape.lora_shapes(["q_proj", "v_proj"]), 4) == 2 * (4 * (h + h) + 4 * (h + kv))
    assert len(shape.lora_shapes(["all-linear"])) == 2 * 7  # every Linear but lm_head


def test_llama_7b_counts_exactly(llama7b):
    assert model_shape(str(Path(llama7b) / "config.json"), "causal_lm").params == 6_738_415_616


# --------------------------------------------------------------------------- the shipped 7B configs


@pytest.mark.parametrize("config", ["configs/hh/ppo_llama7b_lora.yaml", "configs/code/ppo_llama7b_lora.yaml",
                                    "configs/translation/ppo_llama7b_lora.yaml"])
def test_lora_ppo_fits_one_80gb_gpu(config, llama7b):
    result = plan(config, llama7b)
    assert result.command == "ppo" and result.fits, result.total / GIB
    assert {m.role for m in result.models} >= {"policy", "critic"}
    assert "reference" not in {m.role for m in result.models}  # LoRA: the policy without adapters


def test_a_critic_free_estimator_plans_no_critic(llama7b):
    with_critic = plan("configs/code/ppo_llama7b_lora.yaml", llama7b, None, "rollout_batch_size=8")
    grpo = plan("configs/code/ppo_llama7b_lora.yaml", llama7b, None, "rollout_batch_size=8", "advantage=grpo",
                "samples_per_prompt=4", "critic_warmup_steps=0")
    assert "critic" in {m.role for m in with_critic.models}
    assert "critic" not in {m.role for m in grpo.models} and "policy" in {m.role for m in grpo.models}
    assert grpo.persistent < with_critic.persistent  # the critic's weights, adapters and optimizer are gone
    # the experience phase holds every completion: 8 prompts x 4
    assert any(p.name.startswith("experience (32 rollouts") for p in grpo.phases)
    assert any(p.name.startswith("experience (8 rollouts") for p in with_critic.phases)


@pytest.mark.parametrize("config", ["configs/hh/rm_llama7b.yaml", "configs/translation/rm_llama7b.yaml"])
@pytest.mark.parametrize("accelerate", ["deepspeed_zero2_8gpu.yaml", "deepspeed_zero3_8gpu.yaml", "fsdp_8gpu.yaml"])
def test_full_7b_reward_model_fits_8_gpus_sharded(config, accelerate, llama7b):
    result = plan(config, llama7b, accelerate)
    assert result.command == "rm" and result.fits, result.total / GIB


def test_full_7b_reward_model_does_not_fit_plain_ddp(llama7b, capsys):
    result = plan("configs/hh/rm_llama7b.yaml", llama7b, "ddp_8gpu.yaml")
    states = sum(b for label, _, b in result.rows if "buckets" not in label)
    assert states == 16 * result.models[0].params  # fp32 weights + gradients + AdamW moments, ≈ 98 GiB
    assert not result.fits


def test_gradient_checkpointing_lowers_activations(llama7b):
    off = plan("configs/hh/rm_llama7b.yaml", llama7b, "fsdp_8gpu.yaml", "gradient_checkpointing=false")
    on = plan("configs/hh/rm_llama7b.yaml", llama7b, "fsdp_8gpu.yaml", "gradient_checkpointing=true")
    train_off, train_on = (p.phases[0].items[0][1] for p in (off, on))
    assert train_on < train_off / 10
    assert on.total < off.total and on.total_other == off.total


def test_command_is_inferred_from_the_file_name_or_its_keys(tmp_path):
    assert infer_command("configs/hh/rm_llama7b.yaml", {}) == "rm"
    assert infer_command(str(tmp_path / "mine.yaml"), {"rollout_batch_size": 8, "model": "x"}) == "ppo"
    with pytest.raises(ConfigError, match="command="):
        infer_command(str(tmp_path / "mine.yaml"), {"model": "x"})


def test_accelerate_configs_are_read_and_leave_grad_accum_to_the_trainer():
    zero2, zero3 = read_strategy(str(ACCELERATE / "deepspeed_zero2_8gpu.yaml")), read_strategy(
        str(ACCELERATE / "deepspeed_zero3_8gpu.yaml"))
    fsdp, ddp = read_strategy(str(ACCELERATE / "fsdp_8gpu.yaml")), read_strategy(str(ACCELERATE / "ddp_8gpu.yaml"))
    assert (zero2.kind, zero2.zero_stage, zero2.processes) == ("deepspeed", 2, 8)
    assert (zero3.zero_stage, fsdp.kind, fsdp.reshard_after_forward, ddp.kind) == (3, "fsdp", True, "ddp")
    for path in ACCELERATE.glob("*.yaml"):
        assert "gradient_accumulation_steps:" not in path.read_text(), path
    with pytest.raises(ConfigError, match="distributed_type"):
        read_strategy(str(ROOT / "configs/hh/rm_llama7b.yaml"))  # a training config, not an accelerate one


# --------------------------------------------------------------------------- the command line


def test_cli_exit_codes_and_fits_line(llama7b, capsys):
    from align.cli import main as align_main

    rm = str(ROOT / "configs/translation/rm_llama7b.yaml")
    assert align_main(["plan", "--config", rm, "--accelerate", str(ACCELERATE / "fsdp_8gpu.yaml"),
                       "--model-config", llama7b]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("fits: yes (")
    assert main(["--config", rm, "--accelerate", str(ACCELERATE / "ddp_8gpu.yaml"), "--model-config", llama7b]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("fits: no (")
    assert main(["--config", rm, "--model-config", llama7b, "--gpu-memory=24GB", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["fits"] is False
    assert main(["--config", rm, "--model-config", llama7b, "batch_sise=2"]) == 2
    assert "batch_sise: unknown key" in capsys.readouterr().err
    assert main(["--config", rm]) == 2  # the 7B name does not resolve here and no --model-config
    assert "--model-config" in capsys.readouterr().err
    assert main(["--config", "missing.yaml"]) == 2
    assert "file not found" in capsys.readouterr().err
