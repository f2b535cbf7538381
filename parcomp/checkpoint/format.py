"""The on-disk checkpoint format: names, the manifest, slabs and their checksums.

PURE apart from reading and writing files; no MPI.

Layout (``DIR`` is the checkpointer's directory)::

    DIR/step-00000100/               one directory per checkpoint, committed by rename
        manifest.json                the commit point (written last, inside the directory)
        master.h5                    one global dataset per array (HDF5 virtual datasets,
                                     relative paths) + /scalars attributes, for h5py/h5dump
        shard-00000-of-00004.h5      rank 0's blocks: /arrays/<name>, chunked by slabs
        ...
    DIR/.tmp-step-00000100-<nonce>/  a checkpoint being written (never read; removed)

Slabs, their checksums and fsync are :mod:`parcomp.io.slabs` (output files use them too).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parcomp._renamed import moved_names
from parcomp.io.slabs import fsync_path
from parcomp.runtime.errors import CheckpointError, CheckpointSchemaError

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "MANIFEST",
    "MASTER",
    "step_dir_name",
    "shard_name",
    "parse_step",
    "overlap",
    "write_json_atomic",
    "check_regular",
    "check_step_dir",
    "check_owned_dir",
    "make_private_dir",
    "private_file",
]

FORMAT = "parcomp-checkpoint"
SCHEMA_VERSION = 2  # 2: manifest_sha256; version 1 checkpoints are still read
MANIFEST = "manifest.json"
MASTER = "master.h5"
_STEP_RE = re.compile(r"^step-(\d{8,})$")


def step_dir_name(step: int) -> str:
    """``step-00000100``."""
    return f"step-{step:08d}"


def parse_step(name: str) -> int | None:
    """The step of a committed checkpoint directory name, or None."""
    match = _STEP_RE.match(name)
    return int(match.group(1)) if match else None


def shard_name(rank: int, size: int) -> str:
    """``shard-00003-of-00004.h5``."""
    return f"shard-{rank:05d}-of-{size:05d}.h5"


def overlap(
    start: Sequence[int], shape: Sequence[int], ranges: Sequence[tuple[int, int]]
) -> tuple[slice, ...] | None:
    """Global index slices where the block at ``start`` of ``shape`` meets ``ranges``, or None."""
    out = []
    for s, n, (lo, hi) in zip(start, shape, ranges, strict=True):
        a, b = max(s, lo), min(s + n, hi)
        if a >= b:
            return None
        out.append(slice(a, b))
    return tuple(out)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temp name, fsync, ``os.replace``, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    with open(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def check_regular(path: Path, nbytes: int | None = None) -> None:
    """Raise unless ``path`` is a regular file (not a link) of ours, of ``nbytes`` if given."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: named in the manifest, missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointSchemaError(
            f"{path}: not a regular file (links, FIFOs and devices are refused)"
        )
    if info.st_uid != os.getuid():
        raise CheckpointSchemaError(
            f"{path}: owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
        )
    if nbytes is not None and info.st_size != nbytes:
        raise CheckpointError(
            f"{path}: has {info.st_size} bytes, the manifest says {nbytes} (truncated or altered)"
        )


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700 whatever the umask; leave existing ones."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for created in missing:
        try:
            os.chmod(created, 0o700)
        except OSError:
            pass


def private_file(path: Path) -> None:
    """Make a file we wrote readable by us alone (0600), whatever the umask."""
    os.chmod(path, 0o600)


def check_owned_dir(path: Path, shared_ok: bool = False) -> None:
    """Refuse a checkpoint folder that another user owns, or that others may write into.

    Someone who can write there can plant a checkpoint that a restore would load.  With
    ``shared_ok`` a group- or world-writable folder of yours is accepted.

    Raises
    ------
    CheckpointError
        Naming the owner or the mode, and how to opt in.
    """
    info = path.stat()
    if info.st_uid != os.getuid():
        raise CheckpointError(
            f"checkpoint directory {path} belongs to uid {info.st_uid}, not to you (uid "
            f"{os.getuid()}): its content could have been planted. Use a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not shared_ok:
        raise CheckpointError(
            f"checkpoint directory {path} is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): someone else could plant a checkpoint there. "
            "Use a private subdirectory (e.g. /dev/shm/$USER-job), `chmod go-w` it, or pass "
            "shared_ok=True if you trust everyone who can write it"
        )


def check_step_dir(folder: Path) -> None:
    """Raise unless ``folder`` is a real directory (a symlink could lead anywhere)."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: missing") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CheckpointSchemaError(f"{folder}: not a directory (symlinks are refused)")


#: 0.2 names: slabs and checksums are io's now (output files use them too).
__getattr__ = moved_names(
    __name__,
    {
        n: f"parcomp.io.slabs.{n}"
        for n in (
            "checksum",
            "slab_rows",
            "slab_bounds",
            "slab_checksums",
            "fsync_path",
            "SLAB_BYTES",
        )
    },
)
