"""MetaRM (`align.rm.metarm`) from key=value arguments, for tests/test_metarm.py.

    python metarm_run.py key=value ...        (under torchrun for several processes)
"""
import sys

from align.config import load_config
from align.rm.metarm import Config, train_metarm

train_metarm(load_config(Config, None, sys.argv[1:]))
