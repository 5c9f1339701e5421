"""Domain adapters: `hh` (dialogue), `translation`, `code`.

`domains.get(name, **options)` is the same entry-point lookup the core uses, for users who
import the adapters directly.
"""
from align.registry import available_domains, get_domain as get

__all__ = ["get", "available_domains"]
