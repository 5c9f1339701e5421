"""Model cards: the README.md beside every model a run saves (`align rm`, `align sft`, `align ppo`, `align export`).

Hugging Face card format: YAML front matter (library, base model, pipeline, tags, datasets where known), then what
the model is, how to load it, its data, the metrics of the run's summary.json and the resolved config.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import yaml

from align.config import to_dict

# Embedded names -> the upstream model on the Hugging Face hub they were converted from (the card's base_model).
UPSTREAM_HUB_IDS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "me5-small": "intfloat/multilingual-e5-small",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
}
COMMANDS = {  # command -> (what the model is, pipeline tag, tags)
    "rm": ("Reward model", "text-classification", ["reward-model", "rlhf"]),
    "sft": ("Policy (supervised fine-tuning)", "text-generation", ["sft"]),
    "ppo": ("Policy (PPO)", "text-generation", ["ppo", "rlhf"]),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CARD_FILE = "README.md"


def hub_id(name: str | None) -> str | None:
    """The hub id `name` stands for (an embedded name's upstream model, or `name` itself when it is an id and not a
    local path), else None."""
    if not name:
        return None
    if name in UPSTREAM_HUB_IDS:
        return UPSTREAM_HUB_IDS[name]
    return name if HUB_ID.match(name) and not Path(name).expanduser().exists() else None


def is_adapter(model_dir: Path) -> bool:
    return (Path(model_dir) / "adapter_config.json").is_file()


def _front_matter(config: dict, summary: dict, command: str, model_dir: Path) -> dict[str, Any]:
    _, pipeline, tags = COMMANDS[command]
    adapter = is_adapter(model_dir)
    base = hub_id(config.get("model"))
    datasets = [d for d in str(summary.get("datasets") or "").split(",") if d]
    if hub_id(config.get("data")) and config.get("data") not in datasets:
        datasets.append(config["data"])
    meta: dict[str, Any] = {"library_name": "peft" if adapter else "transformers"}
    if base:
        meta["base_model"] = base
    meta["pipeline_tag"] = pipeline
    domain = config.get("domain") if not config.get("data") else None  # a data file replaces the domain's data
    meta["tags"] = ["align", *tags, *([domain] if domain else []),
                    *(["lora"] if (config.get("lora") or {}).get("enabled") else [])]
    if datasets:
        meta["datasets"] = datasets
    return meta


def _how_to_load(command: str, model_dir: Path, heads: list[str]) -> str:
    name = Path(model_dir).name
    if is_adapter(model_dir):
        cls = "AutoPeftModelForCausalLM"
        return (f"LoRA adapters (peft). The base model is named in `adapter_config.json`.\n\n```python\n"
                f"from peft import {cls}\nfrom transformers import AutoTokenizer\n\n"
                f"model = {cls}.from_pretrained(\"{name}\")\ntokenizer = AutoTokenizer.from_pretrained(\"{name}\")\n```\n\n"
                f"`align export <run directory> --merge` writes the adapters merged into a plain transformers model.")
    if command == "rm":
        columns = ", ".join(f"`{h}`" for h in heads) or "one per head"
        return (f"```python\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
                f"model = AutoModelForSequenceClassification.from_pretrained(\"{name}\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{name}\")\n"
                f"rewards = model(**tokenizer(prompt_and_response, return_tensors=\"pt\")).logits  # columns: {columns}\n"
                f"```\n\nIt was trained on the prompt rendered by `align.data.render_prompt` (the tokenizer's chat "
                f"template for chat messages, else `Human:` / `Assistant:` turns), a space, then the response; "
                f"`align/models/shims.py` scores that way for TRL, OpenRLHF and verl.")
    return (f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"model = AutoModelForCausalLM.from_pretrained(\"{name}\")\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{name}\")\n```")


def _data_source(config: dict) -> str:
    if config.get("data"):
        return f"`{config['data']}`"
    if config.get("domain"):
        options = config.get("domain_options")
        return f"domain `{config['domain']}`" + (f" with options `{json.dumps(options, sort_keys=True)}`" if options else "")
    return "not recorded"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def model_card(config: Any, summary: dict[str, Any], command: str, model_dir: Path, note: str = "") -> str:
    """The card text of the model in `model_dir`, trained by `align <command>` with `config` (the dataclass or the
    dict of config.yaml), with the figures of `summary`; `note` adds a paragraph (e.g. how it was exported)."""
    if command not in COMMANDS:
        raise ValueError(f"model card: unknown command {command!r}; known: {', '.join(COMMANDS)}")
    config = to_dict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    model_dir = Path(model_dir)
    metadata_file = model_dir / "align_reward_model.json"
    heads = json.loads(metadata_file.read_text()).get("head_names", []) if metadata_file.is_file() else []
    what, base = COMMANDS[command][0], config.get("model")
    upstream = hub_id(base)
    start = f"`{base}`" + (f" ({upstream})" if upstream and upstream != base else "") if base else "not recorded"
    lines = ["---", yaml.safe_dump(_front_matter(config, summary, command, model_dir), sort_keys=False).rstrip(),
             "---", "", f"# {what}, trained with `align {command}`", "", f"Starting point: {start}."]
    if summary.get("precision"):
        lines[-1] += f" Computed in {summary['precision']} on {summary.get('processes', 1)} process(es)."
    if summary.get("adapter_dir"):
        lines[-1] += " The LoRA adapters alone are in the run's `adapter/`."
    lines.append("")
    if heads:
        lines += [f"Reward heads (one output logit each, in this order): {', '.join(f'`{h}`' for h in heads)}.", ""]
    if note:
        lines += [note, ""]
    lines += ["## How to load", "", _how_to_load(command, model_dir, heads), "", "## Data", "", f"Training data: {_data_source(config)}."]
    data_figures = {k: v for k, v in summary.items() if k.endswith(("_pairs", "_examples", "subsets_used",
                                                                   "subsets_missing")) or k.startswith("skipped_")}
    lines += [f"- `{k}`: {_value(v)}" for k, v in data_figures.items()]
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in data_figures}
    lines += ["", "## Metrics", "", "From the run's `summary.json` (README.md of the `align` suite explains each key).", "",
              "| metric | value |", "|---|---|", *[f"| `{k}` | {_value(v)} |" for k, v in metrics.items()], ""]
    lines += ["## Config", "", f"The resolved `align {command}` config (`config.yaml` of the run):", "", "```yaml",
              yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, config: Any, summary: dict[str, Any], command: str, note: str = "") -> Path:
    """Write README.md (see `model_card`) into `model_dir`; returns its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(model_card(config, summary, command, Path(model_dir), note), encoding="utf-8")
    return path
