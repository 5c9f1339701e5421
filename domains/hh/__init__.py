"""The `hh` domain: Anthropic hh-rlhf helpful/harmless dialogue preferences (no programmatic reward).

Modules: `domain` (the adapter), `data` (where the files are, how one file is split by id).
"""
from domains.hh.data import SUBSETS
from domains.hh.domain import HHDomain

__all__ = ["SUBSETS", "HHDomain"]
