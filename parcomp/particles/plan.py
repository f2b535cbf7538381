"""Where particles go: cells, owners, periodic wrap, ghost copies and deposit stencils.

PURE: NumPy only, no MPI.  Every function is a function of positions, a
:class:`~parcomp.grid.partition.Partition`, a :class:`Box` and a rank, so the plans of
:mod:`parcomp.particles.dist` are tested by delivering them in NumPy for every rank (as the
halo and redistribution plans are).

Positions are continuous coordinates in a :class:`Box`: axis ``a`` spans
``[lo[a], hi[a])`` and is cut into ``global_shape[a]`` cells of width
``h[a] = (hi[a] - lo[a]) / global_shape[a]``.  A particle belongs to the cell
``floor((x - lo) / h)`` and to the rank owning that cell.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parcomp.grid.partition import Partition
from parcomp.runtime.errors import ConfigError, DTypeError, ShapeError

#: A :class:`~parcomp.particles.dist.DistParticles` (that module imports the ones that take
#: one: exchange, order, deposit).
Particles = Any

__all__ = [
    "check_fields",
    "Box",
    "check_position_array",
    "check_positions",
    "wrap",
    "cells",
    "owners",
    "GhostPlan",
    "ghost_plan",
    "check_cutoff",
    "cic_stencil",
]


@dataclass(frozen=True)
class Box:
    """The domain of particle positions: ``[lo[a], hi[a])`` per axis."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def create(cls, box: Sequence[Sequence[float]] | None, shape: Sequence[int]) -> Box:
        """From ``[(lo, hi), ...]`` per axis, or None for cell units ``[0, n)``."""
        if box is None:
            return cls(tuple(0.0 for _ in shape), tuple(float(n) for n in shape))
        try:
            pairs = [(float(a), float(b)) for a, b in box]
        except (TypeError, ValueError):
            raise ShapeError(f"box must be a sequence of (lo, hi) pairs, got {box!r}") from None
        if len(pairs) != len(shape):
            raise ShapeError(f"box has {len(pairs)} axes, the grid {tuple(shape)} has {len(shape)}")
        for axis, (a, b) in enumerate(pairs):
            if not (np.isfinite(a) and np.isfinite(b) and a < b):
                raise ShapeError(f"box axis {axis}: need finite lo < hi, got ({a}, {b})")
        return cls(tuple(a for a, _ in pairs), tuple(b for _, b in pairs))

    @property
    def length(self) -> np.ndarray:
        """Extent per axis."""
        return np.subtract(self.hi, self.lo)

    def spacing(self, shape: Sequence[int]) -> np.ndarray:
        """Cell width per axis."""
        return self.length / np.asarray(shape, dtype=np.float64)

    def block(self, partition: Partition, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corner of ``rank``'s block in position units."""
        h = self.spacing(partition.global_shape)
        rng = np.asarray(partition.local_range(rank), dtype=np.float64)
        lo = np.asarray(self.lo)
        return lo + rng[:, 0] * h, lo + rng[:, 1] * h


def check_position_array(positions: Any, ndim: int) -> str | None:
    """The problem with the type or shape of ``positions`` (not its values), or None."""
    if not isinstance(positions, np.ndarray) or positions.dtype.kind != "f":
        return (
            f"positions must be a floating-point numpy array, got {type(positions).__name__} "
            + (f"of dtype {positions.dtype}" if isinstance(positions, np.ndarray) else "")
        )
    if positions.ndim != 2 or positions.shape[1] != ndim:
        return f"positions must have shape (m, {ndim}), got {positions.shape}"
    return None


def check_positions(positions: Any, ndim: int) -> str | None:
    """The problem with ``positions`` (type, shape, non-finite values), or None."""
    problem = check_position_array(positions, ndim)
    if problem is not None:
        return problem
    finite = np.isfinite(positions)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        return (
            f"{bad.size} particle(s) have NaN or infinite positions (first: local row "
            f"{int(bad[0])}, {positions[bad[0]].tolist()})"
        )
    return None


def wrap(positions: np.ndarray, box: Box, periods: Sequence[bool]) -> np.ndarray:
    """Wrap periodic axes into ``[lo, hi)`` in place; returns the mask of particles outside
    the box along a non-periodic axis."""
    outside = np.zeros(positions.shape[0], bool)
    for axis, periodic in enumerate(periods):
        col = positions[:, axis]
        lo, hi = box.lo[axis], box.hi[axis]
        if periodic:
            out = (col < lo) | (col >= hi)
            if out.any():
                length = hi - lo
                moved = lo + np.mod(col[out] - lo, length)
                moved[moved >= hi] = lo  # mod of a tiny negative number rounds up to length
                col[out] = moved
        else:
            outside |= (col < lo) | (col >= hi)
    return outside


def cells(positions: np.ndarray, box: Box, shape: Sequence[int]) -> np.ndarray:
    """Global cell index of each position, shape (m, ndim) int64 (clipped into the grid
    against rounding at the upper edge)."""
    h = box.spacing(shape)
    idx = np.floor((positions - np.asarray(box.lo)) / h).astype(np.int64)
    np.clip(idx, 0, np.asarray(shape, dtype=np.int64) - 1, out=idx)
    return idx


def owners(positions: np.ndarray, box: Box, partition: Partition) -> np.ndarray:
    """Rank owning each position (inside the box), int64 of shape (m,)."""
    return partition.owner_of(cells(positions, box, partition.global_shape))


def check_cutoff(cutoff: Any, box: Box, partition: Partition) -> str | None:
    """The problem with a ghost ``cutoff``, or None: it must be positive, finite and no wider
    than the smallest block along any axis (ghosts come from the adjacent blocks only)."""
    try:
        c = float(cutoff)
    except (TypeError, ValueError):
        return f"cutoff must be a number, got {cutoff!r}"
    if not (np.isfinite(c) and c > 0):
        return f"cutoff must be positive and finite, got {cutoff!r}"
    h = box.spacing(partition.global_shape)
    for axis, (n, d) in enumerate(zip(partition.global_shape, partition.dims, strict=True)):
        width = (n // d) * h[axis]
        if c > width:
            return (
                f"cutoff {c:g} is wider than the smallest block along axis {axis} "
                f"({n // d} cells = {width:g}) of grid {partition.dims}: ghosts would be needed "
                "from beyond the adjacent ranks; use fewer ranks along that axis or a smaller cutoff"
            )
        if partition.periods[axis] and 2 * c > box.length[axis]:
            return (
                f"cutoff {c:g} is more than half the periodic length {box.length[axis]:g} of "
                f"axis {axis}: a particle would meet two images of another"
            )
    return None


@dataclass(frozen=True)
class GhostPlan:
    """Copies of this rank's particles for its neighbours, sorted by destination rank.

    Attributes
    ----------
    index : numpy.ndarray of int64
        Row of the particle copied (a particle may be copied to several neighbours).
    dest : numpy.ndarray of int64
        Rank receiving each copy (sorted ascending; may be this rank, for a periodic axis
        with one rank along it).
    shift : numpy.ndarray of float64, shape (k, ndim)
        Added to the copy's position: ``+-L`` where the copy crosses a periodic boundary,
        so that distances to the copy are plain differences.
    """

    index: np.ndarray
    dest: np.ndarray
    shift: np.ndarray


def ghost_plan(
    positions: np.ndarray, box: Box, partition: Partition, rank: int, cutoff: float
) -> GhostPlan:
    """Which particles of ``rank`` (inside its block) each neighbour needs as ghosts.

    A particle within ``cutoff`` of a face of the block goes to the neighbour across that
    face; within ``cutoff`` of an edge or a corner (along every axis of the offset), also
    to the neighbour across it.  Neighbours that do not exist (a non-periodic wall) get
    nothing.
    """
    ndim = partition.ndim
    lo, hi = box.block(partition, rank)
    near = {-1: positions < lo + cutoff, 1: positions >= hi - cutoff}
    coords = partition.coords(rank)
    idx_parts, dest_parts, shift_parts = [], [], []
    length = box.length
    for offset in itertools.product((-1, 0, 1), repeat=ndim):
        if not any(offset):
            continue
        dest = partition.neighbor(rank, offset)
        if dest is None:
            continue
        mask = np.ones(positions.shape[0], bool)
        shift = np.zeros(ndim)
        for axis, o in enumerate(offset):
            if o:
                mask &= near[o][:, axis]
                if o < 0 and coords[axis] == 0:
                    shift[axis] = length[axis]
                elif o > 0 and coords[axis] == partition.dims[axis] - 1:
                    shift[axis] = -length[axis]
        rows = np.flatnonzero(mask)
        if rows.size:
            idx_parts.append(rows)
            dest_parts.append(np.full(rows.size, dest, np.int64))
            shift_parts.append(np.broadcast_to(shift, (rows.size, ndim)))
    if not idx_parts:
        return GhostPlan(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, ndim)))
    index = np.concatenate(idx_parts)
    dest = np.concatenate(dest_parts)
    shift = np.concatenate(shift_parts)
    order = np.argsort(dest, kind="stable")
    return GhostPlan(index[order], dest[order], shift[order])


def cic_stencil(
    positions: np.ndarray, box: Box, partition: Partition, rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cloud-in-cell deposit of ``rank``'s particles: ``2**ndim`` (cell, weight) pairs each.

    The weight of a particle is shared between the centres of the ``2**ndim`` cells around
    it, linearly along each axis.  Cells beyond a non-periodic wall are folded onto the wall
    cell (nothing is lost: the weights of a particle sum to one).

    Returns
    -------
    local : numpy.ndarray of int64, shape (m, 2**ndim, ndim)
        Cell index in this rank's block padded by one ghost cell on each side (0 is the
        lower ghost layer); a cell of a neighbour is a ghost cell here.
    glob : numpy.ndarray of int64, same shape
        Global cell index (wrapped on periodic axes).
    weight : numpy.ndarray of float64, shape (m, 2**ndim)
    """
    shape = partition.global_shape
    ndim = len(shape)
    h = box.spacing(shape)
    s = (positions - np.asarray(box.lo)) / h - 0.5
    base = np.floor(s).astype(np.int64)
    frac = s - base
    start = np.asarray([a for a, _ in partition.local_range(rank)], dtype=np.int64)
    m = positions.shape[0]
    corners = list(itertools.product((0, 1), repeat=ndim))
    glob = np.empty((m, len(corners), ndim), np.int64)
    weight = np.ones((m, len(corners)))
    for c, corner in enumerate(corners):
        for axis, bit in enumerate(corner):
            glob[:, c, axis] = base[:, axis] + bit
            weight[:, c] *= frac[:, axis] if bit else 1.0 - frac[:, axis]
    n = np.asarray(shape, dtype=np.int64)
    for axis, periodic in enumerate(partition.periods):
        if not periodic:
            np.clip(glob[..., axis], 0, n[axis] - 1, out=glob[..., axis])
    local = glob - start + 1  # unwrapped: the neighbour's cells fall in the ghost layer
    for axis, periodic in enumerate(partition.periods):
        if periodic:
            glob[..., axis] %= n[axis]
    return local, glob, weight


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def check_fields(
    fields: Mapping[str, np.ndarray] | None, position: str, ndim: int, order_by: str | None
) -> dict[str, np.ndarray]:
    """The particle fields checked (PURE): named plainly, numeric arrays of one length with
    a particle axis, a position field of shape ``(m, ndim)``, an integer ``order_by``."""
    if fields is None:
        raise ShapeError(
            f"DistParticles needs fields, at least {position!r} (shape (m, {ndim})); "
            "give empty arrays on ranks without particles"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in fields.items():
        if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
            raise ConfigError(f"field name {name!r}: use letters, digits and '_'")
        if not isinstance(value, np.ndarray) or value.ndim < 1:
            raise ShapeError(
                f"field {name!r} must be a numpy array with a particle axis, got "
                f"{type(value).__name__}{getattr(value, 'shape', '')}"
            )
        if value.dtype.kind not in "biuf" and value.dtype.kind != "c":
            raise DTypeError(f"field {name!r}: dtype {value.dtype} is not numeric")
        out[name] = np.ascontiguousarray(value)
    if position not in out:
        raise ShapeError(f"fields have no position field {position!r}; they have {sorted(out)}")
    problem = check_position_array(out[position], ndim)
    if problem is not None:
        raise ShapeError(f"field {position!r}: {problem}")
    lengths = {n: a.shape[0] for n, a in out.items()}
    if len(set(lengths.values())) > 1:
        raise ShapeError(f"fields have different lengths on this rank: {lengths}")
    if order_by is not None:
        if order_by not in out or out[order_by].dtype.kind not in "iu" or out[order_by].ndim != 1:
            raise ConfigError(
                f"order_by={order_by!r} must name a 1-d integer field; fields: "
                f"{ {n: str(a.dtype) for n, a in out.items()} }"
            )
    return out
