"""The node-local checkpoint tier: shards on fast node-local storage, each copied to a partner.

COMMUNICATES: every function taking ``tier`` is collective over ``tier.comm``.

Layout (``LOCAL`` is the checkpointer's ``local_dir``; each node sees only its own folder
on a real cluster, and one machine emulating several nodes simply has several)::

    LOCAL/node-<name>/step-00000100/
        manifest.json                     the whole checkpoint's manifest (every node has it)
        shard-00000-of-00004.h5           the shards of this node's ranks ...
        shard-00002-of-00004.h5           ... and the partner copies it keeps for the next node
    LOCAL/node-<name>/.tmp-step-...       being written (removed when stale)

A rank writes its shard (the same HDF5 file as in the shared tier), sends its bytes to its
partner rank on the next node (:func:`parcomp.nodes.partner_ranks`), which writes the copy
under the same name.  Rank 0 then builds the manifest; every node's lowest rank writes it
into its folder and renames the folder to ``step-N`` (each node's commit).  Each manifest
carries the same ``checkpoint_id``; a node's files count only if its manifest has it.

Restore gathers what every node holds, picks one reader per saved shard (its own node if
that survived, else the node keeping its partner copy), reads and verifies each slab, and
re-decomposes the arrays for the current communicator with one ``Alltoallv`` per array.
If some shard has no copy left (its node and its partner's node both lost), the step is
not restorable from this tier and the caller falls back to the shared directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from parcomp.checkpoint.format import (
    MANIFEST,
    check_regular,
    fsync_path,
    make_private_dir,
    overlap,
    parse_manifest,
    parse_step,
    shard_name,
    slab_checksums,
    step_dir_name,
)
from parcomp.checkpoint.lease import Lease
from parcomp.checkpoint.manifest import Manifest
from parcomp.checkpoint.reader import open_block
from parcomp.checkpoint.writer import (
    Snapshot,
    build_manifest,
    estimate_shard_bytes,
    manifest_arrays,
    prune,
    publish,
    reserve_space,
    write_shard,
)
from parcomp.comm import get_logger
from parcomp.errors import CheckpointError, ParcompError
from parcomp.nodes import node_groups, node_name, partner_ranks, safe_node_dirname
from parcomp.subcomm import subsystem_comm

__all__ = ["LocalTier", "save_local", "local_steps", "restore_local"]

_CHUNK = 1 << 30  # partner copies are sent in pieces of at most 1 GiB (MPI int counts)
_SIZE_TAG, _DATA_TAG = 1, 2  # on the private partner communicator


def _mpi_error() -> type[BaseException]:
    from mpi4py import MPI

    return MPI.Exception


class LocalTier:
    """Where this rank's node-local checkpoints go, and who its partners are.

    Construction is collective (one ``allgather`` of node names over ``comm``).
    """

    def __init__(self, root: str | Path, comm: Any) -> None:
        self.root = Path(root)
        self.comm = comm
        # Partner copies travel on their own duplicate of comm (parcomp.subcomm), tags 1-2.
        self.p2p = subsystem_comm(comm, "partner")
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.node = node_name()
        self.names: list[str] = comm.allgather(self.node)
        self.groups = node_groups(self.names)
        self.partner = partner_ranks(self.names)
        self.holds = [r for r, p in enumerate(self.partner) if p == self.rank]
        self.folder = self.root / safe_node_dirname(self.node)
        self.lease: Any = None
        self.leader = next(g for g in self.groups if self.rank in g)[0] == self.rank
        self.nnodes = len(self.groups)
        mine = None
        if self.leader:  # one live job per node folder, as per shared directory
            try:
                make_private_dir(self.folder)
                self.lease = Lease(self.folder)
            except (CheckpointError, OSError) as exc:
                mine = f"node {self.node}: {exc}"
        errors = _agree_errors(comm, mine)
        if errors:
            self.release()
            raise CheckpointError("; ".join(errors))

    def release(self) -> None:
        """Give up the node folder's lease (local)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def describe(self) -> str:
        """One line: nodes, ranks per node, partners."""
        if self.nnodes < 2:
            return f"node-local checkpoints in {self.root}: 1 node, no partner copies"
        return (
            f"node-local checkpoints in {self.root}: {self.nnodes} nodes "
            f"({', '.join(str(len(g)) for g in self.groups)} ranks), partner copies on the next node"
        )


def _agree_errors(comm: Any, mine: str | None) -> list[str]:
    return [e for e in comm.allgather(mine) if e]


def save_local(
    tier: LocalTier,
    step: int,
    snap: Snapshot,
    record: dict[str, Any],
    keep: int,
) -> tuple[Path, dict[str, Any]]:
    """Write a node-local checkpoint with partner copies (collective).

    Returns this node's committed folder and this rank's shard record (for a flush).

    Raises
    ------
    CheckpointError
        On every rank, if any rank failed; the node-local checkpoints before it are intact.
    """
    comm, rank, size = tier.comm, tier.rank, tier.size
    nonce = comm.bcast(os.urandom(6).hex() if rank == 0 else None, root=0)
    tmp = tier.folder / f".tmp-{step_dir_name(step)}-{nonce}"
    estimates = comm.allgather(estimate_shard_bytes(snap))
    need = estimates[rank] + sum(estimates[h] for h in tier.holds)
    mine: str | None = None
    placeholder = None
    try:
        make_private_dir(tmp)
        placeholder = reserve_space(tmp, rank, need)
    except OSError as exc:
        mine = f"rank {rank} on {tier.node}: cannot reserve {need} bytes in {tier.folder}: {exc}"
    errors = _agree_errors(comm, mine)
    shard: dict[str, Any] | None = None
    if not errors:
        try:
            # into the reserved file itself (trimmed afterwards: the rest of the
            # reservation then holds the partner copies this rank receives)
            shard = write_shard(tmp, rank, size, step, snap, reserved=placeholder)
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, _mpi_error()):
                raise
            mine = f"rank {rank} on {tier.node}: writing its node-local shard failed: {exc}"
        mine = _exchange_partner_copies(tier, tmp, shard) or mine
        errors = _agree_errors(comm, mine)
    elif placeholder is not None:
        placeholder.unlink(missing_ok=True)
    records = comm.allgather(shard)
    if errors:
        comm.Barrier()
        if tier.leader:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"node-local checkpoint of step {step} failed; earlier checkpoints kept. "
            + "; ".join(errors)
        )
    manifest = None
    if rank == 0:
        arrays = manifest_arrays(snap.layout, records)
        files = [{"name": rec["file"], "bytes": rec["bytes"]} for rec in records]
        manifest = build_manifest(
            step,
            size,
            arrays,
            files,
            record["scalars"],
            record["rng"],
            record["meta"],
            tier="node-local",
            checkpoint_id=nonce,
            nodes=tier.names,
            partners=tier.partner,
        )
    manifest = comm.bcast(manifest, root=0)
    mine = None
    final = tier.folder / step_dir_name(step)
    if tier.leader:
        try:
            final = publish(tier.folder, tmp, step, manifest)
            prune(tier.folder, keep, final).join()
        except OSError as exc:
            mine = f"node {tier.node}: committing its node-local checkpoint failed: {exc}"
    errors = _agree_errors(comm, mine)
    if errors:
        raise CheckpointError(
            f"node-local checkpoint of step {step} failed to commit on some nodes: "
            + "; ".join(errors)
        )
    if shard is None:  # cannot happen: a failed write is in ``errors`` above
        raise CheckpointError(f"node-local checkpoint of step {step}: rank {rank} has no shard")
    return final, shard


def _exchange_partner_copies(
    tier: LocalTier, tmp: Path, shard: dict[str, Any] | None
) -> str | None:
    """Send this rank's shard file to its partner; receive and store the ones it keeps.

    Both ends map the files (``mmap``): the sender sends straight from its shard's pages
    and the receiver receives straight into the copy's (space reserved first with
    ``posix_fallocate``, so a full disk is a clean error).  That took 47 ms for 64 MiB
    here, against 70 ms for read-into-memory, send, write.
    """
    import mmap

    from mpi4py import MPI

    comm, rank = tier.p2p, tier.rank
    error = None
    requests = []
    data: Any = np.zeros(0, np.uint8)
    partner = tier.partner[rank]
    if partner is not None:
        if shard is not None:
            try:
                data = np.memmap(tmp / shard["file"], dtype=np.uint8, mode="r")
            except (OSError, ValueError) as exc:
                error = f"rank {rank}: reading its shard back for the partner copy failed: {exc}"
                data = np.zeros(0, np.uint8)
        requests.append(comm.isend(int(data.size), dest=partner, tag=_SIZE_TAG))
        for a in range(0, data.size, _CHUNK):
            requests.append(comm.Isend(data[a : a + _CHUNK], dest=partner, tag=_DATA_TAG))
    for source in tier.holds:
        nbytes = comm.recv(source=source, tag=_SIZE_TAG)
        target = tmp / shard_name(source, tier.size)
        fd, mapped, buf = -1, None, None
        try:
            if nbytes:
                fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                os.posix_fallocate(fd, 0, nbytes)
                mapped = mmap.mmap(fd, nbytes)
                buf = np.frombuffer(mapped, dtype=np.uint8)
        except OSError as exc:
            error = f"rank {rank} on {tier.node}: storing the partner copy of rank {source}'s shard failed: {exc}"
        sink = buf if buf is not None else np.empty(min(nbytes, _CHUNK), np.uint8)
        for a in range(0, nbytes, _CHUNK):  # receive even after an error: the sender waits
            piece = sink[a : a + _CHUNK] if buf is not None else sink[: min(_CHUNK, nbytes - a)]
            comm.Recv(piece, source=source, tag=_DATA_TAG)
        piece = None
        del buf, sink, piece  # release the mapping's exported buffer before closing it
        try:
            if mapped is not None:
                mapped.flush()
                mapped.close()
            if fd >= 0:
                os.fsync(fd)
        except OSError as exc:
            error = (
                error
                or f"rank {rank}: writing the partner copy of rank {source}'s shard failed: {exc}"
            )
        finally:
            if fd >= 0:
                os.close(fd)
    MPI.Request.waitall(requests)
    del data
    if tier.holds:
        try:
            fsync_path(tmp)
        except OSError as exc:
            error = error or f"rank {rank}: fsync of {tmp} failed: {exc}"
    return error


def local_steps(tier: LocalTier) -> list[int]:
    """Steps committed on any node's local storage, newest first (collective)."""
    mine: list[int] = []
    if tier.leader and tier.folder.is_dir():
        mine = [
            s
            for p in tier.folder.iterdir()
            if (s := parse_step(p.name)) is not None and (p / MANIFEST).is_file()
        ]
    return sorted({s for steps in tier.comm.allgather(mine) for s in steps}, reverse=True)


def _node_view(tier: LocalTier, step: int) -> dict[str, Any] | None:
    """What this node holds of ``step``: its manifest (or why not) and its files' sizes."""
    if not tier.leader:
        return None
    folder = tier.folder / step_dir_name(step)
    if not folder.is_dir():
        return {"node": tier.node, "manifest": None, "error": "absent", "files": {}}
    try:
        manifest = parse_manifest(folder)
        error = None
    except (ParcompError, OSError) as exc:
        manifest, error = None, str(exc)
    files = {}
    for path in folder.iterdir():
        if path.name.startswith("shard-"):
            try:
                files[path.name] = path.stat().st_size
            except OSError:
                pass
    return {"node": tier.node, "manifest": manifest, "error": error, "files": files}


def _plan(
    tier: LocalTier,
    views: list[dict[str, Any] | None],
    excluded: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[Any, Any, str | None]:
    """Rank 0: choose the manifest and, for every saved shard, the rank that reads it.

    ``excluded`` holds ``(node, file)`` copies that failed verification in an earlier try.
    """
    nodes = [v for v in views if v is not None]
    manifests = [v["manifest"] for v in nodes if v["manifest"] is not None]
    if not manifests:
        reasons = "; ".join(f"{v['node']}: {v['error']}" for v in nodes)
        return None, None, f"no node holds a valid manifest ({reasons})"
    manifest = max(manifests, key=lambda m: m.get("created_unix", 0))
    ident = manifest.get("checkpoint_id")
    # Every node keeps its own copy of the manifest: they must be identical.  A copy that
    # differs (edited, or damaged and re-signed) is outvoted, and its node's files unused.
    copies = [m.digest for m in manifests if m.get("checkpoint_id") == ident]
    majority = max(set(copies), key=copies.count)
    if copies.count(majority) * 2 <= len(copies) and len(set(copies)) > 1:
        return (
            None,
            None,
            f"the nodes' copies of the manifest disagree ({len(set(copies))} versions)",
        )
    manifest = next(m for m in manifests if m.digest == majority)
    expected = {f["name"]: f["bytes"] for f in manifest["files"]}
    leaders = {v["node"]: r for r, v in enumerate(views) if v is not None}
    ranks_on = {tier.names[g[0]]: g for g in tier.groups}
    load = {r: 0 for r in range(tier.size)}
    readers: dict[str, int] = {}
    lost = []
    saved_nodes = manifest.get("nodes") or []
    for name, nbytes in expected.items():
        holders = [
            v["node"]
            for v in nodes
            if v["manifest"] is not None
            and v["manifest"].digest == manifest.digest
            and v["files"].get(name) == nbytes
            and (v["node"], name) not in excluded
        ]
        if not holders:
            lost.append(name)
            continue
        saved_rank = int(name.split("-")[1])
        home = saved_nodes[saved_rank] if saved_rank < len(saved_nodes) else None
        if home in holders:
            holders = [home]  # its own node survived: the partner copy is not needed
        candidates = [r for node in holders for r in ranks_on.get(node, [leaders[node]])]
        reader = min(candidates, key=lambda r: (load[r], r))
        load[reader] += nbytes
        readers[name] = reader
    if lost:
        damaged = sorted({name for _, name in excluded} & set(lost))
        return (
            None,
            None,
            f"{len(lost)} shard(s) lost with their node and their partner's node"
            + (f" or damaged in every copy ({', '.join(damaged)})" if damaged else "")
            + ": "
            + ", ".join(sorted(lost))
            + (f" (saved on nodes {sorted(set(saved_nodes))})" if saved_nodes else ""),
        )
    return manifest, readers, None


def _read_shard_arrays(folder: Path, manifest: Manifest, name: str) -> dict[str, np.ndarray]:
    """Every array block of one shard file, checked (:func:`open_block`) and each slab
    verified against the manifest."""
    import h5py

    out = {}
    check_regular(folder / name, manifest.files.get(name))
    with h5py.File(folder / name, "r") as fh:
        for array_name, spec in manifest.arrays.items():
            shard = next((s for s in spec.shards if s.file == name), None)
            if shard is None:
                raise CheckpointError(
                    f"the manifest lists no shard {name} for array {array_name!r}"
                )
            block = open_block(fh, folder, manifest, spec, shard)[...]
            sums = slab_checksums(block, shard.slab_rows)
            bad = [
                i for i, (a, b) in enumerate(zip(sums, shard.slab_checksums, strict=True)) if a != b
            ]
            if bad:
                raise CheckpointError(
                    f"{folder / name}: slab {bad[0]} of array {array_name!r} fails its "
                    "checksum (corrupted)"
                )
            out[array_name] = block
    return out


def _redistribute(
    tier: LocalTier,
    manifest: Manifest,
    blocks: dict[str, dict[str, np.ndarray]],
    arrays: dict[str, Any],
) -> None:
    """Move the saved blocks this rank read to the ranks whose new blocks they overlap."""
    from mpi4py import MPI

    comm, size = tier.comm, tier.size
    for array_name, spec in manifest.arrays.items():
        target = arrays[array_name]
        part = target.partition
        dtype = spec.dtype
        pieces: list[list[tuple[tuple[int, ...], tuple[int, ...]]]] = [[] for _ in range(size)]
        payload: list[list[np.ndarray]] = [[] for _ in range(size)]
        for file_name, held in blocks.items():
            shard = next(s for s in spec.shards if s.file == file_name)
            block = held[array_name]
            for dest in range(size):
                region = overlap(shard.start, shard.shape, part.local_range(dest))
                if region is None:
                    continue
                local = tuple(
                    slice(r.start - s, r.stop - s) for r, s in zip(region, shard.start, strict=True)
                )
                pieces[dest].append(
                    (tuple(r.start for r in region), tuple(r.stop - r.start for r in region))
                )
                payload[dest].append(np.ascontiguousarray(block[local]).reshape(-1).view(np.uint8))
        meta = comm.alltoall(pieces)
        send_counts = np.array([sum(p.size for p in pl) for pl in payload], dtype=np.int64)
        recv_counts = np.array(
            [sum(int(np.prod(shape)) * dtype.itemsize for _, shape in m) for m in meta],
            dtype=np.int64,
        )
        sendbuf = (
            np.concatenate([p for pl in payload for p in pl])
            if send_counts.sum()
            else np.zeros(0, np.uint8)
        )
        recvbuf = np.empty(int(recv_counts.sum()), np.uint8)
        sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]])
        rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]])
        comm.Alltoallv(
            [sendbuf, (send_counts, sdispl), MPI.BYTE], [recvbuf, (recv_counts, rdispl), MPI.BYTE]
        )
        mine = target.local_range
        offset = 0
        for source in range(size):
            for start, shape in meta[source]:
                n = int(np.prod(shape)) * dtype.itemsize
                data = recvbuf[offset : offset + n].view(dtype).reshape(shape)
                offset += n
                dst = tuple(
                    slice(s - m[0], s - m[0] + k)
                    for s, k, m in zip(start, shape, mine, strict=True)
                )
                target.interior[dst] = data


def restore_local(
    tier: LocalTier, step: int, make_targets: Any
) -> tuple[dict[str, Any] | None, dict[str, Any], str | None, list[str]]:
    """Try to restore ``step`` from the node-local tier (collective).

    Returns ``(manifest, arrays, error, rebuilt)``: on success the manifest and the
    re-decomposed arrays, and the shard files that came from partner copies; on failure
    ``(None, {}, reason, [])`` on every rank.
    """
    comm = tier.comm
    views = comm.allgather(_node_view(tier, step))
    folder = tier.folder / step_dir_name(step)
    excluded: frozenset[tuple[str, str]] = frozenset()
    arrays: dict[str, Any] | None = None
    while True:  # a copy that fails verification is dropped and the shard read elsewhere
        plan = _plan(tier, views, excluded) if tier.rank == 0 else None
        manifest, readers, error = comm.bcast(plan, root=0)
        if error is not None:
            return None, {}, error, []
        if arrays is None:
            try:
                arrays = make_targets(manifest)
            except (ParcompError, KeyError, TypeError, ValueError) as exc:  # same everywhere
                return None, {}, f"the manifest describes an array parcomp cannot build: {exc}", []
        blocks: dict[str, dict[str, np.ndarray]] = {}
        failed: list[tuple[str, str, str]] = []
        for file_name, reader in sorted(readers.items()):
            if reader != tier.rank:
                continue
            try:
                blocks[file_name] = _read_shard_arrays(folder, manifest, file_name)
            except (ParcompError, OSError, RuntimeError, KeyError, ValueError) as exc:
                if isinstance(exc, _mpi_error()):
                    raise
                failed.append((tier.node, file_name, f"rank {tier.rank} on {tier.node}: {exc}"))
        failures = [f for fs in comm.allgather(failed) for f in fs]
        if not failures:
            break
        if tier.rank == 0:
            get_logger("parcomp.checkpoint").warning(
                "node-local step %d: %s; trying the other copy",
                step,
                "; ".join(msg for _, _, msg in failures),
            )
        excluded = excluded | {(node, name) for node, name, _ in failures}
    _redistribute(tier, manifest, blocks, arrays)
    saved_nodes = manifest.get("nodes") or []
    rebuilt = []
    for file_name, reader in readers.items():
        saved_rank = int(file_name.split("-")[1])
        if (
            saved_nodes
            and saved_rank < len(saved_nodes)
            and tier.names[reader] != saved_nodes[saved_rank]
        ):
            rebuilt.append(f"{file_name} (from the partner copy on {tier.names[reader]})")
    if rebuilt and tier.rank == 0:
        get_logger("parcomp.checkpoint").warning(
            "node-local step %d: %d shard(s) rebuilt from partner copies: %s",
            step,
            len(rebuilt),
            ", ".join(sorted(rebuilt)),
        )
    return manifest, arrays, None, sorted(rebuilt)


def inspect_local(root: Path, verify_data: bool = True) -> list[tuple[int, bool, str]]:
    """Describe the node-local checkpoints visible under ``root`` (local; no MPI).

    For every step: whether each saved shard has at least one good copy among the node
    folders this process can see (all of them when nodes are emulated on one machine, only
    its own on a real cluster), and how many.  Returns ``(step, restorable, text)`` newest
    first.
    """
    node_dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("node-"))
    steps = sorted(
        {s for d in node_dirs for p in d.iterdir() if (s := parse_step(p.name)) is not None},
        reverse=True,
    )
    out = []
    for step in steps:
        copies: dict[str, int] = {}
        manifest = None
        problems: list[str] = []
        holders = []
        for node_dir in node_dirs:
            folder = node_dir / step_dir_name(step)
            if not folder.is_dir():
                continue
            try:
                mine = parse_manifest(folder)
            except (ParcompError, OSError) as exc:
                problems.append(f"{node_dir.name}: {exc}")
                continue
            if manifest is None or mine.get("created_unix", 0) > manifest.get("created_unix", 0):
                manifest = mine
            holders.append((node_dir, folder, mine))
        if manifest is None:
            out.append((step, False, "no valid manifest: " + "; ".join(problems)))
            continue
        sizes = {f["name"]: f["bytes"] for f in manifest["files"]}
        for node_dir, folder, mine in holders:
            if mine.get("checkpoint_id") != manifest.get("checkpoint_id"):
                continue
            for name, nbytes in sizes.items():
                path = folder / name
                if not path.is_file() or path.stat().st_size != nbytes:
                    continue
                if verify_data:
                    try:
                        _read_shard_arrays(folder, manifest, name)
                    except (ParcompError, OSError, RuntimeError, KeyError, ValueError) as exc:
                        problems.append(f"{node_dir.name}/{name}: {exc}")
                        continue
                copies[name] = copies.get(name, 0) + 1
        missing = sorted(n for n in sizes if not copies.get(n))
        counts = sorted({copies.get(n, 0) for n in sizes})
        text = (
            f"{len(sizes)} shards saved on {manifest['nprocs']} ranks, in {len(holders)} node "
            f"folder(s); good copies per shard: {'/'.join(map(str, counts))}"
        )
        if missing:
            text += f"; NO good copy of {', '.join(missing)}"
        if problems:
            text += f" ({'; '.join(problems)})"
        out.append((step, not missing, text))
    return out
