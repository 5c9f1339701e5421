"""`align export RUN_OR_MODEL_DIR [--merge] [--output DIR]`: a run's model as a directory to share, with its card.

Without `--merge` the model is copied as the run saved it: a LoRA run gives its adapters (`align sft` / `align ppo`:
`model/`; `align rm`: `adapter/`), any other run its full model. With `--merge` the result is a plain transformers
model, loadable with `AutoModelForCausalLM` (policies) or `AutoModelForSequenceClassification` (reward models):
adapters are folded into their base weights (an `align rm` LoRA run's `model/` already is). Either way the
directory gets a model card (README.md) from the run's config.yaml and summary.json.

RUN_OR_MODEL_DIR is a run directory (config.yaml + model/) or a model directory (model/, adapter/, or any saved
model; its run, when it has one, is its parent). The output defaults to `<run>/merged` (`--merge`) or
`<run>/export`; it is written beside its final place and renamed into it, and an existing output is an error.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from align.models.card import is_adapter, write_model_card
from align.models.embedded import looks_like_path


@dataclass
class Source:
    """What to export: the model directory, the run it came from (if any), and that run's config and summary."""

    model_dir: Path
    run_dir: Path | None
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        """rm, sft or ppo: a reward model has align_reward_model.json; a PPO config has a KL coefficient."""
        if (self.model_dir / "align_reward_model.json").is_file():
            return "rm"
        return "ppo" if "kl_coef" in self.config else "sft"


def is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def find_source(path: str | Path, merge: bool) -> Source:
    """The model to export from `path` (see the module docstring), with its run's config and summary."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"align export: {path} is not a directory (expected a run or a model directory)")
    if is_run(path):
        run_dir, model_dir = path, path / "model"
        if not merge and (path / "adapter").is_dir():  # an align rm LoRA run: the adapters, unmerged
            model_dir = path / "adapter"
        if not model_dir.is_dir():
            raise FileNotFoundError(f"align export: run {path} has no model/ (did it finish?)")
    else:
        model_dir, run_dir = path, (path.parent if is_run(path.parent) else None)
    if not any((model_dir / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise FileNotFoundError(f"align export: {model_dir} holds no model (no config.json or adapter_config.json)")
    config = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}) if run_dir else {}
    summary_file = run_dir / "summary.json" if run_dir else None
    summary = json.loads(summary_file.read_text()) if summary_file and summary_file.is_file() else {}
    return Source(model_dir, run_dir, config, summary)


def base_model_of(source: Source) -> str:
    """The base an adapter was trained on: as recorded in adapter_config.json while it still resolves here, else the
    run's `model` (an embedded name or hub id recorded as a cache path of another machine)."""
    recorded = json.loads((source.model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if recorded and (not looks_like_path(recorded) or Path(recorded).expanduser().is_dir()):
        return recorded
    if source.config.get("model"):
        return str(source.config["model"])
    raise ValueError(f"align export: the base model of {source.model_dir} is unknown (adapter_config.json names "
                     f"{recorded!r}, which is not here, and there is no run config.yaml)")


def merge_into(source: Source, output: Path) -> None:
    """Write `source`'s adapters merged into their base as a plain transformers model in `output`. The base loads in
    fp32 whatever the run computed in: the merge is then exact (a bf16 run's frozen base was bf16-rounded, so its
    merged weights differ from these by that rounding)."""
    base = base_model_of(source)
    if source.command == "rm":
        from align.models.reward import METADATA_FILE, load_reward_model

        heads = json.loads((source.model_dir / METADATA_FILE).read_text())["head_names"]
        reward_model = load_reward_model(base, num_heads=len(heads), head_names=heads)
        reward_model.load_lora(source.model_dir)
        reward_model.merge_lora()
        reward_model.backbone = base
        reward_model.save_pretrained(output)
        return
    from peft import PeftModel
    from transformers import AutoTokenizer

    from align.models.loading import load_causal_lm

    model = PeftModel.from_pretrained(load_causal_lm(base), str(source.model_dir)).merge_and_unload()
    model.save_pretrained(output)
    AutoTokenizer.from_pretrained(str(source.model_dir)).save_pretrained(output)


def export(path: str | Path, merge: bool = False, output: str | Path | None = None) -> Path:
    """Export the model of the run or model directory `path` (see the module docstring); returns the output."""
    source = find_source(path, merge)
    suffix = "merged" if merge else "export"
    default = (source.run_dir / suffix if source.run_dir
               else source.model_dir.with_name(f"{source.model_dir.name}-{suffix}"))
    output = Path(output).expanduser().resolve() if output else default
    if output.exists():
        raise FileExistsError(f"align export: {output} exists; remove it or pass --output DIR")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        merging = merge and is_adapter(source.model_dir)
        if merging:
            merge_into(source, tmp)
        else:
            shutil.copytree(source.model_dir, tmp, dirs_exist_ok=True)
        origin = f"`{source.run_dir}`" if source.run_dir else f"`{source.model_dir}`"
        note = f"Exported by `align export` from {origin}" + (
            ": the LoRA adapters merged into the base weights." if merging else ".")
        write_model_card(tmp, source.config, source.summary, source.command, note)
        tmp.rename(output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="align export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run directory (config.yaml + model/) or a model directory")
    parser.add_argument("--merge", action="store_true", help="merge LoRA adapters: a plain transformers model")
    parser.add_argument("--output", help="where to write (default: <run>/merged or <run>/export)")
    args = parser.parse_args(argv)
    try:
        output = export(args.source, args.merge, args.output)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(str(error), file=sys.stderr)
        return 2
    print(f"align export: {output} (model card: {output / 'README.md'})")
    return 0
