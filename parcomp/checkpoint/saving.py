"""Running checkpoints: save (synchronously or in the background), flush, wait, close.

COMMUNICATES: ``save``, ``wait`` and ``close`` are collectives over the checkpointer's
communicator.

The mechanics half of :class:`~parcomp.Checkpointer` (a mixin): it turns a save into
transactions of the one commit protocol (:mod:`parcomp.checkpoint.transaction`), on the
shared directory, the node-local tier, or as a flush of the latter into the former, and
keeps the one transaction that may be open (written in the background, committed at the
next boundary).  *When* to save is the policy in :mod:`parcomp.checkpoint.checkpointer`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.local import LocalTier, NodeLocalStore
from parcomp.checkpoint.perrank import check_local
from parcomp.checkpoint.transaction import SharedStore, Store, Transaction
from parcomp.checkpoint.values import check_name, save_state
from parcomp.checkpoint.writer import Snapshot
from parcomp.runtime.errors import CheckpointError, ConfigError
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.watchdog import collective

__all__ = ["Saving"]


class Saving:
    """Saving, flushing and committing for :class:`~parcomp.Checkpointer` (a mixin: the
    attributes it uses are set by ``Checkpointer.__init__``)."""

    comm: Any
    log: Any
    directory: Path
    local_directory: Path | None
    keep: int
    mpio: bool
    asynchronous: bool
    flush_every: int | None
    saves: int
    flushes: int
    flush_failures: int
    seconds_blocked: float
    last_path: Path | None
    _open: Transaction | None
    _store: Store
    _pruner: Any
    _tier: Any
    _local_saves: int
    _last_save: float

    @collective("Checkpointer.save")
    def save(
        self,
        step: int,
        arrays: Mapping[str, Any] | None = None,
        scalars: Mapping[str, Any] | None = None,
        rng: Mapping[str, np.random.Generator] | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        local: Mapping[str, np.ndarray] | None = None,
        flush: bool = False,
    ) -> Path | None:
        """Write a checkpoint of ``step`` (collective).

        Parameters
        ----------
        step : int
            Step number (>= 0); names the checkpoint.
        arrays : dict of str to DistArray
            Distributed arrays, stored as global datasets.
        scalars : dict
            Numbers, strings, lists, dicts, small arrays (JSON in the manifest, numbers also
            as attributes of ``/scalars`` in ``master.h5``).  The same on every rank: rank 0's
            are stored.
        rng : dict of str to numpy.random.Generator
            Generators whose exact state is stored (as NumPy's state dict, not a pickle).
            Rank 0's are stored; give per-rank streams as arrays or derive them from the step.
        meta : dict
            Free-form user metadata (JSON).
        local : dict of str to numpy.ndarray
            Per-rank data: each rank's own array, of any length along axis 0 (particles,
            per-rank RNG states as numbers ...); dtype and trailing shape the same on
            every rank.  :meth:`restore` deals the concatenation (in saved-rank order)
            out again: each rank its own piece on the same rank count, balanced blocks on
            another, or as ``redeal`` says.  Both tiers; not with ``mpio`` (one file).
        flush : bool
            With ``local_directory``: flush this checkpoint to ``directory`` whatever
            ``flush_every`` says.

        Returns
        -------
        Path or None
            The committed checkpoint directory (None when ``asynchronous``: see ``wait``);
            with ``local_directory``, this node's node-local directory.

        Raises
        ------
        CheckpointError
            On every rank, if writing failed anywhere; older checkpoints stay intact.
        """
        return self._save(step, arrays, scalars, rng, meta, local, self.asynchronous, flush)

    def _save(
        self,
        step: int,
        arrays: Mapping[str, Any] | None,
        scalars: Mapping[str, Any] | None,
        rng: Mapping[str, np.random.Generator] | None,
        meta: Mapping[str, Any] | None,
        local: Mapping[str, np.ndarray] | None,
        asynchronous: bool,
        flush: bool | None,
    ) -> Path | None:
        """:meth:`save` with the policy made explicit: ``flush`` True (now), False (as
        ``flush_every`` says) or None (never)."""
        t0 = time.perf_counter()
        self.wait()
        step, arrays, state = save_state(step, arrays, scalars, rng, meta, self.comm)
        per_rank = check_local(local, self.comm, check_name)
        if per_rank and self.mpio:
            raise mark_everywhere(
                ConfigError(
                    "local= (per-rank data) goes into per-rank shards: not with mpio=True (one "
                    "shared file); use the default shard-per-rank writer"
                ),
                self.comm,
            )
        snap = Snapshot(arrays, copy=asynchronous, per_rank=per_rank)
        if self.local_directory is not None:
            path: Path | None = self._save_local(step, snap, state, flush)
        else:
            tx = Transaction(self._store, step, snap, state, self.keep)
            tx.begin()
            if asynchronous:
                tx.start()
                self._open, path = tx, None
            else:
                tx.write()
                path = self._committed(tx, tx.commit())
        self.seconds_blocked += time.perf_counter() - t0
        return path

    def _local_tier(self) -> Any:
        """The node-local tier, set up on first use (collective: gathers node names)."""
        if self._tier is None:
            self._tier = LocalTier(self.local_directory, self.comm, job=self.directory)
            if self._tier.rank == 0:
                self.log.info("%s", self._tier.describe())
        return self._tier

    def _save_local(self, step: int, snap: Snapshot, state: dict, flush: bool | None) -> Path:
        """Node-local checkpoint with partner copies, then maybe a background flush."""

        tx = Transaction(NodeLocalStore(self._local_tier()), step, snap, state, self.keep)
        self.log.debug("writing the node-local checkpoint of step %d", step)
        tx.begin()
        tx.write()
        final = self._committed(tx, tx.commit())
        self._local_saves += 1
        due = bool(self.flush_every) and self._local_saves % (self.flush_every or 1) == 0
        if flush or (flush is False and due):
            record = tx.result if isinstance(tx.result, dict) else None
            source = None if record is None else final / record["file"]
            store = SharedStore(self.directory, self.comm, self._pruner, source, record)
            flushing = Transaction(store, step, snap, state, self.keep)
            self.log.debug("flushing step %d to %s", step, self.directory)
            try:
                flushing.begin()
            except CheckpointError as exc:  # on every rank alike
                self._flush_failed(step, exc)
                return final
            flushing.start()
            self._open = flushing
        return final

    def _flush_failed(self, step: int, exc: CheckpointError) -> None:
        """A flush that failed is a warning: the node-local checkpoint it copies stands."""
        self.flush_failures += 1
        self.log.warning(
            "flushing step %d to %s failed; its node-local checkpoint stands (a node lost "
            "together with its partner node would lose it): %s",
            step,
            self.directory,
            exc,
        )

    def _committed(self, tx: Transaction, path: Path) -> Path:
        """Bookkeeping after a commit: a save (either tier) or a flush."""
        if _is_flush(tx):
            self.flushes += 1
            self.log.info("checkpoint of step %d flushed to %s", tx.step, path)
            return path
        self._last_save = time.monotonic()
        self.last_path = path
        self.saves += 1
        tier = "node-local checkpoint" if self.local_directory is not None else "checkpoint"
        self.log.info("%s of step %d committed: %s", tier, tx.step, path)
        return path

    def wait(self) -> Path | None:
        """Finish a background save or flush: join its writer, then commit (collective)."""
        tx, self._open = self._open, None
        if tx is None:
            return None
        t0 = time.perf_counter()
        try:
            return self._committed(tx, tx.commit())
        except CheckpointError as exc:
            if not _is_flush(tx):
                raise
            self._flush_failed(tx.step, exc)
            return None
        finally:
            self.seconds_blocked += time.perf_counter() - t0

    def __del__(self) -> None:
        tx = getattr(self, "_open", None)
        if tx is not None:  # a collective commit cannot run here: say what is lost
            try:
                self.log.warning(
                    "a Checkpointer was dropped with its background write of step %d not "
                    "committed (call wait() or close()): that checkpoint is lost",
                    tx.step,
                )
            except Exception:  # noqa: BLE001 - at interpreter exit logging may be gone
                pass

    def close(self) -> None:
        """Commit any pending asynchronous checkpoint, finish pruning, give up the directory's
        lease (collective)."""
        self.wait()
        self._pruner.join()
        self.comm.Barrier()  # every rank returns once rank 0's pruning is done
        self._release_lease()


def _is_flush(tx: Transaction) -> bool:
    """Whether ``tx`` copies a node-local checkpoint to the shared directory."""
    return isinstance(tx.store, SharedStore) and tx.store.source is not None
