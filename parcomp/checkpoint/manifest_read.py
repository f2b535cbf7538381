"""Reading a checkpoint's manifest from disk, defensively (local; no MPI): the file must be
regular, not a link, ours and small (:func:`read_bounded`: ``O_NOFOLLOW | O_NONBLOCK``
and ``fstat`` before a byte is read), its step the directory's, and the files it names
regular and of their recorded sizes (:func:`read_manifest`).  The parsing itself is
PURE: :class:`parcomp.checkpoint.manifest.Manifest`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from parcomp.checkpoint.format import MANIFEST, check_regular, check_step_dir, parse_step
from parcomp.checkpoint.manifest import MAX_MANIFEST_BYTES, Manifest
from parcomp.runtime.errors import CheckpointError, CheckpointSchemaError

__all__ = ["read_bounded", "read_manifest", "parse_manifest"]


def read_bounded(path: Path, limit: int = MAX_MANIFEST_BYTES, *, owner: bool = True) -> bytes:
    """Read a small file that must be a regular file, not a link, and (``owner``) ours.

    Opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat`` before reading, so a
    FIFO, a device, a symlink (to ``/dev/zero`` or elsewhere) or an oversized file is refused
    without blocking or reading it.

    Raises
    ------
    CheckpointError
        Missing file (a plain :class:`CheckpointError`: the checkpoint was not committed).
    CheckpointSchemaError
        Not a regular file, a link, too large, or owned by another user.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as exc:
        raise CheckpointSchemaError(
            f"{path}: cannot be opened as a plain file ({exc.strerror or exc}; symlinks are "
            "refused)"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointSchemaError(f"{path}: not a regular file (a FIFO, device or folder)")
        if owner and info.st_uid != os.getuid():
            raise CheckpointSchemaError(
                f"{path}: owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
            )
        if info.st_size > limit:
            raise CheckpointSchemaError(f"{path}: {info.st_size} bytes, more than {limit}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise CheckpointSchemaError(f"{path}: grew past {limit} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> Manifest:
    """Parse ``folder/manifest.json`` and check the files it names (regular, right size).

    Raises
    ------
    CheckpointSchemaError
        Any structural problem (see :class:`~parcomp.checkpoint.manifest.Manifest`), a
        file that is a link, a FIFO or a device.
    CheckpointError
        A file is missing or has the wrong size (truncated or padded).
    """
    manifest = parse_manifest(folder)
    for name, nbytes in manifest.files.items():
        check_regular(folder / name, nbytes)
    return manifest


def parse_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/manifest.json``, not the files it names.

    (A node-local checkpoint directory holds only some of the files its manifest names.)
    The manifest's step must match the directory name when that is ``step-N``.
    """
    check_step_dir(folder)
    path = folder / MANIFEST
    try:
        raw = read_bounded(path)
    except CheckpointSchemaError:
        raise
    except CheckpointError:
        raise CheckpointError(
            f"{folder}: no {MANIFEST}: the checkpoint was never committed"
        ) from None
    return Manifest.parse(raw, str(path), parse_step(folder.name))
