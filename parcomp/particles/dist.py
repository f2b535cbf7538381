"""``DistParticles``: particles owned by the rank whose block of a grid holds their position.

COMMUNICATES: construction, :meth:`DistParticles.migrate`, :meth:`~DistParticles.ghosts`,
:meth:`~DistParticles.deposit`, :meth:`~DistParticles.count`, :meth:`~DistParticles.gather` and
:meth:`~DistParticles.restore` are collective over the communicator; field access,
:meth:`~DistParticles.keep` and :meth:`~DistParticles.checkpoint_state` are local.  The
plans (owners, wrap, ghost copies, deposit stencils) are the PURE functions of
:mod:`parcomp.particles.plan`.

Fields are a structure of arrays: ``p["x"]`` (positions, float, shape ``(m, ndim)``) and
any user fields (any numeric dtype, any trailing shape), all of length ``m`` on this rank.
Moving particles between ranks packs every field of the movers into one buffer of records
(a NumPy structured dtype, sent as bytes), counts first (:mod:`parcomp.particles.exchange`).
:meth:`~DistParticles.ghosts` sends to the neighbours only (non-blocking point-to-point),
so its cost per rank does not grow with the rank count; so does
:meth:`~DistParticles.migrate` when every rank's movers go to its neighbours (agreed by
one ``Allreduce``), and otherwise (a particle may jump anywhere) one ``MPI_Alltoall`` of
counts and one ``MPI_Alltoallv``.  Nothing is pickled.  Messages travel on the private ``particles``
duplicate of the communicator (:mod:`parcomp.runtime.subcomm`).

With ``order_by="id"`` (an integer field, unique per particle) the particles of every
rank are kept sorted by it, ghosts by (id, position), and :meth:`deposit` sums each cell's
contributions in id order: results are then bitwise the same on any rank count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from parcomp._renamed import renamed_keywords
from parcomp.grid.partition import Partition
from parcomp.particles import deposit as _deposit
from parcomp.particles import exchange as _px
from parcomp.particles import plan as plan
from parcomp.particles._kernels import locate
from parcomp.particles.order import check_unique_everywhere, check_unique_here
from parcomp.runtime.agree import agreed, raise_if_any, raise_if_differ
from parcomp.runtime.callid import reduce_checked
from parcomp.runtime.errors import ConfigError, ParcompError, ShapeError
from parcomp.runtime.ranks import resolve_comm
from parcomp.runtime.subcomm import subsystem_comm
from parcomp.runtime.watchdog import collective

__all__ = ["DistParticles", "OUT_OF_DOMAIN"]

#: What :meth:`DistParticles.migrate` does with particles outside a non-periodic axis.
OUT_OF_DOMAIN = ("raise", "drop")


def _record_dtype(fields: Mapping[str, np.ndarray]) -> np.dtype:
    return np.dtype([(name, a.dtype, a.shape[1:]) for name, a in fields.items()])


class DistParticles:
    """Particles distributed by position over the blocks of a grid.

    Parameters
    ----------
    blocks : DistArray or Partition
        The decomposition: a particle belongs to the rank whose block holds the cell of
        its position.  With a Partition, pass ``comm`` too.
    fields : dict of str to numpy.ndarray, optional
        This rank's initial particles (any rank may give any particles; they are moved to
        their owners at once).  Must hold ``position`` (float, shape ``(m, ndim)``); other
        fields have any numeric dtype and trailing shape, and length ``m``.  Names are
        letters, digits and ``_``.  Field names, dtypes and trailing shapes must be the same
        on every rank.
    box : sequence of (lo, hi), optional
        The domain in position units (default: cell units, ``[0, n)`` per axis).  Half
        open: a particle exactly at ``hi`` of a non-periodic axis is outside.
    position : str, default "x"
        Name of the position field.
    out_of_domain : {"raise", "drop"}
        Particles beyond a non-periodic wall at a :meth:`migrate`: raise on every rank,
        or drop them and count them in :attr:`dropped`.
    order_by : str, optional
        An integer field, unique per particle, that fixes a canonical order (see the module
        docstring): bitwise the same results on any rank count.
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: the DistArray's, else parcomp's default).

    Raises
    ------
    ShapeError, DTypeError, ConfigError
        On every rank together: a missing or malformed position field, NaN positions,
        fields of different lengths, fields that differ between ranks, a bad box.

    Notes
    -----
    Collective over `comm`.
    """

    @renamed_keywords("DistParticles", grid="blocks")
    @collective(
        "DistParticles()",
        lambda self, blocks, *a, comm=None, **k: comm or getattr(blocks, "comm", None),
    )
    def __init__(
        self,
        blocks: Any,
        fields: Mapping[str, np.ndarray] | None = None,
        *,
        box: Sequence[Sequence[float]] | None = None,
        position: str = "x",
        out_of_domain: str = "raise",
        order_by: str | None = None,
        comm: Any = None,
    ) -> None:
        partition = getattr(blocks, "partition", blocks)
        comm = resolve_comm(comm if comm is not None else getattr(blocks, "comm", None))
        key: Any = None
        checked: dict[str, np.ndarray] = {}
        with agreed(comm):
            if not isinstance(partition, Partition):
                raise ConfigError(
                    f"DistParticles needs a DistArray or a Partition, got {type(blocks).__name__}"
                )
            if partition.size != comm.Get_size():
                raise ConfigError(
                    f"the grid has {partition.size} ranks but the communicator {comm.Get_size()}"
                )
            if out_of_domain not in OUT_OF_DOMAIN:
                raise ConfigError(
                    f"out_of_domain must be one of {OUT_OF_DOMAIN}, got {out_of_domain!r}"
                )
            self.box = plan.Box.create(box, partition.global_shape)
            checked = plan.check_fields(fields, position, partition.ndim, order_by)
            key = (
                [(n, a.dtype.str, a.shape[1:]) for n, a in checked.items()],
                self.box.lo,
                self.box.hi,
                position,
                out_of_domain,
                order_by,
                partition.global_shape,
                partition.dims,
            )
        raise_if_differ(
            key,
            comm,
            lambda differ, mine, theirs: (
                "DistParticles arguments differ between ranks (fields, box, options, grid): "
                f"rank 0 has {mine}, rank {differ[0]} has {theirs}"
            ),
        )
        self.partition: Partition = partition
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.position = position
        self.out_of_domain = out_of_domain
        self.order_by = order_by
        #: The particles' own communicator on ``comm`` (records move on it; parcomp.runtime.subcomm).
        self.message_comm = subsystem_comm(comm, "particles")
        self.fields: dict[str, np.ndarray] = checked
        self.ghost_fields: dict[str, np.ndarray] = {
            n: np.empty((0, *a.shape[1:]), a.dtype) for n, a in checked.items()
        }
        #: One particle as a structured record (its fields): what moves between ranks.
        self.record_dtype = _record_dtype(checked)
        #: Particles dropped at a non-periodic wall so far (all ranks; ``out_of_domain="drop"``).
        self.dropped = 0
        #: How the last :meth:`migrate` moved particles: "neighbors" or "alltoall".
        self.last_route = ""
        if order_by is not None:
            self._check_unique_everywhere()
        self.migrate()

    # ------------------------------------------------------------------ access
    def __getitem__(self, name: str) -> np.ndarray:
        """This rank's owned values of field ``name`` (a view; writes go to the particles)."""
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f"no field {name!r}; fields are {sorted(self.fields)}") from None

    def __setitem__(self, name: str, value: Any) -> None:
        """Replace field ``name`` on this rank (same length, dtype and trailing shape)."""
        old = self[name]
        new = np.ascontiguousarray(value, dtype=old.dtype)
        if new.shape != old.shape:
            raise ShapeError(f"field {name!r} has shape {old.shape} here, got {new.shape}")
        self.fields[name] = new

    @property
    def n_local(self) -> int:
        """Particles owned by this rank."""
        return int(self.fields[self.position].shape[0])

    @property
    def n_ghost(self) -> int:
        """Ghost copies held by this rank (see :meth:`ghosts`)."""
        return int(self.ghost_fields[self.position].shape[0])

    @collective("DistParticles.count")
    def count(self) -> int:
        """Particles owned by all ranks together (collective)."""
        from mpi4py import MPI

        total = reduce_checked(self.comm, np.array([self.n_local], np.int64), MPI.SUM)
        return int(total[0])

    @collective("DistParticles.gather")
    def gather(self, root: int = 0) -> dict[str, np.ndarray] | None:
        """Every rank's owned particles on ``root`` (None elsewhere), sorted by ``order_by``.

        Without ``order_by`` they come in rank order.  Collective: one ``Gather`` of
        counts and one ``Gatherv`` of packed records (nothing pickled).  For output and
        checks of modest populations: ``root`` holds them all.
        """
        from mpi4py import MPI

        size = self.partition.size
        bad_root = isinstance(root, bool) or not isinstance(root, int | np.integer)
        raise_if_any(
            ConfigError(f"gather: root must be a rank in [0, {size}), got {root!r}")
            if bad_root or not 0 <= root < size
            else None,
            self.comm,
        )
        raise_if_differ(
            int(root),
            self.comm,
            lambda differ, mine, theirs: (
                f"gather: root differs between ranks: rank 0 has {mine}, rank {differ[0]} has "
                f"{theirs}"
            ),
        )
        mine = np.empty(self.n_local, self.record_dtype)
        for name, values in self.fields.items():
            mine[name] = values
        counts = np.empty(size, np.int64) if self.rank == root else None
        self.message_comm.Gather(np.array([self.n_local], np.int64), counts, root=root)
        if self.rank != root:
            self.message_comm.Gatherv(mine.view(np.uint8), None, root=root)
            return None
        assert counts is not None
        whole = np.empty(int(counts.sum()), self.record_dtype)
        item = self.record_dtype.itemsize
        self.message_comm.Gatherv(
            mine.view(np.uint8),
            [whole.view(np.uint8), counts * item, _px.displs(counts) * item, MPI.BYTE],
            root=root,
        )
        out = {name: np.ascontiguousarray(whole[name]) for name in self.record_dtype.names}
        if self.order_by is not None:
            order = np.argsort(out[self.order_by], kind="stable")
            out = {n: a[order] for n, a in out.items()}
        return out

    def keep(self, mask: Any) -> None:
        """Keep only this rank's particles where ``mask`` is true (local; e.g. absorbed ones go)."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self.n_local,):
            raise ShapeError(f"mask must have shape ({self.n_local},), got {m.shape}")
        self.fields = {n: a[m] for n, a in self.fields.items()}

    def __repr__(self) -> str:
        return (
            f"DistParticles(n_local={self.n_local}, n_ghost={self.n_ghost}, "
            f"fields={ {n: (str(a.dtype), a.shape[1:]) for n, a in self.fields.items()} }, "
            f"grid={self.partition.dims}, rank={self.rank})"
        )

    # ------------------------------------------------------------------ transport
    @collective("DistParticles.migrate")
    def migrate(self) -> int:
        """Move every particle to the rank that owns its position now.

        Positions on periodic axes are wrapped into the box first.  Particles beyond a
        non-periodic wall raise :class:`~parcomp.runtime.errors.ShapeError` on every rank
        (``out_of_domain="raise"``) or are dropped (``"drop"``).  Ghost copies are cleared.

        Returns
        -------
        int
            Particles dropped at the walls by this call, over all ranks.

        Raises
        ------
        ShapeError
            On every rank: NaN or infinite positions, fields of different lengths, or
            particles outside a non-periodic wall with ``out_of_domain="raise"``.

        Notes
        -----
        Collective.  Counts first, then the movers' packed records: to the neighbours only
        when all movers go to neighbours, else ``Alltoall`` + one ``Alltoallv``
        (:attr:`last_route` says which).
        """
        from mpi4py import MPI

        self.clear_ghosts()
        owner = np.zeros(0, np.int64)
        n_out = 0
        with agreed(self.comm, catch=ParcompError):
            self._check_layout("migrate")
            pos = self.fields[self.position]
            owner, bad, n_out = self._locate(pos, "migrate")
            if bad:
                rows = np.flatnonzero(owner == -2)
                raise ShapeError(
                    f"migrate: field {self.position!r}: {bad} particle(s) have NaN or infinite "
                    f"positions (first: local row {int(rows[0])}, {pos[rows[0]].tolist()})"
                )
            if n_out and self.out_of_domain == "raise":
                first = int(np.flatnonzero(owner == -1)[0])
                raise ShapeError(
                    f"migrate: {n_out} particle(s) on rank {self.rank} left the domain "
                    f"{list(zip(self.box.lo, self.box.hi, strict=True))} across a non-periodic wall "
                    f"(first: {pos[first].tolist()}); pass out_of_domain='drop' to drop them"
                )
        dropped = 0
        if self.out_of_domain == "drop":
            dropped = int(reduce_checked(self.comm, np.array([n_out], np.int64), MPI.SUM)[0])
            self.dropped += dropped
        moving = owner != self.rank  # the dropped ones (-1) too: they go nowhere
        if moving.any():
            rows = np.flatnonzero(moving)
            order = rows[np.argsort(owner[rows], kind="stable")]
            if n_out:
                order = order[owner[order] >= 0]
            dest = owner[order]
            out = {n: a[order] for n, a in self.fields.items()}
            arrived, self.last_route = _px.route(self, out, dest)
            staying = ~moving
            n_keep = int(staying.sum())
            n_new = arrived[self.position].shape[0]
            fields = {}
            for n, a in self.fields.items():
                new = np.empty((n_keep + n_new, *a.shape[1:]), a.dtype)
                np.compress(staying, a, axis=0, out=new[:n_keep])
                new[n_keep:] = arrived[n]
                fields[n] = new
            self.fields = fields
        else:
            arrived, self.last_route = _px.route(
                self, {n: a[:0] for n, a in self.fields.items()}, np.zeros(0, np.int64)
            )
            if arrived[self.position].shape[0]:
                self.fields = {n: np.concatenate((a, arrived[n])) for n, a in self.fields.items()}
        if self.order_by is not None:
            order = np.argsort(self.fields[self.order_by], kind="stable")
            self.fields = {n: a[order] for n, a in self.fields.items()}
            self._check_unique_here()
        return dropped

    def _check_unique_here(self) -> None:

        check_unique_here(self)

    def _check_unique_everywhere(self) -> None:

        check_unique_everywhere(self)

    def _locate(
        self, pos: np.ndarray, where: str, wrap: bool = True
    ) -> tuple[np.ndarray, int, int]:
        """(owner per row, non-finite rows, rows beyond a wall); wraps periodic axes of
        ``pos`` in place if ``wrap``.  Raises ShapeError (local) for a malformed array."""
        problem = plan.check_position_array(pos, self.partition.ndim)
        if problem is not None:
            raise ShapeError(f"{where}: field {self.position!r}: {problem}")
        if pos.dtype == np.float64 and pos.flags.c_contiguous:
            return locate(pos if wrap else pos.copy(), self.box, self.partition)
        x = pos if wrap else pos.copy()  # other float dtypes: the NumPy plan, several passes
        finite = np.isfinite(x).all(axis=1)
        owner = np.full(x.shape[0], -2, np.int64)
        outside = plan.wrap(x, self.box, self.partition.periods) & finite
        inside = finite & ~outside
        owner[inside] = plan.owners(x[inside], self.box, self.partition)
        owner[outside] = -1
        return owner, int((~finite).sum()), int(outside.sum())

    def _check_layout(self, where: str) -> None:
        """Raise ShapeError (local) unless the fields still have the names, dtypes and
        trailing shapes they were made with, and one length (they are plain arrays in a
        dict: code may have replaced one)."""
        names = self.record_dtype.names or ()
        if tuple(self.fields) != names:
            raise ShapeError(
                f"{where}: fields on rank {self.rank} are {sorted(self.fields)}, expected "
                f"{sorted(names)}"
            )
        for name in names:
            a, (dtype, _) = self.fields[name], self.record_dtype.fields[name]
            want = (dtype.base, dtype.shape)
            if not isinstance(a, np.ndarray) or (a.dtype, a.shape[1:]) != want:
                raise ShapeError(
                    f"{where}: field {name!r} on rank {self.rank} is "
                    f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}, "
                    f"expected {want[0]} with trailing shape {want[1]}"
                )
        lengths = {n: a.shape[0] for n, a in self.fields.items()}
        if len(set(lengths.values())) > 1:
            raise ShapeError(
                f"{where}: fields have different lengths on rank {self.rank}: {lengths}"
            )

    def check_inside(self, where: str) -> None:
        """Raise on every rank unless the fields are intact and every particle is finite
        and inside this rank's block."""
        with agreed(self.comm, catch=ParcompError):
            self._check_layout(where)
            owner, bad, _ = self._locate(self.fields[self.position], where, wrap=False)
            if bad:
                raise ShapeError(f"{where}: {bad} particle(s) have NaN or infinite positions")
            stray = int((owner != self.rank).sum())
            if stray:
                raise ShapeError(
                    f"{where}: {stray} particle(s) on rank {self.rank} are outside its block; "
                    "call migrate() after moving particles"
                )

    @collective("DistParticles.ghosts")
    def ghosts(self, cutoff: float) -> int:
        """Fetch copies of the neighbours' particles within ``cutoff`` of this rank's block.

        Faces, edges and corners: a particle within ``cutoff`` of a neighbour's block
        along every axis of their offset is copied there.  On a periodic axis, copies that
        cross the boundary are shifted by the box length, so that distances to them are
        plain differences (no minimum-image arithmetic in the user's kernel).  The copies
        land in :attr:`ghost_fields` (all fields), sorted by (``order_by``, position) if
        an order is set.  Call after :meth:`migrate`; :meth:`clear_ghosts` drops them.

        Returns
        -------
        int
            Ghost copies now held by this rank.

        Raises
        ------
        ShapeError
            On every rank: a cutoff that is not positive, is wider than the smallest block
            along some axis, or more than half a periodic length; or particles that are not
            inside this rank's block (moved since :meth:`migrate`).

        Notes
        -----
        Collective.
        """
        problem = plan.check_cutoff(cutoff, self.box, self.partition)
        raise_if_any(None if problem is None else ShapeError(f"ghosts: {problem}"), self.comm)
        raise_if_differ(
            float(cutoff),
            self.comm,
            lambda differ, mine, theirs: (
                f"ghosts: the cutoff differs between ranks: rank 0 has {mine}, rank "
                f"{differ[0]} has {theirs}"
            ),
        )
        self.check_inside("ghosts")
        pos = self.fields[self.position]
        gp = plan.ghost_plan(pos, self.box, self.partition, self.rank, float(cutoff))
        rows = {n: a[gp.index] for n, a in self.fields.items()}
        rows[self.position] = rows[self.position] + gp.shift
        got = _px.exchange_neighbors(self, rows, gp.dest)
        if self.order_by is not None and got[self.position].shape[0]:
            x = got[self.position]
            keys = [x[:, a] for a in reversed(range(x.shape[1]))] + [got[self.order_by]]
            order = np.lexsort(keys)
            got = {n: a[order] for n, a in got.items()}
        self.ghost_fields = got
        return self.n_ghost

    def clear_ghosts(self) -> None:
        """Drop the ghost copies (local)."""
        self.ghost_fields = {
            n: np.empty((0, *a.shape[1:]), a.dtype) for n, a in self.fields.items()
        }

    # ------------------------------------------------------------------ deposit
    @collective("DistParticles.deposit")
    def deposit(
        self,
        target: Any,
        weight: str | np.ndarray | float | None = None,
        *,
        scheme: str = "cic",
    ) -> None:
        """Add each particle's ``weight`` into the cells of ``target`` around it.

        Parameters
        ----------
        target : DistArray
            A grid with this object's decomposition (same global shape and process grid),
            any ghost width.  Its interior is added to; its ghost cells are not touched.
        weight : str, numpy.ndarray, float or None
            A field name, an array of length ``n_local``, a constant, or None (1.0).
        scheme : {"cic", "ngp"}
            Cloud-in-cell (linear weights over the ``2**ndim`` nearest cell centres, a
            cell's centre at ``lo + (i + 0.5) * h``: the cell-centre convention
            ``x / h - 0.5``) or nearest grid point (the particle's own cell).
            :meth:`interpolate` is the mirror (grid to particles, same weights).

        Notes
        -----
        Collective.  Cloud-in-cell contributions to a neighbour's cells are accumulated in
        a ghost layer one cell wide and added into their owners by a *reverse halo
        exchange* (faces, edges and corners).  With ``order_by`` set, the contributions to
        each cell are instead sent to its owner and summed in (``order_by``, corner) order,
        so the result is bitwise the same on any rank count.  Cells beyond a non-periodic
        wall fold onto the wall cell.
        """
        _deposit.deposit(self, target, weight, scheme)

    @collective("DistParticles.interpolate")
    def interpolate(self, field: Any, *, scheme: str = "cic") -> np.ndarray:
        """The value of grid ``field`` at each of this rank's particles: the mirror of
        :meth:`deposit`, with the same weights (``"cic"``: linear over the ``2**ndim``
        cell centres around the particle, a cell's centre at ``lo + (i + 0.5) * h``, cells
        beyond a non-periodic wall folded onto the wall cell; ``"ngp"``: the particle's
        own cell).  So the sum over particles of ``w * interpolate(f)`` equals the sum
        over cells of ``f * deposit(w)``.

        Returns a float64 array of length ``n_local``, in this rank's particle order;
        each value depends only on the particle's position and the field, so the result is
        bitwise the same on any rank count (compare by ``order_by``).  Collective: the
        field's halos are exchanged (corners too) for ``"cic"``, which needs ``halo >= 1``.
        """
        return _deposit.interpolate(self, field, scheme)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, prefix: str = "particles") -> dict[str, np.ndarray]:
        """This rank's fields for ``Checkpointer.save(..., local=...)``: ``{prefix.field: array}``.

        Local.  Restore with :meth:`restore` on any rank count.
        """
        return {f"{prefix}.{n}": a for n, a in self.fields.items()}

    @classmethod
    @renamed_keywords("DistParticles.restore", grid="blocks")
    def restore(
        cls, blocks: Any, restored: Any, prefix: str = "particles", **options: Any
    ) -> DistParticles:
        """Particles from a checkpoint restored by ``Checkpointer.restore`` (any rank count).

        Parameters
        ----------
        blocks : DistArray or Partition
            The decomposition now (it may differ from the saved one).
        restored : parcomp.checkpoint.Restored
            The restored checkpoint; its ``local`` data hold ``prefix.<field>`` arrays
            saved from :meth:`checkpoint_state`.
        prefix : str
            As given to :meth:`checkpoint_state`.
        **options
            ``box``, ``position``, ``out_of_domain``, ``order_by``, ``comm`` as for the
            constructor (use the saved run's).

        Notes
        -----
        Collective.  Each rank gets a share of the saved particles (the checkpoint's
        balanced re-deal), and they move to their owners at once.
        """
        head = f"{prefix}."
        fields = {
            name[len(head) :]: value
            for name, value in getattr(restored, "local", {}).items()
            if name.startswith(head)
        }
        return cls(blocks, fields, **options)
