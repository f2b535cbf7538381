"""Particle-to-grid deposit with a reverse halo exchange (:meth:`DistParticles.deposit`),
and its mirror, grid-to-particle interpolation (:meth:`DistParticles.interpolate`).

COMMUNICATES over the particles' private communicator: the reverse halo exchange sends
each ghost slab of a one-cell-wide layer to the neighbour owning those cells, which adds it
in (the transpose of :func:`parcomp.grid.halo.halo_plan`'s exchange, faces, edges and corners).
The deterministic variant routes each (cell, key, weight) contribution to the cell's owner
(``Alltoall`` of counts, ``Alltoallv`` of records) and sums in canonical order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parcomp.arrays.array import DistArray
from parcomp.grid.halo import halo_plan, largest_tag
from parcomp.particles import plan as plan
from parcomp.particles.exchange import route
from parcomp.particles.plan import Particles
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.errors import ParcompError, ShapeError
from parcomp.runtime.subcomm import check_tags

__all__ = ["deposit", "interpolate", "reverse_halo_add"]

SCHEMES = ("cic", "ngp")


def _sums(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Sums of ``weights`` by ``index`` over ``n`` bins, in input order, always float64.

    (``np.bincount`` returns int64 zeros for empty input, even with weights: a rank with no
    particles then sent integers into its neighbours' float deposit.)
    """
    return np.bincount(index, weights=weights, minlength=n).astype(np.float64, copy=False)


def _weights(p: Particles, weight: Any) -> np.ndarray:
    if weight is None:
        return np.ones(p.n_local)
    if isinstance(weight, str):
        w = p[weight]
    elif np.isscalar(weight):
        return np.full(p.n_local, float(weight))
    else:
        w = np.asarray(weight)
    if w.shape != (p.n_local,) or w.dtype.kind not in "biuf":
        raise ShapeError(
            f"deposit weight must be one real number per particle, shape ({p.n_local},); "
            f"got {w.dtype} of shape {w.shape}"
        )
    return w.astype(np.float64, copy=False)


def reverse_halo_add(buffer: np.ndarray, partition: Any, rank: int, comm: Any) -> None:
    """Add the one-cell ghost layer of ``buffer`` into the neighbours' interiors (collective).

    ``buffer`` is this rank's block padded by one cell on each side.  Each ghost slab
    (faces, edges, corners) goes to the neighbour owning those cells, which adds it into
    the matching slab of its interior; slabs beyond a non-periodic wall go nowhere.
    Messages are tagged by direction, as in :mod:`parcomp.grid.halo`.
    """
    from mpi4py import MPI

    if buffer.dtype != np.float64:  # every rank must send and receive the same type
        raise TypeError(f"reverse_halo_add needs a float64 buffer, got {buffer.dtype}")
    halo = (1,) * partition.ndim
    messages = halo_plan(partition, rank, halo, corners=True)
    recvs, sends, incoming = [], [], []
    for m in messages:
        shape = [s.stop - s.start for s in m.send]
        data = np.empty(shape, buffer.dtype)
        incoming.append((m.send, data))
        recvs.append(comm.Irecv(data, m.neighbor, m.recv_tag))
    for m in messages:
        sends.append(comm.Isend(np.ascontiguousarray(buffer[m.recv]), m.neighbor, m.send_tag))
    MPI.Request.Waitall(recvs + sends)
    for region, data in incoming:  # in plan order: the same order on every run
        buffer[region] += data


def _check_target(p: Particles, target: Any, scheme: str) -> str | None:

    if scheme not in SCHEMES:
        return f"deposit scheme must be one of {SCHEMES}, got {scheme!r}"
    if not isinstance(target, DistArray):
        return f"deposit target must be a DistArray, got {type(target).__name__}"
    if target.partition.global_shape != p.partition.global_shape or (
        target.partition.dims != p.partition.dims
    ):
        return (
            f"deposit target has global_shape {target.global_shape} on grid "
            f"{target.partition.dims}; the particles' grid is {p.partition.global_shape} on "
            f"{p.partition.dims}"
        )
    if target.partition.periods != p.partition.periods:
        return (
            f"deposit target's periodic axes {target.partition.periods} differ from the "
            f"particles' {p.partition.periods}"
        )
    if target.dtype.kind != "f":
        return f"deposit target must be a floating-point array, got {target.dtype}"
    if target.comm.Get_size() != p.comm.Get_size():
        return "deposit target is on another communicator"
    return None


def deposit(p: Particles, target: Any, weight: Any, scheme: str) -> None:
    """See :meth:`parcomp.particles.dist.DistParticles.deposit` (collective)."""
    w = np.zeros(0)
    with agreed(p.comm, catch=ParcompError):
        problem = _check_target(p, target, scheme)
        if problem is not None:
            raise ShapeError(problem)
        w = _weights(p, weight)
    kind = (
        "none"
        if weight is None
        else f"field {weight}"
        if isinstance(weight, str)
        else "constant"
        if np.isscalar(weight)
        else "array"
    )
    raise_if_differ(
        [scheme, kind],
        p.comm,
        lambda differ, mine, theirs: (
            f"deposit: scheme or kind of weight differ between ranks: rank 0 has {mine}, "
            f"rank {differ[0]} has {theirs}"
        ),
    )
    p.check_inside("deposit")
    pos = p.fields[p.position]
    partition = p.partition
    interior = target.interior
    start = np.asarray([a for a, _ in target.local_range], dtype=np.int64)
    if scheme == "ngp":
        cells = plan.cells(pos, p.box, partition.global_shape) - start
        flat = (
            np.ravel_multi_index(tuple(cells.T), interior.shape)
            if cells.size
            else np.zeros(0, np.int64)
        )
        add = _sums(flat, w, interior.size)
        interior += add.reshape(interior.shape)
        return
    local, glob, frac = plan.cic_stencil(pos, p.box, partition, p.rank)
    values = frac * w[:, None]
    if p.order_by is None:
        padded_shape = tuple(n + 2 for n in interior.shape)
        idx = local.reshape(-1, partition.ndim)
        flat = (
            np.ravel_multi_index(tuple(idx.T), padded_shape) if idx.size else np.zeros(0, np.int64)
        )
        padded = _sums(flat, values.ravel(), int(np.prod(padded_shape)))
        padded = padded.reshape(padded_shape)
        check_tags(largest_tag(partition.ndim), "a reverse halo exchange")
        reverse_halo_add(padded, partition, p.rank, p.message_comm)
        interior += padded[tuple(slice(1, n + 1) for n in interior.shape)]
        return
    _deterministic(p, target, glob, values, start)


def _deterministic(
    p: Particles, target: Any, glob: np.ndarray, values: np.ndarray, start: np.ndarray
) -> None:
    """Route every contribution to its cell's owner; sum each cell's in (key, corner) order.

    A contribution lands in this rank's block or a neighbour's (a cloud reaches one cell
    past the block), so the records go to the neighbours only
    (:func:`parcomp.particles.exchange.route`) and this rank's own stay here.
    """

    ndim = p.partition.ndim
    m, corners = values.shape
    record = np.dtype(
        [("cell", np.int64, (ndim,)), ("key", np.int64), ("corner", np.int64), ("w", np.float64)]
    )
    cells = glob.reshape(-1, ndim)
    rows = {
        "cell": cells,
        "key": np.repeat(p.fields[p.order_by].astype(np.int64), corners),
        "corner": np.tile(np.arange(corners, dtype=np.int64), m),
        "w": values.ravel(),
    }
    dest = p.partition.owner_of(cells) if cells.size else np.zeros(0, np.int64)
    mine = dest == p.rank
    order = np.flatnonzero(~mine)
    order = order[np.argsort(dest[order], kind="stable")]
    got, _ = route(p, {n: v[order] for n, v in rows.items()}, dest[order], record)
    got = {n: np.concatenate((rows[n][mine], got[n])) for n in rows}
    interior = target.interior
    loc = got["cell"] - start
    flat = np.ravel_multi_index(tuple(loc.T), interior.shape) if loc.size else np.zeros(0, np.int64)
    # sequential sums in (cell, key, corner) order: the same sequence on any rank count
    seq = np.lexsort((got["corner"], got["key"], flat))
    add = _sums(flat[seq], got["w"][seq], interior.size)
    interior += add.reshape(interior.shape)


def interpolate(p: Particles, field: Any, scheme: str) -> np.ndarray:
    """See :meth:`parcomp.particles.dist.DistParticles.interpolate` (collective)."""
    with agreed(p.comm, catch=ParcompError):
        problem = _check_target(p, field, scheme)
        if problem is not None:
            raise ShapeError(problem.replace("deposit", "interpolate"))
        if scheme == "cic" and min(field.halo) < 1:
            raise ShapeError(
                f"interpolate(scheme='cic') reads the cells around each particle, a "
                f"neighbour's too: the field needs ghost cells (halo >= 1), it has halo "
                f"{field.halo}"
            )
    raise_if_differ(
        scheme,
        p.comm,
        lambda differ, mine, theirs: (
            f"interpolate: scheme differs between ranks: rank 0 has {mine}, rank "
            f"{differ[0]} has {theirs}"
        ),
    )
    p.check_inside("interpolate")
    pos = p.fields[p.position]
    partition = p.partition
    halo = np.asarray(field.halo, dtype=np.int64)
    start = np.asarray([a for a, _ in field.local_range], dtype=np.int64)
    if scheme == "ngp":
        cells = plan.cells(pos, p.box, partition.global_shape) - start + halo
        return field.local[tuple(cells.T)].astype(np.float64, copy=False)
    field.exchange_halos(corners=True)  # the neighbours' cells, periodic images included
    local, _glob, frac = plan.cic_stencil(pos, p.box, partition, p.rank)
    out = np.zeros(pos.shape[0], np.float64)
    shift = halo - 1  # cic_stencil's indices count a one-cell ghost layer
    for c in range(local.shape[1]):  # corner by corner, in deposit's order: same bits anywhere
        idx = local[:, c, :] + shift
        out += frac[:, c] * field.local[tuple(idx.T)]
    return out
