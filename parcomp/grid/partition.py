"""Block decomposition of an N-d global array over a Cartesian grid of ranks.

PURE: no MPI (NumPy only in the vectorised :meth:`Partition.owner_of`).  Everything here is a function of ``(global_shape, size, rank)``,
so it is tested exhaustively without ``mpiexec``.

* :func:`block_range` splits ``n`` cells into ``parts`` contiguous blocks whose sizes
  differ by at most one (the first ``n % parts`` blocks get the extra cell).
* :func:`dims_create` picks a process grid for any rank count (primes too) that keeps every
  block non-empty and minimises the total interface area, i.e. the halo traffic.
* :class:`Partition` is the value object: global shape, process grid, periodicity, and the
  maps rank <-> grid coordinates, global <-> local index, and neighbour ranks (faces,
  edges and corners).  Ranks are numbered row-major over the grid, as ``MPI_Cart_create``
  numbers them with ``reorder=False``.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parcomp.runtime.errors import RankCountError, ShapeError

__all__ = ["block_range", "dims_create", "Partition"]


def _check_shape(global_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(global_shape)
    except TypeError:
        raise ShapeError(
            f"global_shape must be a sequence of integers, got {global_shape!r}"
        ) from None
    if not shape:
        raise ShapeError("global_shape must have at least one axis, got ()")
    out = []
    for n in shape:
        try:
            value = operator.index(n)  # ints and numpy integers; not floats or bools
        except TypeError:
            value = None
        if value is None or isinstance(n, bool) or value < 1:
            raise ShapeError(f"global_shape must be positive integers, got {shape!r}")
        out.append(value)
    return tuple(out)


def block_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """Half-open range ``[start, stop)`` of block ``index`` when ``n`` cells go to ``parts`` blocks.

    Parameters
    ----------
    n : int
        Number of cells, ``n >= 0``.
    parts : int
        Number of blocks, ``parts >= 1``.
    index : int
        Block number, ``0 <= index < parts``.

    Returns
    -------
    tuple of int
        ``(start, stop)``; sizes differ by at most one, the larger ones first.
    """
    if n < 0:
        raise ShapeError(f"number of cells must be >= 0, got {n}")
    if parts < 1:
        raise RankCountError(f"number of blocks must be >= 1, got {parts}")
    if not 0 <= index < parts:
        raise RankCountError(f"block index must be in [0, {parts}), got {index}")
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def _factorisations(size: int, ndim: int) -> Iterator[tuple[int, ...]]:
    if ndim == 1:
        yield (size,)
        return
    for first in range(1, size + 1):
        if size % first == 0:
            for rest in _factorisations(size // first, ndim - 1):
                yield (first, *rest)


def dims_create(
    size: int, global_shape: Sequence[int], fixed: Sequence[int | None] | None = None
) -> tuple[int, ...]:
    """Choose a process grid of ``size`` ranks for ``global_shape``.

    Among all grids whose product is ``size`` (and that keep the axes given in ``fixed``),
    it picks one where every block is non-empty and the total interface area between
    blocks (the halo volume) is smallest; ties go to the more balanced grid, then to more
    ranks along earlier axes (as ``MPI_Dims_create``).

    Parameters
    ----------
    size : int
        Number of ranks, >= 1.
    global_shape : sequence of int
        Global array shape.
    fixed : sequence of int or None, optional
        Per-axis number of ranks to keep (``None`` or 0 = free).

    Returns
    -------
    tuple of int
        Ranks per axis.

    Raises
    ------
    RankCountError
        If no grid gives every rank at least one cell along every axis.
    """
    shape = _check_shape(global_shape)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise RankCountError(f"number of ranks must be a positive integer, got {size!r}")
    ndim = len(shape)
    want = tuple(fixed) if fixed is not None else (None,) * ndim
    if len(want) != ndim:
        raise ShapeError(
            f"process grid {tuple(want)} has {len(want)} axes, global_shape {shape} has {ndim}"
        )
    best = None
    for dims in _factorisations(size, ndim):
        if any(w not in (None, 0) and d != w for d, w in zip(dims, want, strict=True)):
            continue
        if any(d > n for d, n in zip(dims, shape, strict=True)):
            continue
        volume = math.prod(shape)
        area = sum((d - 1) * (volume // n) for d, n in zip(dims, shape, strict=True))
        key = (area, max(dims) - min(dims), tuple(-d for d in dims))
        if best is None or key < best[0]:
            best = (key, dims)
    if best is None:
        grid = "" if fixed is None else f" with process grid {tuple(want)}"
        raise RankCountError(
            f"cannot split global_shape {shape} over {size} ranks{grid} without empty blocks: "
            f"some axis would get more ranks than cells; use fewer ranks or a larger array"
        )
    return best[1]


@dataclass(frozen=True)
class Partition:
    """A block decomposition of ``global_shape`` over a Cartesian grid of ranks.

    Parameters
    ----------
    global_shape : tuple of int
        Global array shape (every extent >= 1).
    dims : tuple of int
        Ranks per axis; their product is the rank count.  Use :meth:`create` to choose it.
    periods : tuple of bool
        Whether each axis wraps around (periodic boundary).
    """

    global_shape: tuple[int, ...]
    dims: tuple[int, ...]
    periods: tuple[bool, ...]

    def __post_init__(self) -> None:
        shape = _check_shape(self.global_shape)
        object.__setattr__(self, "global_shape", shape)
        dims = tuple(int(d) for d in self.dims)
        periods = tuple(bool(p) for p in self.periods)
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "periods", periods)
        if len(dims) != len(shape) or len(periods) != len(shape):
            raise ShapeError(
                f"dims {dims} and periods {periods} must have one entry per axis of {shape}"
            )
        for axis, (d, n) in enumerate(zip(dims, shape, strict=True)):
            if d < 1:
                raise RankCountError(
                    f"process grid {dims}: axis {axis} has {d} ranks, expected >= 1"
                )
            if d > n:
                raise RankCountError(
                    f"process grid {dims} puts {d} ranks on axis {axis} of length {n}: "
                    "blocks would be empty"
                )

    @classmethod
    def create(
        cls,
        global_shape: Sequence[int],
        size: int,
        periods: bool | Sequence[bool] = False,
        dims: Sequence[int | None] | None = None,
    ) -> Partition:
        """Partition ``global_shape`` over ``size`` ranks (grid from :func:`dims_create`).

        Parameters
        ----------
        global_shape : sequence of int
        size : int
            Number of ranks.
        periods : bool or sequence of bool
            Periodicity, for all axes or per axis.
        dims : sequence of int or None, optional
            Ranks per axis to impose (``None``/0 = choose).
        """
        shape = _check_shape(global_shape)
        if isinstance(periods, bool):
            per = (periods,) * len(shape)
        else:
            per = tuple(bool(p) for p in periods)
        if dims is not None and all(d not in (None, 0) for d in dims):
            grid = tuple(int(d) for d in dims)  # type: ignore[arg-type]
            if math.prod(grid) != size:
                raise RankCountError(
                    f"process grid {grid} has {math.prod(grid)} ranks but the job has {size}"
                )
        else:
            grid = dims_create(size, shape, dims)
        return cls(shape, grid, per)

    # ------------------------------------------------------------------ ranks and coordinates
    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.global_shape)

    @property
    def size(self) -> int:
        """Number of ranks."""
        return math.prod(self.dims)

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.size:
            raise RankCountError(
                f"rank {rank} is outside the process grid {self.dims} ({self.size} ranks)"
            )

    def coords(self, rank: int) -> tuple[int, ...]:
        """Grid coordinates of ``rank`` (row-major, last axis fastest)."""
        self._check_rank(rank)
        out = []
        for d in reversed(self.dims):
            rank, c = divmod(rank, d)
            out.append(c)
        return tuple(reversed(out))

    def rank_of(self, coords: Sequence[int]) -> int | None:
        """Rank at grid ``coords``, wrapping periodic axes; ``None`` outside a non-periodic edge."""
        rank = 0
        for c, d, p in zip(coords, self.dims, self.periods, strict=True):
            if not 0 <= c < d:
                if not p:
                    return None
                c %= d
            rank = rank * d + c
        return rank

    def neighbor(self, rank: int, offset: Sequence[int]) -> int | None:
        """Rank at grid offset ``offset`` (e.g. ``(0, -1)``, or ``(1, 1)`` for a corner)."""
        return self.rank_of(tuple(c + o for c, o in zip(self.coords(rank), offset, strict=True)))

    # ------------------------------------------------------------------ blocks
    def local_range(self, rank: int) -> tuple[tuple[int, int], ...]:
        """Per-axis half-open global ranges ``(start, stop)`` owned by ``rank``."""
        return tuple(
            block_range(n, d, c)
            for n, d, c in zip(self.global_shape, self.dims, self.coords(rank), strict=True)
        )

    def local_shape(self, rank: int) -> tuple[int, ...]:
        """Shape of the block owned by ``rank`` (without halos)."""
        return tuple(stop - start for start, stop in self.local_range(rank))

    def local_slices(self, rank: int) -> tuple[slice, ...]:
        """Slices of the global array owned by ``rank``."""
        return tuple(slice(start, stop) for start, stop in self.local_range(rank))

    def owner(self, index: Sequence[int]) -> int:
        """Rank owning global ``index``."""
        coords = []
        for axis, (i, n, d) in enumerate(zip(index, self.global_shape, self.dims, strict=True)):
            if not 0 <= i < n:
                raise ShapeError(
                    f"index {tuple(index)} is outside global_shape {self.global_shape} on axis {axis}"
                )
            base, extra = divmod(n, d)
            big = extra * (base + 1)
            coords.append(i // (base + 1) if i < big else extra + (i - big) // base)
        rank = self.rank_of(coords)
        assert rank is not None  # coords are in range by construction
        return rank

    def axis_block_of(self, axis: int, index: Any) -> Any:
        """Block number along ``axis`` of global indices ``index`` (an integer array; vectorised).

        Indices must be in ``[0, global_shape[axis])`` (not checked here; see :meth:`owner_of`).
        """
        import numpy as np

        n, d = self.global_shape[axis], self.dims[axis]
        base, extra = divmod(n, d)
        i = np.asarray(index, dtype=np.int64)
        big = extra * (base + 1)
        if extra == 0:
            return i // base
        return np.where(i < big, i // (base + 1), extra + (i - big) // base)

    def owner_of(self, index: Any) -> Any:
        """Ranks owning many global indices at once: :meth:`owner`, vectorised.

        Parameters
        ----------
        index : array_like of int, shape (m, ndim) or (ndim,)
            Global cell indices, one row per point.

        Returns
        -------
        numpy.ndarray of int64, shape (m,) (or a 0-d array for one point)

        Raises
        ------
        ShapeError
            If the array has the wrong number of columns, is not integral, or an index
            lies outside ``global_shape`` (the first such row is named).

        Notes
        -----
        Local; uses NumPy (millions of points in a few milliseconds).  Periodic axes do not
        wrap here: wrap the indices first.
        """
        import numpy as np

        idx = np.asarray(index)
        if idx.dtype.kind not in "iu" or idx.ndim not in (1, 2) or idx.shape[-1] != self.ndim:
            raise ShapeError(
                f"owner_of needs integer indices of shape (m, {self.ndim}), got {idx.dtype} "
                f"array of shape {idx.shape}"
            )
        rows = idx.reshape(-1, self.ndim)
        rank = np.zeros(rows.shape[0], np.int64)
        for axis, (n, d) in enumerate(zip(self.global_shape, self.dims, strict=True)):
            col = rows[:, axis]
            bad = (col < 0) | (col >= n)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise ShapeError(
                    f"index {tuple(int(v) for v in rows[first])} (row {first}) is outside "
                    f"global_shape {self.global_shape} on axis {axis}"
                )
            rank = rank * d + self.axis_block_of(axis, col)
        return rank.reshape(idx.shape[:-1])

    def global_to_local(self, index: Sequence[int], rank: int) -> tuple[int, ...]:
        """Local (interior, halo-free) index on ``rank`` of global ``index``; it must be owned there."""
        ranges = self.local_range(rank)
        out = []
        for axis, (i, (start, stop)) in enumerate(zip(index, ranges, strict=True)):
            if not start <= i < stop:
                raise ShapeError(
                    f"global index {tuple(index)} is not owned by rank {rank} (axis {axis} owns [{start}, {stop}))"
                )
            out.append(i - start)
        return tuple(out)

    def local_to_global(self, index: Sequence[int], rank: int) -> tuple[int, ...]:
        """Global index of local (interior) ``index`` on ``rank``."""
        ranges = self.local_range(rank)
        out = []
        for axis, (i, (start, stop)) in enumerate(zip(index, ranges, strict=True)):
            if not 0 <= i < stop - start:
                raise ShapeError(
                    f"local index {tuple(index)} is outside the block of rank {rank} on axis {axis} (length {stop - start})"
                )
            out.append(start + i)
        return tuple(out)

    def offsets(self, corners: bool) -> list[tuple[int, ...]]:
        """Neighbour offsets: the 2*ndim faces, or all 3**ndim - 1 with edges and corners."""
        if corners:
            return [o for o in itertools.product((-1, 0, 1), repeat=self.ndim) if any(o)]
        out = []
        for axis in range(self.ndim):
            for step in (-1, 1):
                out.append(tuple(step if a == axis else 0 for a in range(self.ndim)))
        return out


def per_axis(value: int | Sequence[int] | bool | Sequence[bool], ndim: int, name: str) -> tuple:
    """``value`` for every one of ``ndim`` axes (a scalar repeated, or one per axis)."""
    if isinstance(value, bool | int | np.integer | np.bool_):
        return (value,) * ndim
    out = tuple(value)
    if len(out) != ndim:
        raise ShapeError(f"{name} {out} has {len(out)} entries, expected one per axis ({ndim})")
    return out
