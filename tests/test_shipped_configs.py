"""Every training config we ship loads into its command's Config: a renamed or mistyped key, or a value its
validation rejects, fails here rather than for the first user who runs the file."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from align.cli import COMMANDS
from align.config import load_config
from align.plan.cli import infer_command

ROOT = Path(__file__).resolve().parents[1]
# accelerate/ holds launcher configs and judges/ prompt templates: neither is an `align <command>` config
SHIPPED = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name not in ("accelerate", "judges"))


def command_of(path: Path) -> str:
    """The command its header documents (`align rm --config configs/...`), else the one its name or keys imply."""
    relative = path.relative_to(ROOT).as_posix()
    documented = re.search(rf"align (\w+) --config {re.escape(relative)}", path.read_text())
    if documented and documented.group(1) != "plan":
        return documented.group(1)
    return infer_command(str(path), yaml.safe_load(path.read_text()) or {})


def test_every_config_folder_is_covered():
    assert {p.parent.name for p in SHIPPED} >= {"code", "hh", "tiny", "translation"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_shipped_config_loads(path):
    config_class = importlib.import_module(COMMANDS[command_of(path)][0]).Config
    config = load_config(config_class, str(path), [])
    assert config.output_dir  # every shipped config says where its run goes
