"""``DistArray``: an N-d array decomposed in blocks over MPI ranks, with ghost cells.

COMMUNICATES: construction, ``exchange_halos``, ``gather``, ``from_global`` and the
reductions are collectives; ``interior``/``local`` views, ``copy`` and ``zeros_like`` are
local.  Point-to-point messages travel on private duplicates of the array's communicator
(:mod:`parcomp.runtime.subcomm`): ``halo`` for exchanges, tagged by direction only, and ``array``
for scatter and gather, so no two subsystems' messages can ever match.  Collective methods
report to the hang watchdog (:mod:`parcomp.runtime.watchdog`).

Arithmetic, ufuncs, ``dot``/``norm``/``sum(axis=)`` and global indexing come from
:class:`parcomp.arrays.algebra.VectorAlgebra` (its docstring says which are local, which collective).

Each rank holds one C-contiguous buffer: its block of the global array (the *interior*)
surrounded by ``halo[i]`` ghost cells on both sides of each axis.  On a periodic axis the
ghosts are filled from the other end of the domain; on a non-periodic one the outermost
ghosts lie outside the domain and hold boundary values (zero unless
:meth:`DistArray.fill_boundary` sets them), which is how a Dirichlet condition is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from parcomp.arrays.algebra import VectorAlgebra
from parcomp.arrays.fused import settle
from parcomp.arrays.redistribute import pencil_dims, redistribute_array
from parcomp.grid.halo import HaloExchange, check_halo, halo_plan, largest_tag
from parcomp.grid.layout import Layout
from parcomp.grid.partition import Partition, per_axis
from parcomp.io.hdf5 import save_hdf5
from parcomp.io.load import open_dataset, read_into
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.callid import check_in
from parcomp.runtime.errors import DTypeError, ParcompError, ShapeError
from parcomp.runtime.ranks import mpi_datatype, resolve_comm
from parcomp.runtime.subcomm import check_tags, subsystem_comm
from parcomp.runtime.watchdog import collective

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

__all__ = ["DistArray", "Spectrum"]


class Spectrum(NamedTuple):
    """Where a Fourier transform's values sit (set by :mod:`parcomp.arrays.fft` on its results).

    Attributes
    ----------
    shape : tuple of int
        The real-space shape the transform was taken of.
    halved : int or None
        The axis an ``rfftn`` halved (``shape[halved] // 2 + 1`` values), else None.
    """

    shape: tuple[int, ...]
    halved: int | None


_NUMERIC = "biufc"


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"not a numpy dtype: {dtype!r} ({exc})") from None
    if dt.kind not in _NUMERIC:
        raise DTypeError(f"DistArray needs a numeric or bool dtype, got {dt}")
    return dt


class DistArray(VectorAlgebra):
    """A block-distributed N-d array with ghost cells.

    Parameters
    ----------
    global_shape : sequence of int
        Shape of the whole array (every extent >= 1).
    dtype : numpy dtype, default float64
        Numeric or bool dtype.
    halo : int or sequence of int, default 0
        Ghost-cell width, for all axes or per axis.  At most the smallest block's extent.
    periods : bool or sequence of bool, default False
        Periodic axes.
    dims : sequence of int, optional
        Ranks per axis (``None``/0 entries are chosen); default: chosen to minimise halo
        traffic (:func:`parcomp.grid.partition.dims_create`).
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: parcomp's default communicator).

    Raises
    ------
    ShapeError, DTypeError, RankCountError, ConfigError
        On every rank, if any rank's arguments are invalid or they differ between ranks.

    Notes
    -----
    Collective over `comm`: call on all ranks with the same arguments.  The buffer starts
    filled with zeros, ghost cells included.
    """

    @collective("DistArray()", lambda self, *a, comm=None, **k: comm)
    def __init__(
        self,
        global_shape: Sequence[int],
        dtype: Any = np.float64,
        *,
        halo: int | Sequence[int] = 0,
        periods: bool | Sequence[bool] = False,
        dims: Sequence[int | None] | None = None,
        comm: MPI.Comm | None = None,
    ) -> None:
        comm = resolve_comm(comm)
        key: tuple = ()
        with agreed(
            comm,
            catch=(ParcompError, TypeError, ValueError),
            wrap=lambda exc: ShapeError(str(exc)),
        ):
            dt = _check_dtype(dtype)
            shape = tuple(global_shape) if not isinstance(global_shape, int) else (global_shape,)
            partition = Partition.create(
                shape,
                comm.Get_size(),
                periods=per_axis(periods, len(shape), "periods"),
                dims=dims,
            )
            widths = check_halo(partition, per_axis(halo, partition.ndim, "halo"))
            check_tags(largest_tag(partition.ndim), f"a {partition.ndim}-d halo exchange")
            key = (partition.global_shape, dt.str, widths, partition.periods, partition.dims)
        raise_if_differ(
            key,
            comm,
            lambda differ, mine, theirs: (
                "DistArray arguments differ between ranks (shape, "
                f"dtype, halo, periods, grid): rank 0 has {mine}, rank {differ[0]} has {theirs}"
            ),
        )
        # Private communicators for halo exchange and scatter/gather (collective the first
        # time per communicator; later arrays on it reuse them, see parcomp.runtime.subcomm).
        layout = Layout(
            partition,
            widths,
            comm,
            subsystem_comm(comm, "halo"),
            subsystem_comm(comm, "array"),
            int(comm.Get_rank()),
        )
        self._setup(layout, dt)

    def _setup(self, layout: Layout, dtype: np.dtype) -> None:
        #: Where the data lives (partition, halo, communicators): frozen, shared by the
        #: arrays made alike; what every module that moves the data reads.
        self.layout = layout
        self.partition = layout.partition
        self.dtype = dtype
        self.halo = layout.halo
        self.comm = layout.comm
        self.rank = layout.rank
        self.local = np.zeros(layout.buffer_shape, dtype)
        self._interior_view = self.local[layout.interior]
        self._exchanges: dict[bool, HaloExchange] = {}
        #: Descriptive attributes (``units``, ``long_name`` ...): set by ``load_hdf5``
        #: from the file's variable; local, never communicated, not kept by arithmetic.
        self.attrs: dict[str, Any] = {}

    @classmethod
    def from_layout(cls, layout: Layout, dtype: Any = np.float64) -> DistArray:
        """A zero array of ``layout`` (local: its ranks agreed on it when it was made).

        For code that makes arrays of a layout it computed on every rank alike (a new
        process grid in ``redistribute``, a spectrum in ``fft``): no communication.
        """
        new = cls.__new__(cls)
        new._setup(layout, _check_dtype(dtype))  # noqa: SLF001 - a new instance of this class
        return new

    # ---------------------------------------------------------------- constructors
    @classmethod
    def zeros(cls, global_shape: Sequence[int], dtype: Any = np.float64, **kw: Any) -> DistArray:
        """A new array of zeros (collective; keywords as :class:`DistArray`)."""
        return cls(global_shape, dtype, **kw)

    @classmethod
    def full(
        cls, global_shape: Sequence[int], value: Any, dtype: Any = np.float64, **kw: Any
    ) -> DistArray:
        """A new array filled with ``value``, ghost cells included (collective)."""
        arr = cls(global_shape, dtype, **kw)
        arr.local[...] = value
        return arr

    @classmethod
    def fromfunction(
        cls,
        function: Callable[..., Any],
        global_shape: Sequence[int],
        dtype: Any = np.float64,
        **kw: Any,
    ) -> DistArray:
        """A new array whose interior is ``function(*global_index_arrays)``, as ``numpy.fromfunction``.

        ``function`` receives one integer array per axis holding the *global* indices of
        this rank's block, so the result does not depend on the rank count.  Ghost cells
        are zero.  Collective.
        """
        arr = cls(global_shape, dtype, **kw)
        grids = np.meshgrid(*(np.arange(a, b) for a, b in arr.local_range), indexing="ij")
        with agreed(arr.comm, catch=Exception):  # the user's function: anything, everywhere
            values = np.asarray(function(*grids))
            try:
                arr.interior[...] = np.broadcast_to(values, arr.local_shape)
            except ValueError:
                raise ShapeError(
                    f"fromfunction: function returned shape {values.shape}, expected the "
                    f"block's shape {arr.local_shape} or one broadcastable to it"
                ) from None
        return arr

    @classmethod
    def from_global(
        cls,
        array: np.ndarray | None,
        root: int = 0,
        *,
        global_shape: Sequence[int] | None = None,
        dtype: Any = None,
        **kw: Any,
    ) -> DistArray:
        """Scatter a global array held by ``root`` into a new DistArray.

        Parameters
        ----------
        array : numpy.ndarray or None
            The global array on ``root``; ignored elsewhere.
        root : int
            Rank holding it.
        global_shape, dtype : optional
            What the array must be; a mismatch raises on every rank (otherwise the root's
            array decides).
        **kw
            ``halo``, ``periods``, ``dims``, ``comm`` as for :class:`DistArray`.

        Notes
        -----
        Collective over `comm`.  Blocks go from the root with subarray datatypes; nothing
        is pickled.
        """
        comm = resolve_comm(kw.pop("comm", None))
        is_root = comm.Get_rank() == root
        meta: tuple | None = None
        with agreed(comm):
            if is_root:
                if not isinstance(array, np.ndarray):
                    raise DTypeError(
                        f"from_global: root {root} needs a numpy array, got {type(array).__name__}"
                    )
                _check_dtype(array.dtype)
                if global_shape is not None and tuple(global_shape) != array.shape:
                    raise ShapeError(
                        f"from_global: array has shape {array.shape}, expected global_shape {tuple(global_shape)}"
                    )
                if dtype is not None and np.dtype(dtype) != array.dtype:
                    raise DTypeError(
                        f"from_global: array has dtype {array.dtype}, expected {np.dtype(dtype)}"
                    )
                meta = (array.shape, array.dtype.str)
        shape, dtstr = comm.bcast(meta, root=root)
        arr = cls(shape, np.dtype(dtstr), comm=comm, **kw)
        arr._scatter(array if is_root else None, root)
        return arr

    #: Set on the results of :mod:`parcomp.arrays.fft` transforms (and kept by ``copy``,
    #: ``zeros_like``, arithmetic and ``redistribute``): the real-space shape and the axis an
    #: ``rfftn`` halved, so :func:`parcomp.arrays.fft.frequencies` places the values by itself.
    spectrum: Spectrum | None = None

    # ---------------------------------------------------------------- properties and views
    @property
    def global_shape(self) -> tuple[int, ...]:
        """Shape of the whole array."""
        return self.partition.global_shape

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self.partition.ndim

    @property
    def local_shape(self) -> tuple[int, ...]:
        """Shape of this rank's block (without ghost cells)."""
        return self.partition.local_shape(self.rank)

    @property
    def local_range(self) -> tuple[tuple[int, int], ...]:
        """Global ``(start, stop)`` per axis of this rank's block."""
        return self.partition.local_range(self.rank)

    @property
    def interior(self) -> np.ndarray:
        """View of this rank's block, without ghost cells (writes go to the buffer)."""
        view = self._interior_view  # made once: vector algebra asks for it on every call
        if view.base is not self.local:  # the buffer was replaced: view the new one
            view = self._interior_view = self.local[self.layout.interior]
        return view

    def __repr__(self) -> str:
        return (
            f"DistArray(global_shape={self.global_shape}, dtype={self.dtype}, halo={self.halo}, "
            f"periods={self.partition.periods}, dims={self.partition.dims}, rank={self.rank}, "
            f"local_range={self.local_range})"
        )

    def copy(self) -> DistArray:
        """A copy with the same decomposition (local; no communication)."""
        new = self.zeros_like()
        new.local[...] = self.local
        return new

    def zeros_like(self, dtype: Any = None) -> DistArray:
        """A zero array with the same decomposition and halo (local; no communication)."""
        cls = getattr(type(self), "_fused_base", type(self))  # (held in a fused block)
        new = cls.from_layout(self.layout, self.dtype if dtype is None else dtype)
        new.spectrum = self.spectrum
        return new

    def fill_boundary(self, value: Any) -> None:
        """Set the ghost cells outside the global domain (non-periodic sides) to ``value``."""
        for axis, (h, periodic) in enumerate(zip(self.halo, self.partition.periods, strict=True)):
            if h == 0 or periodic:
                continue
            (start, stop), n = self.local_range[axis], self.global_shape[axis]
            index = [slice(None)] * self.ndim
            if start == 0:
                index[axis] = slice(0, h)
                self.local[tuple(index)] = value
            if stop == n:
                index[axis] = slice(self.local.shape[axis] - h, None)
                self.local[tuple(index)] = value

    # ---------------------------------------------------------------- communication
    def exchanger(self, corners: bool) -> HaloExchange:
        """This array's halo exchange (made once per ``corners``; local until run)."""
        ex = self._exchanges.get(corners)
        if ex is None:
            # with corners, also the wall ghost cells beside a neighbour's block (its copy
            # of its own wall ghosts: no diagonal neighbour exists to send them)
            plan = halo_plan(self.partition, self.rank, self.halo, corners, walls=corners)
            ex = HaloExchange(self.local, plan, self.layout.halo_comm)
            self._exchanges[corners] = ex
        return ex

    @collective("DistArray.exchange_halos")
    def exchange_halos(self, corners: bool = False) -> None:
        """Fill the ghost cells from the neighbours (faces; also edges and corners if asked).

        Notes
        -----
        Collective over the array's communicator.  Non-blocking to all neighbours at once
        with persistent requests and subarray datatypes built on the first call and reused.
        """
        settle()  # a block's recorded updates first (parcomp.arrays.fused)
        self.exchanger(corners).exchange()

    @collective("DistArray.start_exchange")
    def start_exchange(self, corners: bool = False) -> None:
        """Start a halo exchange and return at once (compute the interior meanwhile)."""
        settle()  # a block's recorded updates first (parcomp.arrays.fused)
        self.exchanger(corners).start()

    @collective("DistArray.finish_exchange")
    def finish_exchange(self, corners: bool = False) -> None:
        """Wait for the exchange started by :meth:`start_exchange`."""
        settle()  # a block's recorded updates first (parcomp.arrays.fused)
        self.exchanger(corners).wait()

    def _block_type(self, rank: int) -> Any:
        from mpi4py import MPI

        (starts, sizes) = zip(
            *((a, b - a) for a, b in self.partition.local_range(rank)), strict=True
        )
        t = mpi_datatype(self.dtype).Create_subarray(
            list(self.global_shape), list(sizes), list(starts), order=MPI.ORDER_C
        )
        t.Commit()
        return t

    def _interior_type(self) -> Any:
        from mpi4py import MPI

        t = mpi_datatype(self.dtype).Create_subarray(
            list(self.local.shape), list(self.local_shape), list(self.halo), order=MPI.ORDER_C
        )
        t.Commit()
        return t

    def _scatter(self, array: np.ndarray | None, root: int) -> None:
        from mpi4py import MPI

        mine = self._interior_type()
        try:
            if self.rank == root:
                data = np.ascontiguousarray(array)
                types = [self._block_type(r) for r in range(self.partition.size)]
                reqs = [
                    self.layout.array_comm.Isend([data, 1, types[r]], r, tag=1)
                    for r in range(self.partition.size)
                    if r != root
                ]
                self.layout.array_comm.Sendrecv(
                    [data, 1, types[root]], root, 1, [self.local, 1, mine], root, 1
                )
                MPI.Request.Waitall(reqs)
                for t in types:
                    t.Free()
            else:
                self.layout.array_comm.Recv([self.local, 1, mine], root, tag=1)
        finally:
            mine.Free()

    @collective("DistArray.redistribute")
    def redistribute(
        self,
        dims: Sequence[int | None] | None = None,
        *,
        halo: int | Sequence[int] | None = None,
        method: str | None = None,
        out: DistArray | None = None,
    ) -> DistArray:
        """The same global array on another process grid (a new DistArray, or ``out``).

        Parameters
        ----------
        dims : sequence of int or None
            Ranks per axis of the new grid; ``None`` or 0 entries are chosen (as in
            :class:`DistArray`).  Default: chosen afresh for the shape.
        halo : int or sequence of int, optional
            Ghost-cell width of the result (default: this array's, if it fits the new
            blocks, else 0).  Ghost cells are not filled: call :meth:`exchange_halos`.
        method : {"alltoallw", "alltoallv"}, optional
            Transport (default :data:`parcomp.arrays.redistribute.DEFAULT_METHOD`, chosen by
            measurement).
        out : DistArray, optional
            Write into this array (same global shape, dtype and communicator; its grid
            and halo are the target's; ``dims`` may be omitted).  Reusing one saves the
            allocation of a new buffer, whose first touch costs as much as the copy
            (``bench/redistribute.py``).  Its ghost cells are left as they are.

        Returns
        -------
        DistArray
            Same global shape, dtype, periodicity and communicator (``out`` if given).

        Raises
        ------
        RankCountError, ShapeError, ConfigError
            On every rank, if the grid does not fit the shape or the rank count, or the
            arguments differ between ranks.

        Notes
        -----
        Collective over the array's communicator.  One ``MPI_Alltoallw`` over subarray
        datatypes (or ``MPI_Alltoallv`` of packed blocks); nothing is pickled.  The plan
        is :func:`parcomp.arrays.redistribute.redistribute_plan`.
        """

        return redistribute_array(self, dims, halo, method, out)

    def transpose_to(self, axis: int, *, halo: int | Sequence[int] = 0) -> DistArray:
        """The same global array as a pencil: ``axis`` whole on every rank (a new DistArray).

        The grid is :func:`parcomp.arrays.redistribute.pencil_dims` of this one: the ranks along
        ``axis`` move to an axis that is whole now, so that a sequence of transposes (a
        distributed FFT) only exchanges within rows of the grid.  Collective; see
        :meth:`redistribute` for the errors.
        """

        dims: tuple[int, ...] | None = None
        with agreed(self.comm, catch=ParcompError):
            dims = pencil_dims(self.partition, axis)
        return self.redistribute(dims, halo=halo)

    def to_hdf5(
        self,
        path: Any,
        name: str = "data",
        *,
        attrs: dict[str, Any] | None = None,
        mpio: bool | None = None,
    ) -> Any:
        """Write this array to ``path`` as dataset ``name``, in parallel (no gather).

        Collective; replaces the file atomically.  See :func:`parcomp.io.save_hdf5` (which
        writes several arrays into one file) for the two back ends and the errors.
        """
        return save_hdf5(path, {name: self}, attrs=attrs, mpio=mpio)

    @classmethod
    def from_hdf5(
        cls,
        path: Any,
        name: str = "data",
        *,
        halo: int | Sequence[int] = 0,
        periods: bool | Sequence[bool] = False,
        dims: Sequence[int | None] | None = None,
        comm: MPI.Comm | None = None,
        dtype: Any = None,
        global_shape: Sequence[int] | None = None,
        decode: bool = True,
    ) -> DistArray:
        """Read dataset ``name`` of any HDF5 file into a new DistArray, each rank its block.

        Collective; the arguments, result and errors are :func:`parcomp.load_hdf5`'s.
        """
        comm = resolve_comm(comm)
        found = open_dataset(
            path, name, comm=comm, dtype=dtype, global_shape=global_shape, decode=decode
        )
        arr = cls(found.shape, found.dtype, halo=halo, periods=periods, dims=dims, comm=comm)
        read_into(path, name, arr, found)
        return arr

    @collective("DistArray.gather")
    def gather(self, root: int = 0) -> np.ndarray | None:
        """The whole array on ``root`` (``None`` on the other ranks).

        Notes
        -----
        Collective over the array's communicator.  Blocks travel as subarray datatypes
        straight into the result; nothing is pickled.
        """
        from mpi4py import MPI

        # point-to-point messages carry no identity: check in first (one word), so a gather
        # on some ranks only meets the others' collective there and raises, instead of
        # matching a later gather's messages (stale blocks) or hanging
        check_in(self.comm, 1 + int(root) if isinstance(root, int | np.integer) else 0)
        mine = self._interior_type()
        try:
            if self.rank == root:
                out = np.empty(self.global_shape, self.dtype)
                types = [self._block_type(r) for r in range(self.partition.size)]
                reqs = [
                    self.layout.array_comm.Irecv([out, 1, types[r]], r, tag=2)
                    for r in range(self.partition.size)
                    if r != root
                ]
                out[self.partition.local_slices(root)] = self.interior
                MPI.Request.Waitall(reqs)
                for t in types:
                    t.Free()
                return out
            self.layout.array_comm.Send([self.local, 1, mine], root, tag=2)
            return None
        finally:
            mine.Free()
