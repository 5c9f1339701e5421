"""Trusted-side handle on one zygote process (shared by the local and docker backends): frames
over a pair of byte streams, with deadlines, so a stuck or hostile sandbox can never hang us."""
from __future__ import annotations

import json
import os
import select
import struct
import time

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime")
MAX_REPLY = 64 << 20


class WorkerDead(Exception):
    """The zygote ended, hung, or broke the protocol."""


def encode_frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


class FrameReader:
    """Reads length-prefixed JSON frames from a file descriptor with a deadline."""

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def _take(self):
        if len(self.buffer) < 4:
            return None
        size = struct.unpack(">I", self.buffer[:4])[0]
        if size > MAX_REPLY:
            raise WorkerDead(f"reply of {size} bytes exceeds {MAX_REPLY}")
        if len(self.buffer) < 4 + size:
            return None
        body = bytes(self.buffer[4:4 + size])
        del self.buffer[:4 + size]
        try:
            return json.loads(body)
        except ValueError as error:
            raise WorkerDead(f"malformed reply: {error}") from None

    def read(self, timeout_s: float, read_chunk=None):
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self._take()
            if frame is not None:
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDead(f"no reply within {timeout_s:.1f}s")
            if read_chunk is not None:
                data = read_chunk(left)
            else:
                ready, _, _ = select.select([self.fd], [], [], left)
                if not ready:
                    continue
                data = os.read(self.fd, 1 << 20)
            if data == b"":
                raise WorkerDead("the worker closed its output")
            if data:
                self.feed(data)
