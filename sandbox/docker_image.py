"""The docker backend's image, built locally with `docker import` (no registry exists here).

The root filesystem holds only the system Python interpreter, its standard library (without the
test suite, idle, tkinter, ensurepip, site/dist-packages), the shared libraries they link
against, the sandbox runtime (`/sandbox/zygote.py`, `/sandbox/harness.py`) and empty mount
points (no /etc at all). The tag is a hash of those inputs, so a changed runtime
builds a new image. By hand, the same thing is:

    python -m sandbox.docker_image --rootfs /tmp/rootfs     # writes the tree
    tar -C /tmp/rootfs -c . | docker import - align-sandbox-python:manual
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import re
import subprocess
import tarfile

from .worker import RUNTIME_DIR

REPOSITORY = "align-sandbox-python"
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "dist-packages",
               "__pycache__", "lib2to3", "pydoc_data"}


def _python() -> tuple[str, str]:
    python = os.path.realpath(os.environ.get("ALIGN_SANDBOX_PYTHON", "/usr/bin/python3"))
    name = os.path.basename(python)  # e.g. python3.11
    stdlib = os.path.join("/usr/lib", name)
    if not os.path.isdir(stdlib):
        raise FileNotFoundError(f"standard library of {python} not found at {stdlib}")
    return python, stdlib


def _shared_libraries(binaries: list[str]) -> set[str]:
    libs = set()
    for chunk in range(0, len(binaries), 50):
        out = subprocess.run(["ldd", *binaries[chunk:chunk + 50]], capture_output=True, text=True, check=False).stdout
        for match in re.finditer(r"(/\S+\.so[^\s]*)", out):
            libs.add(match.group(1))
    return {p for p in libs if os.path.exists(p)}


def rootfs_entries() -> list[tuple[str, str | None, bytes | None]]:
    """(path inside the image, host path or None, content or None), sorted."""
    python, stdlib = _python()
    entries = {"/usr/bin/python3": (python, None)}
    dynload = glob.glob(os.path.join(stdlib, "lib-dynload", "*.so"))
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_STDLIB)
        for name in files:
            if not name.endswith(".pyc"):
                path = os.path.join(root, name)
                entries[path] = (path, None)
    for lib in _shared_libraries([python, *dynload]):
        entries[lib] = (os.path.realpath(lib), None)
    for name in ("zygote.py", "zygote_io.py", "zygote_child.py", "zygote_cleanup.py", "harness.py"):
        entries[f"/sandbox/{name}"] = (os.path.join(RUNTIME_DIR, name), None)
    return sorted((path, host, data) for path, (host, data) in entries.items())


def image_tag() -> str:
    digest = hashlib.sha256()
    for path, host, data in rootfs_entries():
        digest.update(path.encode())
        if host and (path.startswith("/sandbox/") or path == "/usr/bin/python3"):
            with open(host, "rb") as f:
                digest.update(f.read())
        elif data:
            digest.update(data)
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def _add_dir(tar: tarfile.TarFile, path: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def build_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        made = set()
        for directory, mode in (("/tmp", 0o1777), ("/proc", 0o555), ("/dev", 0o755), ("/sys", 0o555),
                                ("/etc", 0o755), ("/usr", 0o755), ("/usr/bin", 0o755)):
            _add_dir(tar, directory, mode)
            made.add(directory)
        for link, target in (("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/bin", "usr/bin")):
            info = tarfile.TarInfo(link.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for path, host, data in rootfs_entries():
            path = path.replace("/lib64/", "/usr/lib64/", 1) if path.startswith("/lib64/") else path
            path = path.replace("/lib/", "/usr/lib/", 1) if path.startswith("/lib/") else path
            if path in made:
                continue
            made.add(path)
            parent = os.path.dirname(path)
            missing = []
            while parent not in made and parent != "/":
                missing.append(parent)
                parent = os.path.dirname(parent)
            for directory in reversed(missing):
                _add_dir(tar, directory)
                made.add(directory)
            if data is None:
                with open(host, "rb") as f:
                    data = f.read()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o755 if (host and os.access(host, os.X_OK)) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_image(client) -> str:
    """The tag of the sandbox image, importing it first when the daemon does not have it."""
    import docker

    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    repository, version = tag.split(":")
    client.api.import_image_from_data(build_tar(), repository=repository, tag=version)
    client.images.get(tag)
    return tag


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="build the sandbox root filesystem / image")
    parser.add_argument("--rootfs", help="write the tree to this directory instead of importing it")
    parser.add_argument("--tag", action="store_true", help="print the image tag for this runtime and exit")
    args = parser.parse_args(argv)
    if args.tag:
        print(image_tag())
        return 0
    if args.rootfs:
        with tarfile.open(fileobj=io.BytesIO(build_tar())) as tar:
            tar.extractall(args.rootfs)
        print(args.rootfs)
        return 0
    import docker
    print(ensure_image(docker.from_env()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
