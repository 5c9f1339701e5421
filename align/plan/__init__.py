"""`align plan`: per-GPU memory of a training config, computed on the meta device (no weights).

    align plan --config configs/hh/ppo_llama7b_lora.yaml --model-config /path/to/llama-7b/config.json
    align plan --config configs/hh/rm_llama7b.yaml --accelerate configs/accelerate/deepspeed_zero2_8gpu.yaml

`memory` holds the formulas (pure functions, with their papers), `shapes` builds the models on the
meta device, `accelerate` reads the launch config, `planner` maps each command's keys to models and
phases, `cli` reads the arguments and prints the table (or JSON).
"""
from align.plan.cli import Config, main, make_plan, run

__all__ = ["Config", "main", "make_plan", "run"]
