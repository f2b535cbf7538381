"""Vector algebra on DistArrays: element-wise operations, reductions, global indexing.

Local where it can be, collective where it must be, and named so a user can tell:

* **Local** (no communication; every rank works on its own block): arithmetic operators
  and NumPy ufuncs on arrays decomposed alike (``a + 2 * b``, ``np.exp(a, out=c)``),
  :meth:`~VectorAlgebra.axpy`.  The result is a DistArray with the first operand's
  decomposition and halo; its ghost cells are zero (exchange them when a stencil needs them).
* **Collective** (call on every rank): ``dot``, ``vdot``, ``norm``, ``sum``, ``min``,
  ``max``, ``mean`` (with ``axis=``), global-index reads ``a[i, j]`` and ``a.get(region)``.
  Writes ``a[i, j] = x`` are local: the owning rank stores, the others do nothing.

``deterministic=True`` on ``sum``, ``mean``, ``dot``, ``vdot`` and ``norm`` (float64)
returns the exact sum correctly rounded (:mod:`parcomp.runtime.exactsum`): the same bits on any
rank count, so an iterative solver takes the same number of iterations on 1 to 4 ranks.

``np.asarray(a)`` raises: a DistArray is not one NumPy array on any rank.  Use
``a.gather(root)`` for the whole array on one rank or ``a.interior`` for this rank's block.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from parcomp.arrays.fused import EINSUM_DOT as _EINSUM_DOT
from parcomp.arrays.fused import recording
from parcomp.arrays.select import select
from parcomp.grid.layout import layout_difference
from parcomp.runtime.callid import allsum_scalar, reduce_checked
from parcomp.runtime.errors import DTypeError, ShapeError
from parcomp.runtime.exactsum import accumulate_buffer, allsum_limbs, exact_allsum
from parcomp.runtime.numba_jit import jit
from parcomp.runtime.ranks import mark_everywhere
from parcomp.runtime.reduce import allreduce
from parcomp.runtime.watchdog import collective

__all__ = ["VectorAlgebra"]


class VectorAlgebra(NDArrayOperatorsMixin):
    """Mixin for :class:`~parcomp.arrays.array.DistArray` (see the module docstring)."""

    __array_priority__ = 1000
    __hash__ = object.__hash__  # comparison operators are element-wise; identity hashing stays
    partition: Any
    halo: tuple[int, ...]
    dtype: np.dtype
    comm: Any
    rank: int

    # ------------------------------------------------------------ NumPy protocol
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            "a DistArray is not a NumPy array on any one rank: use a.gather(root) for the "
            "whole array (on root), or a.interior for this rank's block"
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method != "__call__":
            raise TypeError(
                f"{ufunc.__name__}.{method} on a DistArray: use its collective reductions "
                "(a.sum(), a.min(), a.max(), a.dot(b)) or a.interior for this rank's block"
            )
        out = kwargs.pop("out", None)
        first = self
        operand = self._operand
        args = [operand(x, first, ufunc) for x in inputs]
        if out is not None:
            outs = tuple([operand(o, first, ufunc, True) for o in out])
            ufunc(*args, out=outs, **kwargs)
            return out[0] if len(out) == 1 else out
        # result dtype(s) from one element, then straight into the new arrays' interiors
        probe_kw = {k: v for k, v in kwargs.items() if k != "where"}
        probe = ufunc(
            *[a[(0,) * a.ndim][None] if isinstance(a, np.ndarray) else a for a in args], **probe_kw
        )
        probes = probe if isinstance(probe, tuple) else (probe,)
        results = tuple(first.zeros_like(np.asarray(p).dtype) for p in probes)
        ufunc(*args, out=tuple(r.interior for r in results), **kwargs)
        return results[0] if len(results) == 1 else results

    # In-place operators, straight to the interiors: ``p *= beta`` and ``p += r`` run every
    # CG iteration, and NumPy's override dispatch (``__array_ufunc__``) costs about 15 us
    # more per call once the caches are cold.  Same checks, same results as the ufuncs.
    def _inplace(self, other: Any, method: str, ufunc: Any) -> Any:
        program = recording()
        if program is not None and program.update(_FUSED_KIND[method], self, other):
            return self  # recorded: runs fused (parcomp.arrays.fused)
        if isinstance(other, VectorAlgebra):
            operand = self._operand(other, self, ufunc)
        elif isinstance(other, float | int | complex | np.generic):
            operand = other
        else:
            return getattr(super(), method)(other)  # the ufunc path, with its errors
        getattr(self.interior, method)(operand)  # type: ignore[attr-defined]
        return self

    def __iadd__(self, other: Any) -> Any:
        return self._inplace(other, "__iadd__", np.add)

    def __isub__(self, other: Any) -> Any:
        return self._inplace(other, "__isub__", np.subtract)

    def __imul__(self, other: Any) -> Any:
        return self._inplace(other, "__imul__", np.multiply)

    def __itruediv__(self, other: Any) -> Any:
        return self._inplace(other, "__itruediv__", np.true_divide)

    @staticmethod
    def _operand(x: Any, first: Any, ufunc: Any, output: bool = False) -> Any:
        if isinstance(x, VectorAlgebra):
            if x.partition is not first.partition and x.partition != first.partition:
                # from metadata every rank agreed on: every rank raises it (printed once)
                raise mark_everywhere(
                    ShapeError(f"{ufunc.__name__}: {layout_difference(first, x)}"), first.comm
                )
            return x.interior
        if output:
            raise TypeError(f"{ufunc.__name__}: out= must be DistArrays, got {type(x).__name__}")
        if isinstance(x, numbers.Number | np.generic) or (
            isinstance(x, np.ndarray) and x.ndim == 0
        ):
            return x
        if isinstance(x, np.ndarray) and x.dtype.kind in "biufc":
            block = first.interior.shape
            if x.ndim == len(block) and all(
                n in (1, b) for n, b in zip(x.shape, block, strict=True)
            ):
                return x  # this rank's block, or broadcastable to it (frequencies())
            raise ShapeError(
                f"{ufunc.__name__}: a NumPy array of shape {x.shape} with a DistArray: "
                f"it must hold this rank's block, of shape {block} (or broadcast to it with "
                "ones, as parcomp.arrays.fft.frequencies gives), and this rank "
                f"({first.rank}) has block {first.local_range}. For a global array, "
                "DistArray.from_global makes it a DistArray"
            )
        raise TypeError(
            f"{ufunc.__name__}: a DistArray combines with DistArrays decomposed alike, "
            f"scalars and NumPy arrays of this rank's block, not with a {type(x).__name__}"
        )

    # ------------------------------------------------------------ local updates
    def axpy(self, alpha: Any, x: Any) -> Any:
        """``self += alpha * x`` in place, without a temporary (local; returns self)."""
        program = recording()  # (checks the operand without reading any buffer)
        if program is not None and program.update("axpy", self, x, alpha):
            return self  # recorded: runs fused (parcomp.arrays.fused)
        self._operand(x, self, np.add)
        interior = self.interior  # type: ignore[attr-defined]
        other = x.interior
        if alpha == 1:
            interior += other
        elif (
            interior.dtype == np.float64
            and other.dtype == np.float64
            and 1 <= interior.ndim <= 3
            and isinstance(alpha, float | int | np.floating | np.integer)
        ):
            # one compiled pass, no temporary: the same bits as y + (alpha * x) in NumPy
            _axpy_kernel()(interior, float(alpha), other)
        else:
            interior += np.multiply(alpha, other)
        return self

    # ------------------------------------------------------------ reductions
    def _float_check(self, what: str) -> None:
        if self.dtype != np.float64:
            raise DTypeError(
                f"{what}(deterministic=True) needs float64, this array is {self.dtype}"
            )

    @collective("DistArray.dot")
    def dot(self, other: Any, *, deterministic: bool = False) -> Any:
        """Sum of ``self * other`` over the whole arrays (collective).

        With ``deterministic=True`` (float64): the exact sum of the products, correctly
        rounded: the same on any rank count.
        """
        program = recording()  # (checks the operand without reading any buffer)
        if program is not None and isinstance(other, VectorAlgebra):
            deferred = program.reduce(self, other, deterministic)
            if deferred is not None:
                return deferred  # recorded: a float once used (parcomp.arrays.fused)
        self._operand(other, self, np.multiply)
        a, b = self.interior, other.interior  # type: ignore[attr-defined]
        if deterministic:
            self._float_check("dot")
            return _exact(self, other)  # one pass over the buffers, no array of products
        if a.flags.c_contiguous and b.flags.c_contiguous:
            local = np.vdot(a, b) if a.dtype.kind != "c" else np.dot(a.ravel(), b.ravel())
        else:  # interiors of arrays with ghost cells: no temporary (4x faster than a * b)
            local = np.einsum(_EINSUM_DOT[a.ndim], a, b)
        if local.dtype in (np.float64, np.complex128):  # one preallocated, checked buffer
            return allsum_scalar(self.comm, local)
        return allreduce(local, "sum", self.comm)

    @collective("DistArray.vdot")
    def vdot(self, other: Any, *, deterministic: bool = False) -> Any:
        """Like :meth:`dot`, with ``self`` conjugated (collective)."""
        if np.iscomplexobj(self.interior):  # type: ignore[attr-defined]
            return np.conj(self).dot(other, deterministic=deterministic)
        return self.dot(other, deterministic=deterministic)

    @collective("DistArray.norm")
    def norm(self, ord: Any = 2, *, deterministic: bool = False) -> float:
        """The vector norm of the whole array: 2 (default), 1 or ``np.inf`` (collective)."""
        program = recording()
        if ord == 2 and program is not None and self.dtype == np.float64:
            deferred = program.reduce(self, self, deterministic, _root_abs)
            if deferred is not None:
                return deferred  # type: ignore[return-value]
        if ord == 2:
            return float(np.sqrt(abs(self.vdot(self, deterministic=deterministic))))
        if ord == 1:
            return float(abs(self).sum(deterministic=deterministic))
        if ord in (np.inf, "inf"):
            return float(abs(self).max())
        raise ValueError(f"norm: ord must be 1, 2 or np.inf, got {ord!r}")

    @collective("DistArray.sum")
    def sum(self, axis: int | Sequence[int] | None = None, *, deterministic: bool = False) -> Any:
        """Sum over the whole array, or along ``axis`` (collective).

        ``axis=None``: a scalar on every rank.  ``axis`` given: a NumPy array of the
        remaining global shape, the same on every rank.  Float sums of narrower types are
        accumulated in float64.  ``deterministic=True`` (float64, ``axis=None``): exact,
        correctly rounded, the same on any rank count.
        """
        program = recording()
        if program is not None and axis is None:
            deferred = program.reduce(self, None, deterministic)
            if deferred is not None:
                return deferred
        if deterministic:
            if axis is not None:
                raise ValueError("sum(deterministic=True) reduces the whole array (axis=None)")

            self._float_check("sum")
            return _exact(self, None)
        acc = np.float64 if self.dtype.kind == "f" and self.dtype.itemsize < 8 else None
        return self._along("sum", axis, lambda a, ax: np.sum(a, axis=ax, dtype=acc), 0)

    @collective("DistArray.min")
    def min(self, axis: int | Sequence[int] | None = None) -> Any:
        """Minimum over the whole array, or along ``axis`` (collective; see :meth:`sum`)."""
        return self._along("min", axis, lambda a, ax: np.min(a, axis=ax), _extreme(self.dtype, 1))

    @collective("DistArray.max")
    def max(self, axis: int | Sequence[int] | None = None) -> Any:
        """Maximum over the whole array, or along ``axis`` (collective; see :meth:`sum`)."""
        return self._along("max", axis, lambda a, ax: np.max(a, axis=ax), _extreme(self.dtype, -1))

    @collective("DistArray.mean")
    def mean(self, axis: int | Sequence[int] | None = None, *, deterministic: bool = False) -> Any:
        """Mean over the whole array, or along ``axis`` (collective; see :meth:`sum`)."""
        shape = self.partition.global_shape
        axes = range(len(shape)) if axis is None else _axes(axis, len(shape))
        count = int(np.prod([shape[a] for a in axes]))
        return self.sum(axis, deterministic=deterministic) / count

    def _along(self, op: str, axis: Any, local: Any, identity: Any) -> Any:
        a = self.interior  # type: ignore[attr-defined]
        if axis is None:
            return allreduce(local(a, None), op, self.comm)
        axes = _axes(axis, a.ndim)
        part = local(a, axes)
        keep = [d for d in range(a.ndim) if d not in axes]
        full_shape = tuple(self.partition.global_shape[d] for d in keep)
        out = np.full(full_shape, identity, dtype=np.asarray(part).dtype)
        ranges = self.partition.local_range(self.rank)
        out[tuple(slice(*ranges[d]) for d in keep)] = part
        return allreduce(out, op, self.comm)

    # ------------------------------------------------------------ global indexing
    @collective("DistArray[...]")
    def __getitem__(self, index: Any) -> Any:
        """``a[i, j]`` with global integer indices: the value, on every rank (collective).

        With fewer integers than axes, ``a[t]`` (``a[t, k]``): the plane of the leading
        axes as a DistArray of the remaining axes (:meth:`select`, collective).
        """
        lead = index if isinstance(index, tuple) else (index,)
        if 0 < len(lead) < self.ndim and all(  # type: ignore[attr-defined]
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in lead
        ):
            out = self
            for i in lead:
                out = out.select(0, i)
            return out
        idx = self._global_index(index)
        return self.get(tuple(slice(i, i + 1) for i in idx)).reshape(())[()]

    def __setitem__(self, index: Any, value: Any) -> None:
        """``a[i, j] = x`` with global integer indices: the owner stores it (local)."""
        idx = self._global_index(index)
        ranges = self.partition.local_range(self.rank)
        if all(lo <= i < hi for i, (lo, hi) in zip(idx, ranges, strict=True)):
            self.interior[tuple(i - lo for i, (lo, _) in zip(idx, ranges, strict=True))] = value  # type: ignore[attr-defined]

    def select(self, axis: int, index: int, *, dims: Any = None) -> Any:
        """The plane ``index`` of ``axis`` as a DistArray of one axis fewer (collective;
        see :func:`parcomp.arrays.select.select`): ``u.select(0, t)`` is ``u[t]``."""

        return select(self, axis, index, dims)

    def _global_index(self, index: Any) -> tuple[int, ...]:
        index = index if isinstance(index, tuple) else (index,)
        shape = self.partition.global_shape
        if len(index) != len(shape) or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in index
        ):
            raise TypeError(
                f"a DistArray takes {len(shape)} global integer indices (a[i, j]), or fewer for "
                "a plane (a[t]); for a block use a.get((slice, ...)), for this rank's data "
                "a.interior[...]"
            )
        out = []
        for axis, (i, n) in enumerate(zip(index, shape, strict=True)):
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            out.append(j)
        return tuple(out)

    @collective("DistArray.get")
    def get(self, region: Sequence[slice] | slice) -> np.ndarray:
        """The global sub-block ``region`` (slices with step 1), on every rank (collective).

        Each rank contributes the part it owns; one ``Allreduce`` assembles it (so keep
        regions small: a row, a probe, a corner; :meth:`gather` is for whole arrays).
        """
        from mpi4py import MPI

        region = region if isinstance(region, tuple) else (region,)
        shape = self.partition.global_shape
        if len(region) != len(shape) or not all(isinstance(s, slice) for s in region):
            raise TypeError(f"get() takes {len(shape)} slices, got {region!r}")
        bounds = []
        for s, n in zip(region, shape, strict=True):
            lo, hi, step = s.indices(n)
            if step != 1:
                raise ValueError("get(): slices with a step are not supported")
            bounds.append((lo, max(lo, hi)))
        out = np.zeros(tuple(b - a for a, b in bounds), self.dtype)
        mine = self.partition.local_range(self.rank)
        inter = [(max(a, lo), min(b, hi)) for (a, b), (lo, hi) in zip(bounds, mine, strict=True)]
        if all(a < b for a, b in inter):
            src = tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(inter, mine, strict=True))
            dst = tuple(slice(a - s, b - s) for (a, b), (s, _) in zip(inter, bounds, strict=True))
            out[dst] = self.interior[src]  # type: ignore[attr-defined]
        # one owner per cell, zeros elsewhere: OR of the bytes is the owner's exact bits
        flat = out.reshape(-1).view(np.uint8)  # the identity goes first (parcomp.runtime.callid)
        reduce_checked(self.comm, flat, MPI.BOR, flat)
        return out


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for a {ndim}-d DistArray")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


_FUSED_KIND = {"__iadd__": "iadd", "__isub__": "isub", "__imul__": "imul", "__itruediv__": "idiv"}


def _exact(a: Any, b: Any) -> float:
    """The exact ``sum(a * b)`` (``sum(a)``) of two DistArrays, correctly rounded
    (collective): whole tiles read in place from the ghosted buffers."""
    if b is None or b.halo == a.halo:
        acc, special = accumulate_buffer(
            a.local, a.halo, a.local_shape, None if b is None else b.local
        )
        return allsum_limbs(acc, special, a.comm)
    return exact_allsum(a.interior, a.comm, other=b.interior)


def _root_abs(value: float) -> float:
    return float(np.sqrt(abs(value)))


_AXPY: list[Any] = []


def axpy_loops(y: Any, alpha: float, x: Any) -> None:  # pragma: no cover - compiled
    """``y += alpha * x`` element by element, for 1-, 2- and 3-d arrays of any strides."""
    if y.ndim == 1:
        for i in range(y.shape[0]):
            y[i] = y[i] + alpha * x[i]
    elif y.ndim == 2:
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                y[i, j] = y[i, j] + alpha * x[i, j]
    else:
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                for k in range(y.shape[2]):
                    y[i, j, k] = y[i, j, k] + alpha * x[i, j, k]


def _axpy_kernel() -> Any:
    """The compiled :func:`axpy_loops` (parcomp's jit: compiled once per machine, cached)."""
    if not _AXPY:
        _AXPY.append(jit(nogil=True)(axpy_loops).dispatcher)
    return _AXPY[0]


def _extreme(dtype: np.dtype, sign: int) -> Any:
    """The identity of min (sign 1: the largest value) or max (sign -1: the smallest)."""
    if dtype.kind == "f":
        return sign * np.inf
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if sign > 0 else info.min
    if dtype.kind == "b":
        return sign > 0
    raise DTypeError(f"min/max along an axis of a {dtype} DistArray")
