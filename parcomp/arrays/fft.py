"""Distributed FFTs of DistArrays: local ``scipy.fft`` (or ``numpy.fft``) transforms between
pencil transposes.

COMMUNICATES: every function here is collective over the array's communicator.

A transform over several axes runs them one at a time, last axis first (as
``numpy.fft.fftn`` does).  Before each, the array is transposed, if needed, into a pencil
with that axis whole on every rank (:meth:`parcomp.arrays.array.DistArray.transpose_to`, one
``MPI_Alltoallw`` of subarray datatypes), and ``scipy.fft`` transforms the local block
along it, in place on parcomp's own temporaries (``numpy.fft`` without SciPy, or after
:func:`set_backend` ``("numpy")``).  A slab decomposition of a 3-D array therefore costs one transpose, a pencil
decomposition two, as in mpi4py-fft and P3DFFT.

The result is left in the layout of the last transform (each rank a pencil with the
first transformed axis whole): no transpose back, as FFTW's ``TRANSPOSED_OUT`` and
mpi4py-fft's default.  Pass ``dims`` to get another grid (e.g. the input's, with
``dims=a.partition.dims``).  Ghost cells of the input are ignored; results have none.
:func:`frequencies` gives the wavenumbers of a rank's block of a transform, whatever its
layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from parcomp._renamed import renamed_keywords
from parcomp.arrays.array import DistArray, Spectrum
from parcomp.arrays.redistribute import pencil_dims
from parcomp.grid.partition import Partition
from parcomp.runtime.agree import agreed, raise_if_differ
from parcomp.runtime.errors import ConfigError, DTypeError, RankCountError, ShapeError
from parcomp.runtime.watchdog import collective

__all__ = ["fftn", "ifftn", "rfftn", "irfftn", "frequencies", "set_backend"]

_NORMS = (None, "backward", "ortho", "forward")


def _check(
    a: Any, axes: Sequence[int] | None, norm: str | None, real: bool | None
) -> tuple[int, ...]:
    """Validate on this rank (the caller agrees): axes as a tuple of distinct non-negative ints."""
    if not isinstance(a, DistArray):
        raise DTypeError(f"parcomp.fft needs a DistArray, got {type(a).__name__}")
    if norm not in _NORMS:
        raise ShapeError(f"norm must be one of {_NORMS}, got {norm!r}")
    if real is True and a.dtype.kind not in "biuf":
        raise DTypeError(f"rfftn needs a real array, got dtype {a.dtype}")
    if real is False and a.dtype.kind != "c":
        raise DTypeError(f"irfftn needs a complex array (an rfftn result), got dtype {a.dtype}")
    ndim = a.ndim
    chosen = tuple(range(ndim)) if axes is None else tuple(axes)
    if not chosen:
        raise ShapeError("axes must name at least one axis")
    out = []
    for ax in chosen:
        if isinstance(ax, bool) or not isinstance(ax, int | np.integer) or not -ndim <= ax < ndim:
            raise ShapeError(f"axis {ax!r} is out of range for a {ndim}-d array")
        out.append(int(ax) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"axes {chosen} repeat an axis")
    return tuple(out)


def _pencil(a: DistArray, axis: int) -> DistArray:
    """``a`` with ``axis`` whole on every rank and no ghost cells (collective)."""
    if a.partition.dims[axis] == 1 and not any(a.halo):
        return a
    return a.transpose_to(axis)


_BACKENDS = ("scipy", "numpy")
_backend: list[Any] = []


def set_backend(name: str | None = None) -> str:
    """Choose the local transforms: ``"scipy"`` (``scipy.fft``, the default when SciPy is
    installed: 1.5-1.9x faster here, and in place on parcomp's own temporaries) or
    ``"numpy"`` (``numpy.fft``).  None: the default.  Returns the name chosen.  Local;
    call it the same way on every rank.
    """
    if name is not None and name not in _BACKENDS:
        raise ConfigError(f"unknown FFT backend {name!r}; expected one of {_BACKENDS}")
    module: Any = np.fft
    chosen = "numpy"
    if name in (None, "scipy"):
        try:
            import scipy.fft as module

            chosen = "scipy"
        except ImportError:
            if name == "scipy":
                raise ConfigError("the scipy FFT backend needs SciPy installed") from None
            module = np.fft
    _backend[:] = [module, chosen]
    return chosen


def _module() -> Any:
    if not _backend:
        set_backend()
    return _backend[0]


def _apply(
    a: DistArray, axis: int, kind: str, n_out: int, norm: str | None, user: DistArray
) -> DistArray:
    """A new DistArray: the 1-d ``kind`` transform (fft, ifft, rfft, irfft) of ``a``'s
    blocks along ``axis`` (whole there), that axis now ``n_out`` long.  ``a`` is
    overwritten when it is parcomp's own temporary (not the user's array ``user``)."""
    module = _module()
    kw: dict[str, Any] = {"axis": axis, "norm": norm}
    if kind == "irfft":
        kw["n"] = n_out
    if module is not np.fft and a is not user:
        kw["overwrite_x"] = True
    data = np.ascontiguousarray(getattr(module, kind)(a.interior, **kw))
    shape = list(a.global_shape)
    shape[axis] = n_out
    partition = (
        a.partition
        if n_out == a.global_shape[axis]
        else Partition(tuple(shape), a.partition.dims, a.partition.periods)
    )
    out = DistArray.from_layout(a.layout.with_partition(partition, (0,) * a.ndim), data.dtype)
    out.local = data
    return out


def _irfft_length(a: DistArray, chosen: tuple[int, ...], s: Sequence[int] | None) -> int:
    """The output length of the halved axis of an irfftn (local check)."""
    last = chosen[-1]
    n_last = 2 * (a.global_shape[last] - 1)
    spectrum = getattr(a, "spectrum", None)
    if s is None and spectrum is not None and spectrum.halved == last:
        n_last = spectrum.shape[last]  # the rfftn result knows its real length (odd too)
    if s is not None:
        try:
            lengths = tuple(int(v) for v in s)
        except (TypeError, ValueError):
            raise ShapeError(f"s must be a sequence of lengths, got {s!r}") from None
        if len(lengths) != len(chosen):
            raise ShapeError(f"s {tuple(s)} needs one length per axis {chosen}")
        for ax, v in zip(chosen[:-1], lengths[:-1], strict=True):
            if v != a.global_shape[ax]:
                raise ShapeError(
                    f"s[{ax}] = {v} differs from the input's length {a.global_shape[ax]} "
                    "(padding is not supported)"
                )
        n_last = lengths[-1]
        if n_last // 2 + 1 != a.global_shape[last]:
            raise ShapeError(
                f"s[-1] = {n_last} does not match the halved axis of length "
                f"{a.global_shape[last]} (expected {2 * (a.global_shape[last] - 1)} or "
                f"{2 * a.global_shape[last] - 1})"
            )
    if n_last < 1:
        raise ShapeError("irfftn output would be empty")
    return n_last


def _steps(
    a: DistArray, chosen: tuple[int, ...], real: bool | None, n_last: int
) -> list[tuple[int, int]]:
    """The transforms in order: (axis, its length afterwards)."""
    shape = a.global_shape
    last = chosen[-1]
    if real is None:
        return [(ax, shape[ax]) for ax in reversed(chosen)]
    if real:
        return [(last, shape[last] // 2 + 1)] + [(ax, shape[ax]) for ax in reversed(chosen[:-1])]
    return [(ax, shape[ax]) for ax in reversed(chosen[:-1])] + [(last, n_last)]


def _check_pencils(a: DistArray, steps: list[tuple[int, int]], name: str) -> None:
    """Raise a clear RankCountError now if some axis cannot be made whole in turn (PURE)."""

    part = a.partition
    for axis, n_after in steps:
        if part.dims[axis] != 1:
            try:
                part = Partition(part.global_shape, pencil_dims(part, axis), part.periods)
            except RankCountError:
                halved = (
                    f" (after the transforms before it, the array is {part.global_shape})"
                    if part.global_shape != a.global_shape
                    else ""
                )
                raise RankCountError(
                    f"{name} of a {a.global_shape} array over {part.size} ranks: axis {axis} "
                    f"cannot be made whole on every rank{halved}, because the other axes have "
                    f"too few cells for {part.size} ranks; use fewer ranks"
                ) from None
        if n_after != part.global_shape[axis]:
            shape = list(part.global_shape)
            shape[axis] = n_after
            part = Partition(tuple(shape), part.dims, part.periods)


def _agree(
    a: Any,
    axes: Sequence[int] | None,
    norm: str | None,
    real: bool | None,
    dims: Sequence[int | None] | None,
    s: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """Check the arguments on every rank and agree on them (collective): (axes, steps)."""
    name = {None: "fftn/ifftn", True: "rfftn", False: "irfftn"}[real]
    comm = a.comm if isinstance(a, DistArray) else None
    with agreed(comm):
        chosen = _check(a, axes, norm, real)
        n_last = _irfft_length(a, chosen, s) if real is False else 0
        steps = _steps(a, chosen, real, n_last)
        _check_pencils(a, steps, name)
    raise_if_differ(
        [list(chosen), norm, None if dims is None else list(dims), steps],
        comm,
        lambda differ, mine, theirs: (
            f"parcomp.fft.{name} arguments differ between ranks (axes, norm, dims, "
            f"lengths): rank 0 has {mine}, rank {differ[0]} has {theirs}"
        ),
    )
    return chosen, steps


def _finish(
    a: DistArray, dims: Sequence[int | None] | None, spectrum: Spectrum | None
) -> DistArray:
    a.spectrum = spectrum
    return a if dims is None else a.redistribute(dims, halo=0)


def _complex(
    a: DistArray,
    axes: Sequence[int] | None,
    norm: str | None,
    dims: Sequence[int | None] | None,
    kind: str,
) -> DistArray:
    """The 1-d ``kind`` (fft or ifft) along each axis, last first, on pencils."""
    chosen, _ = _agree(a, axes, norm, None, dims)
    cur = a
    for axis in reversed(chosen):
        cur = _pencil(cur, axis)
        cur = _apply(cur, axis, kind, cur.global_shape[axis], norm, a)
    # a forward transform is a spectrum of the input's shape; an inverse one is not
    return _finish(cur, dims, Spectrum(a.global_shape, None) if kind == "fft" else None)


@renamed_keywords("parcomp.fft.fftn", out_dims="dims")
@collective("parcomp.fft.fftn", lambda a, *args, **kw: getattr(a, "comm", None))
def fftn(
    a: DistArray,
    axes: Sequence[int] | None = None,
    *,
    norm: str | None = None,
    dims: Sequence[int | None] | None = None,
) -> DistArray:
    """N-d discrete Fourier transform of a DistArray, as ``numpy.fft.fftn`` of the whole array.

    Parameters
    ----------
    a : DistArray
        Real or complex input (ghost cells are ignored).
    axes : sequence of int, optional
        Axes to transform (default: all).
    norm : {None, "backward", "ortho", "forward"}
        As in ``numpy.fft``.
    dims : sequence of int, optional
        Process grid of the result (default: the layout of the last transform, a pencil
        with ``axes[0]`` whole, with no transpose back).

    Returns
    -------
    DistArray
        complex128 (complex64 for float32/complex64 input), same global shape, no ghosts.

    Raises
    ------
    DTypeError, ShapeError, RankCountError
        On every rank: not a DistArray, bad axes or norm, or an axis that cannot be made
        whole (a 1-d array on more than one rank).

    Notes
    -----
    Collective over the array's communicator.
    """
    return _complex(a, axes, norm, dims, "fft")


@renamed_keywords("parcomp.fft.ifftn", out_dims="dims")
@collective("parcomp.fft.ifftn", lambda a, *args, **kw: getattr(a, "comm", None))
def ifftn(
    a: DistArray,
    axes: Sequence[int] | None = None,
    *,
    norm: str | None = None,
    dims: Sequence[int | None] | None = None,
) -> DistArray:
    """Inverse of :func:`fftn`, as ``numpy.fft.ifftn`` of the whole array (collective).

    Parameters and errors as :func:`fftn`.  ``ifftn(fftn(a), dims=a.partition.dims)``
    is ``a`` (as complex) in ``a``'s layout.
    """
    return _complex(a, axes, norm, dims, "ifft")


@renamed_keywords("parcomp.fft.rfftn", out_dims="dims")
@collective("parcomp.fft.rfftn", lambda a, *args, **kw: getattr(a, "comm", None))
def rfftn(
    a: DistArray,
    axes: Sequence[int] | None = None,
    *,
    norm: str | None = None,
    dims: Sequence[int | None] | None = None,
) -> DistArray:
    """Real-input N-d transform, as ``numpy.fft.rfftn`` of the whole array (collective).

    The last of ``axes`` is halved: ``n // 2 + 1`` complex values.  Parameters as
    :func:`fftn`; a complex input raises :class:`~parcomp.runtime.errors.DTypeError` on every rank.
    """
    chosen, _ = _agree(a, axes, norm, True, dims)
    last = chosen[-1]
    cur = _pencil(a, last)
    n = cur.global_shape[last]
    cur = _apply(cur, last, "rfft", n // 2 + 1, norm, a)
    for axis in reversed(chosen[:-1]):
        cur = _pencil(cur, axis)
        cur = _apply(cur, axis, "fft", cur.global_shape[axis], norm, a)
    return _finish(cur, dims, Spectrum(a.global_shape, last))


@renamed_keywords("parcomp.fft.irfftn", out_dims="dims")
@collective("parcomp.fft.irfftn", lambda a, *args, **kw: getattr(a, "comm", None))
def irfftn(
    a: DistArray,
    s: Sequence[int] | None = None,
    axes: Sequence[int] | None = None,
    *,
    norm: str | None = None,
    dims: Sequence[int | None] | None = None,
) -> DistArray:
    """Inverse of :func:`rfftn`, as ``numpy.fft.irfftn`` of the whole array (collective).

    Parameters
    ----------
    a : DistArray
        Complex input, an :func:`rfftn` result.
    s : sequence of int, optional
        Length of each transformed axis in the output (default: the input's, with the
        last one the length :func:`rfftn` halved when ``a`` is its result, odd lengths
        included; else ``2 * (m - 1)``).
    axes, norm, dims
        As :func:`fftn`.

    Returns
    -------
    DistArray
        float64 (float32 for complex64 input).
    """
    chosen, steps = _agree(a, axes, norm, False, dims, s)
    last = chosen[-1]
    n_last = steps[-1][1]
    cur = a
    for axis in reversed(chosen[:-1]):
        cur = _pencil(cur, axis)
        cur = _apply(cur, axis, "ifft", cur.global_shape[axis], norm, a)
    cur = _pencil(cur, last)
    cur = _apply(cur, last, "irfft", n_last, norm, a)
    return _finish(cur, dims, None)


def frequencies(
    a: DistArray,
    shape: Sequence[int] | None = None,
    spacing: float | Sequence[float] = 1.0,
    *,
    angular: bool = False,
) -> tuple[np.ndarray, ...]:
    """Sample frequencies of this rank's block of a transform, one array per axis.

    Parameters
    ----------
    a : DistArray
        A result of :func:`fftn` or :func:`rfftn` (any layout; also an array made from
        one by ``copy``, ``zeros_like``, arithmetic or ``redistribute``): its
        :attr:`~parcomp.DistArray.spectrum` says which axis :func:`rfftn` halved.
    shape : sequence of int, optional
        The real-space shape, for an array that is not such a result (then an axis whose
        length here is ``shape[i] // 2 + 1`` and not ``shape[i]`` gets
        ``numpy.fft.rfftfreq`` values).  Default: the transform's own.
    spacing : float or sequence of float
        Sample spacing per axis (as ``d`` of ``numpy.fft.fftfreq``): ``L / n`` for a box
        of length ``L`` with ``n`` cells.
    angular : bool, default False
        Return angular wavenumbers ``k = 2 * pi * f`` (what spectral derivatives use:
        ``d/dx -> 1j * k``) instead of frequencies ``f``.

    Returns
    -------
    tuple of numpy.ndarray
        Arrays broadcastable against ``a.interior`` (shape 1 except along their axis).

    Raises
    ------
    ShapeError
        ``a`` carries no transform metadata and ``shape`` is not given (its values could
        be a full or a halved spectrum: the frequencies would be guessed), or ``shape``
        contradicts the transform ``a`` came from.

    Notes
    -----
    Local: no communication.
    """
    spectrum = getattr(a, "spectrum", None)
    if shape is None:
        if spectrum is None:
            raise ShapeError(
                f"frequencies: this {a.global_shape} array is not the result of a "
                "parcomp.fft transform (no spectrum metadata), so whether an axis was halved "
                "by rfftn is unknown; pass shape= the real-space shape"
            )
        real = spectrum.shape
    else:
        real = tuple(int(n) for n in shape)
        if spectrum is not None and real != spectrum.shape:
            raise ShapeError(
                f"frequencies: shape={real} but this array is the transform of a "
                f"{spectrum.shape} array"
            )
    if len(real) != a.ndim:
        raise ShapeError(f"shape {real} has {len(real)} axes, the array has {a.ndim}")
    d = (spacing,) * a.ndim if np.isscalar(spacing) else tuple(spacing)
    if len(d) != a.ndim:
        raise ShapeError(f"spacing {spacing!r} has {len(d)} entries, the array has {a.ndim} axes")
    out = []
    for axis, ((lo, hi), n, m) in enumerate(zip(a.local_range, real, a.global_shape, strict=True)):
        halved = spectrum.halved == axis if spectrum is not None else (m != n)
        if not halved and m == n:
            f = np.fft.fftfreq(n, d[axis])
        elif halved and m == n // 2 + 1:
            f = np.fft.rfftfreq(n, d[axis])
        else:
            raise ShapeError(
                f"axis {axis} has {m} values, which is neither shape[{axis}] = {n} nor {n // 2 + 1}"
            )
        if angular:
            f = 2.0 * np.pi * f
        view = [1] * a.ndim
        view[axis] = hi - lo
        out.append(f[lo:hi].reshape(view))
    return tuple(out)
