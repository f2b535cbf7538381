"""The one checkpoint commit protocol, and the stores that plug into it.

COMMUNICATES: :meth:`Transaction.begin` and :meth:`Transaction.commit` are collective over
the store's communicator; :meth:`Transaction.write` is local (it may run in a background
thread), except for the mpio store, whose write is collective.

Every checkpoint, whichever tier or writer, is one transaction::

    begin   stage (the temp folder(s), made by their creators) -> agree
            reserve (posix_fallocate this rank's bytes)          -> agree
    write   into the reservation (a shard, a partner copy, a flushed copy, a slice of one
            shared file): an error is recorded, never raised mid-protocol
    commit  agree on the writes -> gather the records (JSON) -> rank 0 builds the manifest
            -> the committing ranks publish it (manifest last, rename) -> agree -> prune

A failure at any stage raises the same :class:`~parcomp.runtime.errors.CheckpointError` on every
rank, after the temp folders are removed; committed checkpoints are never touched until
a newer one is committed.  Only typed buffers and JSON travel between ranks
(:mod:`parcomp.runtime.wire`).

A :class:`Store` says where and how: the shared directory with a shard per rank
(:class:`SharedStore`, also used to flush a node-local checkpoint by copying its
shards), one shared file written through parallel HDF5 (:class:`MpioStore`), or the
node-local tier with partner copies (:class:`parcomp.checkpoint.local.NodeLocalStore`).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

from parcomp.checkpoint.format import MASTER, make_private_dir, private_file, step_dir_name
from parcomp.checkpoint.perrank import local_section
from parcomp.checkpoint.writer import (
    Snapshot,
    add_scalars,
    build_manifest,
    estimate_shard_bytes,
    manifest_arrays,
    prune,
    publish,
    reserve_space,
    write_master,
    write_shard,
    write_single_file,
)
from parcomp.io.slabs import fsync_path
from parcomp.runtime.errors import CheckpointError
from parcomp.runtime.wire import agree_errors, bcast_json, gather_json

__all__ = ["Pruner", "Store", "SharedStore", "MpioStore", "Transaction"]


class Pruner:
    """The background deletion of pruned checkpoints, joined before the next commit."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def join(self) -> None:
        """Wait for it (local)."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None


class Store:
    """Where a checkpoint goes and how its pieces are written (base class).

    Subclasses define :meth:`stage`, :meth:`need`, :meth:`write`, :meth:`manifest`,
    :meth:`publish`, and which ranks commit (:attr:`committer`).
    """

    #: True when the committing ranks are not just rank 0 (they then need the manifest).
    many_committers = False

    def __init__(self, directory: Path, comm: Any, pruner: Pruner | None = None) -> None:
        self.directory = directory
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.pruner = pruner or Pruner()

    @property
    def committer(self) -> bool:
        """Whether this rank creates the temp folder and publishes the checkpoint."""
        return self.rank == 0

    def stage(self, step: int, nonce: str) -> Path:
        """This rank's temp folder; the committers create it (before the agreement)."""
        tmp = self.directory / f".tmp-{step_dir_name(step)}-{nonce}"
        if self.committer:
            make_private_dir(self.directory)
            make_private_dir(tmp)
        return tmp

    def need(self, snap: Snapshot) -> int:
        """Bytes this rank reserves (collective in stores that ask their partners)."""
        return estimate_shard_bytes(snap) + (64 * 1024 if self.rank == 0 else 0)

    def write(self, tmp: Path, reserved: Path | None, step: int, snap: Snapshot) -> dict[str, Any]:
        """Write this rank's part into ``reserved``; return its record (JSON)."""
        return write_shard(tmp, self.rank, self.size, step, snap, reserved=reserved)

    def manifest(
        self, tmp: Path, step: int, records: list[dict[str, Any]], snap: Snapshot, state: dict
    ) -> dict[str, Any]:
        """Rank 0: the master file, then the manifest (a dict)."""
        arrays = manifest_arrays(snap.layout, records)
        write_master(tmp, step, self.size, arrays, state["scalars"])
        files = [{"name": rec["file"], "bytes": rec["bytes"]} for rec in records]
        files.append({"name": MASTER, "bytes": (tmp / MASTER).stat().st_size})
        return build_manifest(step, self.size, arrays, files, **_common(snap, records, state))

    def publish(self, tmp: Path, step: int, manifest: dict[str, Any], keep: int) -> Path:
        """The committers: write the manifest, rename; then prune (in the background)."""
        self.pruner.join()
        final = publish(self.directory, tmp, step, manifest)
        self.pruner.thread = prune(self.directory, keep, final)
        return final

    def describe(self, step: int) -> str:
        """What a checkpoint of ``step`` here is, for messages."""
        return f"checkpoint of step {step} in {self.directory}"

    def final(self, step: int) -> Path:
        """The committed folder of ``step`` as this rank names it."""
        return self.directory / step_dir_name(step)

    def abort(self, tmp: Path | None) -> None:
        """After a failed agreement: the committers remove the temp folder."""
        if self.committer and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _common(snap: Snapshot, records: list[dict[str, Any]], state: dict) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "scalars": state["scalars"],
        "rng": state["rng"],
        "meta": state["meta"],
    }
    if snap.per_rank:
        extra["local"] = local_section(snap.per_rank, records)
    return extra


class SharedStore(Store):
    """A shard per rank in the shared directory, and ``master.h5`` (a virtual dataset).

    With ``source`` (a flush of the node-local tier) a rank's shard is a copy of that
    file, written into the reservation like any shard.
    """

    def __init__(
        self,
        directory: Path,
        comm: Any,
        pruner: Pruner | None = None,
        source: Path | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(directory, comm, pruner)
        self.source = source
        self.record = record

    def need(self, snap: Snapshot) -> int:
        if self.source is None:
            return super().need(snap)
        return self.source.stat().st_size + (64 * 1024 if self.rank == 0 else 0)

    def write(self, tmp: Path, reserved: Path | None, step: int, snap: Snapshot) -> dict[str, Any]:
        if self.source is None or self.record is None:
            return super().write(tmp, reserved, step, snap)
        target = tmp / self.record["file"]
        copy_into(self.source, reserved, target)
        if target.stat().st_size != self.record["bytes"]:
            raise OSError(f"{target}: copied size differs from {self.source}")
        return self.record


def copy_into(source: Path, reserved: Path | None, target: Path) -> None:
    """Copy ``source`` into the reserved file (never releasing its space), trim, fsync,
    rename to ``target``."""
    if reserved is None:
        shutil.copyfile(source, target)
    else:
        with open(source, "rb") as src, open(reserved, "r+b") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
            dst.truncate()
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(reserved, target)
    private_file(target)
    fsync_path(target)


class MpioStore(Store):
    """One ``master.h5`` written collectively through parallel HDF5 (h5py's mpio driver).

    Parallel HDF5 allocates a dataset's space when the dataset is created (collectively,
    before any data is written), so a full disk fails there, cleanly; the reservation is
    given back just before that, a window of one ``create_dataset`` per array.
    """

    def need(self, snap: Snapshot) -> int:
        return estimate_shard_bytes(snap) + (64 * 1024 if self.rank == 0 else 0)

    def write(self, tmp: Path, reserved: Path | None, step: int, snap: Snapshot) -> dict[str, Any]:
        if reserved is not None:
            reserved.unlink()  # parallel HDF5 writes through its own driver
        record = write_single_file(tmp, self.comm, step, snap)
        record["bytes"] = 0  # the file's size goes into the manifest at commit
        return record

    def manifest(
        self, tmp: Path, step: int, records: list[dict[str, Any]], snap: Snapshot, state: dict
    ) -> dict[str, Any]:
        arrays = manifest_arrays(snap.layout, records)
        add_scalars(tmp / MASTER, state["scalars"])
        files = [{"name": MASTER, "bytes": (tmp / MASTER).stat().st_size}]
        return build_manifest(
            step, self.size, arrays, files, layout="single-file", **_common(snap, records, state)
        )


class Transaction:
    """One checkpoint of ``step`` into ``store``: :meth:`begin`, :meth:`write`, :meth:`commit`.

    ``state`` holds the JSON parts (``scalars``, ``rng``, ``meta``).  A failed stage
    raises :class:`CheckpointError` on every rank, naming every failing rank's problem.
    """

    def __init__(self, store: Store, step: int, snap: Snapshot, state: dict, keep: int) -> None:
        self.store = store
        self.step = step
        self.snap = snap
        self.state = state
        self.keep = keep
        self.tmp: Path | None = None
        self.reserved: Path | None = None
        self.result: dict[str, Any] | str | None = None
        self.thread: threading.Thread | None = None
        self.extra: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return self.store.describe(self.step)

    def _fail(self, errors: list[str], what: str = "failed") -> CheckpointError:
        self.store.abort(self.tmp)
        return CheckpointError(
            f"{self.where} {what}; previous checkpoints kept. " + "; ".join(errors)
        )

    def begin(self) -> None:
        """Stage and reserve (collective)."""
        store, rank = self.store, self.store.rank
        nonce = bcast_json(store.comm, os.urandom(6).hex() if rank == 0 else None)
        mine = None
        try:
            self.tmp = store.stage(self.step, nonce)
        except OSError as exc:
            mine = f"rank {rank}: cannot create a checkpoint in {store.directory}: {exc}"
        errors = agree_errors(store.comm, mine)
        if errors:
            raise self._fail(errors)
        need = 0
        try:
            need = store.need(self.snap)  # may be collective: every rank calls it
            self.reserved = reserve_space(self.tmp, rank, need)
        except OSError as exc:
            mine = f"rank {rank}: cannot reserve {need} bytes: {exc}"
        errors = agree_errors(store.comm, mine)
        if errors:
            raise self._fail(errors)

    def write(self) -> None:
        """Write this rank's part; an error is kept for :meth:`commit` (local, or
        collective for :class:`MpioStore`)."""
        from mpi4py import MPI

        reserved, self.reserved = self.reserved, None
        try:
            self.result = self.store.write(self.tmp, reserved, self.step, self.snap)
        except MPI.Exception:  # a dead peer (ULFM): for run_resilient, not a bad write
            raise
        except Exception as exc:  # noqa: BLE001 - h5py's ValueError too: every rank must agree
            self.result = f"rank {self.store.rank}: writing failed: {type(exc).__name__}: {exc}"

    def start(self) -> None:
        """:meth:`write` in a background thread."""
        self.thread = threading.Thread(
            target=self.write, name=f"parcomp-checkpoint-{self.step}", daemon=True
        )
        self.thread.start()

    @property
    def busy(self) -> bool:
        """Whether the background write is still running."""
        return self.thread is not None and self.thread.is_alive()

    def commit(self) -> Path:
        """Agree, build the manifest, publish, prune (collective).  Returns this rank's
        committed folder."""
        store, rank = self.store, self.store.rank
        if self.thread is not None:
            self.thread.join()
        mine = self.result if isinstance(self.result, str) else None
        errors = agree_errors(store.comm, mine)
        if errors:
            raise self._fail(errors)
        records = gather_json(store.comm, self.result)
        manifest, mine = None, None
        if rank == 0:
            try:
                manifest = store.manifest(self.tmp, self.step, records, self.snap, self.state)
            except Exception as exc:  # noqa: BLE001 - any failure here must reach the agreement
                mine = f"rank 0: writing the master file or manifest failed: {exc!r}"
        if store.many_committers:
            manifest = bcast_json(store.comm, manifest)
        if store.committer and manifest is not None:
            try:
                store.publish(self.tmp, self.step, manifest, self.keep)
            except Exception as exc:  # noqa: BLE001 - any failure here must reach the agreement
                mine = f"rank {rank}: committing failed: {exc!r}"
        errors = agree_errors(store.comm, mine)
        if errors:
            raise self._fail(errors, "failed to commit")
        return store.final(self.step)
