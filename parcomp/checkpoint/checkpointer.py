"""The checkpoint API: a ``Checkpointer`` bound to a directory and a policy.

COMMUNICATES: ``save``, ``restore``, ``checkpoint_if_due``, ``wait`` and ``close`` are
collectives over the checkpointer's communicator.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parcomp.checkpoint import preempt
from parcomp.checkpoint.format import check_owned_dir, make_private_dir
from parcomp.checkpoint.lease import Lease
from parcomp.checkpoint.perrank import check_local
from parcomp.checkpoint.reader import Restored, load_latest
from parcomp.checkpoint.values import check_name as _check_name
from parcomp.checkpoint.values import check_same as _check_same
from parcomp.checkpoint.values import jsonable as _jsonable
from parcomp.checkpoint.writer import (
    Snapshot,
    commit_checkpoint,
    estimate_shard_bytes,
    reserve_space,
    write_shard,
    write_single_file,
)
from parcomp.comm import (
    get_logger,
    mark_everywhere,
    raise_if_any,
    raise_if_differ,
    resolve_comm,
)
from parcomp.errors import CheckpointError, ConfigError
from parcomp.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["Checkpointer"]


class Checkpointer:
    """Checkpoints to ``directory`` on a policy; restores the newest valid one on any rank count.

    Parameters
    ----------
    directory : str or Path
        Where the ``step-NNNNNNNN`` checkpoint directories go (created if needed).
    every_steps : int, optional
        :meth:`checkpoint_if_due` saves when ``step`` is a multiple of this.
    every_seconds : float, optional
        ... or when this much time passed since the last save (rank 0's clock decides).
    keep : int, default 2
        Committed checkpoints to keep; older ones are pruned after a newer one commits.
    async_write : bool, default False
        ``save`` snapshots the arrays to memory and writes the shards in a background
        thread while compute continues; the commit (master, manifest, rename) happens at
        the next ``save``, ``checkpoint_if_due`` boundary that saves, ``wait`` or ``close``.
    handle_signals : bool, default True
        Install the SIGTERM/SIGUSR1/SIGUSR2 flag handlers (main thread only).
    local_dir : str or Path, optional
        Fast node-local storage (``/dev/shm/<job>``, a local SSD): checkpoints are written
        there first, in ``local_dir/node-<name>/``, each shard also copied to a partner rank
        on another node (:mod:`parcomp.checkpoint.local`); ``directory`` then receives
        flushed copies, written in the background.  Node names come from the hostname,
        or ``PARCOMP_NODE_NAME`` / ``PARCOMP_EMULATE_NODES`` (:mod:`parcomp.nodes`).
    mpio : bool, default False
        Write each checkpoint as one file, ``master.h5``, collectively through parallel
        HDF5 (the ``mpio`` driver) instead of a shard per rank; needs an h5py built with
        MPI (the pip h5py is serial).  The manifest, checksums and restore on any rank
        count work the same.  Not with ``local_dir`` or ``async_write``.
    shared_ok : bool, default False
        Accept a directory (or ``local_dir``) that group or others may write into.  By
        default such a directory, or one owned by another user, is refused at
        construction: whoever can write there can plant a checkpoint that a restore would
        load.  Folders and files parcomp creates are 0700/0600 whatever the umask.
    flush_every : int or None, default 1
        With ``local_dir``: flush every this many node-local checkpoints to ``directory``
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

    def __init__(
        self,
        directory: str | Path,
        *,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        keep: int = 2,
        async_write: bool = False,
        handle_signals: bool = True,
        comm: MPI.Comm | None = None,
        local_dir: str | Path | None = None,
        flush_every: int | None = 1,
        mpio: bool = False,
        shared_ok: bool = False,
    ) -> None:
        if every_steps is not None and (
            isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 1
        ):
            raise ConfigError(f"every_steps must be a positive integer, got {every_steps!r}")
        if every_seconds is not None and not every_seconds > 0:
            raise ConfigError(f"every_seconds must be positive, got {every_seconds!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"keep must be a positive integer, got {keep!r}")
        if flush_every is not None and (
            isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1
        ):
            raise ConfigError(
                f"flush_every must be a positive integer or None, got {flush_every!r}"
            )
        if local_dir is not None and async_write:
            raise ConfigError(
                "async_write applies to the shared directory alone; with local_dir the "
                "node-local write is synchronous (it goes to fast storage) and the flush to "
                "the shared directory is always asynchronous"
            )
        if mpio:
            from parcomp.checkpoint.writer import mpio_available

            if local_dir is not None or async_write:
                raise ConfigError(
                    "mpio writes one shared file collectively: it cannot be combined with "
                    "local_dir (per-node shards) or async_write (a collective write in a "
                    "background thread)"
                )
            if not mpio_available():
                raise ConfigError(
                    "mpio=True needs h5py built with MPI (parallel HDF5); this h5py is serial "
                    "(the PyPI wheel is). Leave mpio off: one shard per rank is the default"
                )
        self.mpio = bool(mpio)
        self.shared_ok = bool(shared_ok)
        self.directory = Path(directory)
        self.local_dir = None if local_dir is None else Path(local_dir)
        self.flush_every = flush_every
        self._tier: Any = None
        self._local_saves = 0
        self.flushes = 0
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(
                f"checkpoint directory {self.directory} exists and is not a directory"
            )
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.keep = keep
        self.async_write = async_write
        self.comm = resolve_comm(comm)
        self.log = get_logger("parcomp.checkpoint")
        self._last_save = time.monotonic()
        self._pending: dict[str, Any] | None = None
        self._placeholder: Path | None = None
        self._pruner: threading.Thread | None = None
        self.last_path: Path | None = None
        self.saves = 0
        self.seconds_blocked = 0.0
        if handle_signals:
            preempt.install_handlers()
        self._lease: Lease | None = None
        self._check_writable()

    def _check_writable(self) -> None:
        """Every rank creates the directories and a probe file in each; agreed collectively.

        A read-only file system, a path under a file or ``/proc`` fails here, at
        construction, instead of at the first save hours later.
        """
        error: BaseException | None = None
        folders = [self.directory] + ([self.local_dir] if self.local_dir is not None else [])
        raise_if_differ(
            [str(f.absolute()) for f in folders],
            self.comm,
            lambda differ, mine, _: (
                f"checkpoint directories differ between ranks: ranks "
                f"{differ} use another path than rank 0 ({mine}); every rank must name the same "
                "directory (compute it once, e.g. on rank 0, and broadcast it)"
            ),
        )
        for folder in folders:
            probe = folder / f".parcomp-probe-{self.comm.Get_rank()}-{os.getpid()}"
            try:
                make_private_dir(folder)
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                os.unlink(probe)
                check_owned_dir(folder, self.shared_ok)
                if folder == self.directory and self.comm.Get_rank() == 0:
                    self._lease = Lease(folder)  # one live job per directory
            except CheckpointError as exc:
                error = exc
                break
            except OSError as exc:
                error = CheckpointError(
                    f"cannot write checkpoints to {folder}: {exc.strerror or exc} "
                    f"({type(exc).__name__}); choose a directory you can write"
                )
                break
        try:
            raise_if_any(error, self.comm)
        except BaseException:
            self._release_lease()
            raise

    def _release_lease(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._tier is not None:
            self._tier.release()

    # ------------------------------------------------------------------ saving
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
            another, or as ``redeal`` says.  Shared directory only (not with
            ``local_dir`` or ``mpio``) for now.
        flush : bool
            With ``local_dir``: flush this checkpoint to ``directory`` whatever
            ``flush_every`` says.

        Returns
        -------
        Path or None
            The committed checkpoint directory (None when ``async_write``: see ``wait``);
            with ``local_dir``, this node's node-local directory.

        Raises
        ------
        CheckpointError
            On every rank, if writing failed anywhere; older checkpoints stay intact.
        """
        t0 = time.perf_counter()
        self.wait()
        arrays = dict(arrays or {})
        error = None
        try:
            if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
                raise ConfigError(f"step must be a non-negative integer, got {step!r}")
            for name in arrays:
                _check_name("array", name)
            from parcomp.array import DistArray

            for name, arr in arrays.items():
                if not isinstance(arr, DistArray):
                    raise ConfigError(
                        f"array {name!r} must be a DistArray, got {type(arr).__name__}"
                    )
            record = {
                "scalars": _jsonable(dict(scalars or {}), "scalars"),
                "meta": _jsonable(dict(meta or {}), "meta"),
                "rng": {
                    k: _jsonable(g.bit_generator.state, f"rng {k!r}")
                    for k, g in (rng or {}).items()
                },
            }
            for name in rng or {}:
                _check_name("rng", name)
        except ConfigError as exc:
            error = exc
        raise_if_any(error, self.comm)
        _check_same(
            {"step": int(step), "scalars": record["scalars"], "rng": record["rng"]}, self.comm
        )
        per_rank = check_local(local, self.comm, _check_name)
        if per_rank and (self.local_dir is not None or self.mpio):
            raise mark_everywhere(
                ConfigError(
                    "local= (per-rank data) is written to the shared directory's shards only "
                    "for now: not with local_dir (node-local tier) or mpio (one shared file)"
                ),
                self.comm,
            )
        snap = Snapshot(arrays, copy=self.async_write, per_rank=per_rank)
        step = int(step)
        if self.local_dir is not None:
            path = self._save_local(step, snap, record, flush)
            self.seconds_blocked += time.perf_counter() - t0
            return path
        directory, tmp = self._begin(step, snap)
        if not self.async_write:
            path = self._finish(step, directory, tmp, snap, record, self._write(tmp, step, snap))
            self.seconds_blocked += time.perf_counter() - t0
            return path
        pending: dict[str, Any] = {
            "step": step,
            "tmp": tmp,
            "snap": snap,
            "record": record,
            "result": None,
        }

        def work() -> None:
            pending["result"] = self._write(tmp, step, snap)

        thread = threading.Thread(target=work, name=f"parcomp-checkpoint-{step}", daemon=True)
        pending["thread"] = thread
        thread.start()
        self._pending = pending
        self.seconds_blocked += time.perf_counter() - t0
        return None

    def _local_tier(self) -> Any:
        """The node-local tier, set up on first use (collective: gathers node names)."""
        if self._tier is None:
            from parcomp.checkpoint.local import LocalTier

            self._tier = LocalTier(self.local_dir, self.comm)
            if self._tier.rank == 0:
                self.log.info("%s", self._tier.describe())
        return self._tier

    def _save_local(
        self, step: int, snap: Snapshot, record: dict[str, Any], force_flush: bool
    ) -> Path:
        """Node-local checkpoint with partner copies, then maybe start a background flush."""
        import shutil

        from parcomp.checkpoint.local import save_local

        tier = self._local_tier()
        final, shard = save_local(tier, step, snap, record, self.keep)
        self._local_saves += 1
        self._last_save = time.monotonic()
        self.last_path = final
        self.saves += 1
        self.log.info("node-local checkpoint of step %d committed: %s", step, final)
        if force_flush or (self.flush_every and self._local_saves % self.flush_every == 0):
            _, tmp = self._begin(step, snap)
            source = final / shard["file"]
            pending: dict[str, Any] = {
                "step": step,
                "tmp": tmp,
                "snap": snap,
                "record": record,
                "result": None,
            }
            placeholder, self._placeholder = self._placeholder, None

            def work() -> None:
                rank = self.comm.Get_rank()
                try:
                    if placeholder is not None:
                        placeholder.unlink()
                    target = tmp / shard["file"]
                    shutil.copyfile(source, target)
                    with open(target, "rb") as fh:
                        os.fsync(fh.fileno())
                    if target.stat().st_size != shard["bytes"]:
                        raise OSError(f"{target}: copied size differs from {source}")
                    pending["result"] = shard
                except OSError as exc:
                    pending["result"] = f"rank {rank}: flushing its shard failed: {exc}"

            thread = threading.Thread(target=work, name=f"parcomp-flush-{step}", daemon=True)
            pending["thread"] = thread
            thread.start()
            self._pending = pending
        return final

    def _begin(self, step: int, snap: Snapshot) -> tuple[Path, Path]:
        """Make the temp directory (rank 0) and reserve every rank's space (collective)."""
        import os
        import shutil

        from parcomp.checkpoint.format import step_dir_name

        name, error = None, None
        if self.comm.Get_rank() == 0:
            try:
                make_private_dir(self.directory)
                name = f".tmp-{step_dir_name(step)}-{os.urandom(6).hex()}"
                os.mkdir(self.directory / name, 0o700)
                os.chmod(self.directory / name, 0o700)
            except OSError as exc:
                error = f"cannot create a checkpoint in {self.directory}: {exc}"
        name, error = self.comm.bcast((name, error), root=0)
        if error:
            raise CheckpointError(error)
        tmp = self.directory / name
        rank = self.comm.Get_rank()
        need = estimate_shard_bytes(snap) + (64 * 1024 if rank == 0 else 0)  # rank 0: master too
        mine = None
        try:
            placeholder = reserve_space(tmp, rank, need)
        except OSError as exc:
            placeholder, mine = None, f"rank {rank}: cannot reserve {need} bytes: {exc}"
        errors = [e for e in self.comm.allgather(mine) if e]
        if errors:
            if placeholder is not None:
                placeholder.unlink(missing_ok=True)
            self.comm.Barrier()
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(
                f"checkpoint of step {step} in {self.directory} failed; previous checkpoints kept. "
                + "; ".join(errors)
            )
        self._placeholder = placeholder
        return self.directory, tmp

    def _write(self, tmp: Path, step: int, snap: Snapshot) -> dict[str, Any] | str:
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        placeholder, self._placeholder = self._placeholder, None
        try:
            if self.mpio:
                if placeholder is not None:
                    placeholder.unlink()  # parallel HDF5 writes through its own driver
                record = write_single_file(tmp, self.comm, step, snap)
                record["bytes"] = 0  # the file's size goes into the manifest at commit
                return record
            # into the reserved file itself: the space is never given back in between
            return write_shard(tmp, rank, size, step, snap, reserved=placeholder)
        except (OSError, RuntimeError) as exc:  # h5py reports ENOSPC at close as RuntimeError
            return f"rank {rank}: writing its shard failed: {exc}"

    def _finish(
        self,
        step: int,
        directory: Path,
        tmp: Path,
        snap: Snapshot,
        record: dict[str, Any],
        mine: dict[str, Any] | str,
    ) -> Path:
        import shutil

        records = self.comm.gather(mine, root=0)
        outcome: tuple[str | None, str | None] = (None, None)
        if self.comm.Get_rank() == 0:
            failures = [r for r in records if isinstance(r, str)]
            if failures:
                shutil.rmtree(tmp, ignore_errors=True)
                outcome = (
                    None,
                    f"checkpoint of step {step} in {directory} failed; previous checkpoints kept. "
                    + "; ".join(failures),
                )
            else:
                try:
                    if self._pruner is not None:
                        self._pruner.join()
                    final, self._pruner = commit_checkpoint(
                        directory,
                        tmp,
                        step,
                        self.comm.Get_size(),
                        records,
                        snap.layout,
                        record["scalars"],
                        record["rng"],
                        record["meta"],
                        self.keep,
                        snap.per_rank,
                    )
                    outcome = (str(final), None)
                except (OSError, RuntimeError) as exc:
                    shutil.rmtree(tmp, ignore_errors=True)
                    outcome = (
                        None,
                        f"committing the checkpoint of step {step} in {directory} failed ({exc}); previous checkpoints kept",
                    )
        path, error = self.comm.bcast(outcome, root=0)
        if error:
            raise CheckpointError(error)
        if self.local_dir is None:
            self._last_save = time.monotonic()
            self.last_path = Path(path)
            self.saves += 1
            self.log.info("checkpoint of step %d committed: %s", step, path)
        else:
            self.flushes += 1
            self.log.info("checkpoint of step %d flushed to %s", step, path)
        return Path(path)

    def wait(self) -> Path | None:
        """Finish an asynchronous save (join the writer, then commit collectively)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        t0 = time.perf_counter()
        pending["thread"].join()
        path = self._finish(
            pending["step"],
            self.directory,
            pending["tmp"],
            pending["snap"],
            pending["record"],
            pending["result"],
        )
        self.seconds_blocked += time.perf_counter() - t0
        return path

    def close(self) -> None:
        """Commit any pending asynchronous checkpoint, finish pruning, give up the directory's
        lease (collective)."""
        self.wait()
        if self._pruner is not None:
            self._pruner.join()
            self._pruner = None
        self.comm.Barrier()  # every rank returns once rank 0's pruning is done
        self._release_lease()

    # ------------------------------------------------------------------ policy
    def due(self, step: int) -> tuple[bool, int]:
        """Whether to save now, and the preemption signal (0 if none); agreed by all ranks.

        One ``allreduce`` of three integers: the time policy is rank 0's clock, the signal
        is any rank's, and whether a background write or flush is still running anywhere;
        once it is done everywhere, it is committed here.
        """
        from mpi4py import MPI

        by_step = self.every_steps is not None and step % self.every_steps == 0
        by_time = (
            self.every_seconds is not None
            and self.comm.Get_rank() == 0
            and time.monotonic() - self._last_save >= self.every_seconds
        )
        pending = self._pending
        busy = int(pending is not None and pending["thread"].is_alive())
        flags = np.array([int(by_step or by_time), preempt.requested(), busy], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        if pending is not None and not flags[2]:
            # Every rank's background write (or flush) is done: commit it now rather than
            # at the next save, so that it counts as soon as possible.
            self.wait()
        return bool(flags[0] or flags[1]), int(flags[1])

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
            was_async, self.async_write = self.async_write, False
            try:
                self.save(step, **state, flush=True)  # the job may come back on other nodes
                self.wait()
            finally:
                self.async_write = was_async
            raise preempt.Preempted(signum)
        self.save(step, **state)
        return True

    @collective("Checkpointer.restore")
    def restore(
        self,
        arrays: Mapping[str, Mapping[str, Any]] | None = None,
        redeal: Callable[[list[int], int, int], tuple[int, int]] | None = None,
        require: Mapping[str, Any] | None = None,
    ) -> Restored | None:
        """Restore the newest valid checkpoint on the current ranks (collective), or None.

        Parameters
        ----------
        arrays : dict, optional
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
            {k: dict(v) for k, v in (arrays or {}).items()},
            local=self._local_tier() if self.local_dir is not None else None,
            redeal=redeal,
        )
        self._last_save = time.monotonic()
        if restored is not None and require:
            wrong = {
                k: restored.scalars.get(k, "<missing>")
                for k, v in require.items()
                if restored.scalars.get(k, object()) != _jsonable(v, "require")
            }
            if wrong:
                raise mark_everywhere(
                    ConfigError(
                        f"checkpoint {restored.path} belongs to another run: it has "
                        f"{wrong}, this run asks for "
                        f"{ {k: require[k] for k in wrong} }; resume with the same parameters "
                        "or use another checkpoint directory"
                    ),
                    self.comm,
                )
        if restored is not None and restored.rebuilt:
            self._reprotect(restored)
        return restored

    def _reprotect(self, restored: Restored) -> None:
        """After shards came from partner copies: write the step again, node-local only.

        Until then those shards had a single copy; now every shard has two again, laid
        out for the current ranks and nodes.
        """
        generators = {name: restored.generator(name) for name in restored.rng_states}
        flush_every, self.flush_every = self.flush_every, None
        try:
            self.save(
                restored.step,
                arrays=restored.arrays,
                scalars=restored.scalars,
                rng=generators,
                meta=restored.meta,
            )
        finally:
            self.flush_every = flush_every
        self.log.info(
            "step %d written again to the node-local tier: every shard has its partner copy again",
            restored.step,
        )

    latest = restore
