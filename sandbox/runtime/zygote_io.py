
"""The zygote's side of its wire (frames: 4-byte big-endian length + JSON, over fds 0/1) and the modules it
imports before any program runs, so that every forked child starts with them loaded.

Standard library only: it runs inside the sandbox.
"""
import json
import os
import struct


def read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def write_frame(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "copy", "operator", "fractions", "hashlib", "random", "datetime", "dataclasses", "enum")


def preload():
    """Import what generated programs commonly import, once, so that each child does not pay for
    it; then freeze the heap so the children's garbage collections do not copy its pages."""
    import gc
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.collect()
    gc.freeze()
