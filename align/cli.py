"""`align <command> [--config FILE.yaml] [key=value ...]`

Each training/eval command is a module with a `Config` dataclass and `run(config) -> dict`
(the summary). `align sandbox ...` has its own sub-commands and arguments.
"""
from __future__ import annotations

import importlib
import os
import sys

from align.config import ConfigError, describe, load_config

COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("align.sft.train", "supervised fine-tuning of a policy on prompt/response data"),
    "rm": ("align.rm.train", "train a reward model (loss variants, contrastive terms, several heads)"),
    "strength": ("align.rm.strength.annotate", "RM ensemble -> preference strength per pair, report, cleaned data"),
    "metarm": ("align.rm.metarm", "MetaRM: an RM update that keeps a shifted policy's samples apart (see `iterate`)"),
    "ppo": ("align.ppo.train", "PPO-max against a reward model or a domain reward"),
    "iterate": ("align.iterate", "iterative RLHF: sample, MetaRM update, PPO round, repeat"),
    "eval": ("align.eval.evaluate", "RM accuracy, pass@k, translation metrics, win/tie/lose"),
    "serve": ("align.serve.server", "HTTP: a policy (OpenAI-compatible), a reward model (OpenRLHF), a domain reward"),
    "export": ("align.export", "a run's model to share: model card, LoRA adapters or (--merge) a merged model"),
    "demo": ("align.demo", "the embedded default, end to end, offline on a CPU"),
    "sandbox": ("sandbox.cli", "`run` a program with tests in the sandbox; `check` this machine's isolation"),
    "plan": ("align.plan", ("per-GPU memory of a config on the meta device: weights, grads, optimizer, "
                            "activations; fits or not")),
}


def _usage() -> str:
    lines = ["usage: align <command> [--config FILE.yaml] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`align <command> --help` lists the command's keys with their defaults."]
    return "\n".join(lines)


def _split_args(argv: list[str]) -> tuple[str | None, list[str]]:
    config_file, overrides = None, []
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            config_file = next(args, None)
            if config_file is None:
                raise ConfigError("--config: expected a YAML file after --config")
        elif arg.startswith("--config="):
            config_file = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise ConfigError(f"{arg}: unknown option; pass settings as key=value")
        else:
            overrides.append(arg)
    return config_file, overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"align: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(f"align {command}: this command is not part of this build yet", file=sys.stderr)
        return 2
    if command in ("sandbox", "plan", "export"):  # their own arguments (plan: --accelerate, --gpu-memory, ...)
        return module.main(rest)
    if any(a in ("-h", "--help") for a in rest):
        print(f"align {command}: {COMMANDS[command][1]}\n\nkeys:")
        print("\n".join(describe(module.Config)))
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from align.training.precision import is_main_process

    if not is_main_process():  # under torchrun / accelerate launch, one process reports (errors still do)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars drown our own progress bar
    try:
        config_file, overrides = _split_args(rest)
        config = load_config(module.Config, config_file, overrides)
    except ConfigError as error:
        print(f"align {command}: config error: {error}", file=sys.stderr)
        return 2
    try:
        module.run(config)
    except ConfigError as error:
        print(f"align {command}: config error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nalign {command}: interrupted; `resume=true` continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
