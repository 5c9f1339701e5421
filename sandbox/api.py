"""`run`, `run_many`, `get_backend`: the entry points other packages call."""
from __future__ import annotations

import atexit
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .types import ExecRequest, ExecResult, SandboxError

_backends: dict = {}
_lock = threading.Lock()


def _docker_available() -> bool:
    from .docker_backend import docker_status
    return docker_status()["ok"]


def get_backend(name: str = "auto", strict: bool = False, workers: int = 2, **options):
    """A shared backend instance ("local", "docker", or "auto": local, unless only docker gives
    full isolation). Instances are cached per (name, strict, workers) and closed at exit."""
    if name not in ("auto", "local", "docker"):
        raise ValueError(f"backend must be 'auto', 'local' or 'docker', got {name!r}")
    if name == "auto":
        from .local import probe_isolation
        name = "local"
        if not probe_isolation()["full"] and os.environ.get("ALIGN_SANDBOX_AUTO_DOCKER", "1") != "0" \
                and _docker_available():
            name = "docker"
    key = (name, strict, workers, tuple(sorted(options.items())))
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            if name == "local":
                from .local import LocalBackend
                backend = LocalBackend(workers=workers, strict=strict, **options)
            else:
                from .docker_backend import DockerBackend
                backend = DockerBackend(workers=workers, strict=strict, **options)
            _backends[key] = backend
    return backend


def close_backends() -> None:
    with _lock:
        backends = list(_backends.values())
        _backends.clear()
    for backend in backends:
        backend.close()


atexit.register(close_backends)


def run(request: ExecRequest, backend: str = "auto", strict: bool = False) -> ExecResult:
    """Run one program with its tests. Never raises for anything the program does; raises
    IsolationError in strict mode when full isolation is unavailable, ValueError for a bad request."""
    return get_backend(backend, strict=strict).run(request)


async def run_async(request: ExecRequest, backend: str = "auto", strict: bool = False) -> ExecResult:
    """`run` for asyncio code: the blocking wait happens in the default executor."""
    import asyncio
    engine = get_backend(backend, strict=strict)
    return await asyncio.get_running_loop().run_in_executor(None, engine.run, request)


def run_many(requests, backend: str = "auto", workers: int = 2, strict: bool = False,
             progress: bool = False) -> list[ExecResult]:
    """Run many requests concurrently on `workers` sandbox workers; results in request order."""
    requests = list(requests)
    for request in requests:
        request.validate()
    engine = get_backend(backend, strict=strict, workers=workers)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(requests), desc=f"sandbox ({engine.name})", unit="prog")

    def one(request):
        try:
            return engine.run(request)
        except SandboxError as error:
            from .results import sandbox_error
            return sandbox_error(str(error), engine.name, getattr(engine, "isolation", {}), len(request.tests))
        finally:
            if bar is not None:
                bar.update(1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, requests))
    if bar is not None:
        bar.close()
    return results
