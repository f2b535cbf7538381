"""The checkpoint API: a ``Checkpointer`` bound to a directory and a policy.

COMMUNICATES: ``save``, ``restore``, ``checkpoint_if_due``, ``wait`` and ``close`` are
collectives over the checkpointer's communicator.

This module is the *policy*: when to save (every N steps, every T seconds, on a
preemption signal), where (shared directory, node-local tier, flushes), synchronously or
in the background, and what to restore.  *How* a checkpoint is written is the one commit
protocol of :mod:`parcomp.checkpoint.transaction`; how it is read back, the one restore
engine of :mod:`parcomp.checkpoint.restore`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp._renamed import renamed_keywords
from parcomp.checkpoint import preempt
from parcomp.checkpoint.lease import Lease, claim
from parcomp.checkpoint.reader import Restored
from parcomp.checkpoint.restore import load_latest
from parcomp.checkpoint.saving import Saving
from parcomp.checkpoint.transaction import MpioStore, Pruner, SharedStore, Store, Transaction
from parcomp.checkpoint.values import check_options, check_required
from parcomp.runtime.errors import CheckpointError, ConfigError
from parcomp.runtime.log import get_logger
from parcomp.runtime.ranks import resolve_comm
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["Checkpointer"]


class Checkpointer(Saving):
    """Checkpoints to ``directory`` on a policy; restores the newest valid one on any rank count.

    Parameters
    ----------
    directory : str or Path
        Where the ``step-NNNNNNNN`` checkpoint directories go (created if needed).
    every : int, optional
        :meth:`checkpoint_if_due` saves when ``step`` is a multiple of this.
    every_seconds : float, optional
        ... or when this much time passed since the last save (rank 0's clock decides).
    keep : int, default 2
        Committed checkpoints to keep; older ones are pruned after a newer one commits.
    asynchronous : bool, default False
        ``save`` snapshots the arrays to memory and writes the shards in a background
        thread while compute continues; the commit (master, manifest, rename) happens at
        the next ``save``, ``checkpoint_if_due`` boundary that saves, ``wait`` or ``close``.
    handle_signals : bool, default True
        Install the SIGTERM/SIGUSR1/SIGUSR2 flag handlers (main thread only).
    local_directory : str or Path, optional
        Fast node-local storage (``/dev/shm/<job>``, a local SSD): checkpoints are written
        there first, in ``local_directory/node-<name>/``, each shard also copied to a partner rank
        on another node (:mod:`parcomp.checkpoint.local`); ``directory`` then receives
        flushed copies, written in the background.  Node names come from the hostname,
        or ``PARCOMP_NODE_NAME`` / ``PARCOMP_EMULATE_NODES`` (:mod:`parcomp.runtime.nodes`).
    mpio : bool, default False
        Write each checkpoint as one file, ``master.h5``, collectively through parallel
        HDF5 (the ``mpio`` driver) instead of a shard per rank; needs an h5py built with
        MPI (the pip h5py is serial).  The manifest, checksums and restore on any rank
        count work the same.  Not with ``local_directory`` or ``asynchronous``.
    shared_ok : bool, default False
        Accept a directory (or ``local_directory``) that group or others may write into.  By
        default such a directory, or one owned by another user, is refused at
        construction: whoever can write there can plant a checkpoint that a restore would
        load.  Folders and files parcomp creates are 0700/0600 whatever the umask.
    flush_every : int or None, default 1
        With ``local_directory``: flush every this many node-local checkpoints to ``directory``
        (asynchronously; committed at the next save, ``wait`` or ``close``).  None: never
        (a node lost together with its partner node then loses the checkpoint).
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: parcomp's default communicator).

    Notes
    -----
    Construction is collective: every rank checks that it can write the directories, and
    all raise together if one cannot.  The methods listed in the module docstring are
    collective too.
    """

    @renamed_keywords(
        "Checkpointer", async_write="asynchronous", every_steps="every", local_dir="local_directory"
    )
    def __init__(
        self,
        directory: str | Path,
        *,
        every: int | None = None,
        every_seconds: float | None = None,
        keep: int = 2,
        asynchronous: bool = False,
        handle_signals: bool = True,
        comm: MPI.Comm | None = None,
        local_directory: str | Path | None = None,
        flush_every: int | None = 1,
        mpio: bool = False,
        shared_ok: bool = False,
    ) -> None:
        check_options(every, every_seconds, keep, flush_every, local_directory, asynchronous, mpio)
        self.mpio = bool(mpio)
        self.shared_ok = bool(shared_ok)
        self.directory = Path(directory)
        self.local_directory = None if local_directory is None else Path(local_directory)
        self.flush_every = flush_every
        self._tier: Any = None
        self._local_saves = 0
        self.flushes = 0
        self.flush_failures = 0
        self.every = every
        self.every_seconds = every_seconds
        self.keep = keep
        self.asynchronous = asynchronous
        self.comm = resolve_comm(comm)
        self.log = get_logger("parcomp.checkpoint")
        self._last_save = time.monotonic()
        #: The transaction written in the background (async save or flush), not committed.
        self._open: Transaction | None = None
        self._pruner = Pruner()
        store = MpioStore if self.mpio else SharedStore
        self._store: Store = store(self.directory, self.comm, self._pruner)
        self.last_path: Path | None = None
        self.saves = 0
        self.seconds_blocked = 0.0
        if handle_signals:
            preempt.install_handlers()
        folders = [self.directory] + (
            [self.local_directory] if self.local_directory is not None else []
        )
        self._lease: Lease | None = claim(folders, self.comm, self.shared_ok)

    def abandon(self) -> None:
        """Give up the directory's lease without the collective :meth:`close` (local; after
        an error that not every rank saw).  A checkpoint still being written in the
        background is not committed; the last committed one stays the newest."""
        self._release_lease()

    def _release_lease(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._tier is not None:
            self._tier.release()

    # ------------------------------------------------------------------ policy
    def due(self, step: int) -> tuple[bool, int]:
        """Whether to save now, and the preemption signal (0 if none); agreed by all ranks.

        One ``allreduce`` of three integers: the time policy is rank 0's clock, the signal
        is any rank's, and whether a background write or flush is still running anywhere;
        once it is done everywhere, it is committed here.
        """
        from mpi4py import MPI

        by_step = self.every is not None and step % self.every == 0
        by_time = (
            self.every_seconds is not None
            and self.comm.Get_rank() == 0
            and time.monotonic() - self._last_save >= self.every_seconds
        )
        pending = self._open
        busy = int(pending is not None and pending.busy)
        flags = np.array([int(by_step or by_time), preempt.requested(), busy], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        if pending is not None and not flags[2]:
            # Every rank's background write (or flush) is done: commit it now rather than
            # at the next save, so that it counts as soon as possible.
            self.wait()
        return bool(flags[0] or flags[1]), int(flags[1])

    # 0.2's attribute names, until 0.4
    @property
    def every_steps(self) -> int | None:
        """Deprecated: :attr:`every`."""
        return _old_attribute(self, "every_steps", "every")

    @property
    def async_write(self) -> bool:
        """Deprecated: :attr:`asynchronous`."""
        return _old_attribute(self, "async_write", "asynchronous")

    @property
    def local_dir(self) -> Path | None:
        """Deprecated: :attr:`local_directory`."""
        return _old_attribute(self, "local_dir", "local_directory")

    @collective("Checkpointer.checkpoint_if_due")
    def checkpoint_if_due(self, step: int, **state: Any) -> bool:
        """At a step boundary: save if the policy says so or a preemption signal arrived.

        ``state`` is passed to :meth:`save` (``arrays=``, ``scalars=``, ``rng=``, ``meta=``).
        After a preemption checkpoint (written synchronously and committed) every rank
        raises :class:`~parcomp.checkpoint.preempt.Preempted`, a ``SystemExit`` with status
        75.  Returns whether a checkpoint was started.
        """
        save, signum = self.due(step)
        if not save:
            return False
        if signum:
            self.log.warning(
                "preemption signal %d received: checkpointing step %d, then exiting with status %d",
                signum,
                step,
                preempt.PREEMPTED_STATUS,
            )
            self.wait()
            self._save(step, *_parts(state), asynchronous=False, flush=True)  # other nodes next
            self.wait()
            raise preempt.Preempted(signum)
        self.save(step, **state)
        return True

    @renamed_keywords("Checkpointer.restore", arrays="layouts")
    @collective("Checkpointer.restore")
    def restore(
        self,
        layouts: Mapping[str, Mapping[str, Any]] | None = None,
        redeal: Callable[[list[int], int, int], tuple[int, int]] | None = None,
        require: Mapping[str, Any] | None = None,
    ) -> Restored | None:
        """Restore the newest valid checkpoint on the current ranks (collective), or None.

        Parameters
        ----------
        layouts : dict, optional
            Per array, DistArray options to change on restore (``halo``, ``periods``,
            ``dims``); by default the saved halo and periods, and a new process grid when
            the rank count changed.
        redeal : callable, optional
            For per-rank data (``local=``): ``redeal(lengths, rank, size)`` returns the
            ``(start, stop)`` range of the concatenation of the saved pieces that this rank
            gets.  Default: its own piece on the same rank count, else balanced blocks.
            ``Restored.local[name]`` holds the result.
        require : dict, optional
            Scalars the checkpoint must hold with these values (the run's parameters, such
            as ``{"alpha": 0.24}``).  A checkpoint of another run, planted or left in the
            directory, then raises a :class:`~parcomp.ConfigError` on every rank instead
            of being resumed with the wrong parameters.

        Raises
        ------
        ConfigError
            If ``require`` does not match the checkpoint restored.
        """

        self.wait()
        restored = load_latest(
            self.directory,
            self.comm,
            {k: dict(v) for k, v in (layouts or {}).items()},
            local=self._local_tier() if self.local_directory is not None else None,
            redeal=redeal,
        )
        self._last_save = time.monotonic()
        if restored is not None and require:
            check_required(restored, require, self.comm)
        if restored is not None and restored.rebuilt:
            self._reprotect(restored)
        return restored

    def _reprotect(self, restored: Restored) -> None:
        """After shards came from partner copies: write the step again, node-local only.

        Until then those shards had a single copy; now every shard has two again, laid
        out for the current ranks and nodes.  Only when what this job holds is all the
        checkpoint held: a ``redeal`` that dropped or repeated per-rank rows would change
        the checkpoint, so it is left as it is.  A failure (a full node-local disk) is a
        warning: the job goes on with the data it restored.
        """
        if not restored.local_whole:
            self.log.warning(
                "step %d: %s came from partner copies, but they are not written again: the "
                "per-rank data were re-dealt (redeal=) and a new checkpoint of them would not "
                "hold the saved rows; they keep a single copy until the next checkpoint",
                restored.step,
                ", ".join(restored.rebuilt),
            )
            return
        generators = {name: restored.generator(name) for name in restored.rng_states}
        try:
            self._save(
                restored.step,
                restored.arrays,
                restored.scalars,
                generators,
                restored.meta,
                restored.local or None,
                asynchronous=False,
                flush=None,
            )
        except CheckpointError as exc:  # raised on every rank alike
            self.log.warning(
                "step %d restored, but writing it again to restore its partner copies failed; "
                "going on with a single copy of %d shard(s) until the next checkpoint: %s",
                restored.step,
                len(restored.rebuilt),
                exc,
            )
            return
        self.log.info(
            "step %d written again to the node-local tier: every shard has its partner copy again",
            restored.step,
        )

    latest = restore


def _parts(state: Mapping[str, Any]) -> tuple[Any, ...]:
    """``checkpoint_if_due``'s keyword state as :meth:`Checkpointer._save`'s arguments."""
    unknown = set(state) - {"arrays", "scalars", "rng", "meta", "local"}
    if unknown:
        raise ConfigError(f"checkpoint_if_due got unknown state {sorted(unknown)}")
    return tuple(state.get(k) for k in ("arrays", "scalars", "rng", "meta", "local"))


def _old_attribute(ck: Checkpointer, old: str, new: str) -> Any:
    warnings.warn(
        f"Checkpointer.{old} is now Checkpointer.{new}; the old name goes in parcomp 0.4",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(ck, new)
