"""Run configuration: dataclasses, YAML files and `key=value` overrides, validated up front.

Every field carries `metadata={"help": ...}`: that text is the field's documentation (shown by
`align <command> --help`). A run fails before any work starts if a key is unknown, a value has
the wrong type, or a value is impossible, and the message names the key and what was expected.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts."""


def doc(help_text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with its documentation: `lr: float = doc("Peak learning rate.", 2e-5)`."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help_text}, **kwargs)
    if default is dataclasses.MISSING:
        return field(metadata={"help": help_text}, **kwargs)
    return field(default=default, metadata={"help": help_text}, **kwargs)


def nested(cls: type, help_text: str) -> Any:
    """A nested config section (a dataclass with defaults)."""
    return field(default_factory=cls, metadata={"help": help_text})


_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv", ".tsv", ".txt", ".yaml", ".yml")


def looks_like_local_path(value: str) -> bool:
    """True when `value` can only mean a local file (an extension or an explicit directory prefix),
    so a missing file is an error rather than a hub id to try."""
    return value.startswith(("/", "./", "../", "~")) or value.lower().endswith(_FILE_SUFFIXES)


def check_path(key: str, value: str | None) -> None:
    """Fail if `value` names a local file that does not exist."""
    if value and looks_like_local_path(value) and not Path(os.path.expanduser(value)).exists():
        raise ConfigError(f"{key}: file not found: {value}")


def check_tracker(report_to: str) -> None:
    """Fail before any work when the `report_to` tracker's package is missing (not at the first logged step)."""
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise ConfigError(f"report_to: {report_to} is not installed in this environment; pip install {report_to}, "
                          "or report_to=none")


@dataclass
class TrainConfig:
    """Keys every training command accepts."""

    model: str = doc("Model: an embedded name (`minilm`, `smollm2-135m`), a hub id or a local path.", "minilm")
    data: str | None = doc("Training data: a file (JSONL/JSON, optionally .gz), a `datasets` directory or a hub id. "
                           "Empty means the domain's default data.", None)
    eval_data: str | None = doc("Evaluation data, same forms as `data`. Empty: hold out `eval_fraction` of `data`.", None)
    eval_fraction: float = doc("Share of the training data held out for evaluation when `eval_data` is empty.", 0.1)
    domain: str = doc("Domain adapter that supplies default data and rewards (`hh`, `translation`, `code`).", "hh")
    output_dir: str = doc("Directory for config.yaml, metrics.jsonl, summary.json, checkpoints and the report.",
                          "runs/default")
    seed: int = doc("Random seed for initialisation, data order and dropout.", 0)
    max_steps: int = doc("Stop after this many optimizer steps; -1 means run `epochs` epochs.", -1)
    epochs: float = doc("Passes over the training data (fractions allowed) when `max_steps` is -1.", 1.0)
    batch_size: int = doc("Examples per micro-batch (per device).", 8)
    grad_accum: int = doc("Micro-batches accumulated per optimizer step.", 1)
    learning_rate: float = doc("Peak learning rate.", 2e-5)
    weight_decay: float = doc("AdamW weight decay.", 0.0)
    warmup_ratio: float = doc("Share of the steps spent on linear warm-up.", 0.05)
    lr_schedule: Literal["cosine", "linear", "constant"] = doc("Learning-rate decay after warm-up.", "cosine")
    max_grad_norm: float = doc("Global gradient-norm clip; 0 disables clipping.", 1.0)
    max_length: int = doc("Maximum tokens per sequence; longer inputs lose their oldest context first.", 256)
    precision: Literal["auto", "bf16", "fp32"] = doc("`bf16`: bf16 autocast, trained weights in fp32, frozen weights "
                                                     "(reference, reward model, a LoRA base) in bf16; `auto`: bf16 "
                                                     "where the device computes it natively (see README, Precision).",
                                                     "auto")
    freeze_word_embeddings: bool = doc("Keep the input word embeddings fixed (not trained, no optimizer state): "
                                       "most of a large-vocabulary model (multilingual-e5-small: 96M of 118M "
                                       "parameters; Gemma 3 270M: 168M of 268M, where the output projection is "
                                       "tied to them and stays fixed too), of which one task uses few rows.", False)
    gradient_checkpointing: bool = doc("Recompute activations in the backward pass instead of storing them: much "
                                       "less activation memory for about a third more compute.", False)
    resume: bool = doc("Continue from the latest checkpoint in `output_dir`.", False)
    save_steps: int = doc("Write a checkpoint every N optimizer steps (0: only at the end).", 200)
    keep_checkpoints: int = doc("Checkpoints kept in `output_dir/checkpoints` (the newest; older ones are deleted "
                                "once a newer one is complete).", 2)
    eval_steps: int = doc("Evaluate every N optimizer steps (0: only at the end).", 0)
    log_steps: int = doc("Append to metrics.jsonl every N optimizer steps.", 10)
    strict: bool = doc("Fail on the first bad data row (naming file, line and field) instead of skipping it.", False)
    max_examples: int = doc("Use at most this many training examples (-1: all).", -1)
    progress: bool = doc("Show a progress bar.", True)
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = doc(
        "Experiment tracker that also receives every logged step (accelerate's trackers; main process only): "
        "`tensorboard` writes event files under `output_dir/tensorboard/`; `wandb` and `mlflow` log the run, named "
        "after `output_dir`, to project / experiment `align` as their environment variables configure. `none`: "
        "metrics.jsonl only. The package must be installed (`tensorboard` is in the `dev` extra).", "none")

    def validate(self) -> None:
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "learning_rate": self.learning_rate, "max_length": self.max_length}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{key}: expected a positive number, got {value!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction: expected a number in [0, 1), got {self.eval_fraction!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps: expected a positive step count or -1, got {self.max_steps!r}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs: expected a positive number, got {self.epochs!r}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints: expected 1 or more (resuming needs one), got {self.keep_checkpoints!r}")
        for key in ("weight_decay", "max_grad_norm", "save_steps", "eval_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: expected a non-negative number, got {getattr(self, key)!r}")
        check_path("data", self.data)
        check_path("eval_data", self.eval_data)
        check_tracker(self.report_to)


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert `value` to annotation `tp`, or raise ConfigError naming `key`."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(key, value, option)
            except ConfigError:
                continue  # the next type may take it; the message below names them all
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section of keys ({tp.__name__}), got {value!r}")
        return build(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        (item_type, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key{hint}; valid keys: {', '.join(sorted(names))}")
        kwargs[key] = coerce(prefix + key, value, hints[key])
    return cls(**kwargs)


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted_key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`loss.margin_scale=0.5` -> ("loss.margin_scale", 0.5); values are read as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"{text!r}: expected key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"{text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(cls: type, config_file: str | None = None, overrides: list[str] | None = None) -> Any:
    """Build and validate a `cls` config from a YAML file and `key=value` overrides (overrides win)."""
    tree: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"--config: file not found: {config_file}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{config_file}: not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: expected a mapping of keys at the top level")
        for key, value in flatten(loaded).items():
            set_dotted(tree, key, value)
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    config = build(cls, tree)
    validate(config)
    return config


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def validate(config: Any) -> None:
    """Run `validate()` on the config and on every nested section that defines one."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate(value)
    if hasattr(config, "validate"):
        config.validate()


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True))


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per key with its type, default and help text (for `--help`)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{prefix}{f.name}:  {f.metadata.get('help', '')}")
            lines.extend(describe(tp, prefix + f.name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        lines.append(f"  {prefix}{f.name} = {default!r}  [{_type_name(tp)}]  {f.metadata.get('help', '')}")
    return lines
