"""The one restore engine: a pure plan executed by one of two transports, for both tiers.

COMMUNICATES: :func:`execute`, :func:`restore_shared` and :func:`load_latest` are
collective; :class:`~parcomp.checkpoint.blocks.BlockFiles` is local (it reads files).

The steps, the same for the shared directory and for the node-local tier:

1. agree on one manifest (its bytes travel, every rank parses them: :mod:`parcomp.runtime.wire`);
2. make the target DistArrays (collective), every rank's range of the per-rank data;
3. :func:`~parcomp.checkpoint.plan.restore_plan` (pure): which rank reads which region of
   which saved block, for whom;
4. :func:`execute`: each rank reads its pieces through :class:`~parcomp.checkpoint.blocks.BlockFiles` (files checked,
   datasets checked against the manifest by :func:`~parcomp.checkpoint.reader.open_block`,
   every slab read verified against its checksum); the ranks agree on the failures (which
   files); then, if the plan moves data between ranks, one ``Alltoallv`` delivers it.

The shared tier uses the **direct** transport (every rank reads its own hyperslabs); the
node-local tier the **Alltoallv** one (a file is read on the node that holds it).  Nothing
read from disk is unpickled, and no collective here pickles: a survivor of a peer's death
(ULFM) gets an MPI error, not garbage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from parcomp.arrays.array import DistArray
from parcomp.checkpoint.blocks import READ_ERRORS, BlockFiles, is_mpi_error
from parcomp.checkpoint.format import (
    MANIFEST,
    parse_step,
    step_dir_name,
)
from parcomp.checkpoint.local import (
    LocalTier,
    _node_view,
    choose_manifest,
    choose_readers,
    local_steps,
)
from parcomp.checkpoint.manifest import Manifest
from parcomp.checkpoint.manifest_read import read_manifest
from parcomp.checkpoint.perrank import Redeal, local_ranges
from parcomp.checkpoint.plan import Piece, RestorePlan, restore_plan
from parcomp.checkpoint.reader import Restored, list_checkpoints
from parcomp.runtime.errors import CheckpointSchemaError, ParcompError
from parcomp.runtime.log import get_logger
from parcomp.runtime.subcomm import comm_cache
from parcomp.runtime.wire import allgather_json, bcast_bytes, bcast_json

__all__ = ["execute", "plan_for", "make_targets", "restore_shared", "load_latest"]


def _dtype(manifest: Manifest, piece: Piece) -> np.dtype:
    if piece.kind == "array":
        return manifest.arrays[piece.name].dtype
    return np.dtype(manifest.local[piece.name]["dtype"])


def _place(
    piece: Piece, data: np.ndarray, targets: Mapping[str, Any], local: Mapping[str, Any]
) -> None:
    dst = tuple(slice(a, a + n) for a, n in zip(piece.at, piece.shape, strict=True))
    if piece.kind == "array":
        targets[piece.name].interior[dst] = data
    else:
        local[piece.name][dst] = data


def execute(
    plan: RestorePlan,
    files: BlockFiles,
    targets: Mapping[str, Any],
    local: Mapping[str, np.ndarray],
    comm: Any,
) -> list[tuple[str, str]]:
    """Run ``plan`` (collective): read this rank's pieces, agree, deliver.

    Returns every rank's failures as ``(file, message)``, the same list on every rank;
    when it is not empty nothing was delivered and the targets are not to be used.
    """
    rank = comm.Get_rank()
    held: dict[Piece, np.ndarray] = {}
    failures: list[tuple[str, str]] = []
    bad: set[str] = set()
    try:
        for piece in sorted(plan.read_by(rank), key=lambda p: (p.kind, p.name, p.index, p.dest)):
            if piece.file in bad:
                continue
            try:
                if piece.dest != rank:
                    held[piece] = np.ascontiguousarray(files.read(piece))
                elif piece.kind == "array":
                    files.read_into(piece, targets[piece.name])
                else:
                    _place(piece, files.read(piece), targets, local)
            except READ_ERRORS as exc:
                if is_mpi_error(exc):
                    raise
                bad.add(piece.file)
                failures.append((piece.file, f"rank {rank}: {exc}"))
    finally:
        files.close()
    failures = _agree_failures(comm, failures)
    if failures or not plan.crosses:
        return failures
    _alltoallv(plan, files.manifest, held, targets, local, comm)
    return []


def _agree_failures(comm: Any, mine: list[tuple[str, str]]) -> list[tuple[str, str]]:
    from mpi4py import MPI

    flag = np.array([len(mine)], np.int64)
    comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    if not flag[0]:
        return []
    return [(f, m) for items in allgather_json(comm, mine) for f, m in items]


def _alltoallv(
    plan: RestorePlan,
    manifest: Manifest,
    held: dict[Piece, np.ndarray],
    targets: Mapping[str, Any],
    local: Mapping[str, np.ndarray],
    comm: Any,
) -> None:
    """Deliver the pieces read for other ranks: one ``Alltoallv`` of bytes, sizes from the
    plan on both ends (no metadata travels)."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    sends: list[list[Piece]] = [[] for _ in range(size)]
    recvs: list[list[Piece]] = [[] for _ in range(size)]
    for p in plan.pieces:
        if p.reader == p.dest:
            continue
        if p.reader == rank:
            sends[p.dest].append(p)
        if p.dest == rank:
            recvs[p.reader].append(p)

    def nbytes(p: Piece) -> int:
        return p.count * _dtype(manifest, p).itemsize

    send_counts = np.array([sum(nbytes(p) for p in ps) for ps in sends], np.int64)
    recv_counts = np.array([sum(nbytes(p) for p in ps) for ps in recvs], np.int64)
    parts = [held[p].reshape(-1).view(np.uint8) for ps in sends for p in ps]
    sendbuf = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    held.clear()
    recvbuf = np.empty(int(recv_counts.sum()), np.uint8)
    sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]]).astype(np.int64)
    rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]]).astype(np.int64)
    comm.Alltoallv(
        [sendbuf, (send_counts, sdispl), MPI.BYTE], [recvbuf, (recv_counts, rdispl), MPI.BYTE]
    )
    offset = 0
    for ps in recvs:
        for p in ps:
            n = nbytes(p)
            data = recvbuf[offset : offset + n].view(_dtype(manifest, p)).reshape(p.shape)
            _place(p, data, targets, local)
            offset += n


def spare_core(comm: Any) -> bool:
    """Whether this rank's machine has a core to spare for a helper thread (collective the
    first time per communicator: counts the ranks sharing the machine; then cached).

    Measured on 2 cores: verifying in a helper thread made a 1-rank restore 10-40 % faster,
    and a 2-rank one 10-20 % slower than verifying each slab right after reading it.
    """
    from mpi4py import MPI

    cache = comm_cache(comm)
    if "ranks_here" not in cache:
        here = comm.Split_type(MPI.COMM_TYPE_SHARED)
        cache["ranks_here"] = here.Get_size()
        here.Free()
    import os

    cpus = len(os.sched_getaffinity(0))
    bound = cpus < (os.cpu_count() or cpus)  # pinned: its own cores only
    return cpus >= 2 if bound else cpus >= 2 * cache["ranks_here"]


def make_targets(
    manifest: Manifest, comm: Any, overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Create every restored array (collective), before any rank reads."""

    arrays: dict[str, Any] = {}
    size = comm.Get_size()
    for name, spec in manifest.arrays.items():
        opts: dict[str, Any] = {"halo": spec.halo, "periods": spec.periods}
        if size == manifest.nprocs:
            opts["dims"] = spec.dims
        opts.update(overrides.get(name, {}))
        arrays[name] = DistArray(spec.global_shape, spec.dtype, comm=comm, **opts)
    return arrays


def plan_for(
    manifest: Manifest,
    targets: Mapping[str, Any],
    ranges: Mapping[str, list[tuple[int, int]]],
    readers: Mapping[str, int] | None = None,
) -> RestorePlan:
    """The restore plan of ``manifest`` onto the targets' partitions (pure)."""
    return restore_plan(
        {name: spec.shards for name, spec in manifest.arrays.items()},
        {name: arr.partition for name, arr in targets.items()},
        readers,
        manifest.local,
        ranges,
    )


class Loaded(NamedTuple):
    """What :func:`restore_into` restored on this rank, or why not."""

    arrays: dict[str, Any]
    #: This rank's share of the per-rank data.
    local: dict[str, np.ndarray]
    error: str | None
    #: The reader of each file in the attempt that succeeded (None: direct transport).
    readers: Mapping[str, int] | None = None
    #: Whether the per-rank shares, in rank order, are the whole saved concatenation
    #: (so saving them again keeps the data): False after a ``redeal`` that drops or
    #: repeats rows.
    local_whole: bool = True


def restore_into(
    folder: Path,
    manifest: Manifest,
    comm: Any,
    overrides: Mapping[str, Mapping[str, Any]],
    redeal: Redeal | None,
    readers: Callable[[set[tuple[int, str]]], Mapping[str, int] | str] | None = None,
) -> Loaded:
    """Restore an agreed ``manifest`` from ``folder`` (collective).

    ``readers(excluded)`` (node-local tier) names the rank reading each file, given the
    ``(reader rank, file)`` copies already found bad, or returns why none is left;
    None: the direct transport.
    """
    try:
        targets = make_targets(manifest, comm, overrides)
    except (ParcompError, KeyError, TypeError, ValueError) as exc:  # the same on every rank
        return Loaded({}, {}, f"the manifest describes an array parcomp cannot build: {exc}")
    ranges = local_ranges(manifest, comm, redeal) if manifest.local else {}
    whole = all(
        [a for a, _ in got] == [0] + [b for _, b in got[:-1]]
        and got[-1][1] == sum(p["length"] for p in manifest.local[name]["pieces"])
        for name, got in ranges.items()
    )
    rank = comm.Get_rank()
    excluded: set[tuple[int, str]] = set()
    while True:
        chosen = None
        if readers is not None:
            chosen = readers(excluded)
            if isinstance(chosen, str):
                return Loaded({}, {}, chosen)
        plan = plan_for(manifest, targets, ranges, chosen)
        local = {
            name: np.empty((b - a, *spec["tail"]), np.dtype(spec["dtype"]))
            for name, spec in manifest.local.items()
            for a, b in [ranges[name][rank]]
        }
        files = BlockFiles(folder, manifest, spare_core(comm))
        failures = execute(plan, files, targets, local, comm)
        if not failures:
            return Loaded(targets, local, None, chosen, whole)
        if readers is None:
            return Loaded({}, {}, "; ".join(m for _, m in failures))
        excluded |= {(int(chosen[f]), f) for f, _ in failures}
        if rank == 0:
            get_logger("parcomp.checkpoint").warning(
                "step %d: %s; trying the other copy",
                manifest.step,
                "; ".join(m for _, m in failures),
            )


def agree_manifest(path: Path, comm: Any) -> tuple[Manifest | None, str | None]:
    """Rank 0 reads and checks ``path``'s manifest; every rank parses the same bytes.

    Only bytes travel (:func:`~parcomp.runtime.wire.bcast_bytes`), with the verdict as text:
    nothing read from disk is unpickled, and parsing is deterministic, so every rank holds
    the same :class:`Manifest` or the same error.  Collective over ``comm``.
    """
    raw, error, parsed = b"", "", None
    if comm.Get_rank() == 0:
        try:
            parsed = read_manifest(path)
            raw = parsed.raw
        except (ParcompError, OSError) as exc:
            error = str(exc) or type(exc).__name__
    error = bcast_bytes(comm, error.encode()).decode()
    if error:
        return None, error
    raw = bcast_bytes(comm, raw)
    if parsed is not None:  # rank 0 parsed these very bytes already
        return parsed, None
    try:
        return Manifest.parse(raw, str(path / MANIFEST), parse_step(path.name)), None
    except CheckpointSchemaError as exc:  # cannot happen after rank 0 parsed it; same everywhere
        return None, str(exc)


def restore_shared(
    path: Path, comm: Any, overrides: Mapping[str, Mapping[str, Any]], redeal: Redeal | None = None
) -> tuple[Restored | None, str | None]:
    """Restore one checkpoint of the shared directory (collective): ``(restored, error)``."""
    manifest, error = agree_manifest(path, comm)
    if manifest is None:
        return None, error
    loaded = restore_into(path, manifest, comm, overrides, redeal)
    if loaded.error is not None:
        return None, loaded.error
    if comm.Get_rank() == 0:
        get_logger("parcomp.checkpoint").info(
            "restored step %d from %s (saved on %d ranks)", manifest.step, path, manifest.nprocs
        )
    restored = Restored(path, manifest, loaded.arrays)
    restored.local = loaded.local
    restored.local_whole = loaded.local_whole
    return restored, None


def load_latest(
    directory: Path,
    comm: Any,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    local: Any = None,
    redeal: Redeal | None = None,
) -> Restored | None:
    """Restore the newest valid checkpoint in ``directory`` on this communicator, or None.

    Parameters
    ----------
    local : parcomp.checkpoint.local.LocalTier, optional
        Also consider the node-local tier; for the same step it is tried first.

    Notes
    -----
    Collective over ``comm``.  A damaged checkpoint is skipped, with a warning, for the
    next older one; None means no valid checkpoint exists.
    """
    log = get_logger("parcomp.checkpoint")
    rank = comm.Get_rank()
    shared = bcast_json(
        comm, [(s, str(p)) for s, p in list_checkpoints(directory)] if rank == 0 else None
    )
    candidates: list[tuple[int, int, str | None]] = [(int(s), 1, str(p)) for s, p in shared]
    if local is not None:
        candidates += [(s, 0, None) for s in local_steps(local)]
    candidates.sort(key=lambda c: (-c[0], c[1]))
    unrestorable: list[int] = []  # node-local steps that could not be restored
    for index, (step, tier, candidate) in enumerate(candidates):
        last = index == len(candidates) - 1
        if tier == 0:
            restored, error = restore_local(local, step, overrides or {}, redeal)
            if restored is not None:
                return restored
            unrestorable.append(step)
            if rank == 0:
                log.warning(
                    "node-local checkpoint of step %d cannot be restored, trying older or "
                    "flushed ones: %s",
                    step,
                    error,
                )
            continue
        path = Path(str(candidate))
        restored, error = restore_shared(path, comm, overrides or {}, redeal)
        if restored is not None:
            if unrestorable and rank == 0:
                log.warning(
                    "fell back to the shared tier: step %d restored from %s, the node-local "
                    "tier could not give step(s) %s",
                    step,
                    path,
                    ", ".join(map(str, unrestorable)),
                )
            return restored
        if rank == 0:
            log.warning(
                "checkpoint %s is damaged, %s: %s",
                path,
                "and no older one is valid: starting afresh"
                if last
                else "falling back to an older one",
                error,
            )
    return None


def restore_local(
    tier: LocalTier, step: int, overrides: dict[str, Any], redeal: Any = None
) -> tuple[Restored | None, str | None]:
    """Restore ``step`` from the node-local tier (collective): ``(restored, error)``."""
    comm, log = tier.comm, get_logger("parcomp.checkpoint")
    view, raw = _node_view(tier, step)
    views = allgather_json(comm, view)
    choice = choose_manifest(views)
    if isinstance(choice, str):
        return None, choice
    digest, root = choice
    raw = bcast_bytes(comm, raw if tier.rank == root else None, root=root)
    folder = tier.folder / step_dir_name(step)
    try:
        manifest = Manifest.parse(raw, str(folder / MANIFEST), step)
    except CheckpointSchemaError as exc:  # rank ``root`` parsed it already: cannot happen
        return None, str(exc)
    if manifest.digest != digest:
        return None, "the chosen manifest changed in transit"
    loaded = restore_into(
        folder,
        manifest,
        comm,
        overrides,
        redeal,
        readers=lambda excluded: choose_readers(tier.names, views, manifest, excluded),
    )
    if loaded.error is not None:
        return None, loaded.error
    # from the readers that succeeded: a damaged own copy read from the partner counts too
    saved_nodes = list(manifest.get("nodes") or [])
    rebuilt = sorted(
        f"{name} (from the partner copy on {tier.names[r]})"
        for name, r in (loaded.readers or {}).items()
        if (i := int(name.split("-")[1])) < len(saved_nodes) and tier.names[r] != saved_nodes[i]
    )
    if tier.rank == 0:
        log.info(
            "restored step %d from the node-local tier %s (saved on %d ranks)",
            step,
            tier.root,
            manifest.nprocs,
        )
        if rebuilt:
            log.warning(
                "node-local step %d: %d shard(s) rebuilt from partner copies: %s",
                step,
                len(rebuilt),
                ", ".join(rebuilt),
            )
    restored = Restored(folder, manifest, loaded.arrays)
    restored.local = loaded.local
    restored.local_whole = loaded.local_whole
    restored.rebuilt = rebuilt
    return restored, None
