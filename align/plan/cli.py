"""`align plan --config FILE.yaml [--accelerate FILE.yaml] [--gpu-memory 80GB] [--model-config PATH]
[--json] [key=value ...]`: per-GPU memory of a training run, without loading a weight.

Exit code 0 when the run fits, 1 when it does not, 2 for a config error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from align.config import ConfigError, build, describe, doc, flatten, parse_override, set_dotted, validate
from align.plan import memory as M
from align.plan.accelerate import read_strategy
from align.plan.planner import PLANNERS, Held, Phase, Run, state_rows

COMMAND_MODULES = {"rm": "align.rm.train", "sft": "align.sft.train", "ppo": "align.ppo.config",
                   "strength": "align.rm.strength.annotate"}
FLAGS = {"--config": "config", "--accelerate": "accelerate", "--gpu-memory": "gpu_memory",
         "--model-config": "model_config", "--command": "command", "--json-file": "json_file"}


@dataclass
class Config:
    """`align plan`: per-GPU memory of a training config, on the meta device (no weights)."""

    config: str | None = doc("Training config to plan: a YAML file of `align rm`, `sft`, `ppo` or `strength` "
                             "(`--config FILE`). Other key=value arguments override its keys, e.g. "
                             "`batch_size=2 gradient_checkpointing=true`.", None)
    command: Literal["auto", "rm", "sft", "ppo", "strength"] = doc(
        "Which trainer the config is for. `auto`: the file name when it starts with rm, sft, ppo or strength "
        "(configs/hh/rm_llama7b.yaml -> rm), else the one command whose keys the file uses.", "auto")
    accelerate: str | None = doc("accelerate config the run launches with (`--accelerate FILE`): MULTI_GPU (DDP), "
                                 "DEEPSPEED (ZeRO stage) or FSDP, over num_processes GPUs. Empty: one GPU.", None)
    gpu_memory: str = doc("Memory of one GPU (`--gpu-memory 80GB`); GB counts as GiB, the way GPU sizes do.",
                          "80GB")
    model_config: str | None = doc("config.json (or a directory holding it) for every model of the run whose name "
                                   "does not resolve on this machine (`--model-config PATH`).", None)
    json: bool = doc("Print the figures as JSON instead of the table (`--json`).", False)
    json_file: str | None = doc("Also write the figures as JSON to this file.", None)

    def validate(self) -> None:
        if not self.config:
            raise ConfigError("--config: the training config to plan is required (align plan --config FILE.yaml)")
        if not Path(self.config).is_file():
            raise ConfigError(f"--config: file not found: {self.config}")
        try:
            M.parse_size(self.gpu_memory)
        except ValueError as error:
            raise ConfigError(f"gpu_memory: {error}") from None


@dataclass
class Plan:
    settings: Config
    command: str
    run: Run
    models: list[Held]
    rows: list[tuple[str, int | None, int]]
    phases: list[Phase]
    other_phases: list[Phase]
    """The phases with gradient checkpointing the other way round."""

    @property
    def persistent(self) -> int:
        return sum(b for *_, b in self.rows)

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)

    @property
    def total(self) -> int:
        return self.persistent + self.peak.total + M.ALLOWANCE

    @property
    def total_other(self) -> int:
        return self.persistent + max(p.total for p in self.other_phases) + M.ALLOWANCE

    @property
    def capacity(self) -> int:
        return M.parse_size(self.settings.gpu_memory)

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def to_dict(self) -> dict[str, Any]:
        gib = lambda b: round(b / M.GIB, 3)
        rows = [*self.rows, *((label, None, b) for label, b in self.peak.items),
                ("CUDA context, NCCL and fragmentation allowance", None, M.ALLOWANCE)]
        ckpt = self.run.checkpointing
        phases = lambda items: {p.name: gib(p.total) for p in items}
        return {
            "config": self.settings.config, "command": self.command, "precision": "bf16" if self.run.bf16 else "fp32",
            "strategy": self.run.strategy.describe(), "gpus": self.run.strategy.processes,
            "gradient_checkpointing": ckpt,
            "models": [{"role": m.role, "architecture": m.shape.architecture, "source": m.shape.source,
                        "params": m.params, "trainable": m.trainable, "training": m.training} for m in self.models],
            "rows": [{"component": label, "params": params, "bytes": b, "gib": gib(b)} for label, params, b in rows],
            "phases_gib": phases(self.phases), "peak_phase": self.peak.name,
            "phases_gib_with_checkpointing": phases(self.phases if ckpt else self.other_phases),
            "phases_gib_without_checkpointing": phases(self.other_phases if ckpt else self.phases),
            "total_bytes": self.total, "total_gib": gib(self.total),
            "total_gib_with_checkpointing": gib(self.total if ckpt else self.total_other),
            "total_gib_without_checkpointing": gib(self.total_other if ckpt else self.total),
            "allowance_gib": gib(M.ALLOWANCE), "capacity_gib": gib(self.capacity), "fits": self.fits,
        }


# --------------------------------------------------------------------------- the training config


def read_tree(path: str, overrides: list[str]) -> dict[str, Any]:
    """The training config's keys (nested sections as dicts), overrides applied, as `load_config` reads them."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    tree: dict[str, Any] = {}
    for key, value in flatten(loaded).items():
        set_dotted(tree, key, value)
    for text in overrides:
        set_dotted(tree, *parse_override(text))
    return tree


def _fields(command: str) -> set[str]:
    return {f.name for f in dataclasses.fields(importlib.import_module(COMMAND_MODULES[command]).Config)}


def infer_command(path: str, tree: dict[str, Any]) -> str:
    """The file name when it starts with a command (`rm_llama7b.yaml`), else the one command whose config
    accepts every key of the file."""
    stem = Path(path).stem.lower()
    for command in ("strength", "ppo", "sft", "rm"):
        if re.match(rf"{command}(?:[_.\-]|$)", stem):
            return command
    keys, fitting = set(tree) - {"gradient_checkpointing"}, []
    for command in COMMAND_MODULES:
        try:
            if keys <= _fields(command):
                fitting.append(command)
        except ImportError:
            continue
    if len(fitting) == 1:
        return fitting[0]
    raise ConfigError(f"command: cannot tell which command {path} is for (its name does not start with rm, sft, ppo "
                      f"or strength; its keys fit {', '.join(fitting) or 'none of them'}); pass "
                      "command=rm|sft|ppo|strength")


def training_config(command: str, tree: dict[str, Any]) -> tuple[Any, bool]:
    """The trainer's own Config (unknown keys and bad values fail as in `align <command>`), and
    `gradient_checkpointing`, taken from the file even when that Config has no such field yet."""
    cls = importlib.import_module(COMMAND_MODULES[command]).Config
    tree = dict(tree)
    checkpointing = False
    if "gradient_checkpointing" not in {f.name for f in dataclasses.fields(cls)}:
        checkpointing = tree.pop("gradient_checkpointing", False)
        if not isinstance(checkpointing, bool):
            raise ConfigError(f"gradient_checkpointing: expected true or false, got {checkpointing!r}")
    config = build(cls, tree)
    validate(config)
    return config, bool(getattr(config, "gradient_checkpointing", checkpointing))


def precision_is_bf16(config, strategy: M.Strategy) -> bool:
    """`bf16` and `fp32` as set; `auto` is bf16 on a GPU unless the accelerate config says `no`."""
    if config.precision != "auto":
        return config.precision == "bf16"
    return str(strategy.mixed_precision or "bf16").lower() != "no"


# --------------------------------------------------------------------------- planning


def make_plan(settings: Config, overrides: list[str] | None = None) -> Plan:
    tree = read_tree(settings.config, overrides or [])
    command = infer_command(settings.config, tree) if settings.command == "auto" else settings.command
    config, checkpointing = training_config(command, tree)
    strategy = read_strategy(settings.accelerate)
    run = Run(precision_is_bf16(config, strategy), strategy, checkpointing or strategy.activation_checkpointing,
              settings.model_config)
    with contextlib.redirect_stdout(sys.stderr):  # a first use may build an embedded model and say so
        models, phases = PLANNERS[command](config, run)
    _, other_phases = PLANNERS[command](config, dataclasses.replace(run, checkpointing=not run.checkpointing))
    rows = [row for held in models for row in state_rows(held, run)]
    return Plan(settings, command, run, models, rows, phases, other_phases)


def _count(n: int | None) -> str:
    if n is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_plan(plan: Plan) -> str:
    gib = lambda b: f"{b / M.GIB:8.2f}"
    run = plan.run
    lines = [(f"align plan: {plan.settings.config} (align {plan.command}), precision "
             f"{'bf16' if run.bf16 else 'fp32'}, {run.strategy.describe()}, gradient checkpointing "
             f"{'on' if run.checkpointing else 'off'}"), "", "models (built from config.json on the meta device):"]
    for m in plan.models:
        trains = {"full": "trains in full", "frozen": "frozen",
                  "lora": f"LoRA r={m.lora_r}: {m.trainable:,} trainable"}[m.training]
        note = f", {m.note}" if m.note else ""
        lines.append(f"  {m.role:<26} {m.shape.architecture:<32} {m.params:>15,} params, {trains}{note}")
        lines.append(f"  {'':<26} from {m.shape.source}")
    width = max(60, *(len(label) for label, *_ in plan.rows), *(len(label) + 2 for label, _ in plan.peak.items))
    lines += ["", f"{'per-GPU memory':<{width}} {'params':>8} {'GiB':>8}"]
    lines += [f"{label:<{width}} {_count(params):>8} {gib(b)}" for label, params, b in plan.rows]
    lines.append(f"peak working memory: {plan.peak.name}")
    lines += [f"  {label:<{width - 2}} {'':>8} {gib(b)}" for label, b in plan.peak.items]
    lines.append(f"{'CUDA context, NCCL and fragmentation allowance (fixed)':<{width}} {'':>8} {gib(M.ALLOWANCE)}")
    lines.append(f"{'total':<{width}} {'':>8} {gib(plan.total)}")
    lines += ["", "working memory by phase (GiB): "
              + "; ".join(f"{p.name} {p.total / M.GIB:.2f}" for p in plan.phases)]
    lines.append(f"with gradient_checkpointing={'false' if run.checkpointing else 'true'} the total would be "
                 f"{plan.total_other / M.GIB:.2f} GiB")
    lines.append(f"fits: {'yes' if plan.fits else 'no'} ({plan.total / M.GIB:.1f} GiB of "
                 f"{plan.capacity / M.GIB:.0f} GiB)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`--flag value` / `--flag=value` and plan keys as key=value -> plan settings; other key=value
    arguments -> overrides of the training config."""
    names = {f.name for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    overrides: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            values["json"] = True
        elif arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            if flag not in FLAGS:
                raise ConfigError(f"{flag}: unknown option; options: --json, {', '.join(FLAGS)}")
            if not eq:
                value = next(args, None)
                if value is None or value.startswith("--"):
                    raise ConfigError(f"{flag}: expected a value after {flag}")
            values[FLAGS[flag]] = value
        elif "=" in arg and arg.split("=", 1)[0] in names:
            key, value = parse_override(arg)
            values[key] = value
        elif "=" in arg:
            overrides.append(arg)
        else:
            raise ConfigError(f"{arg!r}: expected key=value or an option (--config FILE, --accelerate FILE, ...)")
    return values, overrides


def usage() -> str:
    return "\n".join([
        "usage: align plan --config FILE.yaml [--accelerate FILE.yaml] [--gpu-memory 80GB] [--model-config PATH]",
        "                  [--json] [--json-file OUT.json] [command=rm|sft|ppo|strength] [training key=value ...]",
        "",
        "Per-GPU memory of a training run of align rm, sft, ppo or strength: every model the run holds is built",
        "from its config.json on the meta device (exact parameter counts, no weights), then weights, gradients,",
        "AdamW state, communication buffers and the working memory of each phase (activations with or without",
        ("gradient checkpointing, logits, KV cache) are added up per GPU, with a fixed "
        f"{M.ALLOWANCE // M.GIB} GiB allowance"),
        "for the CUDA context, NCCL and fragmentation. Formulas and papers: align/plan/memory.py.",
        "Exit code: 0 fits, 1 does not fit, 2 config error.",
        "",
        "keys:", *describe(Config)])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # building models on the meta device is not news
    try:
        values, overrides = parse_args(argv)
        settings = build(Config, values)
        validate(settings)
        plan = make_plan(settings, overrides)
    except ConfigError as error:
        print(f"align plan: config error: {error}", file=sys.stderr)
        return 2
    figures = plan.to_dict()
    if settings.json_file:
        Path(settings.json_file).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2) if settings.json else format_plan(plan))
    return 0 if plan.fits else 1


def run(settings: Config) -> dict[str, Any]:
    """The figures of `settings` (the API form of `align plan`)."""
    return make_plan(settings).to_dict()
