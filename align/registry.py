"""Find domain adapters by name through the `align.domains` entry point group.

The core never imports `domains` directly: the suite's own adapters are registered in
pyproject.toml exactly as a third-party package would register its own.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from align.types import Domain

ENTRY_POINT_GROUP = "align.domains"


def available_domains() -> list[str]:
    """Names of every installed domain adapter."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def get_domain(name: str, **options: Any) -> Domain:
    """Instantiate the domain adapter registered as `name`, passing `options` to its constructor."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(available_domains()) or "none (is the package installed? `pip install -e .`)"
        raise ValueError(f"unknown domain {name!r}; installed domains: {known}")
    domain_class = matches[0].load()
    return domain_class(**options)
