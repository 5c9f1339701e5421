"""The shape of the house: no import cycles, the core and the sandbox import no domain, the sandbox imports
nothing of the core, no private name is imported across modules, no file over 400 lines, and `align rm`
reaches the Bradley-Terry loss by that name, and importing a domain needs no plotting
library (the translation metric no training library).

Imports are read from the source (every `import`, at the top or inside a function), so a cycle hidden in a
function body counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("align", "domains", "sandbox")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported project module, names taken from it) for every import statement of `path`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and f"{package}.{node.module}" in modules and node.module.split(".")[0] not in PACKAGES:
                target = f"{package}.{node.module}"  # the sandbox runtime imports its siblings by bare name
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            others = [n for n in names if f"{target}.{n}" not in modules]  # names defined in `target` itself
            found += ([(target, others)] if others or not submodules else []) + [(s, []) for s in submodules]
    return [(target, names) for target, names in found if target in modules]


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, list[str]]]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles(graph):
    edges = {module: {target for target, _ in targets if target != module} for module, targets in graph.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_core_and_the_sandbox_import_no_domain_and_the_sandbox_no_core(graph):
    for module, targets in graph.items():
        if module.startswith(("align", "sandbox")):
            assert not [t for t, _ in targets if t.startswith("domains")], module
        if module.startswith("sandbox"):
            assert not [t for t, _ in targets if t.startswith("align")], module


def test_no_private_name_is_imported_across_modules(graph):
    private = [(module, target, name) for module, targets in graph.items() for target, names in targets
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_no_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_align_rm_trains_with_the_bradley_terry_loss(tmp_path, monkeypatch):
    """cli.py -> align/rm/train.py -> align/losses.py: the command's module calls the loss by name."""
    import json

    from align import cli, losses
    from align.rm import train

    assert cli.COMMANDS["rm"][0] == "align.rm.train"
    calls = []
    real = losses.bradley_terry_loss
    monkeypatch.setattr(losses, "bradley_terry_loss", lambda c, r: calls.append(len(c)) or real(c, r))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes, gladly", "rejected": "no"}) + "\n"
                            for i in range(8)))
    config = train.Config(model="tiny-bert", data=str(data), output_dir=str(tmp_path / "run"), max_steps=1,
                          batch_size=4, eval_fraction=0.0, progress=False, report=False, save_steps=0,
                          precision="fp32")
    train.train_reward_model(config)
    assert calls[0] == 4  # the training step's four pairs went through the Bradley-Terry loss


@pytest.mark.parametrize("blocked, modules", [
    (("matplotlib",), "domains.hh, domains.translation, domains.code, align.rm.demo, align.eval.compare"),
    (("matplotlib", "accelerate"), "domains.translation.comet"),  # what .venv-comet (no training stack) imports
])
def test_imports_that_need_no_plotting_or_training_library(blocked, modules):
    """Plots import matplotlib on first use; the translation domain loads its demo and evaluation (which need
    the training stack) only when called, so the COMET environment can import its metric."""
    import subprocess
    import sys

    blocker = ("import builtins; real = builtins.__import__\n"
               "def guarded(name, *args, **kwargs):\n"
               f"    if name.split('.')[0] in {blocked!r}: raise ImportError(name + ' blocked')\n"
               "    return real(name, *args, **kwargs)\n"
               "builtins.__import__ = guarded\n"
               f"import {modules}\n")
    result = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
