"""Where compiled kernels are cached, and how one node's cache files travel to the others
(local: paths and checks; :func:`node_leaders` makes a communicator of one rank per node).

By default the cache is node-local (``$PARCOMP_NODE_CACHE_DIR``, else ``$TMPDIR``, else
``/dev/shm``, else the temporary directory), one folder per user and node, mode 0700 and
checked at every level parcomp creates; a persistent cache shared by every rank is an
opt-in (``$PARCOMP_CACHE_DIR`` or ``$NUMBA_CACHE_DIR``).  Rank 0 compiles and the
files are broadcast to one rank per node as one message (:func:`pack_cache_files`, :func:`unpack_cache_files`:
bounded, validated names).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.nodes import node_name, safe_node_dirname
from parcomp.runtime.subcomm import comm_cache


def shared_cache() -> bool:
    """Whether the user opted in to a persistent cache shared by every rank
    (``$PARCOMP_CACHE_DIR`` or ``$NUMBA_CACHE_DIR``) instead of the node-local default."""
    return bool(os.environ.get("NUMBA_CACHE_DIR") or config.get("PARCOMP_CACHE_DIR"))


def node_cache_base() -> Path:
    """The node-local directory the default cache lives in (see the module notes)."""
    explicit = config.get("PARCOMP_NODE_CACHE_DIR")
    if explicit:
        return Path(os.path.abspath(explicit))
    tmp = os.environ.get("TMPDIR")
    if tmp:
        return Path(tmp)
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return Path("/dev/shm")
    import tempfile

    return Path(tempfile.gettempdir())


def cache_dir() -> Path:
    """The directory where Numba caches compiled kernels for parcomp (not created here)."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = config.get("PARCOMP_CACHE_DIR")
    if base:
        return Path(base) / "numba"
    return node_cache_base() / f"parcomp-{os.getuid()}" / safe_node_dirname(node_name()) / "numba"


def ensure_safe_cache_dir() -> Path:
    """:func:`cache_dir`, created and checked with :func:`ensure_safe_dir`; in the
    node-local default, every level parcomp creates is checked (``parcomp-<uid>``, the
    node's folder, ``numba``): on a shared ``/dev/shm`` anyone may create
    ``parcomp-<uid>`` first, and whoever owns a parent can swap what is below it."""
    path = cache_dir()
    if not shared_cache():
        base = node_cache_base()
        for level in reversed(path.relative_to(base).parents[:-1]):
            ensure_safe_dir(base / level)
    return ensure_safe_dir(path)


def ensure_safe_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and check that only this user can write it.

    Raises
    ------
    ConfigError
        If ``path`` is owned by another user, or writable by group or others.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the kernel cache directory {path}: {exc.strerror or exc}; "
            + (
                "set PARCOMP_NODE_CACHE_DIR to a writable node-local directory"
                if not shared_cache()
                else "check PARCOMP_CACHE_DIR / NUMBA_CACHE_DIR"
            )
        ) from None
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"cache directory {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            + (
                "set PARCOMP_CACHE_DIR or NUMBA_CACHE_DIR to a directory of your own"
                if shared_cache()
                else "set PARCOMP_NODE_CACHE_DIR to a node-local directory of your own"
            )
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"cache directory {path} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "compiled code loaded from it would run as you. Use `chmod go-w` or another directory"
        )
    return path


CACHE_FILE_NAME = re.compile(r"[A-Za-z0-9_.<>\-]+\.(nbi|[0-9]+\.nbc)")


def pack_cache_files(files: list[tuple[str, bytes]]) -> bytes:
    """Cache files as one buffer: a JSON header of names and sizes, then the bytes."""
    import json

    header = json.dumps([[name, len(data)] for name, data in files]).encode()
    return len(header).to_bytes(8, "little") + header + b"".join(data for _, data in files)


def unpack_cache_files(blob: bytes) -> list[tuple[str, bytes]]:
    """The inverse of :func:`pack_cache_files`, checking every size against the buffer."""
    import json

    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ConfigError("a kernel cache message is truncated")
    try:
        header = json.loads(blob[8 : 8 + n])
    except ValueError:  # bad JSON or bad UTF-8
        raise ConfigError("a kernel cache message has a malformed header") from None
    if not isinstance(header, list):
        raise ConfigError("a kernel cache message has a malformed header")
    files, at = [], 8 + n
    for entry in header:
        if not (isinstance(entry, list) and len(entry) == 2):
            raise ConfigError("a kernel cache message has a malformed header")
        name, size = entry
        if (
            not isinstance(name, str)
            or isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
        ):
            raise ConfigError("a kernel cache message has a malformed header")
        if at + size > len(blob):
            raise ConfigError("a kernel cache message is truncated")
        files.append((name, blob[at : at + size]))
        at += size
    return files


def node_leaders(comm: Any) -> Any:
    """The communicator of one rank per kernel cache directory in ``comm`` (the lowest of
    the ranks sharing it; None on the others), made once per communicator.

    Groups are made by ``Comm.Split`` on a hash of (node name, cache directory), then
    checked with a second hash (one ``Allreduce``): ranks whose hashes collide with
    another directory's form no group (each loads or compiles for itself, under the
    node-local lock).  O(log p): no rank gathers all the names.
    """
    from mpi4py import MPI

    cache = comm_cache(comm)
    if "jit.grouped" in cache:
        return cache.get("jit.leaders")
    ident = str(cache_dir()) if shared_cache() else f"{node_name()}\0{cache_dir()}"
    digest = hashlib.sha256(ident.encode()).digest()
    color = int.from_bytes(digest[:4], "little") & 0x3FFFFFFF
    check = int.from_bytes(digest[4:12], "little", signed=True)
    group = comm.Split(color, comm.Get_rank())
    both = np.array([check, -check], np.int64)
    group.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX)
    lead = group.Get_rank() == 0 or both[0] != -both[1]
    group.Free()
    leaders = comm.Split(0 if lead else MPI.UNDEFINED, comm.Get_rank())
    cache["jit.grouped"] = True
    if leaders == MPI.COMM_NULL:
        return None
    cache["jit.leaders"] = leaders
    return leaders
