"""Read an accelerate config file (`accelerate config` / `--config_file`) into a `Strategy`.

Keys read (accelerate 1.x names): `distributed_type` (NO, MULTI_GPU, DEEPSPEED, FSDP),
`num_processes`, `mixed_precision`; `deepspeed_config.zero_stage`, `offload_optimizer_device`,
`offload_param_device` (or the same under `zero_optimization` of a `deepspeed_config_file`);
`fsdp_config.fsdp_sharding_strategy` (FSDP1) or `fsdp_reshard_after_forward` (FSDP2: true/false,
FSDP1: a strategy name), `fsdp_offload_params`, `fsdp_activation_checkpointing`.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from align.config import ConfigError
from align.plan.memory import Strategy

_FULL = ("FULL_SHARD", "HYBRID_SHARD", "1", "4")
_GRAD_OP = ("SHARD_GRAD_OP", "_HYBRID_SHARD_ZERO2", "2", "5")
_NO_SHARD = ("NO_SHARD", "3")


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _offloaded(value) -> bool:
    return str(value or "none").strip().lower() not in ("none", "", "false")


def read_strategy(path: str | None) -> Strategy:
    """The strategy of `path` (None: one GPU). Raises ConfigError naming the file and key."""
    if path is None:
        return Strategy(source="one GPU (no --accelerate)")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--accelerate: file not found: {path}")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of accelerate keys at the top level")
    if "distributed_type" not in data:
        raise ConfigError(f"{path}: distributed_type: missing; is this an accelerate config file "
                          "(`accelerate config --config_file FILE`)?")
    kind = str(data["distributed_type"]).upper()
    processes = data.get("num_processes", 1)
    if not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"{path}: num_processes: expected a positive integer, got {processes!r}")
    common = {"processes": processes, "mixed_precision": data.get("mixed_precision"), "source": str(path)}
    if kind in ("NO", "MULTI_GPU"):
        return Strategy(kind="ddp" if processes > 1 else "single", **common)
    if kind == "DEEPSPEED":
        return Strategy(kind="deepspeed", **_deepspeed(path, data), **common)
    if kind == "FSDP":
        return _fsdp(path, data.get("fsdp_config") or {}, common)
    raise ConfigError(f"{path}: distributed_type: align plan handles NO, MULTI_GPU, DEEPSPEED and FSDP, got {kind!r}")


def _deepspeed(path: str, data: dict) -> dict:
    options = dict(data.get("deepspeed_config") or {})
    config_file = options.get("deepspeed_config_file")
    if config_file:  # a DeepSpeed JSON: its zero_optimization section decides
        try:
            zero = json.loads(Path(config_file).read_text()).get("zero_optimization", {})
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: deepspeed_config_file: cannot read {config_file}: {error}") from None
        options = {"zero_stage": zero.get("stage", 0),
                   "offload_optimizer_device": (zero.get("offload_optimizer") or {}).get("device"),
                   "offload_param_device": (zero.get("offload_param") or {}).get("device")}
    stage = options.get("zero_stage", 2)  # accelerate's default stage
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{path}: deepspeed_config.zero_stage: expected 0, 1, 2 or 3, got {stage!r}")
    return {"zero_stage": stage, "offload_optimizer": _offloaded(options.get("offload_optimizer_device")),
            "offload_params": stage == 3 and _offloaded(options.get("offload_param_device"))}


def _fsdp(path: str, options: dict, common: dict) -> Strategy:
    version = int(options.get("fsdp_version", 1))
    strategy = options.get("fsdp_sharding_strategy")
    reshard = options.get("fsdp_reshard_after_forward")
    if version == 2 and reshard is not None:
        full = _truthy(reshard)
    else:
        name = str(strategy if strategy is not None else (reshard if reshard is not None else "FULL_SHARD")).upper()
        if name in _NO_SHARD:
            return Strategy(kind="ddp" if common["processes"] > 1 else "single", **common)
        if name not in _FULL + _GRAD_OP:
            raise ConfigError(f"{path}: fsdp_config.fsdp_sharding_strategy: expected FULL_SHARD, SHARD_GRAD_OP, "
                              f"HYBRID_SHARD or NO_SHARD, got {name!r}")
        full = name in _FULL
    return Strategy(kind="fsdp", reshard_after_forward=full,
                    offload_params=_truthy(options.get("fsdp_offload_params", False)),
                    activation_checkpointing=_truthy(options.get("fsdp_activation_checkpointing", False)), **common)
