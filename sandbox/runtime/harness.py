# ruff: noqa: S102, BLE001, S110  (this file runs untrusted code and must survive anything it does)
"""Runs inside the sandbox, in the forked child that executes the untrusted program.

Standard library only (the sandbox runtime is a bare interpreter started with `-I -S`).
The child loads the program as a module, runs call / assertion tests one after the other and
reports each test on the result channel (fd 3) as one JSON line. Expected values never come
here: only the *actual* values go out, encoded as tagged JSON, and the trusted side compares.
Everything the program can reach it can also forge, so nothing here is a verdict: an
assertion test that "passed" only means no AssertionError came out (documented as forgeable).
"""
import hashlib
import json
import math
import os
import sys
import time
import traceback

PROGRAM_FILE = "solution.py"
MAX_ITEMS = 10_000  # elements per container in an encoded actual value
MAX_DEPTH = 50
MAX_ENCODED_CHARS = 1_000_000


class _TooLarge(Exception):
    pass


# -- text as the result reports it (shared with the zygote and the trusted side) --------------------
def json_len(text):
    """Bytes `text` takes inside a JSON string as ExecResult.to_json writes it (ensure_ascii:
    a non-ASCII or control character takes 6, one outside the BMP 12), quotes not counted."""
    return len(json.dumps(text)) - 2


def clip_text(text, max_bytes):
    """(the longest prefix of `text` with json_len <= max_bytes, whether it was cut)."""
    if len(text) <= max_bytes // 12 or json_len(text) <= max_bytes:
        return text, False
    lo, hi = 0, min(len(text), max(max_bytes, 0))  # every character takes at least one byte
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if json_len(text[:mid]) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


def stdout_lines(text):
    """What a stdio test compares: lines with trailing whitespace and trailing blank lines dropped."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdout_digest(text):
    """sha256 of stdout_lines(text): lets a stdio test be judged on output too large to send whole."""
    return hashlib.sha256("\n".join(stdout_lines(text)).encode("utf-8", "surrogatepass")).hexdigest()


def encode_value(value, depth=0, budget=None):
    """Tagged JSON of a Python value: only exact builtin types are trusted, anything else
    (subclasses included, e.g. an int whose __eq__ always says True) becomes opaque."""
    budget = budget if budget is not None else [MAX_ENCODED_CHARS]
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _TooLarge()
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        if kind is str:
            budget[0] -= len(value)
            if budget[0] < 0:
                raise _TooLarge()
        if kind is int and value.bit_length() > 4000:
            raise _TooLarge()
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        if len(value) > MAX_ITEMS:
            raise _TooLarge()
        items = [encode_value(v, depth + 1, budget) for v in value]
        if kind is list:
            return items
        if kind is tuple:
            return {"$tuple": items}
        return {"$set": items}
    if kind is dict:
        if len(value) > MAX_ITEMS:
            raise _TooLarge()
        return {"$dict": [[encode_value(k, depth + 1, budget), encode_value(v, depth + 1, budget)]
                          for k, v in value.items()]}
    if kind is bytes:
        budget[0] -= 2 * len(value)
        if budget[0] < 0:
            raise _TooLarge()
        return {"$bytes": value.hex()}
    if kind is complex:
        return {"$complex": [repr(value.real), repr(value.imag)]}
    return {"$opaque": _type_name(value), "repr": _safe_repr(value)}


def encode_actual(value):
    try:
        return encode_value(value)
    except (_TooLarge, RecursionError):
        return {"$opaque": _type_name(value), "repr": "<value too large to report>"}


def _type_name(value):
    try:
        kind = type(value)
        return f"{kind.__module__}.{kind.__qualname__}"[:200]
    except Exception:
        return "<unknown>"


def _safe_repr(value):
    try:
        return str(repr(value))[:500]
    except BaseException:
        return "<repr failed>"


def describe_error(error):
    """{"type", "message", "line"}; line = the deepest frame inside the program, or None."""
    line = None
    try:
        for frame, lineno in traceback.walk_tb(error.__traceback__):
            if frame.f_code.co_filename == PROGRAM_FILE:
                line = lineno
        if isinstance(error, SyntaxError) and error.filename == PROGRAM_FILE:
            line = error.lineno
    except BaseException:
        pass
    try:
        message = str(error)[:2000]
    except BaseException:
        message = "<str() of the exception failed>"
    return {"type": type(error).__name__[:200], "message": message, "line": line}


class LineTracer:
    """Collects the 1-based line numbers of PROGRAM_FILE that executed (for FGO masks)."""

    def __init__(self):
        self.lines = set()

    def _local(self, frame, event, arg):
        if event == "line":
            self.lines.add(frame.f_lineno)
        return self._local

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != PROGRAM_FILE:
            return None
        if event == "call":
            self.lines.add(frame.f_lineno)
        return self._local

    def start(self):
        sys.settrace(self)

    def take(self):
        sys.settrace(None)
        lines, self.lines = sorted(self.lines), set()
        return lines


class Channel:
    """One JSON object per line on the result fd."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, **message):
        data = (json.dumps(message, allow_nan=True) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def load_program(source, module_name, channel, tracer):
    """Compile and execute the module body. Returns its globals, or None after reporting."""
    try:
        code = compile(source, PROGRAM_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: source with NUL bytes
        channel.send(ev="load", status="syntax", error=describe_error(error))
        return None
    namespace = {"__name__": module_name, "__file__": PROGRAM_FILE, "__builtins__": __builtins__}
    module = type(sys)(module_name)
    module.__dict__.update(namespace)
    sys.modules[module_name] = module
    channel.send(ev="load_start")
    if tracer:
        tracer.start()
    try:
        exec(code, module.__dict__)
    except BaseException as error:
        lines = tracer.take() if tracer else None
        _flush_std()
        status = "memory" if isinstance(error, MemoryError) else "load"
        channel.send(ev="load", status=status, error=describe_error(error), lines=lines)
        return None
    lines = tracer.take() if tracer else None
    _flush_std()
    channel.send(ev="load", status="ok", lines=lines)
    return module.__dict__


def run_one(test, namespace):
    kind = test["kind"]
    if kind == "call":
        return eval(compile(test["expr"], "<test>", "eval", dont_inherit=True), namespace)
    if kind == "call_args":
        return namespace[test["fn"]](*test["args"])
    if kind == "assert":
        exec(compile(test["code"], "<test>", "exec", dont_inherit=True), namespace)
        return None
    raise ValueError(f"unknown test kind {kind!r}")


def run_tests(source, tests, indices, trace, result_fd):
    """Child entry point for call/assertion tests: load once, run tests[i] for i in indices."""
    channel = Channel(result_fd)
    tracer = LineTracer() if trace else None
    namespace = load_program(source, "solution", channel, tracer)
    if namespace is None:
        return
    for i in indices:
        channel.send(ev="start", i=i)
        started = time.perf_counter()
        if tracer:
            tracer.start()
        try:
            value = run_one(tests[i], namespace)
            outcome = {"status": "ok", "actual": None}
        except BaseException as error:
            value, outcome = None, {"status": "error", "error": describe_error(error)}
            if isinstance(error, MemoryError):
                outcome["status"] = "memory"
        lines = tracer.take() if tracer else None
        elapsed = time.perf_counter() - started
        if outcome["status"] == "ok" and tests[i]["kind"] != "assert":
            outcome["actual"] = encode_actual(value)
        _flush_std()
        channel.send(ev="end", i=i, wall_s=elapsed, lines=lines, **outcome)
    channel.send(ev="done")


def run_script(source, trace, result_fd, index):
    """Child entry point for a stdin/stdout test: run the program as __main__."""
    channel = Channel(result_fd)
    tracer = LineTracer() if trace else None
    try:
        code = compile(source, PROGRAM_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        channel.send(ev="load", status="syntax", error=describe_error(error))
        return
    channel.send(ev="load", status="ok")
    channel.send(ev="start", i=index)
    module = type(sys)("__main__")
    module.__dict__.update({"__name__": "__main__", "__file__": PROGRAM_FILE, "__builtins__": __builtins__})
    sys.modules["__main__"] = module
    started = time.perf_counter()
    if tracer:
        tracer.start()
    outcome = {"status": "ok"}
    try:
        exec(code, module.__dict__)
    except SystemExit as error:
        if error.code not in (None, 0):
            outcome = {"status": "error", "error": describe_error(error)}
    except BaseException as error:
        outcome = {"status": "memory" if isinstance(error, MemoryError) else "error",
                   "error": describe_error(error)}
    lines = tracer.take() if tracer else None
    _flush_std()
    channel.send(ev="end", i=index, wall_s=time.perf_counter() - started, lines=lines, **outcome)
    channel.send(ev="done")
