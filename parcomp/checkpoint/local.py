"""The node-local checkpoint tier: shards on fast node-local storage, each copied to a partner.

COMMUNICATES: :class:`LocalTier`, :func:`local_steps` and :func:`restore_local` are
collective over ``tier.comm``; :class:`NodeLocalStore` plugs into the one commit protocol
(:mod:`parcomp.checkpoint.transaction`); :func:`choose_manifest` and :func:`choose_readers`
are PURE.  The partner copies travel in :mod:`parcomp.checkpoint.partner`;
``parcomp inspect --local`` is :func:`parcomp.checkpoint.reader.inspect_local`.

Layout (``LOCAL`` is the checkpointer's ``local_directory``; each node sees only its own folder
on a real cluster, and one machine emulating several nodes simply has several)::

    LOCAL/node-<name>/step-00000100/
        manifest.json                     the whole checkpoint's manifest (every node has it)
        shard-00000-of-00004.h5           the shards of this node's ranks ...
        shard-00002-of-00004.h5           ... and the partner copies it keeps for the next node
    LOCAL/node-<name>/.tmp-step-...       being written (removed when stale)

Saving: a rank reserves room for its shard and the partner copies it keeps, writes its
shard into the reservation and sends the bytes to its partner rank on the next node
(:func:`parcomp.runtime.nodes.partner_ranks`), which writes the copy under the same name.  Rank 0
builds the manifest; every node's lowest rank publishes it in its folder (each node's
commit).  Each manifest carries the same ``checkpoint_id``.

Restoring: the node leaders describe what they hold (JSON: digest of their manifest, file
sizes); every rank then derives the same choice (:func:`choose_manifest`: the newest
checkpoint, its nodes' copies of the manifest compared, the majority kept; and
:func:`choose_readers`: for every saved shard a rank on a node holding a good copy, its
own node first), and the one restore engine (:mod:`parcomp.checkpoint.restore`) reads and
delivers with its Alltoallv transport.  A copy that fails verification is excluded and
the shard read from the other copy; a shard with no copy left makes the step
unrestorable from this tier (the caller falls back to the shared directory).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from parcomp.checkpoint.format import (
    MANIFEST,
    make_private_dir,
    parse_step,
    step_dir_name,
)
from parcomp.checkpoint.lease import Lease
from parcomp.checkpoint.manifest import Manifest
from parcomp.checkpoint.manifest_read import parse_manifest
from parcomp.checkpoint.partner import exchange_partner_copies
from parcomp.checkpoint.transaction import Store, _common
from parcomp.checkpoint.writer import (
    Snapshot,
    build_manifest,
    estimate_shard_bytes,
    manifest_arrays,
    prune,
    publish,
    write_shard,
)
from parcomp.runtime.errors import CheckpointError, ParcompError
from parcomp.runtime.log import get_logger
from parcomp.runtime.nodes import node_groups, node_name, partner_ranks, safe_node_dirname
from parcomp.runtime.subcomm import subsystem_comm
from parcomp.runtime.wire import agree_errors, allgather_ints, allgather_json, bcast_json

__all__ = [
    "LocalTier",
    "NodeLocalStore",
    "local_steps",
    "choose_manifest",
    "choose_readers",
]


class LocalTier:
    """Where this rank's node-local checkpoints go, and who its partners are.

    Construction is collective (node names gathered as JSON over ``comm``).  ``job`` is the
    job's shared checkpoint directory: node-local checkpoints record it, and those of
    another job left in the same node-local folder (another ``directory``) are never
    restored, only replaced.
    """

    def __init__(self, root: str | Path, comm: Any, job: str | Path | None = None) -> None:
        self.root = Path(root)
        self.comm = comm
        self.job = None if job is None else _job_identity(Path(job), comm)
        # Partner copies travel on their own duplicate of comm (parcomp.runtime.subcomm), tags 1-2.
        self.p2p = subsystem_comm(comm, "partner")
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.node = node_name()
        self.names: list[str] = [str(n) for n in allgather_json(comm, self.node)]
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
        errors = agree_errors(comm, mine)
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


class NodeLocalStore(Store):
    """The node-local tier in the commit protocol: every node's leader commits its folder."""

    many_committers = True

    def __init__(self, tier: LocalTier) -> None:
        super().__init__(tier.folder, tier.comm)
        self.tier = tier
        self.nonce = ""

    @property
    def committer(self) -> bool:
        return self.tier.leader

    def describe(self, step: int) -> str:
        return f"node-local checkpoint of step {step} in {self.tier.root}"

    def stage(self, step: int, nonce: str) -> Path:
        self.nonce = nonce  # every node's manifest carries it as checkpoint_id
        return super().stage(step, nonce)

    def need(self, snap: Snapshot) -> int:
        """Its shard and the partner copies it keeps (collective: gathers the estimates)."""
        estimates = allgather_ints(self.comm, [estimate_shard_bytes(snap)])[:, 0]
        return int(estimates[self.rank] + sum(estimates[h] for h in self.tier.holds))

    def write(self, tmp: Path, reserved: Path | None, step: int, snap: Snapshot) -> dict[str, Any]:
        """The shard (into the reservation, trimmed: the rest then holds the partner copies
        received), then the partner exchange, which runs even after a failed write so that
        no partner waits."""
        from mpi4py import MPI

        shard, error = None, None
        try:
            shard = write_shard(tmp, self.rank, self.size, step, snap, reserved=reserved)
        except MPI.Exception:
            raise
        except Exception as exc:  # noqa: BLE001 - the partner exchange below must still run
            error = f"on {self.tier.node}: writing its node-local shard failed: {exc!r}"
        log.debug("exchanging the partner copies of step %d", step)
        error = exchange_partner_copies(self.tier, tmp, shard) or error
        if error is not None or shard is None:
            raise CheckpointError(error or "no shard written")
        return shard

    def manifest(
        self, tmp: Path, step: int, records: list[dict[str, Any]], snap: Snapshot, state: dict
    ) -> dict[str, Any]:
        arrays = manifest_arrays(snap.layout, records)
        files = [{"name": rec["file"], "bytes": rec["bytes"]} for rec in records]
        return build_manifest(
            step,
            self.size,
            arrays,
            files,
            tier="node-local",
            checkpoint_id=self.nonce,
            **({} if self.tier.job is None else {"shared_directory": self.tier.job}),
            nodes=self.tier.names,
            partners=self.tier.partner,
            **_common(snap, records, state),
        )

    def publish(self, tmp: Path, step: int, manifest: dict[str, Any], keep: int) -> Path:
        final = publish(self.tier.folder, tmp, step, manifest)
        prune(self.tier.folder, keep, final).join()
        return final


#: A file in the shared checkpoint directory naming this job's checkpoints (random, made
#: once): a job started again with the same path after the folder was deleted is another job.
JOB_ID_FILE = ".parcomp-job-id"
log = logging.getLogger("parcomp.checkpoint")


def _job_identity(directory: Path, comm: Any) -> str:
    """``"<shared directory>#<its job id>"`` (collective: rank 0 reads or makes the id)."""
    import secrets

    ident = None
    if comm.Get_rank() == 0:
        path = directory / JOB_ID_FILE
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(secrets.token_hex(8) + "\n")
            with open(path, encoding="ascii") as fh:
                ident = fh.read(64).strip() or None
        except OSError:
            ident = None  # unwritable: the path alone identifies the job
    ident = bcast_json(comm, ident)
    where = str(directory.absolute())
    return where if ident is None else f"{where}#{ident}"


def local_steps(tier: LocalTier) -> list[int]:
    """Steps committed on any node's local storage, newest first (collective)."""
    mine: list[int] = []
    foreign: list[str] = []
    if tier.leader and tier.folder.is_dir():
        for p in tier.folder.iterdir():
            if (s := parse_step(p.name)) is None or not (p / MANIFEST).is_file():
                continue
            other = _owner(p / MANIFEST)
            if tier.job is not None and other is not None and other != tier.job:
                foreign.append(f"{p} (of the job checkpointing to {other})")
                continue
            mine.append(s)
    gathered = allgather_json(tier.comm, [mine, foreign])
    skipped = [f for _steps, others in gathered for f in others]
    if skipped and tier.rank == 0:
        get_logger("parcomp.checkpoint").warning(
            "node-local checkpoint(s) of another job ignored (this job checkpoints to %s): %s",
            tier.job,
            "; ".join(skipped[:4]) + (f" and {len(skipped) - 4} more" if len(skipped) > 4 else ""),
        )
    return sorted({int(s) for steps, _others in gathered for s in steps}, reverse=True)


def _owner(manifest: Path) -> str | None:
    """The shared directory a node-local manifest records (None: not recorded, unreadable)."""
    import json

    try:
        with open(manifest, encoding="utf-8") as fh:
            value = json.load(fh).get("shared_directory")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _node_view(tier: LocalTier, step: int) -> tuple[dict[str, Any] | None, bytes]:
    """What this node holds of ``step`` (leaders only): a JSON-able view, and the
    manifest's bytes (kept here; broadcast only if this node's copy is chosen)."""
    if not tier.leader:
        return None, b""
    folder = tier.folder / step_dir_name(step)
    view: dict[str, Any] = {"node": tier.node, "digest": None, "error": None, "files": {}}
    if not folder.is_dir():
        view["error"] = "absent"
        return view, b""
    raw = b""
    try:
        manifest = parse_manifest(folder)
        raw = manifest.raw
        view.update(
            digest=manifest.digest,
            id=manifest.get("checkpoint_id"),
            created=float(manifest.get("created_unix", 0)),
        )
    except (ParcompError, OSError) as exc:
        view["error"] = str(exc)
    for path in folder.iterdir():
        if path.name.startswith("shard-"):
            try:
                view["files"][path.name] = path.stat().st_size
            except OSError:
                pass
    return view, raw


def choose_manifest(views: list[dict[str, Any] | None]) -> tuple[str, int] | str:
    """The manifest to restore (PURE): ``(digest, rank of a leader holding it)``, or why none.

    Every node keeps its own copy of the step's manifest, and those must agree.  The
    copies vote, whatever their ``checkpoint_id`` or creation time claims (both are
    inside the bytes an editor controls): the version held by a strict majority of the
    nodes that hold the step wins; a copy that differs (edited, or damaged and re-signed)
    is outvoted and its node's files are not used; a tie refuses the step (the restore
    then tries an older one, or the flushed copy).
    """
    good = [(r, v) for r, v in enumerate(views) if v is not None and v["digest"] is not None]
    if not good:
        reasons = "; ".join(f"{v['node']}: {v['error']}" for v in views if v is not None)
        return f"no node holds a valid manifest ({reasons})"
    held = [v for v in views if v is not None and v["error"] != "absent"]
    copies = Counter(v["digest"] for _, v in good)
    (digest, votes), *rest = copies.most_common()
    if rest and votes * 2 <= len(held):
        return (
            f"the nodes' copies of the manifest disagree ({len(copies)} versions, "
            f"{votes} of {len(held)} nodes agreeing at most)"
        )
    return digest, next(r for r, v in good if v["digest"] == digest)


def choose_readers(
    names: list[str],
    views: list[dict[str, Any] | None],
    manifest: Manifest,
    excluded: set[tuple[int, str]],
) -> dict[str, int] | str:
    """For every saved shard, the rank that reads it (PURE), or why some shard is lost.

    A rank on a node whose folder holds a copy of the right size under the chosen
    manifest; the shard's own node if it survived, else the partner's; the least loaded
    rank there.  ``excluded`` holds ``(reader rank, file)`` copies that failed verification.
    """
    bad = {(names[r], f) for r, f in excluded}
    ranks_on: dict[str, list[int]] = {}
    for r, n in enumerate(names):
        ranks_on.setdefault(n, []).append(r)
    saved_nodes = list(manifest.get("nodes") or [])
    load = {r: 0 for r in range(len(names))}
    readers: dict[str, int] = {}
    lost = []
    for name, nbytes in manifest.files.items():
        holders = [
            v["node"]
            for v in views
            if v is not None
            and v["digest"] == manifest.digest
            and v["files"].get(name) == nbytes
            and (v["node"], name) not in bad
        ]
        if not holders:
            lost.append(name)
            continue
        saved_rank = int(name.split("-")[1])
        home = saved_nodes[saved_rank] if saved_rank < len(saved_nodes) else None
        if home in holders:
            holders = [home]  # its own node survived: the partner copy is not needed
        reader = min((r for node in holders for r in ranks_on[node]), key=lambda r: (load[r], r))
        load[reader] += nbytes
        readers[name] = reader
    if lost:
        damaged = sorted({f for _, f in bad} & set(lost))
        return (
            f"{len(lost)} shard(s) lost with their node and their partner's node"
            + (f" or damaged in every copy ({', '.join(damaged)})" if damaged else "")
            + ": "
            + ", ".join(sorted(lost))
            + (f" (saved on nodes {sorted(set(saved_nodes))})" if saved_nodes else "")
        )
    return readers
