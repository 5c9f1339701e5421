"""Domain adapters: `hh` (dialogue), `translation`, `code`.

`domains.get(name, **options)` is the same entry-point lookup the core uses, for users who
import the adapters directly.
"""
from align.registry import available_domains
from align.registry import get_domain as get

__all__ = ["available_domains", "get"]
